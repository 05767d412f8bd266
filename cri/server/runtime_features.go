package server

import (
	"fmt"
	"slices"
	"syscall"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/specgen"
)

// runtimeHandlers is Status's list of handlers with what each supports.
func (s *Server) runtimeHandlers() []*runtime.RuntimeHandler {
	names := make([]string, 0, len(s.cfg.Runtime.Handlers))
	for name := range s.cfg.Runtime.Handlers {
		names = append(names, name)
	}
	slices.Sort(names)
	// The default handler is listed under "" too, as containerd does:
	// kubelet and critest look features up by the RuntimeClass handler
	// name, which is "" for pods that name none.
	if _, ok := s.cfg.Runtime.Handlers[s.cfg.Runtime.DefaultHandler]; ok {
		names = append([]string{""}, names...)
	}
	out := make([]*runtime.RuntimeHandler, 0, len(names))
	for _, name := range names {
		f := s.handlerFeatures(name)
		if name == "" {
			f = s.handlerFeatures(s.cfg.Runtime.DefaultHandler)
		}
		out = append(out, &runtime.RuntimeHandler{
			Name:     name,
			Features: &runtime.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: f.RecursiveReadOnly, UserNamespaces: f.UserNamespaces},
		})
	}
	return out
}

// runtimeFeatures is what berth itself implements, whatever the handler
// (kubelet turns them into the node's declared features); each is proven
// by an e2e test.
func runtimeFeatures() *runtime.RuntimeFeatures {
	return &runtime.RuntimeFeatures{
		// Strict and Merge are both applied from the image's /etc/group
		// (specgen.ResolveUser).
		SupplementalGroupsPolicy: true,
		// A user namespace pod on the node's network gets the host's /sys
		// bound read-only (specgen's applyUserns), since the kernel refuses
		// a sysfs mount for a network namespace the pod's user namespace
		// does not own. Whether a handler can make user namespaces at all
		// is its own user_namespaces feature.
		UserNamespacesHostNetwork: true,
		// Mount.mount_options: the per-mount flags specgen accepts
		// (noexec, nosuid, nodev and their inverses, the atime flags).
		MountOptions: true,
	}
}

// runtimeHandler resolves a request's handler name, "" being the default
// one; the CRI has an unknown handler refused (RunPodSandbox, and
// ImageSpec.runtime_handler).
func (s *Server) runtimeHandler(name string) (string, error) {
	if name == "" {
		name = s.cfg.Runtime.DefaultHandler
	}
	if _, ok := s.cfg.Runtime.Handlers[name]; !ok {
		return "", fmt.Errorf("runtime handler %q is not configured: %w", name, errdefs.ErrInvalidArgument)
	}
	return name, nil
}

// checkPodUserns refuses a pod whose user namespace request is malformed
// (InvalidArgument, as critest expects from RunPodSandbox) or that asks
// for one the handler cannot make.
func (s *Server) checkPodUserns(cfg *runtime.PodSandboxConfig, handler string) error {
	u := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	if err := specgen.ValidateUserns(u); err != nil {
		return err
	}
	if _, ok := specgen.PodUserns(cfg); !ok {
		return nil
	}
	if !s.handlerFeatures(handler).UserNamespaces {
		return fmt.Errorf("runtime handler %q does not support user namespaces: %w", handler, errdefs.ErrInvalidArgument)
	}
	return nil
}

// infraIDMaps converts a pod's mappings for the sandbox controller, which
// puts a shared-PID pod's infra process in the pod's user namespace.
func infraIDMaps(cfg *runtime.PodSandboxConfig) (uids, gids []syscall.SysProcIDMap) {
	m, ok := specgen.PodUserns(cfg)
	if !ok {
		return nil, nil
	}
	return infraIDMapsOf(m)
}

func infraIDMapsOf(m specgen.IDMappings) (uids, gids []syscall.SysProcIDMap) {
	conv := func(in []specs.LinuxIDMapping) []syscall.SysProcIDMap {
		out := make([]syscall.SysProcIDMap, 0, len(in))
		for _, x := range in {
			out = append(out, syscall.SysProcIDMap{ContainerID: int(x.ContainerID), HostID: int(x.HostID), Size: int(x.Size)})
		}
		return out
	}
	return conv(m.UIDs), conv(m.GIDs)
}
