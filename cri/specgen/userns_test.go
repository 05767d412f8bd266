package specgen

import (
	"errors"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func idmap(cid, host, n uint32) []*runtime.IDMapping {
	return []*runtime.IDMapping{{ContainerId: cid, HostId: host, Length: n}}
}

func TestValidateUserns(t *testing.T) {
	two := append(idmap(0, 1000, 10), idmap(10, 5000, 10)...)
	for _, tc := range []struct {
		name string
		u    *runtime.UserNamespace
		ok   bool
	}{
		{"none", nil, true},
		{"node", &runtime.UserNamespace{Mode: runtime.NamespaceMode_NODE}, true},
		{"pod", &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: idmap(0, 1000, 65536), Gids: idmap(0, 1000, 65536)}, true},
		{"pod without mappings", &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD}, false},
		{"two mappings", &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: two, Gids: two}, false},
		{"0 unmapped", &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: idmap(1, 1000, 10), Gids: idmap(1, 1000, 10)}, false},
		{"gid 0 unmapped", &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: idmap(0, 1000, 10), Gids: idmap(1, 1000, 10)}, false},
		{"zero length", &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: idmap(0, 1000, 0), Gids: idmap(0, 1000, 0)}, false},
		{"overflow", &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: idmap(0, 1<<32-10, 100), Gids: idmap(0, 1000, 10)}, false},
		{"container mode", &runtime.UserNamespace{Mode: runtime.NamespaceMode_CONTAINER}, false},
		{"target mode", &runtime.UserNamespace{Mode: runtime.NamespaceMode_TARGET}, false},
		{"node with mappings", &runtime.UserNamespace{Mode: runtime.NamespaceMode_NODE, Uids: idmap(0, 1000, 10)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateUserns(tc.u)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, errdefs.ErrInvalidArgument)) {
				t.Errorf("ValidateUserns = %v, want ok=%v or invalid argument", err, tc.ok)
			}
		})
	}
}

func usernsInput(joinPath string) Input {
	in := baseInput()
	u := &runtime.UserNamespace{Mode: runtime.NamespaceMode_POD, Uids: idmap(0, 100000, 65536), Gids: idmap(0, 200000, 65536)}
	in.Sandbox.Linux.SecurityContext.NamespaceOptions = &runtime.NamespaceOption{UsernsOptions: u}
	in.Config.Mounts = []*runtime.Mount{{HostPath: "/data", ContainerPath: "/data/"}}
	in.Namespaces.User = joinPath
	return in
}

func TestUsernsSpec(t *testing.T) {
	for _, join := range []string{"", "/proc/42/ns/user"} {
		t.Run("join="+join, func(t *testing.T) {
			s := mustGenerate(t, usernsInput(join))
			i := slices.IndexFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace })
			if i < 0 || s.Linux.Namespaces[i].Path != join {
				t.Fatalf("namespaces %v: want a user namespace at %q", s.Linux.Namespaces, join)
			}
			wantU := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
			wantG := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
			if join == "" && (!slices.Equal(s.Linux.UIDMappings, wantU) || !slices.Equal(s.Linux.GIDMappings, wantG)) {
				t.Errorf("mappings %v %v", s.Linux.UIDMappings, s.Linux.GIDMappings)
			}
			if join != "" && (len(s.Linux.UIDMappings) > 0 || len(s.Linux.GIDMappings) > 0) {
				t.Errorf("joining %s, yet mappings given: runc refuses both", join)
			}
			if s.Hostname != "" {
				t.Errorf("hostname %q set in the pinned UTS namespace", s.Hostname)
			}
			for _, m := range s.Mounts {
				switch {
				case m.Type == "mqueue" || m.Type == "sysfs":
					t.Errorf("mount %s of type %s cannot be made in the user namespace", m.Destination, m.Type)
				case m.Destination == "/sys" && (m.Source != "/sys" || !slices.Contains(m.Options, "ro")):
					t.Errorf("/sys = %+v, want a read-only bind", m)
				case m.Destination == "/data" && (!slices.Equal(m.UIDMappings, wantU) || !slices.Equal(m.GIDMappings, wantG)):
					t.Errorf("volume /data not idmapped: %+v", m)
				case m.Destination == "/etc/hosts" && len(m.UIDMappings) > 0:
					t.Errorf("pod file /etc/hosts idmapped: %+v", m)
				}
			}
		})
	}
	s := mustGenerate(t, baseInput())
	if slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.UserNamespace }) || s.Hostname == "" {
		t.Errorf("pod without userns options got a user namespace (%v) or lost its hostname", s.Linux.Namespaces)
	}
}

func TestUsernsContainerMismatch(t *testing.T) {
	in := usernsInput("")
	in.Config.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtime.UserNamespace{
		Mode: runtime.NamespaceMode_POD, Uids: idmap(0, 1, 10), Gids: idmap(0, 1, 10),
	}
	if _, err := Generate(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("container mappings unlike the pod's: %v, want invalid argument", err)
	}
}

func TestRecursiveReadOnlyMount(t *testing.T) {
	rro := func(m *runtime.Mount) Input {
		in := baseInput()
		in.RecursiveReadOnly = true
		m.HostPath, m.ContainerPath, m.RecursiveReadOnly = "/h", "/c", true
		in.Config.Mounts = []*runtime.Mount{m}
		return in
	}
	s := mustGenerate(t, rro(&runtime.Mount{Readonly: true}))
	i := slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/c" })
	if i < 0 || !slices.Contains(s.Mounts[i].Options, "rro") || slices.Contains(s.Mounts[i].Options, "ro") || slices.Contains(s.Mounts[i].Options, "rw") {
		t.Errorf("mount %+v, want rro instead of ro/rw", s.Mounts)
	}
	for name, in := range map[string]Input{
		"not readonly":      rro(&runtime.Mount{}),
		"host-to-container": rro(&runtime.Mount{Readonly: true, Propagation: runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}),
		"bidirectional":     rro(&runtime.Mount{Readonly: true, Propagation: runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL}),
	} {
		if _, err := Generate(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want invalid argument", name, err)
		}
	}
}
