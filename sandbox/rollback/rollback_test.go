package rollback

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
)

func TestRunsInReverseDespiteErrors(t *testing.T) {
	var order []string
	boom := errors.New("boom")
	s := New(slog.New(slog.DiscardHandler))
	for _, name := range []string{"a", "b", "c"} {
		s.Add(name, func(ctx context.Context) error {
			order = append(order, name)
			if ctx.Err() != nil {
				t.Errorf("step %s got a done context", name)
			}
			if _, ok := ctx.Deadline(); !ok {
				t.Errorf("step %s got an unbounded context", name)
			}
			if name == "b" {
				return boom
			}
			return nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the request is gone; undo must still run
	if err := s.Run(ctx); !errors.Is(err, boom) {
		t.Errorf("err = %v, want boom", err)
	}
	if !slices.Equal(order, []string{"c", "b", "a"}) {
		t.Errorf("order = %v", order)
	}
	if err := s.Run(ctx); err != nil || len(order) != 3 {
		t.Errorf("second run: %v, order %v", err, order)
	}
}

func TestOnError(t *testing.T) {
	ran := 0
	s := &Steps{}
	s.Add("x", func(context.Context) error { ran++; return nil })
	var err error
	s.OnError(context.Background(), &err)
	if ran != 0 {
		t.Fatal("undo ran on success")
	}
	err = errors.New("failed")
	s.OnError(context.Background(), &err)
	if ran != 1 {
		t.Fatal("undo did not run on failure")
	}
}
