// Package events fans container lifecycle events out to every subscriber
// (each GetContainerEvents stream). Publishing never blocks: each
// subscriber has its own bounded queue, and a subscriber that lets it fill
// up is cut off rather than slowing the runtime or silently missing
// events; kubelet's evented PLEG then reconnects and relists.
package events

import (
	"errors"
	"sync"
)

// ErrSlowSubscriber ends a subscription whose queue overflowed.
var ErrSlowSubscriber = errors.New("event subscriber fell behind")

// DefaultQueue is the per-subscriber queue length: room for every event
// of about 200 pods restarting at once.
const DefaultQueue = 1024

// Broadcaster delivers each published event to every subscriber, in
// publication order.
type Broadcaster[T any] struct {
	queue int

	mu   sync.Mutex // guards subs; held while publishing so order is global
	subs map[*Subscription[T]]struct{}
}

// New returns a broadcaster whose subscribers queue up to queue events
// (<= 0 => DefaultQueue).
func New[T any](queue int) *Broadcaster[T] {
	if queue <= 0 {
		queue = DefaultQueue
	}
	return &Broadcaster[T]{queue: queue, subs: map[*Subscription[T]]struct{}{}}
}

// Subscription is one subscriber's queue.
type Subscription[T any] struct {
	b    *Broadcaster[T]
	ch   chan T
	done chan struct{}
	once sync.Once
	err  error // set before done is closed
}

// Subscribe registers a subscriber; it sees events published after the
// call returns. Close it when done.
func (b *Broadcaster[T]) Subscribe() *Subscription[T] {
	s := &Subscription[T]{b: b, ch: make(chan T, b.queue), done: make(chan struct{})}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// Publish queues e for every subscriber without waiting for any.
func (b *Broadcaster[T]) Publish(e T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			delete(b.subs, s)
			s.end(ErrSlowSubscriber)
		}
	}
}

// Subscribers returns the number of live subscriptions.
func (b *Broadcaster[T]) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Events is the subscriber's queue; read it until Done is closed.
func (s *Subscription[T]) Events() <-chan T { return s.ch }

// Done is closed when the subscription ends: closed by its owner, or cut
// off for falling behind (Err says which).
func (s *Subscription[T]) Done() <-chan struct{} { return s.done }

// Err is nil after Close, ErrSlowSubscriber after an overflow.
func (s *Subscription[T]) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close unsubscribes; it is idempotent.
func (s *Subscription[T]) Close() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	s.end(nil)
}

func (s *Subscription[T]) end(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}
