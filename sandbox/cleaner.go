package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// cleanupTimeout bounds the undo of a failed Create: undo must finish even
// when the request's context has already expired.
const cleanupTimeout = 30 * time.Second

// cleaner records named undo steps and runs them in reverse order.
type cleaner struct {
	log   *slog.Logger
	steps []cleanStep
}

type cleanStep struct {
	name string
	fn   func(ctx context.Context) error
}

func (c *cleaner) add(name string, fn func(ctx context.Context) error) {
	c.steps = append(c.steps, cleanStep{name: name, fn: fn})
}

// run undoes every step, latest first, with a fresh context detached from
// the caller's cancellation. Every step runs even if an earlier one failed.
func (c *cleaner) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var errs []error
	for i := len(c.steps) - 1; i >= 0; i-- {
		s := c.steps[i]
		if err := s.fn(ctx); err != nil {
			c.log.Error("sandbox cleanup step failed", "step", s.name, "error", err)
			errs = append(errs, fmt.Errorf("undo %s: %w", s.name, err))
		}
	}
	c.steps = nil
	return errors.Join(errs...)
}
