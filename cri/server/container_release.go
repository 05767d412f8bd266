package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/shim/client"
)

// runtimeKnows reports whether the OCI runtime still keeps state for c:
// runc and crun keep a container's state in <root>/<id>.
func (s *Server) runtimeKnows(c store.Container) bool {
	_, err := os.Stat(filepath.Join(s.cfg.HandlerRoot(c.RuntimeHandler), c.ID))
	return !errors.Is(err, os.ErrNotExist)
}

// releaseRuntime makes sure neither a shim nor the runtime holds c before
// its files go. A runtime delete that failed when the container exited
// (only logged then) is retried here, and its failure fails the removal so
// kubelet retries it, instead of removing the record over a runtime state
// and cgroups no one would ever delete.
func (s *Server) releaseRuntime(ctx context.Context, c store.Container) error {
	if !client.ShimAlive(c.Bundle) && !s.runtimeKnows(c) {
		return nil
	}
	bin, err := s.runtimeBinary(c.RuntimeHandler)
	if err != nil {
		return err
	}
	if err := client.Cleanup(ctx, client.CleanupOpts{
		ID: c.ID, ShimBinary: s.shimPath, Socket: s.shimSocket(c.ID), StateDir: c.Bundle,
		RuntimeBinary: bin, RuntimeRoot: s.cfg.HandlerRoot(c.RuntimeHandler),
	}); err != nil {
		return fmt.Errorf("release container %q from its runtime: %w", c.ID, err)
	}
	if s.runtimeKnows(c) {
		return fmt.Errorf("runtime still holds container %q after delete: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	return nil
}
