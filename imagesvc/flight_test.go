package imagesvc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGroupCollapses(t *testing.T) {
	var g group[int]
	var runs atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	results := make([]int, 5)
	for i := range results {
		wg.Go(func() {
			v, err := g.Do(context.Background(), "k", func(context.Context) (int, error) {
				runs.Add(1)
				<-release
				return 42, nil
			})
			if err != nil {
				t.Error(err)
			}
			results[i] = v
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := runs.Load(); n != 1 {
		t.Errorf("fn ran %d times", n)
	}
	for _, v := range results {
		if v != 42 {
			t.Errorf("result %d", v)
		}
	}
}

func TestGroupCancel(t *testing.T) {
	var g group[int]
	started := make(chan struct{})
	fnCancelled := make(chan struct{})
	fn := func(ctx context.Context) (int, error) {
		close(started)
		<-ctx.Done()
		close(fnCancelled)
		return 0, ctx.Err()
	}
	c1, cancel1 := context.WithCancel(context.Background())
	c2, cancel2 := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { _, err := g.Do(c1, "k", fn); errs <- err }()
	<-started
	go func() { _, err := g.Do(c2, "k", fn); errs <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel1()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("first waiter err = %v", err)
	}
	select {
	case <-fnCancelled:
		t.Fatal("shared work cancelled while a waiter remains")
	case <-time.After(20 * time.Millisecond):
	}
	cancel2()
	<-errs
	select {
	case <-fnCancelled:
	case <-time.After(time.Second):
		t.Fatal("shared work not cancelled after the last waiter left")
	}
	// a new call starts afresh.
	v, err := g.Do(context.Background(), "k", func(context.Context) (int, error) { return 7, nil })
	if v != 7 || err != nil {
		t.Errorf("fresh call = %d, %v", v, err)
	}
}
