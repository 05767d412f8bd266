package sandbox

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
)

func TestCleanerRunsInReverseDespiteErrors(t *testing.T) {
	var order []string
	boom := errors.New("boom")
	cl := &cleaner{log: slog.New(slog.DiscardHandler)}
	for _, name := range []string{"a", "b", "c"} {
		cl.add(name, func(ctx context.Context) error {
			order = append(order, name)
			if ctx.Err() != nil {
				t.Errorf("step %s got a done context", name)
			}
			if name == "b" {
				return boom
			}
			return nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the request is gone; undo must still run
	err := cl.run(ctx)
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want boom", err)
	}
	if !slices.Equal(order, []string{"c", "b", "a"}) {
		t.Errorf("order = %v", order)
	}
}
