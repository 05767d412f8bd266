package specgen

import (
	"fmt"
	"path"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ValidateUserns checks a pod's userns_options the way kubelet's contract
// reads (and critest's UserNamespaces specs check): NODE (or none) is the
// host's user namespace; POD needs exactly one uid and one gid mapping,
// each mapping container id 0; CONTAINER and TARGET do not exist for user
// namespaces.
func ValidateUserns(u *runtime.UserNamespace) error {
	if u == nil {
		return nil
	}
	switch u.GetMode() {
	case runtime.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return fmt.Errorf("user namespace mode NODE takes no id mappings: %w", errdefs.ErrInvalidArgument)
		}
		return nil
	case runtime.NamespaceMode_POD:
	default:
		return fmt.Errorf("user namespace mode %s is not supported (only POD and NODE): %w", u.GetMode(), errdefs.ErrInvalidArgument)
	}
	for kind, ms := range map[string][]*runtime.IDMapping{"uid": u.GetUids(), "gid": u.GetGids()} {
		if len(ms) != 1 {
			return fmt.Errorf("user namespace needs exactly one %s mapping, got %d: %w", kind, len(ms), errdefs.ErrInvalidArgument)
		}
		m := ms[0]
		switch {
		case m.GetContainerId() != 0:
			return fmt.Errorf("user namespace %s mapping must map container id 0, maps %d: %w", kind, m.GetContainerId(), errdefs.ErrInvalidArgument)
		case m.GetLength() == 0:
			return fmt.Errorf("user namespace %s mapping has length 0: %w", kind, errdefs.ErrInvalidArgument)
		case uint64(m.GetHostId())+uint64(m.GetLength()) > 1<<32-1:
			return fmt.Errorf("user namespace %s mapping %d+%d overflows: %w", kind, m.GetHostId(), m.GetLength(), errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// IDMappings are a pod's user namespace mappings in OCI form.
type IDMappings struct {
	UIDs, GIDs []specs.LinuxIDMapping
}

// HostRoot is the host uid and gid that container root maps to.
func (m IDMappings) HostRoot() (uid, gid uint32) {
	return m.UIDs[0].HostID, m.GIDs[0].HostID
}

// PodUserns returns the pod's user namespace mappings, ok false when the pod
// runs in the host's user namespace. The pod config decides, as a user
// namespace is shared by the whole pod; Generate refuses a container whose
// own options disagree.
func PodUserns(pod *runtime.PodSandboxConfig) (IDMappings, bool) {
	u := pod.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	// NamespaceMode_POD is the zero value: options left out are the host's.
	if u == nil || u.GetMode() != runtime.NamespaceMode_POD || ValidateUserns(u) != nil {
		return IDMappings{}, false
	}
	conv := func(in []*runtime.IDMapping) []specs.LinuxIDMapping {
		out := make([]specs.LinuxIDMapping, 0, len(in))
		for _, m := range in {
			out = append(out, specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
		}
		return out
	}
	return IDMappings{UIDs: conv(u.GetUids()), GIDs: conv(u.GetGids())}, true
}

// checkUserns validates both the pod's and the container's userns options
// and refuses a container that asks for other mappings than its pod's.
func checkUserns(in Input) error {
	pod := in.Sandbox.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	ctr := in.Config.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	for _, u := range []*runtime.UserNamespace{pod, ctr} {
		if err := ValidateUserns(u); err != nil {
			return err
		}
	}
	if ctr == nil {
		return nil
	}
	if ctr.GetMode() != pod.GetMode() || !sameMappings(ctr.GetUids(), pod.GetUids()) || !sameMappings(ctr.GetGids(), pod.GetGids()) {
		return fmt.Errorf("container user namespace options differ from the pod's: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func sameMappings(a, b []*runtime.IDMapping) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].GetContainerId() != b[i].GetContainerId() || a[i].GetHostId() != b[i].GetHostId() || a[i].GetLength() != b[i].GetLength() {
			return false
		}
	}
	return true
}

// applyUserns puts the container in the pod's user namespace: the one of
// the pod's infra process when the pod has one (it shares a PID namespace,
// which that user namespace owns), else a new one per container with the
// pod's mappings; equal mappings give equal file ownership, which is what
// sharing a user namespace is for.
//
// Mounts the user namespace cannot make are adjusted: mqueue and sysfs
// belong to the pod's IPC and network namespaces, which the host's user
// namespace owns, so the kernel refuses them (EPERM). /dev/mqueue is left
// out (mq_open works without the view; binding the host's would expose
// its queues) and /sys becomes a read-only bind of the host's, as runc
// does for rootless containers. CRI volumes become idmapped so files keep
// their owners as seen from inside.
func applyUserns(s *specs.Spec, in Input) {
	m, ok := PodUserns(in.Sandbox)
	if !ok {
		return
	}
	if in.Namespaces.User != "" {
		// runc reads the mappings of a namespace it joins; giving them too
		// is deprecated.
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: in.Namespaces.User})
	} else {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = m.UIDs
		s.Linux.GIDMappings = m.GIDs
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.UTSNamespace && ns.Path != "" {
			// The pinned UTS namespace has the pod's hostname already and
			// is the host user namespace's: sethostname would be EPERM.
			s.Hostname = ""
		}
	}
	mounts := s.Mounts[:0]
	for _, mt := range s.Mounts {
		switch {
		case mt.Type == "mqueue":
			continue
		case mt.Type == "sysfs":
			mt = specs.Mount{Destination: mt.Destination, Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
		case mt.Type == "bind" && isCRIMount(in, mt.Destination):
			mt.UIDMappings, mt.GIDMappings = m.UIDs, m.GIDs
		}
		mounts = append(mounts, mt)
	}
	s.Mounts = mounts
}

func isCRIMount(in Input, dst string) bool {
	for _, m := range in.Config.GetMounts() {
		if m.GetHostPath() != "" && path.Clean(m.GetContainerPath()) == dst {
			return true
		}
	}
	return false
}
