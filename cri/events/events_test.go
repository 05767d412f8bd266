package events

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func drain(t *testing.T, s *Subscription[int], n int) []int {
	t.Helper()
	var got []int
	for len(got) < n {
		select {
		case e := <-s.Events():
			got = append(got, e)
		case <-time.After(time.Second):
			t.Fatalf("got %v, want %d events", got, n)
		}
	}
	return got
}

func TestEveryoneGetsEverythingInOrder(t *testing.T) {
	b := New[int](16)
	a, c := b.Subscribe(), b.Subscribe()
	defer a.Close()
	defer c.Close()
	for i := range 10 {
		b.Publish(i)
	}
	for _, s := range []*Subscription[int]{a, c} {
		got := drain(t, s, 10)
		for i, e := range got {
			if e != i {
				t.Fatalf("events %v out of order", got)
			}
		}
	}
}

func TestSlowSubscriberIsCutOffWithoutBlocking(t *testing.T) {
	b := New[int](2)
	slow, fast := b.Subscribe(), b.Subscribe()
	defer fast.Close()
	done := make(chan struct{})
	var got []int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		got = drain(t, fast, 5)
	}()
	go func() {
		for i := range 5 {
			b.Publish(i)
			time.Sleep(5 * time.Millisecond) // let the fast reader keep up
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}
	wg.Wait()
	if len(got) != 5 {
		t.Errorf("fast subscriber got %v", got)
	}
	select {
	case <-slow.Done():
	default:
		t.Fatal("slow subscriber was not cut off")
	}
	if !errors.Is(slow.Err(), ErrSlowSubscriber) {
		t.Errorf("slow subscriber error %v", slow.Err())
	}
	if n := b.Subscribers(); n != 1 {
		t.Errorf("%d subscribers left, want 1", n)
	}
	// What was queued before the cut is still readable, in order.
	if e := <-slow.Events(); e != 0 {
		t.Errorf("first queued event %d", e)
	}
}

func TestClose(t *testing.T) {
	b := New[int](0)
	s := b.Subscribe()
	s.Close()
	s.Close()
	b.Publish(1)
	if s.Err() != nil || b.Subscribers() != 0 {
		t.Errorf("after Close: err %v, %d subscribers", s.Err(), b.Subscribers())
	}
	select {
	case e := <-s.Events():
		t.Errorf("closed subscription received %d", e)
	default:
	}
}
