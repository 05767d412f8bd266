package server

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/store"
)

// StopPodSandbox kills the pod's containers and releases its network. Per
// the CRI it is idempotent and succeeds for a sandbox that is already gone.
func (s *Server) StopPodSandbox(ctx context.Context, r *runtime.StopPodSandboxRequest) (*runtime.StopPodSandboxResponse, error) {
	sb, err := s.store.Sandbox(r.GetPodSandboxId())
	if err != nil {
		if errdefs.IsNotFound(err) {
			return &runtime.StopPodSandboxResponse{}, nil
		}
		return nil, err
	}
	unlock := s.locks.lock(sb.ID)
	defer unlock()
	if err := s.stopSandbox(ctx, sb); err != nil {
		return nil, err
	}
	return &runtime.StopPodSandboxResponse{}, nil
}

func (s *Server) stopSandbox(ctx context.Context, sb store.Sandbox) error {
	for _, c := range s.store.ContainersOf(sb.ID) {
		unlock := s.locks.lock(c.ID)
		cctx := interceptor.With(ctx, "container_id", c.ID)
		err := s.stopContainer(cctx, c, 0)
		if err == nil {
			s.nriContainerStopped(cctx, c)
		}
		unlock()
		if err != nil {
			return fmt.Errorf("stop container %q of sandbox %q: %w", c.ID, sb.ID, err)
		}
	}
	if !sb.Status.NetworkDown {
		// Once, at the first stop: its containers are stopped, its
		// network and namespaces still there.
		s.nri.StopPodSandbox(ctx, sb)
	}
	if !sb.Status.NetworkDown && sb.Status.Pod.NetNS != "" {
		if err := s.awaitNetworkGC(ctx); err != nil {
			return fmt.Errorf("tear down network of sandbox %q: %w", sb.ID, err)
		}
		if err := s.network.Teardown(ctx, podNetwork(sb)); err != nil {
			return fmt.Errorf("tear down network of sandbox %q: %w", sb.ID, err)
		}
	}
	if err := s.sandboxes.Stop(ctx, controllerPod(sb)); err != nil {
		return fmt.Errorf("stop sandbox %q: %w", sb.ID, err)
	}
	_, err := s.store.UpdateSandboxStatus(sb.ID, func(st store.SandboxStatus) (store.SandboxStatus, error) {
		st.State = store.SandboxNotReady
		st.NetworkDown = true
		return st, nil
	})
	if err == nil && sb.Status.State == store.SandboxReady {
		s.sandboxEvent(sb, runtime.ContainerEventType_CONTAINER_STOPPED_EVENT)
	}
	return err
}

// RemovePodSandbox removes the pod's containers, namespaces and files. Per
// the CRI it is idempotent and succeeds for a sandbox that is already gone.
func (s *Server) RemovePodSandbox(ctx context.Context, r *runtime.RemovePodSandboxRequest) (*runtime.RemovePodSandboxResponse, error) {
	sb, err := s.store.Sandbox(r.GetPodSandboxId())
	if err != nil {
		if errdefs.IsNotFound(err) {
			return &runtime.RemovePodSandboxResponse{}, nil
		}
		return nil, err
	}
	unlock := s.locks.lock(sb.ID)
	defer unlock()
	if err := s.removeSandbox(ctx, sb); err != nil {
		return nil, err
	}
	return &runtime.RemovePodSandboxResponse{}, nil
}

func (s *Server) removeSandbox(ctx context.Context, sb store.Sandbox) error {
	if err := s.stopSandbox(ctx, sb); err != nil {
		return err
	}
	for _, c := range s.store.ContainersOf(sb.ID) {
		unlock := s.locks.lock(c.ID)
		err := s.removeContainer(interceptor.With(ctx, "container_id", c.ID), c)
		unlock()
		if err != nil {
			return fmt.Errorf("remove container %q of sandbox %q: %w", c.ID, sb.ID, err)
		}
	}
	s.nri.RemovePodSandbox(ctx, sb)
	if err := s.sandboxes.Remove(ctx, controllerPod(sb)); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", sb.ID, err)
	}
	if err := os.RemoveAll(sb.Status.Pod.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove dir of sandbox %q: %w", sb.ID, err)
	}
	if err := s.store.DeleteSandbox(sb.ID); err != nil {
		return err
	}
	s.stats.ForgetPod(sb.ID)
	sb.Status.State = store.SandboxNotReady
	s.sandboxEvent(sb, runtime.ContainerEventType_CONTAINER_DELETED_EVENT)
	interceptor.Logger(ctx).Info("pod sandbox removed")
	return nil
}
