package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/shim/logging"
	"github.com/berth-runtime/berth/shim/runtime"
)

// restoreExitStatus is the exit recorded for a container that was to be
// restored and was removed (or failed to restore) before it ever ran: like
// a SIGKILLed created container.
const restoreExitStatus = 128 + int(syscall.SIGKILL)

// pendingRestore is a container created from a checkpoint, waiting for
// Start to restore it.
type pendingRestore struct {
	images string
	// child is the stdio the restored process gets; the shim holds it
	// until the restore so that the copy never sees EOF before.
	child childStdio
	// exits feeds waitExit: the restored process's exit once it runs, or
	// a synthetic one when the container ends before.
	exits chan Exit
}

// prepareRestore sets p up to be restored by Start: stdio pipes and the
// exit watcher exist, no runtime container does yet.
func (p *Init) prepareRestore(c Config, lw *logging.Writer) error {
	sio, child, err := newPipeStdio(lw, c.Stdin)
	if err != nil {
		return err
	}
	sio.stdinOnce = c.StdinOnce
	p.io = sio
	pr := &pendingRestore{images: c.RestoreFrom, child: child, exits: make(chan Exit, 1)}
	p.pending = pr
	p.state = &restoringState{p: p}
	p.io.startCopy()
	go p.waitExit(pr.exits)
	return nil
}

// workDir is where CRIU writes its logs for this container.
func (p *Init) workDir() string { return filepath.Join(p.stateDir, "criu") }

// restore runs the runtime's restore; with mu held, from restoringState.
func (p *Init) restore(ctx context.Context) error {
	pr := p.pending
	spec, err := api.ReadSpec(p.bundle)
	if err != nil {
		return fmt.Errorf("restore container %q: %w", p.id, err)
	}
	if err := ensureRestoreTmp(p.bundle, spec); err != nil {
		return fmt.Errorf("restore container %q: %w", p.id, err)
	}
	release := p.reaper.Hold()
	defer release()
	err = p.rt.Restore(ctx, p.id, runtime.RestoreOpts{
		Bundle:    p.bundle,
		PidFile:   p.pidFile(),
		ImagePath: pr.images,
		WorkPath:  p.workDir(),
		// A restored socket must be restored the way it was dumped;
		// CRIU refuses when the images hold none, so asking costs nothing.
		TCPEstablished: true,
		Stdin:          pr.child.stdin,
		Stdout:         pr.child.stdout,
		Stderr:         pr.child.stderr,
	})
	if err != nil {
		// Also after a deadline: runc and CRIU are dead by now (their
		// group was killed), and delete --force ends what they restored.
		p.forceDelete()
		if ctx.Err() != nil {
			p.log.Warn("restore timed out; CRIU killed", "error", err)
			return fmt.Errorf("restore container %q: CRIU did not finish in time and was killed: %w", p.id, err)
		}
		return err
	}
	pid, err := readPidFile(p.pidFile())
	if err != nil {
		p.forceDelete()
		return fmt.Errorf("container %q: %w", p.id, err)
	}
	// What CRIU restored must not be wider than what the spec grants
	// (see restorecheck.go); the container is killed before it is
	// reported running. A check that cannot be made fails the same way.
	if err := checkRestored("/proc", spec, pid); err != nil {
		p.forceDelete()
		p.log.Warn("restored container killed", "error", err)
		return fmt.Errorf("restore container %q: %w", p.id, err)
	}
	// The restored process holds its own copies now.
	pr.child.close()
	p.pending = nil
	p.pid.Store(int64(pid))
	exitCh := p.reaper.Watch(pid)
	go func() { pr.exits <- <-exitCh }()
	p.state = &runningState{p: p}
	p.log.Info("container restored", "pid", pid)
	return nil
}

// ensureRestoreTmp gives a read-only root a /tmp directory before a
// restore. CRIU (4.2) pivots into the restored root through its /tmp and,
// when there is none, makes a temporary directory in the root instead,
// which a read-only root refuses ("mnt: Can't create a temporary
// directory: Read-only file system"). The root is writable from the host
// (the runtime makes it read-only only inside the container), and an
// empty /tmp is what nearly every image has anyway.
func ensureRestoreTmp(bundle string, spec *specs.Spec) error {
	if spec.Root == nil || !spec.Root.Readonly {
		return nil
	}
	root := spec.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(bundle, root)
	}
	// Lstat: a /tmp symlink in an image is left alone; CRIU then makes
	// its temporary directory as it would.
	if _, err := os.Lstat(filepath.Join(root, "tmp")); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o1777); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create /tmp in the read-only root for CRIU: %w", err)
	}
	return os.Chmod(filepath.Join(root, "tmp"), 0o1777)
}

// endPending records the exit of a container that never ran.
func (p *Init) endPending() {
	pr := p.pending
	if pr == nil {
		return
	}
	p.pending = nil
	pr.child.close()
	pr.exits <- Exit{Status: restoreExitStatus, At: time.Now()}
}

// restoringState: created from a checkpoint; Start restores it.
type restoringState struct{ p *Init }

func (s *restoringState) status() Status { return StatusCreated }

func (s *restoringState) start(ctx context.Context) error { return s.p.restore(ctx) }

// kill ends a container that never ran: there is no process to signal,
// and the caller's goal (it must not run) is met by recording an exit.
func (s *restoringState) kill(context.Context, syscall.Signal, bool) error {
	s.p.endPending()
	return nil
}

func (s *restoringState) delete(context.Context) error {
	s.p.endPending()
	s.p.state = &deletedState{}
	return nil
}

func (s *restoringState) exited() state { return &stoppedState{p: s.p} }

// Checkpoint dumps the running container with CRIU. criuPath, when set,
// overrides the CRIU given at creation; timeout, when set, bounds the dump.
// A dump cut short by the bound leaves no CRIU behind (the runtime's
// process group is killed) and no container frozen by it.
func (p *Init) Checkpoint(ctx context.Context, o runtime.CheckpointOpts, criuPath string, timeout time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.state.status(); st != StatusRunning {
		return &TransitionError{From: st, Op: "checkpoint"}
	}
	rt := p.rt
	if criuPath != "" {
		c := *p.rt
		c.CriuPath = criuPath
		rt = &c
	}
	// Whether the caller froze the container itself: then thawing it is
	// the caller's job, and a pod's other containers stay consistent.
	before, err := rt.State(ctx, p.id)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	dctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	err = rt.Checkpoint(dctx, p.id, o)
	if err == nil || dctx.Err() == nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if st, serr := rt.State(cctx, p.id); serr == nil && st.Status == "paused" && before.Status != "paused" {
		if rerr := rt.Resume(cctx, p.id); rerr != nil {
			p.log.Error("thaw container after a timed-out checkpoint", "error", rerr)
		}
	}
	p.log.Warn("checkpoint timed out; CRIU killed", "timeout", timeout, "error", err)
	return fmt.Errorf("checkpoint container %q: CRIU did not finish within %s and was killed: %w", p.id, timeout, err)
}

// cleanupTimeout bounds the runtime calls that undo a timed-out checkpoint
// or restore, which must run after the caller's own bound has passed.
const cleanupTimeout = 10 * time.Second

// Pause freezes every process of the running container.
func (p *Init) Pause(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.state.status(); st != StatusRunning {
		return &TransitionError{From: st, Op: "pause"}
	}
	return p.rt.Pause(ctx, p.id)
}

// Resume thaws a paused container; resuming one that is not paused is
// the runtime's error.
func (p *Init) Resume(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.state.status(); st != StatusRunning {
		return &TransitionError{From: st, Op: "resume"}
	}
	return p.rt.Resume(ctx, p.id)
}
