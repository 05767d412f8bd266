package server

import (
	"context"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/streaming"
	"github.com/berth-runtime/berth/cri/task"
)

// Attach returns the URL of a streaming attach session.
func (s *Server) Attach(ctx context.Context, r *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	if _, _, err := s.runningTask(r.GetContainerId()); err != nil {
		return nil, err
	}
	if s.streams == nil {
		return nil, fmt.Errorf("attach: no streaming server: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetAttach(r)
}

// Attach streams the main process's stdio until it exits or the client
// goes away; the log keeps being written meanwhile.
func (r streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan streaming.TerminalSize) error {
	c, t, err := r.s.runningTask(id)
	if err != nil {
		return err
	}
	cfg := c.Config
	o := task.AttachOpts{FifoDir: fifoDir(c)}
	if in != nil && cfg.GetStdin() {
		o.Stdin = in
	}
	if out != nil {
		o.Stdout = out
	}
	if errw != nil && !cfg.GetTty() {
		o.Stderr = errw
	}
	if cfg.GetTty() && resize != nil {
		go forwardResize(ctx, resize, t.ResizePty)
	}
	if err := t.Attach(ctx, o); err != nil {
		return fmt.Errorf("attach to container %q: %w", id, err)
	}
	return nil
}
