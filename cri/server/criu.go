package server

import (
	"context"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// checkpointCondition is the Status condition saying whether
// CheckpointContainer, CheckpointPod and restores can work here.
func (s *Server) checkpointCondition() *runtime.RuntimeCondition {
	c := &runtime.RuntimeCondition{Type: "CheckpointRestoreReady", Status: true}
	switch probing, err := s.criu.Ready(); {
	case probing:
		c.Status = false
		c.Reason = "CRIUProbing"
		c.Message = "checking that CRIU can dump and restore a process here"
	case err != nil:
		c.Status = false
		c.Reason = "CRIUUnavailable"
		c.Message = err.Error()
	}
	return c
}

// criuCleanupGrace is what a shim may need after a CRIU bound passes: kill
// the runtime's process group and wait for it, thaw or delete the
// container. The shim is called with this much more than the bound.
const criuCleanupGrace = 25 * time.Second

// criuBound is how long one CRIU operation may run: the configured
// runtime.checkpoint_timeout, shortened by ctx's deadline (a request's own
// timeout) less the time left for cleanup, so that the caller gets the
// answer, and nothing is left behind, before it gives up.
func (s *Server) criuBound(ctx context.Context) time.Duration {
	bound := s.cfg.Runtime.CheckpointTimeoutDuration()
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		left -= min(criuCleanupGrace, left/2)
		if left < bound {
			bound = max(left, time.Second)
		}
	}
	return bound
}

// criuCallContext is the context for a shim call that runs CRIU within
// bound: it survives the request's cancellation long enough for the shim
// to finish and clean up, since a CRIU abandoned mid-dump is what leaves
// frozen and traced containers behind.
func criuCallContext(ctx context.Context, bound time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), bound+criuCleanupGrace)
}
