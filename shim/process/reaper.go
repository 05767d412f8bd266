package process

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is a reaped child.
type Exit struct {
	Pid int
	// Status is the exit code, or 128+signal when a signal killed it.
	Status int
	At     time.Time
}

// Reaper collects every child of the shim with one SIGCHLD loop. The shim
// is a child subreaper, so besides the commands it starts, the container's
// init (once the runtime's create exits) and any orphan of the container
// become its children; exec.Cmd.Wait would race this loop, so commands are
// started through Start and their exits are handed to their waiter here.
type Reaper struct {
	log  *slog.Logger
	sigs chan os.Signal

	mu sync.Mutex
	// waiters maps a pid to the callback that takes its exit; guarded by mu.
	waiters map[int]func(Exit)
	// held collects exits nobody waits for while holds > 0, so an init that
	// exits before its pid is read from the pid file is not lost
	// (containerd's preStart); guarded by mu.
	held  map[int]Exit
	holds int // guarded by mu
}

// NewReaper subscribes to SIGCHLD at once, so no exit signalled before Run
// starts is missed; call Run to collect them.
func NewReaper(log *slog.Logger) *Reaper {
	if log == nil {
		log = slog.Default()
	}
	r := &Reaper{log: log, sigs: make(chan os.Signal, 32), waiters: map[int]func(Exit){}}
	signal.Notify(r.sigs, unix.SIGCHLD)
	return r
}

// Run reaps children until ctx is done, then stops listening for SIGCHLD.
func (r *Reaper) Run(ctx context.Context) {
	defer signal.Stop(r.sigs)
	r.reapAll()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.sigs:
			r.reapAll()
		}
	}
}

func (r *Reaper) reapAll() {
	for r.reapOne() {
	}
}

// reapOne reaps one exited child, if any, and dispatches its exit. mu is
// held from wait4 to dispatch so that Signal never sees a pid that was
// reaped (and may be reused) but is still registered as waited for.
func (r *Reaper) reapOne() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return false
		}
		r.dispatchLocked(Exit{Pid: pid, Status: exitStatus(ws), At: time.Now()})
		return true
	}
}

// Signal sends sig to pid if it is a watched child not reaped yet, and
// reports whether it did. The pid cannot have been reused: an unreaped
// child keeps its pid, and reaping takes the same lock.
func (r *Reaper) Signal(pid int, sig unix.Signal) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.waiters[pid]; !ok {
		return false, nil
	}
	if err := unix.Kill(pid, sig); err != nil {
		return false, err
	}
	return true, nil
}

func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func (r *Reaper) dispatchLocked(e Exit) {
	if fn, ok := r.waiters[e.Pid]; ok {
		delete(r.waiters, e.Pid)
		fn(e)
		return
	}
	if r.holds > 0 {
		r.held[e.Pid] = e
		return
	}
	r.log.Debug("reaped orphan", "pid", e.Pid, "status", e.Status)
}

// Start starts cmd and returns a channel receiving its exit status once.
// The lock is held across cmd.Start so the reaper cannot dispatch the exit
// of a command that dies instantly before its waiter is registered.
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan int, error) {
	ch := make(chan int, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r.waiters[cmd.Process.Pid] = func(e Exit) { ch <- e.Status }
	return ch, nil
}

// Hold makes the reaper keep exits of unknown pids until the returned
// release is called. Take it before a command whose grandchild's pid is
// learned only later (the container init), then Watch that pid.
func (r *Reaper) Hold() (release func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holds == 0 {
		r.held = map[int]Exit{}
	}
	r.holds++
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.holds--
			if r.holds == 0 {
				r.held = nil
			}
		})
	}
}

// Watch returns a channel receiving pid's exit once, including an exit
// already held.
func (r *Reaper) Watch(pid int) <-chan Exit {
	ch := make(chan Exit, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.held[pid]; ok {
		delete(r.held, pid)
		ch <- e
		return ch
	}
	r.waiters[pid] = func(e Exit) { ch <- e }
	return ch
}
