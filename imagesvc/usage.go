package imagesvc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// How old a usage figure may be. Image dirs change only through this
// service, which marks every change, so theirs is a backstop, refreshed in
// the background from imageUsageRefresh on: walked in the caller, it was
// ImageFsInfo's p99 once a minute (287 ms at 250 pods, full-node bench,
// where containerd answers in 7 ms). Writable
// layers change whenever a container writes: their figure is handed out
// at once while younger than containerUsageMaxAge and measured again in the
// background once older than containerUsageRefresh, so kubelet sees it at
// most about 10 s old plus one walk, as it sees containerd's snapshot
// usage, which containerd's syncer refreshes every 10 s.
const (
	imageUsageRefresh     = 30 * time.Second
	imageUsageMaxAge      = time.Minute
	containerUsageRefresh = 10 * time.Second
	containerUsageMaxAge  = time.Minute
	// usageWalkTimeout bounds a background walk.
	usageWalkTimeout = time.Minute
	// refreshDelay is how long after the call that found a figure old its
	// background walk starts. Started at once, the walk ran beside the
	// sending of that call's answer: ImageFsInfo at p50 1.13-1.61 ms, and
	// 0.46 ms with the walk 100 ms later (full-node bench, N = 10, 2 CPUs),
	// though it walks only a few hundred inodes there. kubelet asks for
	// the figure again seconds later; whichever call the later walk runs
	// beside is one at random, not the one whose answer it delays.
	refreshDelay = 100 * time.Millisecond
)

// usageCache keeps the last walk of a set of directories. A walk lstats
// every inode below them (tens of thousands on a node with many images or
// containers), and kubelet asks for it every few seconds (eviction manager,
// summary API, image GC): measured by test/bench, ImageFsInfo walked on
// every call and took 55 ms at 110 pods where containerd answers in 0.5 ms.
type usageCache struct {
	// refresh, when set, is the age from which a figure is still handed
	// out but measured again in the background; maxAge is the age from
	// which a caller waits for a new walk.
	refresh, maxAge time.Duration
	// gen counts the changes the service made to the dirs; a figure taken
	// at another gen is stale, and is never handed out.
	gen atomic.Uint64

	// file, when set, keeps the last figure across restarts (log reports
	// a failure to write it): the first ImageFsInfo after a restart, made
	// by kubelet's CRI client when it connects, then needs no walk, which
	// took 350-530 ms there at 250 pods while the node's shims woke
	// (full-node bench).
	file string
	log  *slog.Logger
	// saved is set while c.file may hold a figure of the current gen.
	saved atomic.Bool

	mu         sync.Mutex // guards the fields below; held across a caller's walk, so concurrent callers share one
	saveFailed bool
	valid      bool
	atGen      uint64
	at         time.Time
	u          FsUsage
	refreshing bool
}

// changed says the dirs changed; call it once the change is complete.
func (c *usageCache) changed() {
	c.gen.Add(1)
	// The kept figure misses the change: a process started after a crash
	// must walk. One unlink at the first change after a walk.
	if c.saved.Swap(false) {
		_ = os.Remove(c.file)
	}
}

// get returns the last figure when nothing changed since it was taken and
// it is younger than maxAge (starting a background walk when it is older
// than refresh); else it walks.
func (c *usageCache) get(ctx context.Context, walk func(context.Context) (FsUsage, error)) (FsUsage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Read before the walk: a change that completes during it leaves the
	// figure at an older gen, so the next call walks again.
	g := c.gen.Load()
	age := time.Since(c.at)
	if c.valid && c.atGen == g && age < c.maxAge {
		if c.refresh > 0 && age >= c.refresh && !c.refreshing {
			c.refreshing = true
			time.AfterFunc(refreshDelay, func() { c.walkInBackground(g, walk) })
		}
		return c.u, nil
	}
	start := time.Now()
	u, err := walk(ctx)
	if err != nil {
		return FsUsage{}, err
	}
	c.store(g, start, u)
	return u, nil
}

// store keeps a figure taken at gen g from start, unless a newer one is
// kept already.
func (c *usageCache) store(g uint64, start time.Time, u FsUsage) {
	if c.valid && (c.atGen > g || (c.atGen == g && c.at.After(start))) {
		return
	}
	c.valid, c.atGen, c.at, c.u = true, g, start, u
	if c.file == "" || c.gen.Load() != g {
		return
	}
	// Set before the write, checked after it: a change either sees it
	// and removes the file, or came before the check below.
	c.saved.Store(true)
	err := c.save()
	if c.gen.Load() != g && c.saved.Swap(false) {
		_ = os.Remove(c.file)
	}
	if err != nil && !c.saveFailed {
		c.saveFailed = true
		c.log.Warn("keep filesystem usage for the next start", "error", err)
	}
}

// usageRecord is a figure as a usageCache's file keeps it.
type usageRecord struct {
	At         time.Time `json:"at"`
	UsedBytes  uint64    `json:"used_bytes"`
	InodesUsed uint64    `json:"inodes_used"`
	Mountpoint string    `json:"mountpoint"`
}

// save writes the figure to c.file, replacing it whole. It is not synced:
// a figure lost with the machine is walked again.
func (c *usageCache) save() error {
	data, err := json.Marshal(usageRecord{At: c.at, UsedBytes: c.u.UsedBytes, InodesUsed: c.u.InodesUsed, Mountpoint: c.u.Mountpoint})
	if err != nil {
		return err
	}
	tmp := c.file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write usage figure: %w", err)
	}
	if err := os.Rename(tmp, c.file); err != nil {
		return fmt.Errorf("write usage figure: %w", err)
	}
	return nil
}

// load takes the figure an earlier process saved in c.file when it is
// younger than maxAge, so that it is handed out (and refreshed) as if this
// process had taken it: a change through the service removes the file, so
// what the figure misses is what containers wrote meanwhile, as any figure
// of that age does. A missing, unreadable or future-dated file is no
// figure.
func (c *usageCache) load() {
	if c.file == "" {
		return
	}
	data, err := os.ReadFile(c.file)
	if err != nil {
		return
	}
	var r usageRecord
	if json.Unmarshal(data, &r) != nil || r.Mountpoint == "" {
		return
	}
	age := time.Since(r.At)
	if age < 0 || age >= c.maxAge {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// A wall-clock time from the file, turned into one this process's
	// monotonic clock measures ages from.
	c.valid, c.atGen, c.at = true, c.gen.Load(), time.Now().Add(-age)
	c.u = FsUsage{Mountpoint: r.Mountpoint, UsedBytes: r.UsedBytes, InodesUsed: r.InodesUsed}
	c.saved.Store(true)
}

func (c *usageCache) walkInBackground(g uint64, walk func(context.Context) (FsUsage, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), usageWalkTimeout)
	defer cancel()
	start := time.Now()
	u, err := walk(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshing = false
	// A failed walk keeps the old figure until maxAge, when a caller walks
	// and sees the error.
	if err == nil {
		c.store(g, start, u)
	}
}
