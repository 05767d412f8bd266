package imagesvc

import (
	"context"
	"sync"
)

// group collapses concurrent calls with one key into one execution. The
// shared work runs detached from any single caller's cancellation and is
// cancelled only when every caller waiting for it has gone.
type group[V any] struct {
	mu    sync.Mutex
	calls map[string]*call[V]
}

type call[V any] struct {
	done    chan struct{}
	val     V
	err     error
	waiters int // guarded by group.mu
	cancel  context.CancelFunc
}

// Do runs fn once per key among concurrent callers and returns its result to
// each. fn gets a context that keeps ctx's values but not its cancellation.
func (g *group[V]) Do(ctx context.Context, key string, fn func(context.Context) (V, error)) (V, error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*call[V]{}
	}
	c, ok := g.calls[key]
	if !ok {
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call[V]{done: make(chan struct{}), cancel: cancel}
		g.calls[key] = c
		go func() {
			c.val, c.err = fn(cctx)
			g.mu.Lock()
			if g.calls[key] == c {
				delete(g.calls, key)
			}
			g.mu.Unlock()
			cancel()
			close(c.done)
		}()
	}
	c.waiters++
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		g.mu.Lock()
		c.waiters--
		last := c.waiters == 0
		if last {
			c.cancel()
			// a later caller must start afresh, not join a cancelled call.
			if g.calls[key] == c {
				delete(g.calls, key)
			}
		}
		g.mu.Unlock()
		if last {
			// the work undoes itself when cancelled: let the last caller
			// return only once nothing half-done is left behind.
			<-c.done
		}
		var zero V
		return zero, ctx.Err()
	}
}
