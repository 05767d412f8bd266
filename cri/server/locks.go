package server

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// keyedMutex serialises lifecycle calls on one object (kubelet may stop a
// pod while it creates a container in it) without a global lock.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*refMutex{}
	}
	m, ok := k.locks[key]
	if !ok {
		m = &refMutex{}
		k.locks[key] = m
	}
	m.refs++
	k.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		m.refs--
		if m.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// cleaner records undo steps while an object is built and runs them in
// reverse if the build fails. Undo runs on a fresh, bounded context: the
// request's may already be cancelled, and what it created must go anyway.
type cleaner struct {
	log   *slog.Logger
	steps []step
}

type step struct {
	name string
	fn   func(ctx context.Context) error
}

func (c *cleaner) add(name string, fn func(ctx context.Context) error) {
	c.steps = append(c.steps, step{name, fn})
}

// run undoes every recorded step when *errp is non-nil.
func (c *cleaner) run(errp *error) {
	if *errp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := len(c.steps) - 1; i >= 0; i-- {
		st := c.steps[i]
		if err := st.fn(ctx); err != nil {
			c.log.Error("rollback step failed", "step", st.name, "error", err, "cause", *errp)
		}
	}
}
