package server

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
)

// StartContainer starts a created container.
func (s *Server) StartContainer(ctx context.Context, r *runtime.StartContainerRequest) (*runtime.StartContainerResponse, error) {
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(c.ID)
	defer unlock()
	if c, err = s.store.Container(c.ID); err != nil {
		return nil, err
	}
	if c.Status.State != store.ContainerCreated {
		return nil, fmt.Errorf("container %q is %s, not CREATED: %w", c.ID, c.Status.State, errdefs.ErrFailedPrecondition)
	}
	sb, err := s.store.Sandbox(c.SandboxID)
	if err != nil {
		return nil, err
	}
	if sb.Status.State != store.SandboxReady {
		return nil, fmt.Errorf("sandbox %q of container %q is not ready: %w", sb.ID, c.ID, errdefs.ErrFailedPrecondition)
	}
	t := s.task(c.ID)
	if t == nil {
		return nil, fmt.Errorf("container %q has no shim: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if err := s.nri.StartContainer(ctx, sb, c); err != nil {
		return nil, err
	}
	started := time.Now().UnixNano()
	pid, err := s.startTask(ctx, t, c)
	if err != nil {
		// A container that failed to start is over: record why and let
		// the monitor release the shim once the init process is killed.
		if _, uerr := s.store.UpdateContainerStatus(c.ID, func(st store.ContainerStatus) (store.ContainerStatus, error) {
			st.Reason = "StartError"
			st.Message = err.Error()
			return st, nil
		}); uerr != nil {
			interceptor.Logger(ctx).Error("record start error", "error", uerr)
		}
		// Even when ctx has run out (a restore that hit its bound): a
		// container left CREATED with a live shim is a leak.
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = t.Kill(kctx, 9, true)
		cancel()
		return nil, fmt.Errorf("start container %q: %w", c.ID, err)
	}
	_, err = s.store.UpdateContainerStatus(c.ID, func(st store.ContainerStatus) (store.ContainerStatus, error) {
		st.StartedAt = started
		// The process may already have exited and been recorded.
		if st.State == store.ContainerCreated {
			st.State = store.ContainerRunning
			st.Pid = pid
		}
		return st, nil
	})
	if err != nil {
		return nil, err
	}
	s.containerEvent(c.ID, c.SandboxID, runtime.ContainerEventType_CONTAINER_STARTED_EVENT)
	if cur, err := s.store.Container(c.ID); err == nil {
		s.nri.PostStartContainer(ctx, sb, cur)
	}
	interceptor.Logger(ctx).Info("container started", "pid", pid)
	return &runtime.StartContainerResponse{}, nil
}

// startTask starts c's process, or restores it from its checkpoint with
// CRIU bounded by runtime.checkpoint_timeout and ctx.
func (s *Server) startTask(ctx context.Context, t task.Task, c store.Container) (int, error) {
	if !c.Restore {
		return t.Start(ctx)
	}
	bound := s.criuBound(ctx)
	cctx, cancel := criuCallContext(ctx, bound)
	defer cancel()
	return t.Restore(cctx, bound)
}
