package specgen

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestLocalhostSeccomp(t *testing.T) {
	for _, tc := range []struct {
		name      string
		profile   string
		wantErr   error
		wantArchs []specs.Arch
		wantNames [][]string
	}{
		{name: "oci", profile: `{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
			"syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}`,
			wantArchs: []specs.Arch{specs.ArchX86_64}, wantNames: [][]string{{"mkdir", "mkdirat"}}},
		{name: "docker", profile: `{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
			"archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]}],
			"syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW","includes":{},"excludes":{}},{"names":["write"],"action":"SCMP_ACT_ALLOW"}]}`,
			wantArchs: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}, wantNames: [][]string{{"read"}, {"write"}}},
		{name: "conditional rules refused", profile: `{"defaultAction":"SCMP_ACT_ALLOW",
			"syscalls":[{"names":["bpf"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_BPF"]}}]}`,
			wantErr: errdefs.ErrNotImplemented},
		{name: "no default action", profile: `{"syscalls":[]}`, wantErr: errdefs.ErrInvalidArgument},
		{name: "not json", profile: `defaultAction: allow`, wantErr: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "profile.json")
			if err := os.WriteFile(p, []byte(tc.profile), 0o600); err != nil {
				t.Fatal(err)
			}
			in := baseInput()
			sc(in).Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: p}
			s, err := Generate(in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := s.Linux.Seccomp
			if got == nil || !slices.Equal(got.Architectures, tc.wantArchs) || len(got.Syscalls) != len(tc.wantNames) {
				t.Fatalf("seccomp %+v", got)
			}
			for i, names := range tc.wantNames {
				if !slices.Equal(got.Syscalls[i].Names, names) {
					t.Errorf("rule %d names %v, want %v", i, got.Syscalls[i].Names, names)
				}
			}
		})
	}
}

func TestDevices(t *testing.T) {
	in := baseInput()
	in.Config.Devices = []*runtime.Device{
		{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw"},
	}
	s, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(s.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/mynull" })
	if i < 0 || s.Linux.Devices[i].Type != "c" || s.Linux.Devices[i].Major != 1 || s.Linux.Devices[i].Minor != 3 {
		t.Fatalf("devices %+v", s.Linux.Devices)
	}
	last := s.Linux.Resources.Devices[len(s.Linux.Resources.Devices)-1]
	if !last.Allow || last.Access != "rw" || *last.Major != 1 || *last.Minor != 3 {
		t.Errorf("device rule %+v", last)
	}
	in.Config.Devices[0].Permissions = "rwx"
	if _, err := Generate(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad permissions: %v", err)
	}
}

func TestPrivilegedGetsHostDevices(t *testing.T) {
	in := baseInput()
	sc(in).Privileged = true
	in.Sandbox.Linux = &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{Privileged: true}}
	s, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	for _, d := range s.Linux.Devices {
		paths[d.Path] = true
	}
	if !paths["/dev/null"] || paths["/dev/console"] || paths["/dev/pts/ptmx"] {
		t.Errorf("privileged devices %v", paths)
	}
	if len(s.Linux.MaskedPaths) != 0 || s.Linux.Seccomp != nil {
		t.Errorf("privileged container masked %v seccomp %v", s.Linux.MaskedPaths, s.Linux.Seccomp)
	}
}
