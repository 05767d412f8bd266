package process

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/containerd/errdefs"
)

// state is one lifecycle state of an init process. Methods run with Init.mu
// held and return the error for a transition the state does not allow;
// exited returns the state that follows the process's exit.
type state interface {
	status() Status
	start(ctx context.Context) error
	kill(ctx context.Context, sig syscall.Signal, all bool) error
	delete(ctx context.Context) error
	exited() state
}

// createdState: the runtime created the container; init waits for start.
type createdState struct{ p *Init }

func (s *createdState) status() Status { return StatusCreated }

func (s *createdState) start(ctx context.Context) error {
	if err := s.p.rt.Start(ctx, s.p.id); err != nil {
		return err
	}
	s.p.state = &runningState{p: s.p}
	return nil
}

func (s *createdState) kill(ctx context.Context, sig syscall.Signal, all bool) error {
	return killIgnoringGone(ctx, s.p, sig, all)
}

// delete of a created container kills it: it never ran, so there is nothing
// to wait for beyond the runtime's forced delete.
func (s *createdState) delete(ctx context.Context) error {
	if err := s.p.rt.Delete(ctx, s.p.id, true); err != nil {
		return err
	}
	s.p.state = &deletedState{}
	return nil
}

func (s *createdState) exited() state { return &stoppedState{p: s.p} }

// runningState: started and not yet seen to exit.
type runningState struct{ p *Init }

func (s *runningState) status() Status { return StatusRunning }

func (s *runningState) start(context.Context) error {
	return &TransitionError{From: StatusRunning, Op: "start"}
}

func (s *runningState) kill(ctx context.Context, sig syscall.Signal, all bool) error {
	if !all {
		// The init is the shim's child until the reaper collects it, so
		// signalling it directly is what `runc kill` would do, without an
		// exec of the runtime on every StopContainer. Once it is
		// reaped (or if it is not watched) this falls back to the runtime, which
		// knows whether the container is gone.
		sent, err := s.p.reaper.Signal(s.p.Pid(), sig)
		if sent {
			return nil
		}
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal init of container %q: %w", s.p.id, err)
		}
	}
	return killIgnoringGone(ctx, s.p, sig, all)
}

func (s *runningState) delete(context.Context) error {
	return &TransitionError{From: StatusRunning, Op: "delete"}
}

func (s *runningState) exited() state { return &stoppedState{p: s.p} }

// stoppedState: init exited and its exit is recorded.
type stoppedState struct{ p *Init }

func (s *stoppedState) status() Status { return StatusStopped }

func (s *stoppedState) start(context.Context) error {
	return &TransitionError{From: StatusStopped, Op: "start"}
}

// kill of an exited process succeeds: the caller's goal is already met.
func (s *stoppedState) kill(context.Context, syscall.Signal, bool) error { return nil }

func (s *stoppedState) delete(ctx context.Context) error {
	// A plain delete first: with the init reaped it is all that is needed,
	// and runc >= 1.2's --force waits ~100 ms even on a stopped container,
	// which StopContainer would pay every time. Without --force a container
	// whose leftover processes still run (no own pid namespace) is refused;
	// the init is gone, so then clear it by force.
	if err := s.p.rt.Delete(ctx, s.p.id, false); err != nil {
		if ferr := s.p.rt.Delete(ctx, s.p.id, true); ferr != nil {
			return ferr
		}
	}
	s.p.state = &deletedState{}
	return nil
}

func (s *stoppedState) exited() state { return s }

// deletedState: removed from the runtime; only the exit remains.
type deletedState struct{}

func (s *deletedState) status() Status { return StatusDeleted }

func (s *deletedState) start(context.Context) error {
	return &TransitionError{From: StatusDeleted, Op: "start"}
}

// kill of a deleted container is NotFound, as containerd's shim answers:
// the process is gone and its exit recorded, which a caller stopping it
// takes as done (a precondition error would read as a refusal).
func (s *deletedState) kill(context.Context, syscall.Signal, bool) error {
	return fmt.Errorf("cannot kill a deleted container: %w", errdefs.ErrNotFound)
}

// delete again succeeds: removes are idempotent.
func (s *deletedState) delete(context.Context) error { return nil }

func (s *deletedState) exited() state { return s }

func killIgnoringGone(ctx context.Context, p *Init, sig syscall.Signal, all bool) error {
	err := p.rt.Kill(ctx, p.id, sig, all)
	if err != nil && isGone(err) {
		return nil
	}
	return err
}
