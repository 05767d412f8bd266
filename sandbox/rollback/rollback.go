// Package rollback is berth's one way to undo a half-built object: a
// builder records a named undo step for each thing it creates, and on
// failure the steps run in reverse (CRI-O's resourcecleaner, containerd's
// DeferContext). It lives here, the lowest package both users import:
// the sandbox controller and the CRI server.
package rollback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Timeout bounds a whole undo. Undo outlives the request: it runs on a
// fresh context even when the request's is cancelled or expired, since
// what the request made must go anyway; a CNI DEL may take a while.
const Timeout = 2 * time.Minute

// Steps records undo steps. The zero value logs to slog.Default.
type Steps struct {
	log   *slog.Logger
	steps []step
}

type step struct {
	name string
	fn   func(ctx context.Context) error
}

// New returns Steps that log failed undo steps to log.
func New(log *slog.Logger) *Steps { return &Steps{log: log} }

// Add records the undo of something just created.
func (s *Steps) Add(name string, fn func(ctx context.Context) error) {
	s.steps = append(s.steps, step{name: name, fn: fn})
}

// Run undoes every recorded step, latest first, on a context detached from
// ctx's cancellation and bounded by Timeout. Every step runs even if an
// earlier one failed; failures are logged and returned joined. The steps
// are forgotten, so a second Run does nothing.
func (s *Steps) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	log := s.log
	if log == nil {
		log = slog.Default()
	}
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		st := s.steps[i]
		if err := st.fn(ctx); err != nil {
			log.Error("rollback step failed", "step", st.name, "error", err)
			errs = append(errs, fmt.Errorf("undo %s: %w", st.name, err))
		}
	}
	s.steps = nil
	return errors.Join(errs...)
}

// OnError runs the undo when *errp is non-nil, for a deferred call in a
// function with a named error result. The undo's own failures are logged
// only: the cause stays the error the caller sees.
func (s *Steps) OnError(ctx context.Context, errp *error) {
	if *errp == nil {
		return
	}
	_ = s.Run(ctx)
}
