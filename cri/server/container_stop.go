package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
)

// killWait bounds the wait for a container to go after SIGKILL; a process
// stuck in the kernel is reported rather than waited on forever.
const killWait = 30 * time.Second

// signalFailWait bounds the wait for an exit after a signal failed for a
// reason other than a lost shim; a variable so tests can shorten it.
var signalFailWait = 5 * time.Second

// StopContainer sends the stop signal, then SIGKILL after the timeout. Per
// the CRI it succeeds for a container that is already stopped or gone.
func (s *Server) StopContainer(ctx context.Context, r *runtime.StopContainerRequest) (*runtime.StopContainerResponse, error) {
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		if errdefs.IsNotFound(err) {
			return &runtime.StopContainerResponse{}, nil
		}
		return nil, err
	}
	unlock := s.locks.lock(c.ID)
	defer unlock()
	if err := s.stopContainer(ctx, c, r.GetTimeout()); err != nil {
		return nil, err
	}
	s.nriContainerStopped(ctx, c)
	return &runtime.StopContainerResponse{}, nil
}

func (s *Server) stopContainer(ctx context.Context, c store.Container, timeout int64) error {
	t := s.task(c.ID)
	if t == nil {
		return nil // nothing runs: never started a shim, or already exited
	}
	log := interceptor.Logger(ctx)
	if timeout > 0 && c.Status.State == store.ContainerRunning {
		sig, err := parseSignal(c.StopSignal)
		if err != nil {
			log.Warn("image stop signal unusable, using SIGTERM", "error", err)
			sig = unix.SIGTERM
		}
		if err := t.Kill(ctx, sig, false); err != nil {
			return s.exitingAnyway(ctx, t, fmt.Errorf("signal container %q: %w", c.ID, err))
		}
		timer := time.NewTimer(time.Duration(timeout) * time.Second)
		defer timer.Stop()
		select {
		case <-t.Done():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			log.Info("stop timeout reached, killing", "timeout", timeout)
		}
	}
	if err := t.Kill(ctx, unix.SIGKILL, true); err != nil {
		return s.exitingAnyway(ctx, t, fmt.Errorf("kill container %q: %w", c.ID, err))
	}
	select {
	case <-t.Done():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(killWait):
		return fmt.Errorf("container %q did not exit %s after SIGKILL: %w", c.ID, killWait, context.DeadlineExceeded)
	}
}

// exitingAnyway decides what a failed signal means: a container that exited
// meanwhile has its shim torn down under the signal, which then fails with
// NotFound ("deleted") or Unavailable ("connection lost"); that is a stop
// that succeeded. Either way the exit is on its way through the task's
// watcher: that wait gets killWait, since on a loaded node (hundreds of
// shims exiting at once after a restart) the watcher can take longer than
// the short wait other errors get.
func (s *Server) exitingAnyway(ctx context.Context, t task.Task, err error) error {
	wait := signalFailWait
	if errdefs.IsUnavailable(err) || errdefs.IsNotFound(err) {
		wait = killWait
	}
	select {
	case <-t.Done():
		return nil
	case <-ctx.Done():
		return err
	case <-time.After(wait):
		return err
	}
}

// RemoveContainer kills the container if it runs and removes all of it but
// its log, which belongs to kubelet. Per the CRI it succeeds for a
// container that is already gone.
func (s *Server) RemoveContainer(ctx context.Context, r *runtime.RemoveContainerRequest) (*runtime.RemoveContainerResponse, error) {
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		if errdefs.IsNotFound(err) {
			return &runtime.RemoveContainerResponse{}, nil
		}
		return nil, err
	}
	unlock := s.locks.lock(c.ID)
	defer unlock()
	if err := s.removeContainer(ctx, c); err != nil {
		return nil, err
	}
	return &runtime.RemoveContainerResponse{}, nil
}

func (s *Server) removeContainer(ctx context.Context, c store.Container) error {
	if _, err := s.store.UpdateContainerStatus(c.ID, func(st store.ContainerStatus) (store.ContainerStatus, error) {
		st.Removing = true
		return st, nil
	}); err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return err
	}
	if err := s.stopContainer(ctx, c, 0); err != nil {
		return err
	}
	s.nriContainerStopped(ctx, c)
	s.nri.RemoveContainer(ctx, s.sandboxOf(c), c)
	// A shim can outlive its task only across a daemon crash; make sure
	// nothing of the container still runs before its files go.
	if err := s.tasks.Release(ctx, c); err != nil {
		return err
	}
	if err := s.removeVolumes(ctx, c); err != nil {
		return err
	}
	if err := s.images.RemoveRootfs(ctx, c.ID, c.Rootfs); err != nil {
		return fmt.Errorf("remove rootfs of container %q: %w", c.ID, err)
	}
	if err := os.RemoveAll(c.Bundle); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove bundle of container %q: %w", c.ID, err)
	}
	if err := s.store.DeleteContainer(c.ID); err != nil {
		return err
	}
	s.stats.ForgetContainer(c.ID)
	s.nriStopped.Delete(c.ID)
	s.containerEvent(c.ID, c.SandboxID, runtime.ContainerEventType_CONTAINER_DELETED_EVENT)
	interceptor.Logger(ctx).Info("container removed")
	return nil
}
