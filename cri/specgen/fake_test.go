package specgen

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeUsers is an in-memory /etc/passwd + /etc/group.
type fakeUsers struct {
	users   map[string][2]uint32 // name -> uid, gid
	groups  map[string]uint32    // name -> gid
	members map[string][]uint32  // user name -> gids listing it
}

func newFakeUsers() *fakeUsers {
	return &fakeUsers{
		users:   map[string][2]uint32{"root": {0, 0}, "app": {1000, 1000}, "www": {33, 33}},
		groups:  map[string]uint32{"root": 0, "app": 1000, "www": 33, "video": 44, "audio": 29},
		members: map[string][]uint32{"app": {44, 29}, "root": {44}},
	}
}

func (f *fakeUsers) LookupUser(name string) (uint32, uint32, error) {
	if u, ok := f.users[name]; ok {
		return u[0], u[1], nil
	}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		for _, u := range f.users {
			if u[0] == uint32(n) {
				return u[0], u[1], nil
			}
		}
	}
	return 0, 0, fmt.Errorf("user %q: %w", name, errdefs.ErrNotFound)
}

func (f *fakeUsers) LookupGroup(name string) (uint32, error) {
	if g, ok := f.groups[name]; ok {
		return g, nil
	}
	return 0, fmt.Errorf("group %q: %w", name, errdefs.ErrNotFound)
}

func (f *fakeUsers) GroupsOf(user string, _ uint32) []uint32 {
	if n, err := strconv.ParseUint(user, 10, 32); err == nil {
		for name, u := range f.users {
			if u[0] == uint32(n) {
				user = name
			}
		}
	}
	return f.members[user]
}

// baseInput is a minimal valid request; tests mutate copies of it.
func baseInput() Input {
	return Input{
		ID: "c1",
		Config: &runtime.ContainerConfig{
			Metadata: &runtime.ContainerMetadata{Name: "app"},
			Image:    &runtime.ImageSpec{Image: "busybox:latest"},
			Command:  []string{"/bin/sh"},
			Linux: &runtime.LinuxContainerConfig{
				SecurityContext: &runtime.LinuxContainerSecurityContext{
					NamespaceOptions: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER},
				},
			},
		},
		Sandbox: &runtime.PodSandboxConfig{
			Metadata: &runtime.PodSandboxMetadata{Name: "pod", Namespace: "default", Uid: "u1"},
			Hostname: "pod-host",
			Linux:    &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{}},
		},
		RootfsPath: "/run/berth/rootfs/c1",
		Namespaces: SandboxNamespaces{Net: "/run/berth/netns/p", IPC: "/run/berth/ipc/p", UTS: "/run/berth/uts/p"},
	}
}

func sc(in Input) *runtime.LinuxContainerSecurityContext {
	return in.Config.Linux.SecurityContext
}

func containsStr(s, sub string) bool { return strings.Contains(s, sub) }
