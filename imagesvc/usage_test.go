package imagesvc

import (
	"context"
	"errors"
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
