package imagesvc

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestUsageCache(t *testing.T) {
	c := usageCache{maxAge: time.Hour}
	walks := 0
	walk := func(context.Context) (FsUsage, error) {
		walks++
		return FsUsage{InodesUsed: uint64(walks)}, nil
	}
	get := func() uint64 {
		t.Helper()
		u, err := c.get(context.Background(), walk)
		if err != nil {
			t.Fatal(err)
		}
		return u.InodesUsed
	}
	first, second := get(), get()
	if first != 1 || second != 1 || walks != 1 {
		t.Fatalf("two calls without a change walked %d times", walks)
	}
	c.changed()
	if got := get(); got != 2 {
		t.Errorf("after a change: figure of walk %d, want a new walk", got)
	}
	c.maxAge = time.Nanosecond
	time.Sleep(time.Millisecond)
	if got := get(); got != 3 {
		t.Errorf("past maxAge: figure of walk %d, want a new walk", got)
	}
	c.maxAge = time.Hour
	failing := errors.New("walk failed")
	c.changed()
	if _, err := c.get(context.Background(), func(context.Context) (FsUsage, error) { return FsUsage{}, failing }); !errors.Is(err, failing) {
		t.Errorf("walk error = %v", err)
	}
	if got := get(); got != 4 {
		t.Errorf("after a failed walk: figure of walk %d, want a new walk", got)
	}
}

// A change completing while a walk runs must not leave its figure cached.
func TestUsageCacheChangeDuringWalk(t *testing.T) {
	c := usageCache{maxAge: time.Hour}
	walks := 0
	_, _ = c.get(context.Background(), func(context.Context) (FsUsage, error) {
		walks++
		c.changed()
		return FsUsage{}, nil
	})
	_, _ = c.get(context.Background(), func(context.Context) (FsUsage, error) {
		walks++
		return FsUsage{}, nil
	})
	if walks != 2 {
		t.Errorf("walks = %d, want the second call to walk again", walks)
	}
}

// Past refresh the last figure is handed out at once and a background walk
// replaces it; a change still makes the caller wait for a new walk.
func TestUsageCacheRefreshesInBackground(t *testing.T) {
	c := usageCache{refresh: time.Nanosecond, maxAge: time.Hour}
	var walks atomic.Int64
	walk := func(context.Context) (FsUsage, error) {
		return FsUsage{InodesUsed: uint64(walks.Add(1))}, nil
	}
	get := func() uint64 {
		t.Helper()
		u, err := c.get(context.Background(), walk)
		if err != nil {
			t.Fatal(err)
		}
		return u.InodesUsed
	}
	if got := get(); got != 1 {
		t.Fatalf("first call: figure of walk %d", got)
	}
	time.Sleep(time.Millisecond)
	if got := get(); got != 1 {
		t.Errorf("past refresh: figure of walk %d, want the last one handed out at once", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for get() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("background walk never replaced the figure (walks %d)", walks.Load())
		}
		time.Sleep(time.Millisecond)
	}
	c.changed()
	if got := get(); got < 3 {
		t.Errorf("after a change: figure of walk %d, want a new walk", got)
	}
}

// A figure kept by one process is handed out by the next while it is
// younger than maxAge, as the process that took it would have; an old,
// future-dated or unreadable one is walked again.
func TestUsageCacheKeptAcrossRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "usage.json")
	walks := 0
	walk := func(context.Context) (FsUsage, error) {
		walks++
		return FsUsage{Mountpoint: "/", UsedBytes: 4096 * uint64(walks), InodesUsed: uint64(walks)}, nil
	}
	restarted := func(maxAge time.Duration) *usageCache {
		c := &usageCache{maxAge: maxAge, file: file, log: slog.New(slog.DiscardHandler)}
		c.load()
		return c
	}
	get := func(c *usageCache) FsUsage {
		t.Helper()
		u, err := c.get(context.Background(), walk)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	first := get(restarted(time.Hour))
	if walks != 1 {
		t.Fatalf("no file: %d walks, want 1", walks)
	}
	if got := get(restarted(time.Hour)); got != first || walks != 1 {
		t.Errorf("after a restart: %+v after %d walks, want the kept %+v and no walk", got, walks, first)
	}
	// Kept figures age across restarts: this one is older than maxAge.
	time.Sleep(2 * time.Millisecond)
	if got := get(restarted(time.Millisecond)); got.InodesUsed != 2 {
		t.Errorf("kept figure older than maxAge handed out: %+v", got)
	}
	for name, data := range map[string]string{
		"future-dated": `{"at":"` + time.Now().Add(time.Hour).Format(time.RFC3339Nano) + `","inodes_used":99,"mountpoint":"/"}`,
		"unreadable":   `{"at":`,
	} {
		if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		before := walks
		if got := get(restarted(time.Hour)); got.InodesUsed == 99 || walks != before+1 {
			t.Errorf("%s file: %+v after %d walks, want a new walk", name, got, walks-before)
		}
	}
	// A change makes the kept figure stale, in this process and for the
	// next one, which may start after a crash before any walk.
	c := restarted(time.Hour)
	get(c)
	c.changed()
	before := walks
	if get(restarted(time.Hour)); walks != before+1 {
		t.Errorf("a change did not make the kept figure stale for the next process")
	}
	c = restarted(time.Hour)
	c.changed()
	before = walks
	if get(c); walks != before+1 {
		t.Errorf("a change after the restart did not make the kept figure stale")
	}
}

// An image service started on the usage dir of one that measured hands
// out its figures before walking; without a usage dir it walks.
func TestFsInfoKeptAcrossRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	usageDir := t.TempDir()
	start := func(dir string) *Service {
		t.Helper()
		s, err := New(ctx, Options{Root: e.root, DB: e.db, UsageDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first, err := start(usageDir).ContainersFsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Written by a container while no berthd ran.
	if err := os.MkdirAll(filepath.Join(e.root, "containers", "c1", "upper"), 0o700); err != nil {
		t.Fatal(err)
	}
	if kept, err := start(usageDir).ContainersFsInfo(ctx); err != nil || kept != first {
		t.Errorf("restarted on the usage dir: %+v, %v; want the kept %+v", kept, err, first)
	}
	if walked, err := start("").ContainersFsInfo(ctx); err != nil || walked.InodesUsed != first.InodesUsed+2 {
		t.Errorf("started without a usage dir: %+v, %v; want a walk counting the 2 new dirs over %+v", walked, err, first)
	}
}
