package specgen

import (
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// checkRRO applies the CRI rules for Mount.recursive_read_only: it needs
// readonly=true and PROPAGATION_PRIVATE (a recursively read-only tree
// cannot receive mounts from the host), and a runtime that knows the
// "rro" option (kubelet only asks when Status advertises it).
func checkRRO(m *runtime.Mount, supported bool) error {
	dst := m.GetContainerPath()
	switch {
	case !m.GetReadonly():
		return fmt.Errorf("recursive read-only mount at %q needs readonly: %w", dst, errdefs.ErrInvalidArgument)
	case m.GetPropagation() != runtime.MountPropagation_PROPAGATION_PRIVATE:
		return fmt.Errorf("recursive read-only mount at %q needs propagation PRIVATE, not %s: %w", dst, m.GetPropagation(), errdefs.ErrInvalidArgument)
	case !supported:
		return fmt.Errorf("recursive read-only mount at %q: the runtime handler does not support it: %w", dst, errdefs.ErrInvalidArgument)
	}
	return nil
}
