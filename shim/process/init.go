// Package process owns the container's init process inside the shim: its
// lifecycle as a state machine (created, running, stopped, deleted), its
// stdio, the exit record, and the reaper that collects every child of the
// shim.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/shim/logging"
	"github.com/berth-runtime/berth/shim/runtime"
)

// Status is the init process's lifecycle state.
type Status string

// The states of an init process.
const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusStopped Status = "stopped"
	StatusDeleted Status = "deleted"
)

// drainTimeout bounds how long an exit waits for output still in the pipes.
const drainTimeout = 2 * time.Second

// Config creates an init process.
type Config struct {
	ID       string
	StateDir string
	Bundle   string
	// RuntimeBinary and RuntimeRoot select the OCI runtime and its --root.
	RuntimeBinary string
	RuntimeRoot   string
	// LogPath is the CRI log file; empty discards output.
	LogPath   string
	Stdin     bool
	StdinOnce bool
	Terminal  bool
	// RestoreFrom, when set, is a directory of CRIU images: New then only
	// prepares stdio and Start restores from there.
	RestoreFrom string
	// CriuPath is the CRIU binary the runtime uses; empty means its PATH.
	CriuPath string
	Reaper   *Reaper
	// Logger should carry container_id; nil uses slog.Default with it.
	Logger *slog.Logger
}

func (c Config) validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("container id required: %w", errdefs.ErrInvalidArgument)
	case c.Bundle == "":
		return fmt.Errorf("bundle required for container %q: %w", c.ID, errdefs.ErrInvalidArgument)
	case c.RuntimeBinary == "":
		return fmt.Errorf("runtime binary required for container %q: %w", c.ID, errdefs.ErrInvalidArgument)
	case c.StateDir == "":
		return fmt.Errorf("state dir required for container %q: %w", c.ID, errdefs.ErrInvalidArgument)
	case c.Reaper == nil:
		return fmt.Errorf("reaper required for container %q: %w", c.ID, errdefs.ErrInvalidArgument)
	case c.RestoreFrom != "" && c.Terminal:
		// runc restores a terminal only for a shell job; a CRI container's
		// PTY master lives in the shim, which CRIU cannot reattach.
		return fmt.Errorf("restore container %q with a terminal: %w", c.ID, errdefs.ErrNotImplemented)
	}
	return nil
}

// Init is a container's init process.
type Init struct {
	id       string
	stateDir string
	bundle   string
	rt       *runtime.Runtime
	log      *slog.Logger
	// pid is set in New, or by Start for a restore, and never changes
	// after; atomic because State reads it without mu.
	pid atomic.Int64
	// io is set in New; its methods synchronise themselves.
	io *stdio
	// exited is closed after exit is recorded on disk and in exit.
	exited chan struct{}
	// exit is written once, before exited is closed; read it only after.
	exit Exit

	// reaper is set in New and read-only afterwards.
	reaper *Reaper

	mu sync.Mutex
	// state is the current state; guarded by mu, which is held for a whole
	// transition, runtime command included.
	state state
	// pending is what Start needs to restore from a checkpoint; nil when
	// the container is not (or no longer) waiting for a restore; guarded
	// by mu.
	pending *pendingRestore

	execMu sync.Mutex
	// execs are the exec'd processes not yet deleted, by exec id; guarded
	// by execMu.
	execs map[string]*Exec
	// execsClosed is set once init exited: no exec starts after; guarded
	// by execMu.
	execsClosed bool
	// execsDeleted are ids deleted while their process was still being
	// started: it is killed and forgotten once it runs; guarded by execMu.
	execsDeleted map[string]bool
}

// New runs the runtime's create and returns the created init process. On
// failure nothing is left behind: no runtime state, no open files.
func New(ctx context.Context, c Config) (_ *Init, retErr error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	log := c.Logger
	if log == nil {
		log = slog.Default().With("container_id", c.ID)
	}
	rt := &runtime.Runtime{
		Binary:   c.RuntimeBinary,
		Root:     c.RuntimeRoot,
		LogPath:  filepath.Join(c.StateDir, "runtime-log.json"),
		Monitor:  c.Reaper,
		Logger:   log,
		CriuPath: c.CriuPath,
		// The spec berthd wrote names the cgroup driver.
		SystemdCgroup: runtime.SystemdCgroupsPath(c.Bundle),
	}
	lw, err := logging.Open(c.LogPath)
	if err != nil {
		return nil, err
	}
	p := &Init{id: c.ID, stateDir: c.StateDir, bundle: c.Bundle, rt: rt, log: log,
		reaper: c.Reaper, exited: make(chan struct{}), execs: map[string]*Exec{},
		execsDeleted: map[string]bool{}}
	p.state = &createdState{p: p}
	defer func() {
		if retErr != nil {
			if p.io != nil {
				p.io.closeAll()
			} else {
				_ = lw.Close()
			}
		}
	}()

	if c.RestoreFrom != "" {
		if err := p.prepareRestore(c, lw); err != nil {
			return nil, err
		}
		log.Info("container prepared for restore", "images", c.RestoreFrom)
		return p, nil
	}
	// Exits of unknown pids are held from before create until the init's
	// pid is watched: init may die before its pid file is read.
	release := c.Reaper.Hold()
	defer release()
	if c.Terminal {
		p.io, err = p.createWithConsole(ctx, c, lw)
	} else {
		p.io, err = p.createWithPipes(ctx, c, lw)
	}
	if err != nil {
		return nil, err
	}
	p.io.stdinOnce = c.StdinOnce
	pid, err := readPidFile(p.pidFile())
	if err != nil {
		p.forceDelete()
		return nil, fmt.Errorf("container %q: %w", c.ID, err)
	}
	p.pid.Store(int64(pid))
	exitCh := c.Reaper.Watch(pid)
	p.io.startCopy()
	go p.waitExit(exitCh)
	log.Info("container created", "pid", pid)
	return p, nil
}

func (p *Init) pidFile() string { return filepath.Join(p.stateDir, "init.pid") }

func (p *Init) createWithPipes(ctx context.Context, c Config, lw *logging.Writer) (*stdio, error) {
	sio, child, err := newPipeStdio(lw, c.Stdin)
	if err != nil {
		return nil, err
	}
	err = p.rt.Create(ctx, c.ID, runtime.CreateOpts{
		Bundle:  c.Bundle,
		PidFile: p.pidFile(),
		Stdin:   child.stdin,
		Stdout:  child.stdout,
		Stderr:  child.stderr,
	})
	// The container holds its own copies now; ours would keep the pipes
	// from ever reaching EOF.
	child.close()
	if err != nil {
		sio.log = nil // the caller closes the log writer
		sio.closeAll()
		p.forceDelete()
		return nil, err
	}
	return sio, nil
}

func (p *Init) createWithConsole(ctx context.Context, c Config, lw *logging.Writer) (*stdio, error) {
	master, err := receiveConsole(ctx, func(sock string) error {
		return p.rt.Create(ctx, c.ID, runtime.CreateOpts{
			Bundle:        c.Bundle,
			PidFile:       p.pidFile(),
			ConsoleSocket: sock,
		})
	})
	if err != nil {
		p.forceDelete()
		return nil, err
	}
	return newConsoleStdio(lw, master, c.Stdin), nil
}

// forceDelete removes whatever create left, with a fresh context: the
// request's may be what failed.
func (p *Init) forceDelete() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.rt.Delete(ctx, p.id, true); err != nil {
		p.log.Warn("cleanup after failed create", "error", err)
	}
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read init pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("init pid file %q: %w", path, errdefs.ErrDataLoss)
	}
	return pid, nil
}

// waitExit records init's exit: output drained (bounded), exit file on
// disk, then state and waiters. The file comes first so that whoever learns
// of the exit can also find it after a shim crash.
func (p *Init) waitExit(ch <-chan Exit) {
	e := <-ch
	// An exec'd process outside the container's own pid namespace (a pod
	// sharing one) would outlive init; the container stopping ends it.
	p.killExecs()
	p.io.drain(drainTimeout)
	// Nothing writes to the init's log or reads its stdin after this.
	p.io.closeAll()
	err := api.WriteExitFile(p.stateDir, api.ExitFile{
		ExitStatus: int32(e.Status),
		ExitedAt:   e.At.UnixNano(),
	})
	if err != nil {
		p.log.Error("write exit file", "error", err)
	}
	p.exit = e
	p.mu.Lock()
	p.state = p.state.exited()
	p.mu.Unlock()
	close(p.exited)
	p.log.Info("container exited", "pid", e.Pid, "exit_status", e.Status)
}

// Pid returns the init process's pid.
func (p *Init) Pid() int { return int(p.pid.Load()) }

// Update changes the resources of a created or running container;
// resources is the JSON of an OCI LinuxResources.
func (p *Init) Update(ctx context.Context, resources []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch st := p.state.status(); st {
	case StatusCreated, StatusRunning:
	default:
		return &TransitionError{From: st, Op: "update"}
	}
	return p.rt.Update(ctx, p.id, resources)
}

// ReopenLog reopens the CRI log file after kubelet rotated it; after the
// exit, when nothing writes anymore, it does nothing.
func (p *Init) ReopenLog() error {
	return p.io.log.Reopen()
}

// Start starts the created container.
func (p *Init) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.start(ctx)
}

// Kill signals the init process (every process of the container with all).
// Signalling a process that already exited succeeds.
func (p *Init) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.kill(ctx, sig, all)
}

// Delete removes the container from the runtime after it exited, or before
// it started (killing it), and returns the exit. Deleting twice succeeds.
func (p *Init) Delete(ctx context.Context) (Exit, error) {
	p.mu.Lock()
	err := p.state.delete(ctx)
	p.mu.Unlock()
	if err != nil {
		return Exit{}, err
	}
	return p.Wait(ctx)
}

// Wait blocks until the exit is recorded (exit file written).
func (p *Init) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.exited:
		return p.exit, nil
	case <-ctx.Done():
		return Exit{}, fmt.Errorf("wait for container %q: %w", p.id, ctx.Err())
	}
}

// Info is a snapshot of the init process.
type Info struct {
	Pid    int
	Status Status
	// Exit is nil until the exit is recorded.
	Exit *Exit
}

// State returns a snapshot.
func (p *Init) State() Info {
	p.mu.Lock()
	st := p.state.status()
	p.mu.Unlock()
	info := Info{Pid: p.Pid(), Status: st}
	select {
	case <-p.exited:
		e := p.exit
		info.Exit = &e
	default:
	}
	return info
}

// Exited reports whether the exit has been recorded.
func (p *Init) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// TransitionError is an operation the current state does not allow.
type TransitionError struct {
	From Status
	Op   string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot %s a %s container", e.Op, e.From)
}

// Unwrap classifies every invalid transition as a failed precondition.
func (e *TransitionError) Unwrap() error { return errdefs.ErrFailedPrecondition }

// isGone reports a runtime error meaning the process or container is gone.
func isGone(err error) bool {
	return errors.Is(err, errdefs.ErrNotFound)
}
