package server

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/streaming"
)

// PortForward returns the URL of a port-forward session into the pod.
func (s *Server) PortForward(ctx context.Context, r *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	sb, err := s.store.Sandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if sb.Status.State != store.SandboxReady {
		return nil, fmt.Errorf("sandbox %q is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	if s.streams == nil {
		return nil, fmt.Errorf("port-forward: no streaming server: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetPortForward(r)
}

// PortForward connects one stream to 127.0.0.1:port in the pod's network
// namespace. Its error is what the client's error stream shows (e.g. the
// connection refused).
func (r streamRuntime) PortForward(ctx context.Context, id string, port int32, stream io.ReadWriteCloser) error {
	sb, err := r.s.store.Sandbox(id)
	if err != nil {
		return err
	}
	if sb.Status.State != store.SandboxReady {
		return fmt.Errorf("sandbox %q is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	conn, err := streaming.DialInNetNS(ctx, sb.Status.Pod.NetNS, port)
	if err != nil {
		return fmt.Errorf("connect to port %d in sandbox %q: %w", port, id, err)
	}
	return streaming.Forward(ctx, stream, conn)
}
