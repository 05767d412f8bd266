package specgen

import (
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// nsModes is the namespace configuration of the container, taken from its
// own security context (kubelet copies the pod's there) or the pod's.
type nsModes struct {
	hostNetwork bool
	hostIPC     bool
	pid         runtime.NamespaceMode
}

func namespaceModes(in Input) nsModes {
	opts := in.Config.GetLinux().GetSecurityContext().GetNamespaceOptions()
	pod := in.Sandbox.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if opts == nil {
		opts = pod
	}
	m := nsModes{
		hostNetwork: opts.GetNetwork() == runtime.NamespaceMode_NODE,
		hostIPC:     opts.GetIpc() == runtime.NamespaceMode_NODE,
		pid:         opts.GetPid(),
	}
	// Network and IPC exist once per pod: the pod's mode wins if the
	// container's options disagree.
	if pod != nil {
		m.hostNetwork = pod.GetNetwork() == runtime.NamespaceMode_NODE
		m.hostIPC = pod.GetIpc() == runtime.NamespaceMode_NODE
	}
	return m
}

func applyNamespaces(s *specs.Spec, in Input, m nsModes) error {
	if err := checkUserns(in); err != nil {
		return err
	}
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if !m.hostNetwork {
		// A host-network pod also shares the host's UTS namespace
		// (kubelet: hostNetwork implies the node's hostname).
		ns = append(ns,
			specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: in.Namespaces.Net},
			specs.LinuxNamespace{Type: specs.UTSNamespace, Path: in.Namespaces.UTS})
	}
	if !m.hostIPC {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: in.Namespaces.IPC})
	}
	switch m.pid {
	case runtime.NamespaceMode_CONTAINER:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	case runtime.NamespaceMode_POD:
		// No pod PID namespace to join (no infra process): a new one.
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: in.Namespaces.PID})
	case runtime.NamespaceMode_TARGET:
		if in.Namespaces.PID == "" {
			return fmt.Errorf("pid namespace mode TARGET needs the target's namespace path: %w", errdefs.ErrInvalidArgument)
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: in.Namespaces.PID})
	case runtime.NamespaceMode_NODE:
	default:
		return fmt.Errorf("unknown pid namespace mode %d: %w", m.pid, errdefs.ErrInvalidArgument)
	}
	s.Linux.Namespaces = ns
	return nil
}
