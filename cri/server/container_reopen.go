package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

// ReopenContainerLog has the shim reopen the container's log file after
// kubelet renamed it for rotation. The shim writes whole lines, so the
// switch loses or splits none. CRI: only a running container can do so.
func (s *Server) ReopenContainerLog(ctx context.Context, r *runtime.ReopenContainerLogRequest) (*runtime.ReopenContainerLogResponse, error) {
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	t := s.task(c.ID)
	if c.Status.State != store.ContainerRunning || t == nil {
		return nil, fmt.Errorf("container %q is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if c.LogPath == "" {
		return &runtime.ReopenContainerLogResponse{}, nil
	}
	if err := t.ReopenLog(ctx); err != nil {
		return nil, fmt.Errorf("reopen log of container %q: %w", c.ID, err)
	}
	return &runtime.ReopenContainerLogResponse{}, nil
}
