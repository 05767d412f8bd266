package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/shim/runtime"
)

// ExecConfig starts an additional process in the running container.
type ExecConfig struct {
	// ID names the process among the container's execs.
	ID   string
	Args []string
	// Env entries (KEY=VALUE) override or extend the container's.
	Env      []string
	Terminal bool
	// Stdin, Stdout and Stderr are FIFO paths the caller created and holds
	// open (so opening them here never blocks); empty means none.
	Stdin, Stdout, Stderr string
}

func (c ExecConfig) validate(container string) error {
	if len(c.Args) == 0 || c.Args[0] == "" {
		return fmt.Errorf("exec in container %q: command required: %w", container, errdefs.ErrInvalidArgument)
	}
	if c.ID == "" || len(c.ID) > 128 {
		return fmt.Errorf("exec id %q in container %q: %w", c.ID, container, errdefs.ErrInvalidArgument)
	}
	// The id names files in the state directory.
	for _, r := range c.ID {
		ok := r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return fmt.Errorf("exec id %q in container %q: %w", c.ID, container, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Exec is a process started in the container with the runtime's exec. It is
// a child of the shim (the subreaper), so its exit comes from the reaper.
//
// Without a terminal the process writes straight into the caller's FIFOs:
// nothing is copied in the shim. With one, the shim copies between the PTY
// master and the FIFOs.
type Exec struct {
	id   string
	init *Init
	log  *slog.Logger
	// pid is set before the Exec is published and read-only afterwards.
	pid int
	// console is the PTY master (terminal only); set before the Exec is
	// published, closed by waitExit once output is drained.
	console *os.File
	// files are the FIFO ends the terminal copies use; closed by waitExit.
	files []*os.File
	// output is closed when the master-to-stdout copy ends.
	output chan struct{}
	// exited is closed after exit is written; read exit only after.
	exited chan struct{}
	exit   Exit
}

func (p *Init) execPath(id, suffix string) string {
	return filepath.Join(p.stateDir, "exec-"+id+suffix)
}

// Exec starts a process in the running container. It fails with
// errdefs.ErrFailedPrecondition when the container is not running and
// errdefs.ErrAlreadyExists for an exec id in use.
func (p *Init) Exec(ctx context.Context, c ExecConfig) (*Exec, error) {
	if err := c.validate(p.id); err != nil {
		return nil, err
	}
	p.execMu.Lock()
	if p.execsClosed {
		p.execMu.Unlock()
		return nil, fmt.Errorf("exec in container %q: %w", p.id, &TransitionError{From: StatusStopped, Op: "exec in"})
	}
	if _, ok := p.execs[c.ID]; ok {
		p.execMu.Unlock()
		return nil, fmt.Errorf("exec %q in container %q: %w", c.ID, p.id, errdefs.ErrAlreadyExists)
	}
	// A nil entry reserves the id while the runtime runs.
	p.execs[c.ID] = nil
	p.execMu.Unlock()

	e, err := p.startExec(ctx, c)
	p.execMu.Lock()
	defer p.execMu.Unlock()
	if err != nil {
		delete(p.execs, c.ID)
		delete(p.execsDeleted, c.ID)
		return nil, err
	}
	p.execs[c.ID] = e
	if p.execsClosed {
		// init exited while the runtime ran: the container has stopped.
		_ = e.Kill(unix.SIGKILL)
	}
	if p.execsDeleted[c.ID] {
		// Its client gave up (berthd's request was cancelled) and deleted
		// it while the runtime ran: that delete found nothing to kill.
		delete(p.execsDeleted, c.ID)
		_ = e.Kill(unix.SIGKILL)
		go func() {
			if _, err := p.DeleteExec(context.Background(), c.ID); err != nil {
				p.log.Warn("forget an exec deleted while it started", "exec_id", c.ID, "error", err)
			}
		}()
	}
	return e, nil
}

func (p *Init) startExec(ctx context.Context, c ExecConfig) (_ *Exec, retErr error) {
	p.mu.Lock()
	st := p.state.status()
	p.mu.Unlock()
	if st != StatusRunning {
		return nil, fmt.Errorf("exec in container %q: %w", p.id, &TransitionError{From: st, Op: "exec in"})
	}
	procFile := p.execPath(c.ID, ".json")
	if err := p.writeExecProcess(procFile, c); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			p.removeExecFiles(c.ID)
		}
	}()
	fifos, err := openExecFifos(c)
	if err != nil {
		return nil, fmt.Errorf("exec %q in container %q: %w", c.ID, p.id, err)
	}
	e := &Exec{id: c.ID, init: p, log: p.log.With("exec_id", c.ID),
		output: make(chan struct{}), exited: make(chan struct{})}
	opts := runtime.ExecOpts{
		ProcessFile: procFile,
		PidFile:     p.execPath(c.ID, ".pid"),
		LogPath:     p.execPath(c.ID, "-log.json"),
	}
	// Exits of unknown pids are held until the exec's pid is watched.
	release := p.reaper.Hold()
	defer release()
	if c.Terminal {
		e.console, err = receiveConsole(ctx, func(sock string) error {
			opts.ConsoleSocket = sock
			return p.rt.Exec(ctx, p.id, opts)
		})
		if err != nil {
			fifos.close()
			return nil, err
		}
		e.files = fifos.list()
	} else {
		// The process reads and writes these directly: they must block.
		if err := fifos.setBlocking(); err != nil {
			fifos.close()
			return nil, fmt.Errorf("exec %q in container %q: %w", c.ID, p.id, err)
		}
		opts.Stdin, opts.Stdout, opts.Stderr = fifos.stdin, fifos.stdout, fifos.stderr
		err = p.rt.Exec(ctx, p.id, opts)
		// The process holds its own copies; the caller sees EOF when it
		// (and whatever inherited them) is gone.
		fifos.close()
		if err != nil {
			return nil, err
		}
	}
	pid, err := readPidFile(opts.PidFile)
	if err != nil {
		e.closeFiles()
		return nil, fmt.Errorf("exec %q in container %q: %w", c.ID, p.id, err)
	}
	e.pid = pid
	exitCh := p.reaper.Watch(pid)
	if e.console != nil {
		e.startCopy(fifos)
	} else {
		close(e.output)
	}
	go e.waitExit(exitCh)
	e.log.Debug("exec started", "pid", pid)
	return e, nil
}

// writeExecProcess writes the container's own process, with the exec's
// args, terminal and extra env, for the runtime's --process.
func (p *Init) writeExecProcess(path string, c ExecConfig) error {
	base, err := api.ReadProcess(p.bundle)
	if err != nil {
		return fmt.Errorf("bundle of container %q: %w", p.id, err)
	}
	if base == nil {
		return fmt.Errorf("bundle config of container %q has no process: %w", p.id, errdefs.ErrFailedPrecondition)
	}
	proc := *base
	proc.Args = c.Args
	proc.Terminal = c.Terminal
	proc.ConsoleSize = nil
	proc.Env = mergeEnv(proc.Env, c.Env)
	out, err := json.Marshal(&proc)
	if err != nil {
		return fmt.Errorf("encode exec process: %w", err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("write exec process: %w", err)
	}
	return nil
}

// mergeEnv returns base with each KEY=VALUE of extra replacing the same key
// or appended.
func mergeEnv(base, extra []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range extra {
		key, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, b := range out {
			if k, _, _ := strings.Cut(b, "="); k == key {
				out[i], replaced = kv, true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

func (p *Init) removeExecFiles(id string) {
	for _, s := range []string{".json", ".pid", "-log.json"} {
		_ = os.Remove(p.execPath(id, s))
	}
}

// execFifos are the shim's ends of an exec's FIFOs.
type execFifos struct {
	stdin, stdout, stderr *os.File
}

// openExecFifos opens the caller's FIFOs without blocking: the caller holds
// the other ends, so a missing reader (ENXIO) means it went away.
func openExecFifos(c ExecConfig) (_ execFifos, err error) {
	var f execFifos
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	open := func(path string, flag int) (*os.File, error) {
		if path == "" {
			return nil, nil
		}
		file, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open fifo: %w", err)
		}
		return file, nil
	}
	if f.stdin, err = open(c.Stdin, os.O_RDONLY); err != nil {
		return f, err
	}
	if f.stdout, err = open(c.Stdout, os.O_WRONLY); err != nil {
		return f, err
	}
	if f.stderr, err = open(c.Stderr, os.O_WRONLY); err != nil {
		return f, err
	}
	return f, nil
}

func (f execFifos) list() []*os.File {
	var out []*os.File
	for _, x := range []*os.File{f.stdin, f.stdout, f.stderr} {
		if x != nil {
			out = append(out, x)
		}
	}
	return out
}

// setBlocking clears O_NONBLOCK, which was only needed to open them
// without waiting and which File.Fd does not undo for a flag the caller
// passed.
func (f execFifos) setBlocking() error {
	for _, x := range f.list() {
		rc, err := x.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), false) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set fifo blocking: %w", serr)
		}
	}
	return nil
}

func (f execFifos) close() {
	for _, x := range f.list() {
		_ = x.Close()
	}
}

// startCopy pumps the PTY master to stdout and stdin to the master. A
// terminal has no separate stderr; its FIFO, if any, is only closed.
func (e *Exec) startCopy(f execFifos) {
	go func() {
		defer close(e.output)
		if f.stdout != nil {
			_, _ = io.Copy(f.stdout, e.console)
		} else {
			_, _ = io.Copy(io.Discard, e.console)
		}
	}()
	if f.stdin != nil {
		go func() { _, _ = io.Copy(e.console, f.stdin) }()
	}
}

// waitExit records the exit once the output is drained (bounded: a
// background child may keep the terminal open).
func (e *Exec) waitExit(ch <-chan Exit) {
	x := <-ch
	t := time.NewTimer(drainTimeout)
	select {
	case <-e.output:
	case <-t.C:
	}
	t.Stop()
	e.closeFiles()
	e.exit = x
	close(e.exited)
	e.log.Debug("exec exited", "pid", x.Pid, "exit_status", x.Status)
}

func (e *Exec) closeFiles() {
	if e.console != nil {
		_ = e.console.Close()
	}
	for _, f := range e.files {
		_ = f.Close()
	}
}

// Pid returns the process's host pid.
func (e *Exec) Pid() int { return e.pid }

// Kill signals the process; one that already exited succeeds.
func (e *Exec) Kill(sig syscall.Signal) error {
	select {
	case <-e.exited:
		return nil
	default:
	}
	// Until the reaper collects it the pid cannot be reused, so signalling
	// the pid directly is safe (the runtime's kill addresses only init).
	if err := unix.Kill(e.pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal exec %q: %w", e.id, err)
	}
	return nil
}

// Wait blocks until the exit is recorded.
func (e *Exec) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-e.exited:
		return e.exit, nil
	case <-ctx.Done():
		return Exit{}, fmt.Errorf("wait for exec %q: %w", e.id, ctx.Err())
	}
}

// Resize sets the terminal size; errdefs.ErrFailedPrecondition without one.
func (e *Exec) Resize(width, height uint32) error {
	if e.console == nil {
		return fmt.Errorf("resize exec %q without a terminal: %w", e.id, errdefs.ErrFailedPrecondition)
	}
	return resizeConsole(e.console, width, height)
}

// LookupExec returns an exec'd process; errdefs.ErrNotFound if unknown.
func (p *Init) LookupExec(id string) (*Exec, error) {
	p.execMu.Lock()
	defer p.execMu.Unlock()
	e := p.execs[id]
	if e == nil {
		return nil, fmt.Errorf("exec %q in container %q: %w", id, p.id, errdefs.ErrNotFound)
	}
	return e, nil
}

// DeleteExec kills the process if it still runs, waits for its exit and
// forgets it. Deleting an unknown exec succeeds.
func (p *Init) DeleteExec(ctx context.Context, id string) (Exit, error) {
	p.execMu.Lock()
	if e, ok := p.execs[id]; ok && e == nil {
		// Still starting: Exec kills and forgets it once it runs.
		p.execsDeleted[id] = true
		p.execMu.Unlock()
		return Exit{}, nil
	}
	p.execMu.Unlock()
	e, err := p.LookupExec(id)
	if err != nil {
		return Exit{}, nil
	}
	if err := e.Kill(unix.SIGKILL); err != nil {
		return Exit{}, err
	}
	x, err := e.Wait(ctx)
	if err != nil {
		return Exit{}, err
	}
	p.execMu.Lock()
	if p.execs[id] == e {
		delete(p.execs, id)
	}
	p.execMu.Unlock()
	p.removeExecFiles(id)
	return x, nil
}

// killExecs stops every exec'd process and refuses new ones: the container
// is stopping.
func (p *Init) killExecs() {
	p.execMu.Lock()
	defer p.execMu.Unlock()
	p.execsClosed = true
	for _, e := range p.execs {
		if e != nil {
			_ = e.Kill(unix.SIGKILL)
		}
	}
}

// receiveConsole runs the runtime with a console socket and returns the
// PTY master it sends.
func receiveConsole(ctx context.Context, run func(sock string) error) (*os.File, error) {
	cs, err := newConsoleSocket()
	if err != nil {
		return nil, err
	}
	defer cs.close()
	type result struct {
		f   *os.File
		err error
	}
	got := make(chan result, 1)
	go func() {
		f, err := cs.receive(ctx)
		got <- result{f, err}
	}()
	err = run(cs.path)
	var r result
	if err == nil {
		// The runtime sends the master before it returns; the timer only
		// guards against one that never does.
		select {
		case r = <-got:
		case <-time.After(10 * time.Second):
			cs.close()
			r = <-got
		}
		err = r.err
	} else {
		cs.close()
		r = <-got
	}
	if err != nil {
		if r.f != nil {
			_ = r.f.Close()
		}
		return nil, err
	}
	return r.f, nil
}

// resizeConsole sets a PTY's window size without taking the file out of the
// poller (File.Fd would make it blocking, and Close could then no longer
// interrupt a read).
func resizeConsole(f *os.File, width, height uint32) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("resize terminal: %w", err)
	}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(height), Col: uint16(width)})
	})
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return fmt.Errorf("resize terminal: %w", err)
	}
	return nil
}
