package specgen

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func mustGenerate(t *testing.T, in Input) *specs.Spec {
	t.Helper()
	s, err := Generate(in)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Input)
		want   error
		msg    string
	}{
		{"no id", func(in *Input) { in.ID = "" }, errdefs.ErrInvalidArgument, "container id"},
		{"nil config", func(in *Input) { in.Config = nil }, errdefs.ErrInvalidArgument, "container config is required"},
		{"nil metadata", func(in *Input) { in.Config.Metadata = nil }, errdefs.ErrInvalidArgument, "metadata.name"},
		{"empty name", func(in *Input) { in.Config.Metadata.Name = "" }, errdefs.ErrInvalidArgument, "metadata.name"},
		{"no image", func(in *Input) { in.Config.Image = nil }, errdefs.ErrInvalidArgument, "image.image"},
		{"nil sandbox", func(in *Input) { in.Sandbox = nil }, errdefs.ErrInvalidArgument, "sandbox config"},
		{"no rootfs", func(in *Input) { in.RootfsPath = "" }, errdefs.ErrInvalidArgument, "rootfs"},
		{"missing device", func(in *Input) {
			in.Config.Devices = []*runtime.Device{{ContainerPath: "/dev/x", HostPath: "/nonexistent/x"}}
		}, errdefs.ErrInvalidArgument, "device"},
		{"cdi devices without a registry", func(in *Input) {
			in.Config.CDIDevices = []*runtime.CDIDevice{{Name: "vendor.com/gpu=0"}}
		}, errdefs.ErrFailedPrecondition, "CDI"},
		{"privileged in unprivileged pod", func(in *Input) { sc(*in).Privileged = true }, errdefs.ErrInvalidArgument, "privileged"},
		{"no command", func(in *Input) { in.Config.Command = nil }, errdefs.ErrInvalidArgument, "no command specified"},
		{"selinux on an selinux host", func(in *Input) {
			in.SELinux = true
			sc(*in).SelinuxOptions = &runtime.SELinuxOption{Type: "spc_t"}
		}, errdefs.ErrNotImplemented, "selinux"},
		{"apparmor localhost", func(in *Input) {
			sc(*in).Apparmor = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "p"}
		}, errdefs.ErrFailedPrecondition, "apparmor"},
		{"userns", func(in *Input) {
			in.Sandbox.Linux.SecurityContext.NamespaceOptions = &runtime.NamespaceOption{
				UsernsOptions: &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: []*runtime.IDMapping{{Length: 65536}}},
			}
		}, errdefs.ErrInvalidArgument, "exactly one gid mapping"},
		{"negative memory", func(in *Input) {
			in.Config.Linux.Resources = &runtime.LinuxContainerResources{MemoryLimitInBytes: -1}
		}, errdefs.ErrInvalidArgument, "memory"},
		{"unknown capability", func(in *Input) {
			sc(*in).Capabilities = &runtime.Capability{AddCapabilities: []string{"FLY"}}
		}, errdefs.ErrInvalidArgument, "CAP_FLY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			tt.mutate(&in)
			_, err := Generate(in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err %q does not mention %q", err, tt.msg)
			}
		})
	}
}

func TestArgs(t *testing.T) {
	img := ocispec.ImageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"img-cmd"}}
	tests := []struct {
		name      string
		cmd, args []string
		img       ocispec.ImageConfig
		want      []string
		wantErr   bool
	}{
		{name: "command only", cmd: []string{"/bin/run", "x"}, img: img, want: []string{"/bin/run", "x"}},
		{name: "args only", args: []string{"a", "b"}, img: img, want: []string{"/entry", "a", "b"}},
		{name: "both", cmd: []string{"/bin/run"}, args: []string{"a"}, img: img, want: []string{"/bin/run", "a"}},
		{name: "neither with image", img: img, want: []string{"/entry", "img-cmd"}},
		{name: "neither, image cmd only", img: ocispec.ImageConfig{Cmd: []string{"sh"}}, want: []string{"sh"}},
		{name: "args without entrypoint", args: []string{"echo"}, img: ocispec.ImageConfig{Cmd: []string{"sh"}}, want: []string{"echo"}},
		{name: "neither without image", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			in.Config.Command, in.Config.Args, in.Image = tt.cmd, tt.args, tt.img
			s, err := Generate(in)
			if tt.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want invalid argument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Process.Args, tt.want) {
				t.Fatalf("args = %q, want %q", s.Process.Args, tt.want)
			}
		})
	}
}

func TestEnvAndWorkdir(t *testing.T) {
	in := baseInput()
	in.Image = ocispec.ImageConfig{Env: []string{"PATH=/img/bin", "A=img", "B=img"}, WorkingDir: "/img"}
	in.Config.Envs = []*runtime.KeyValue{{Key: "B", Value: []byte("cfg")}, {Key: "C", Value: []byte("x=y")}, {Key: "B", Value: []byte("last")}}
	s := mustGenerate(t, in)
	want := []string{"PATH=/img/bin", "HOSTNAME=pod-host", "A=img", "B=last", "C=x=y"}
	if !slices.Equal(s.Process.Env, want) {
		t.Fatalf("env = %q, want %q", s.Process.Env, want)
	}
	if s.Process.Cwd != "/img" {
		t.Fatalf("cwd = %q, want image's", s.Process.Cwd)
	}
	in.Config.WorkingDir = "/cfg"
	if s := mustGenerate(t, in); s.Process.Cwd != "/cfg" {
		t.Fatalf("cwd = %q, want config's", s.Process.Cwd)
	}
	in = baseInput()
	s = mustGenerate(t, in)
	if s.Process.Cwd != "/" || !slices.Contains(s.Process.Env, defaultPathEnv) {
		t.Fatalf("defaults: cwd %q env %q", s.Process.Cwd, s.Process.Env)
	}
}

func TestUser(t *testing.T) {
	i64 := func(v int64) *runtime.Int64Value { return &runtime.Int64Value{Value: v} }
	tests := []struct {
		name      string
		imageUser string
		sc        *runtime.LinuxContainerSecurityContext
		noLookup  bool
		want      specs.User
		wantErr   error
	}{
		{name: "default root", want: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 44}}},
		{name: "image uid", imageUser: "1000", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 44, 29}}},
		{name: "image unknown uid", imageUser: "4242", want: specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0}}},
		{name: "image uid:gid", imageUser: "1000:7", want: specs.User{UID: 1000, GID: 7, AdditionalGids: []uint32{7, 44, 29}}},
		{name: "image name", imageUser: "www", want: specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{33}}},
		{name: "image name:group", imageUser: "app:video", want: specs.User{UID: 1000, GID: 44, AdditionalGids: []uint32{44, 29}}},
		{name: "image uid:group", imageUser: "33:audio", want: specs.User{UID: 33, GID: 29, AdditionalGids: []uint32{29}}},
		{name: "missing name", imageUser: "nobody", wantErr: errdefs.ErrInvalidArgument},
		{name: "missing group", imageUser: "app:nogroup", wantErr: errdefs.ErrInvalidArgument},
		{name: "name without lookup", imageUser: "app", noLookup: true, wantErr: errdefs.ErrInvalidArgument},
		{name: "numeric without lookup", imageUser: "5:6", noLookup: true, want: specs.User{UID: 5, GID: 6, AdditionalGids: []uint32{6}}},
		{name: "run_as_user wins", imageUser: "www", sc: &runtime.LinuxContainerSecurityContext{RunAsUser: i64(1000)},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 44, 29}}},
		{name: "run_as_user and group", sc: &runtime.LinuxContainerSecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(3)},
			want: specs.User{UID: 1000, GID: 3, AdditionalGids: []uint32{3, 44, 29}}},
		{name: "run_as_username", sc: &runtime.LinuxContainerSecurityContext{RunAsUsername: "app"},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 44, 29}}},
		{name: "run_as_username missing", sc: &runtime.LinuxContainerSecurityContext{RunAsUsername: "ghost"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "group without user", sc: &runtime.LinuxContainerSecurityContext{RunAsGroup: i64(3)}, wantErr: errdefs.ErrInvalidArgument},
		{name: "both users", sc: &runtime.LinuxContainerSecurityContext{RunAsUser: i64(1), RunAsUsername: "app"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "negative uid", sc: &runtime.LinuxContainerSecurityContext{RunAsUser: i64(-1)}, wantErr: errdefs.ErrInvalidArgument},
		{name: "supplemental merge", sc: &runtime.LinuxContainerSecurityContext{RunAsUser: i64(1000), SupplementalGroups: []int64{2000, 44}},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 44, 29, 2000}}},
		{name: "supplemental strict", sc: &runtime.LinuxContainerSecurityContext{RunAsUser: i64(1000), SupplementalGroups: []int64{2000},
			SupplementalGroupsPolicy: runtime.SupplementalGroupsPolicy_Strict},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 2000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			in.Image.User = tt.imageUser
			if tt.sc != nil {
				in.Config.Linux.SecurityContext = tt.sc
			}
			if !tt.noLookup {
				in.Users = newFakeUsers()
			}
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
			got := s.Process.User
			if got.UID != tt.want.UID || got.GID != tt.want.GID || !slices.Equal(got.AdditionalGids, tt.want.AdditionalGids) {
				t.Fatalf("user = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	s := mustGenerate(t, baseInput())
	if s.Root.Path != "/run/berth/rootfs/c1" || s.Root.Readonly {
		t.Fatalf("root = %+v", s.Root)
	}
	if s.Linux.CgroupsPath != "/berth/c1" {
		t.Fatalf("cgroups path = %q", s.Linux.CgroupsPath)
	}
	if s.Hostname != "pod-host" {
		t.Fatalf("hostname = %q", s.Hostname)
	}
	if !slices.Equal(s.Process.Capabilities.Bounding, defaultCaps) || len(s.Process.Capabilities.Inheritable) != 0 {
		t.Fatalf("caps = %+v", s.Process.Capabilities)
	}
	if !slices.Equal(s.Linux.MaskedPaths, defaultMaskedPaths) || !slices.Equal(s.Linux.ReadonlyPaths, defaultReadonlyPaths) {
		t.Fatalf("masked %q readonly %q", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if d := s.Linux.Resources.Devices; len(d) < 2 || d[0].Allow || d[0].Access != "rwm" {
		t.Fatalf("device rules = %+v, want deny-all first", d)
	}
	if s.Process.OOMScoreAdj != nil || s.Linux.Seccomp != nil || s.Process.NoNewPrivileges {
		t.Fatalf("unexpected oom %v seccomp %v nnp %v", s.Process.OOMScoreAdj, s.Linux.Seccomp, s.Process.NoNewPrivileges)
	}
	a := s.Annotations
	if a[AnnotationContainerType] != "container" || a[AnnotationContainerName] != "app" || a[AnnotationSandboxUID] != "u1" {
		t.Fatalf("annotations = %v", a)
	}
	in := baseInput()
	in.CgroupParent = "/kubepods/besteffort/podu1"
	in.Config.Annotations = map[string]string{"k": "v"}
	sc(in).ReadonlyRootfs = true
	in.Config.Tty = true
	s = mustGenerate(t, in)
	if s.Linux.CgroupsPath != "/kubepods/besteffort/podu1/c1" || !s.Root.Readonly || !s.Process.Terminal || s.Annotations["k"] != "v" {
		t.Fatalf("cgroups %q readonly %v terminal %v annotations %v", s.Linux.CgroupsPath, s.Root.Readonly, s.Process.Terminal, s.Annotations)
	}
}

func TestMinimalConfigWithoutLinux(t *testing.T) {
	in := Input{
		ID:         "c",
		Config:     &runtime.ContainerConfig{Metadata: &runtime.ContainerMetadata{Name: "n"}, Image: &runtime.ImageSpec{Image: "i"}},
		Sandbox:    &runtime.PodSandboxConfig{},
		Image:      ocispec.ImageConfig{Cmd: []string{"sh"}},
		RootfsPath: "/r",
	}
	s := mustGenerate(t, in)
	// CRI default PID mode is POD; with no pod namespace to join it is new.
	if got := nsMap(s); len(got) != 5 || got["pid"] != "" || got["network"] != "" {
		t.Fatalf("namespaces = %v", s.Linux.Namespaces)
	}
	if s.Hostname != "" || s.Process.User.UID != 0 || s.Linux.Seccomp != nil {
		t.Fatalf("hostname %q user %+v seccomp %v", s.Hostname, s.Process.User, s.Linux.Seccomp)
	}
}
