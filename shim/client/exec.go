package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/shim/api"
)

// ExecOpts start a process in the running container.
type ExecOpts struct {
	// ID names the exec among the container's; empty picks a random one.
	ID   string
	Args []string
	// Env entries (KEY=VALUE) override or extend the container's.
	Env      []string
	Terminal bool
	// FifoDir is where the stdio FIFOs are made (in a new directory that
	// Close removes); it must be on a local filesystem.
	FifoDir string
	// Stdin, when set, is copied to the process until EOF, which closes the
	// process's stdin. Nil gives it /dev/null.
	Stdin io.Reader
	// Stdout and Stderr receive the output; nil discards it. With Terminal
	// everything arrives on Stdout.
	Stdout, Stderr io.Writer
}

// Process is an exec'd process. Close it when done: that kills it if it
// still runs and releases its FIFOs and the shim's record.
type Process struct {
	c     *Client
	id    string
	pid   int
	fifos *fifoSet
	// output is closed when all output was copied.
	output <-chan struct{}
	closed sync.Once
}

// newID returns a random id for an exec or attach session.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Exec starts a process in the container with the container's own process
// settings (env, cwd, user, capabilities) and o's args. A container that is
// not running is errdefs.ErrFailedPrecondition; no args
// errdefs.ErrInvalidArgument.
func (c *Client) Exec(ctx context.Context, o ExecOpts) (_ *Process, retErr error) {
	if len(o.Args) == 0 || o.Args[0] == "" {
		return nil, fmt.Errorf("exec: command required: %w", errdefs.ErrInvalidArgument)
	}
	if o.FifoDir == "" {
		return nil, fmt.Errorf("exec: fifo dir required: %w", errdefs.ErrInvalidArgument)
	}
	if o.ID == "" {
		o.ID = newID()
	}
	fifos, err := newFifoSet(o.FifoDir, o.Stdin != nil, o.Stdout != nil, o.Stderr != nil && !o.Terminal)
	if err != nil {
		return nil, fmt.Errorf("exec %q: %w", o.ID, err)
	}
	p := &Process{c: c, id: o.ID, fifos: fifos}
	defer func() {
		if retErr != nil {
			// A request cancelled mid-way may still have started it.
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = p.Close(cctx)
		}
	}()
	resp, err := c.svc.Exec(ctx, &api.ExecRequest{
		ExecId: o.ID, Args: o.Args, Env: o.Env, Terminal: o.Terminal,
		Stdin: fifos.stdinPath, Stdout: fifos.stdoutPath, Stderr: fifos.stderrPath,
	})
	if err != nil {
		return nil, toNative("exec", err)
	}
	p.pid = int(resp.Pid)
	if err := fifos.opened(); err != nil {
		return nil, fmt.Errorf("exec %q: %w", o.ID, err)
	}
	p.output = fifos.copyOutput(o.Stdout, o.Stderr)
	fifos.copyInput(o.Stdin)
	return p, nil
}

// ID returns the exec id.
func (p *Process) ID() string { return p.id }

// Pid returns the process's host pid.
func (p *Process) Pid() int { return p.pid }

// Wait blocks until the process exited and its output was copied (output
// still held open by a background child is cut after a short grace).
func (p *Process) Wait(ctx context.Context) (Exit, error) {
	resp, err := p.c.svc.Wait(ctx, &api.WaitRequest{ExecId: p.id})
	if err != nil {
		return Exit{}, toNative("wait exec", err)
	}
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-p.output:
	case <-t.C:
		p.fifos.closeOutput()
	case <-ctx.Done():
		p.fifos.closeOutput()
	}
	return Exit{Status: resp.ExitStatus, ExitedAt: time.Unix(0, resp.ExitedAt)}, nil
}

// Kill signals the process; one that already exited succeeds.
func (p *Process) Kill(ctx context.Context, sig syscall.Signal) error {
	_, err := p.c.svc.Kill(ctx, &api.KillRequest{Signal: uint32(sig), ExecId: p.id})
	return toNative("kill exec", err)
}

// Resize sets the process's terminal size.
func (p *Process) Resize(ctx context.Context, width, height uint32) error {
	_, err := p.c.svc.ResizePty(ctx, &api.ResizePtyRequest{ExecId: p.id, Width: width, Height: height})
	return toNative("resize exec", err)
}

// Close kills the process if it still runs, has the shim forget it and
// releases the FIFOs. Closing again does nothing.
func (p *Process) Close(ctx context.Context) error {
	var err error
	p.closed.Do(func() {
		_, derr := p.c.svc.Delete(ctx, &api.DeleteRequest{ExecId: p.id})
		// An exec the shim never recorded, or a shim that is gone with
		// its container, leaves nothing to delete.
		if derr = toNative("delete exec", derr); derr != nil &&
			!errdefs.IsNotFound(derr) && !errdefs.IsUnavailable(derr) {
			err = derr
		}
		p.fifos.close()
	})
	return err
}

// AttachOpts attach to the container's main process.
type AttachOpts struct {
	// FifoDir is where the FIFOs are made (in a new directory removed
	// afterwards).
	FifoDir string
	// Stdin, when set and the container was created with stdin, is copied
	// to it; its EOF closes the container's stdin if it was created
	// stdin_once.
	Stdin io.Reader
	// Stdout and Stderr receive output from now on; with a terminal
	// everything arrives on Stdout.
	Stdout, Stderr io.Writer
}

// Attach streams the container's output (the log keeps being written) and
// feeds its stdin until the container's output ends (it exited) or ctx is
// done (the client went away). Several sessions may attach at once.
func (c *Client) Attach(ctx context.Context, o AttachOpts) error {
	if o.FifoDir == "" {
		return fmt.Errorf("attach: fifo dir required: %w", errdefs.ErrInvalidArgument)
	}
	id := newID()
	fifos, err := newFifoSet(o.FifoDir, o.Stdin != nil, o.Stdout != nil, o.Stderr != nil)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer fifos.close()
	_, err = c.svc.Attach(ctx, &api.AttachRequest{
		AttachId: id, Stdin: fifos.stdinPath, Stdout: fifos.stdoutPath, Stderr: fifos.stderrPath,
	})
	if err != nil {
		return toNative("attach", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.svc.Detach(dctx, &api.DetachRequest{AttachId: id})
	}()
	if err := fifos.opened(); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	output := fifos.copyOutput(o.Stdout, o.Stderr)
	fifos.copyInput(o.Stdin)
	if o.Stdout == nil && o.Stderr == nil {
		// No output to see end: the container's exit is the end.
		_, err := c.svc.Wait(ctx, &api.WaitRequest{})
		if err = toNative("attach", err); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
	select {
	case <-output:
	case <-ctx.Done():
		fifos.closeOutput()
	}
	return nil
}

// ResizePty resizes the container's own terminal.
func (c *Client) ResizePty(ctx context.Context, width, height uint32) error {
	_, err := c.svc.ResizePty(ctx, &api.ResizePtyRequest{Width: width, Height: height})
	return toNative("resize", err)
}
