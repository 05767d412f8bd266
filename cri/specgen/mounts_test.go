package specgen

import (
	"errors"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func findMount(s *specs.Spec, dst string) (specs.Mount, int) {
	for i, m := range s.Mounts {
		if m.Destination == dst {
			return m, i
		}
	}
	return specs.Mount{}, -1
}

func TestMounts(t *testing.T) {
	tests := []struct {
		name     string
		mounts   []*runtime.Mount
		wantOpts map[string][]string // destination -> options
		wantProp string
		wantErr  error
	}{
		{
			name: "private rw and ro",
			mounts: []*runtime.Mount{
				{ContainerPath: "/data", HostPath: "/srv/data"},
				{ContainerPath: "/cfg/", HostPath: "/srv/cfg", Readonly: true},
			},
			wantOpts: map[string][]string{"/data": {"rbind", "rprivate", "rw"}, "/cfg": {"rbind", "rprivate", "ro"}},
		},
		{
			name:     "host to container",
			mounts:   []*runtime.Mount{{ContainerPath: "/m", HostPath: "/mnt", Propagation: runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}},
			wantOpts: map[string][]string{"/m": {"rbind", "rslave", "rw"}},
			wantProp: "rslave",
		},
		{
			name: "bidirectional wins",
			mounts: []*runtime.Mount{
				{ContainerPath: "/a", HostPath: "/a", Propagation: runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
				{ContainerPath: "/b", HostPath: "/b", Propagation: runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL},
			},
			wantOpts: map[string][]string{"/b": {"rbind", "rshared", "rw"}},
			wantProp: "rshared",
		},
		{
			name:     "extra options",
			mounts:   []*runtime.Mount{{ContainerPath: "/x", HostPath: "/x", MountOptions: []string{"noexec", "nosuid"}}},
			wantOpts: map[string][]string{"/x": {"rbind", "rprivate", "rw", "noexec", "nosuid"}},
		},
		{name: "bad option", mounts: []*runtime.Mount{{ContainerPath: "/x", HostPath: "/x", MountOptions: []string{"remount"}}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "relative container path", mounts: []*runtime.Mount{{ContainerPath: "data", HostPath: "/x"}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "root container path", mounts: []*runtime.Mount{{ContainerPath: "/..", HostPath: "/x"}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "relative host path", mounts: []*runtime.Mount{{ContainerPath: "/d", HostPath: "x"}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "image volume", mounts: []*runtime.Mount{{ContainerPath: "/d", Image: &runtime.ImageSpec{Image: "i"}}}, wantErr: errdefs.ErrNotImplemented},
		{name: "rro unsupported by runtime", mounts: []*runtime.Mount{{ContainerPath: "/d", HostPath: "/d", Readonly: true, RecursiveReadOnly: true}}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			in.Config.Mounts = tt.mounts
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
			for dst, opts := range tt.wantOpts {
				m, i := findMount(s, dst)
				if i < 0 || m.Type != "bind" || !slices.Equal(m.Options, opts) {
					t.Fatalf("mount %s = %+v, want bind %q", dst, m, opts)
				}
			}
			if s.Linux.RootfsPropagation != tt.wantProp {
				t.Fatalf("rootfs propagation = %q, want %q", s.Linux.RootfsPropagation, tt.wantProp)
			}
		})
	}
}

func TestMountOrder(t *testing.T) {
	in := baseInput()
	in.Config.Mounts = []*runtime.Mount{
		{ContainerPath: "/a/b/c", HostPath: "/h1"},
		{ContainerPath: "/a", HostPath: "/h2"},
		{ContainerPath: "/a/b", HostPath: "/h3"},
		{ContainerPath: "/z", HostPath: "/h4"},
	}
	s := mustGenerate(t, in)
	for i := 1; i < len(s.Mounts); i++ {
		if depth(s.Mounts[i-1].Destination) > depth(s.Mounts[i].Destination) {
			t.Fatalf("mount %q before shallower %q", s.Mounts[i-1].Destination, s.Mounts[i].Destination)
		}
	}
	_, a := findMount(s, "/a")
	_, ab := findMount(s, "/a/b")
	_, abc := findMount(s, "/a/b/c")
	if a < 0 || a >= ab || ab >= abc {
		t.Fatalf("order /a=%d /a/b=%d /a/b/c=%d", a, ab, abc)
	}
	if _, proc := findMount(s, "/proc"); proc < 0 || s.Mounts[0].Destination != "/proc" {
		t.Fatalf("first mount %q, want /proc kept first among siblings", s.Mounts[0].Destination)
	}
}

func TestPodFiles(t *testing.T) {
	files := PodFiles{Hostname: "/p/hostname", Hosts: "/p/hosts", Resolv: "/p/resolv.conf", Shm: "/p/shm"}
	t.Run("all mounted", func(t *testing.T) {
		in := baseInput()
		in.PodFiles = files
		s := mustGenerate(t, in)
		for dst, src := range map[string]string{"/etc/hostname": files.Hostname, "/etc/hosts": files.Hosts, "/etc/resolv.conf": files.Resolv, "/dev/shm": files.Shm} {
			m, i := findMount(s, dst)
			if i < 0 || m.Source != src || m.Type != "bind" || !slices.Contains(m.Options, "rw") {
				t.Fatalf("%s = %+v", dst, m)
			}
		}
		if n := countDest(s, "/dev/shm"); n != 1 {
			t.Fatalf("%d /dev/shm mounts", n)
		}
	})
	t.Run("readonly rootfs", func(t *testing.T) {
		in := baseInput()
		in.PodFiles = files
		sc(in).ReadonlyRootfs = true
		s := mustGenerate(t, in)
		if m, _ := findMount(s, "/etc/hosts"); !slices.Contains(m.Options, "ro") {
			t.Fatalf("/etc/hosts = %+v, want ro", m)
		}
		if m, _ := findMount(s, "/dev/shm"); !slices.Contains(m.Options, "rw") {
			t.Fatalf("/dev/shm = %+v, want rw", m)
		}
	})
	t.Run("user mount wins", func(t *testing.T) {
		in := baseInput()
		in.PodFiles = files
		in.Config.Mounts = []*runtime.Mount{{ContainerPath: "/etc/hosts", HostPath: "/mine"}, {ContainerPath: "/dev/shm", HostPath: "/myshm"}}
		s := mustGenerate(t, in)
		if m, _ := findMount(s, "/etc/hosts"); m.Source != "/mine" || countDest(s, "/etc/hosts") != 1 {
			t.Fatalf("/etc/hosts = %+v (%d mounts)", m, countDest(s, "/etc/hosts"))
		}
		if m, _ := findMount(s, "/dev/shm"); m.Source != "/myshm" || countDest(s, "/dev/shm") != 1 {
			t.Fatalf("/dev/shm = %+v", m)
		}
	})
	t.Run("none => private shm tmpfs", func(t *testing.T) {
		s := mustGenerate(t, baseInput())
		if m, i := findMount(s, "/dev/shm"); i < 0 || m.Type != "tmpfs" {
			t.Fatalf("/dev/shm = %+v", m)
		}
		if _, i := findMount(s, "/etc/hosts"); i >= 0 {
			t.Fatal("/etc/hosts mounted without a pod file")
		}
	})
	t.Run("user /dev replaces default children", func(t *testing.T) {
		in := baseInput()
		in.Config.Mounts = []*runtime.Mount{{ContainerPath: "/dev", HostPath: "/dev"}}
		s := mustGenerate(t, in)
		if countDest(s, "/dev") != 1 || countDest(s, "/dev/pts") != 0 || countDest(s, "/dev/mqueue") != 0 {
			t.Fatalf("mounts = %+v", s.Mounts)
		}
	})
}

func countDest(s *specs.Spec, dst string) int {
	n := 0
	for _, m := range s.Mounts {
		if m.Destination == dst {
			n++
		}
	}
	return n
}
