package specgen

import (
	"errors"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCapabilities(t *testing.T) {
	tests := []struct {
		name        string
		caps        *runtime.Capability
		has, hasNot []string
		count       int // 0 => not checked
		ambient     []string
	}{
		{name: "add without prefix", caps: &runtime.Capability{AddCapabilities: []string{"net_admin", "CAP_SYS_TIME"}},
			has: []string{"CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_CHOWN"}, count: len(defaultCaps) + 2},
		{name: "drop", caps: &runtime.Capability{DropCapabilities: []string{"NET_RAW", "CAP_CHOWN"}},
			hasNot: []string{"CAP_NET_RAW", "CAP_CHOWN"}, count: len(defaultCaps) - 2},
		{name: "drop all add one", caps: &runtime.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}},
			has: []string{"CAP_NET_BIND_SERVICE"}, count: 1},
		{name: "add all drop one", caps: &runtime.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"SYS_ADMIN"}},
			has: []string{"CAP_SYS_MODULE", "CAP_BPF"}, hasNot: []string{"CAP_SYS_ADMIN"}, count: len(allCaps) - 1},
		{name: "drop all", caps: &runtime.Capability{DropCapabilities: []string{"all"}}, hasNot: []string{"CAP_CHOWN"}, count: -1},
		{name: "ambient", caps: &runtime.Capability{AddAmbientCapabilities: []string{"NET_ADMIN"}},
			has: []string{"CAP_NET_ADMIN"}, ambient: []string{"CAP_NET_ADMIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			sc(in).Capabilities = tt.caps
			c := mustGenerate(t, in).Process.Capabilities
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted} {
				for _, h := range tt.has {
					if !slices.Contains(set, h) {
						t.Fatalf("%s missing from %q", h, set)
					}
				}
				for _, h := range tt.hasNot {
					if slices.Contains(set, h) {
						t.Fatalf("%s present in %q", h, set)
					}
				}
				if tt.count > 0 && len(set) != tt.count || tt.count < 0 && len(set) != 0 {
					t.Fatalf("%d caps, want %d: %q", len(set), tt.count, set)
				}
			}
			if !slices.Equal(c.Ambient, tt.ambient) || !slices.Equal(c.Inheritable, tt.ambient) {
				t.Fatalf("ambient %q inheritable %q, want %q", c.Ambient, c.Inheritable, tt.ambient)
			}
		})
	}
}

func TestPrivileged(t *testing.T) {
	in := baseInput()
	in.Sandbox.Linux.SecurityContext.Privileged = true
	sc(in).Privileged = true
	sc(in).MaskedPaths = []string{"/proc/kcore"}
	sc(in).Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}
	sc(in).Capabilities = &runtime.Capability{DropCapabilities: []string{"ALL"}}
	s := mustGenerate(t, in)
	if !slices.Equal(s.Process.Capabilities.Bounding, allCaps) || !slices.Equal(s.Process.Capabilities.Effective, allCaps) {
		t.Fatalf("caps = %q", s.Process.Capabilities.Bounding)
	}
	if len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 || s.Linux.Seccomp != nil {
		t.Fatalf("masked %q readonly %q seccomp %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Seccomp)
	}
	for _, dst := range []string{"/sys", "/sys/fs/cgroup"} {
		if m, _ := findMount(s, dst); slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "rw") {
			t.Fatalf("%s = %+v, want rw", dst, m)
		}
	}
	if d := s.Linux.Resources.Devices; len(d) != 1 || !d[0].Allow {
		t.Fatalf("devices = %+v, want allow all", d)
	}
	// The default mounts must not be changed for later specs.
	if m := defaultMounts()[4]; m.Destination != "/sys" || !slices.Contains(m.Options, "ro") {
		t.Fatalf("default /sys mount changed: %+v", m)
	}
}

func TestMaskedPathsOverride(t *testing.T) {
	in := baseInput()
	sc(in).MaskedPaths = []string{}
	sc(in).ReadonlyPaths = []string{"/proc/sys"}
	sc(in).NoNewPrivs = true
	s := mustGenerate(t, in)
	if len(s.Linux.MaskedPaths) != 0 || !slices.Equal(s.Linux.ReadonlyPaths, []string{"/proc/sys"}) || !s.Process.NoNewPrivileges {
		t.Fatalf("masked %q readonly %q nnp %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Process.NoNewPrivileges)
	}
}

func deniedSyscalls(s *specs.LinuxSeccomp) map[string]bool {
	out := map[string]bool{}
	for _, sc := range s.Syscalls {
		if sc.Action == specs.ActErrno && len(sc.Args) == 0 {
			for _, n := range sc.Names {
				out[n] = true
			}
		}
	}
	return out
}

func TestSeccomp(t *testing.T) {
	rd := &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}
	tests := []struct {
		name         string
		profile      *runtime.SecurityProfile
		add          []string
		wantNil      bool
		wantErr      error
		denied       []string
		allowed      []string
		cloneFilters int
	}{
		{name: "nil is unconfined", wantNil: true},
		{name: "unconfined", profile: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}, wantNil: true},
		{name: "localhost missing", profile: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/nonexistent/p.json"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "localhost relative", profile: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "p.json"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "runtime default", profile: rd,
			denied:       []string{"mount", "unshare", "setns", "ptrace", "bpf", "kexec_load", "keyctl", "reboot", "init_module", "clone3"},
			cloneFilters: len(cloneNamespaceFlags)},
		{name: "sys_admin lifts mount", profile: rd, add: []string{"SYS_ADMIN"},
			denied: []string{"ptrace", "keyctl"}, allowed: []string{"mount", "unshare", "setns", "bpf", "clone3"}},
		{name: "sys_ptrace lifts ptrace", profile: rd, add: []string{"SYS_PTRACE"},
			denied: []string{"mount"}, allowed: []string{"ptrace", "process_vm_readv"}, cloneFilters: len(cloneNamespaceFlags)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			sc(in).Seccomp = tt.profile
			sc(in).Capabilities = &runtime.Capability{AddCapabilities: tt.add}
			s, err := Generate(in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantNil {
				if s.Linux.Seccomp != nil {
					t.Fatalf("seccomp = %+v, want none", s.Linux.Seccomp)
				}
				return
			}
			p := s.Linux.Seccomp
			if p == nil || p.DefaultAction != specs.ActAllow || !slices.Contains(p.Architectures, specs.ArchX86_64) {
				t.Fatalf("profile = %+v", p)
			}
			denied := deniedSyscalls(p)
			for _, n := range tt.denied {
				if !denied[n] {
					t.Errorf("%s not denied", n)
				}
			}
			for _, n := range tt.allowed {
				if denied[n] {
					t.Errorf("%s denied", n)
				}
			}
			clone := 0
			for _, sc := range p.Syscalls {
				if slices.Equal(sc.Names, []string{"clone"}) && len(sc.Args) == 1 && sc.Args[0].Op == specs.OpMaskedEqual {
					clone++
				}
			}
			if clone != tt.cloneFilters {
				t.Errorf("%d clone filters, want %d", clone, tt.cloneFilters)
			}
		})
	}
}

func TestCapsFromMaskAndAllCaps(t *testing.T) {
	got := capsFromMask(1<<0 | 1<<21 | 1<<40 | 1<<50)
	if !slices.Equal(got, []string{"CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE"}) {
		t.Fatalf("caps = %q", got)
	}
	in := baseInput()
	in.AllCaps = []string{"CAP_CHOWN", "CAP_KILL"}
	sc(in).Capabilities = &runtime.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"ALL"}}
	if c := mustGenerate(t, in).Process.Capabilities; len(c.Bounding) != 0 {
		t.Fatalf("drop ALL after add ALL: %q", c.Bounding)
	}
	sc(in).Capabilities = &runtime.Capability{AddCapabilities: []string{"ALL"}}
	if c := mustGenerate(t, in).Process.Capabilities; !slices.Equal(c.Bounding, in.AllCaps) {
		t.Fatalf("add ALL = %q, want AllCaps", c.Bounding)
	}
	in.Sandbox.Linux.SecurityContext.Privileged = true
	sc(in).Privileged = true
	if c := mustGenerate(t, in).Process.Capabilities; !slices.Equal(c.Effective, in.AllCaps) {
		t.Fatalf("privileged = %q, want AllCaps", c.Effective)
	}
}
