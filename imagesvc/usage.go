package imagesvc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Ages after which a usage figure is measured again even though the service
// saw no change. The image dirs change only through this service, so theirs
// is a backstop; writable layers change whenever a container writes, so
// theirs is the staleness kubelet sees, the same 10 s as containerd's
// snapshot usage, which its syncer refreshes every 10 s.
const (
	imageUsageMaxAge     = time.Minute
	containerUsageMaxAge = 10 * time.Second
)

// usageCache keeps the last walk of a set of directories. A walk lstats
// every inode below them (tens of thousands on a node with many images),
// and kubelet asks for it every few seconds (eviction manager, summary API,
// image GC): measured by test/bench, ImageFsInfo cost a walk per call, 9x
// containerd's latency at 10 pods.
type usageCache struct {
	maxAge time.Duration
	// gen counts the changes the service made to the dirs; a figure taken
	// at another gen is stale.
	gen atomic.Uint64

	mu    sync.Mutex // guards the fields below; held across a walk, so concurrent callers share one
	valid bool
	atGen uint64
	at    time.Time
	u     FsUsage
}

// changed says the dirs changed; call it once the change is complete.
func (c *usageCache) changed() { c.gen.Add(1) }

// get returns the last figure when nothing changed since it was taken and
// it is younger than maxAge; else it walks.
func (c *usageCache) get(ctx context.Context, walk func(context.Context) (FsUsage, error)) (FsUsage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Read before the walk: a change that completes during it leaves the
	// figure at an older gen, so the next call walks again.
	g := c.gen.Load()
	if c.valid && c.atGen == g && time.Since(c.at) < c.maxAge {
		return c.u, nil
	}
	start := time.Now()
	u, err := walk(ctx)
	if err != nil {
		return FsUsage{}, err
	}
	c.valid, c.atGen, c.at, c.u = true, g, start, u
	return u, nil
}
