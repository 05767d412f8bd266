// Package client is berthd's side of a shim: spawn one detached, connect
// (again, after a berthd restart), call its ttrpc API with errors mapped
// back to errdefs, and clean up after a shim that died.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/berth-runtime/berth/shim/api"
)

// StartOpts spawn a shim.
type StartOpts struct {
	ID         string
	ShimBinary string
	Socket     string
	// StateDir exists or is created (0700).
	StateDir string
}

// CreateOpts create the container in a started shim.
type CreateOpts struct {
	Bundle        string
	RuntimeBinary string
	RuntimeRoot   string
	// LogPath is the CRI log file; empty discards output.
	LogPath   string
	Stdin     bool
	StdinOnce bool
	Terminal  bool
	// RestoreFrom, when set, is a directory of CRIU images: the shim then
	// restores the container from them at Start instead of starting it.
	RestoreFrom string
	// CriuPath is the CRIU binary for checkpoint and restore; empty means
	// the runtime's PATH.
	CriuPath string
}

// Exit is a container's exit.
type Exit struct {
	Status   int32
	ExitedAt time.Time
}

// The container statuses State reports.
const (
	StatusCreated = "created"
	StatusRunning = "running"
	StatusStopped = "stopped"
	StatusUnknown = "unknown"
)

// State is a snapshot of the container's init process.
type State struct {
	Pid int
	// Status is one of StatusCreated, StatusRunning, StatusStopped.
	Status string
	// Exit is nil until the exit is recorded.
	Exit *Exit
}

// Client is a connection to one shim.
type Client struct {
	socket string
	conn   net.Conn
	tc     *ttrpc.Client
	svc    api.ShimService
	// stateDir finds the shim's pid file; exited, when this client spawned
	// the shim, is closed once the shim process was reaped.
	stateDir string
	exited   <-chan struct{}
}

// Start spawns a detached shim (`<shim> start`, which returns once the
// shim listens) and connects to it. On failure no shim is left running.
func Start(ctx context.Context, o StartOpts) (_ *Client, err error) {
	if o.ID == "" || o.ShimBinary == "" || o.Socket == "" || o.StateDir == "" {
		return nil, fmt.Errorf("start shim: id, binary, socket and state dir required: %w", errdefs.ErrInvalidArgument)
	}
	ctx, span := startSpan(ctx, "shim.spawn", trace.WithAttributes(attribute.String("berth.container_id", o.ID)))
	defer func() { endSpan(span, err) }()
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir for container %q: %w", o.ID, err)
	}
	exited, err := spawn(ctx, o)
	if err != nil {
		killShim(o.StateDir)
		_ = os.Remove(o.Socket)
		return nil, fmt.Errorf("start shim for container %q: %w", o.ID, err)
	}
	c, err := Connect(ctx, o.Socket, o.StateDir)
	if err != nil {
		killShim(o.StateDir)
		_ = os.Remove(o.Socket)
		return nil, fmt.Errorf("start shim for container %q: %w", o.ID, err)
	}
	c.exited = exited
	return c, nil
}

// Connect dials a running shim, e.g. after a berthd restart. stateDir
// holds its pid file, so WaitGone can tell when it exited.
func Connect(ctx context.Context, socket, stateDir string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("connect to shim %q: %w", socket, errors.Join(errdefs.ErrUnavailable, err))
	}
	tc := ttrpc.NewClient(conn, ttrpc.WithUnaryClientInterceptor(traceCalls))
	return &Client{socket: socket, conn: conn, tc: tc, svc: api.NewShimClient(tc), stateDir: stateDir}, nil
}

// Close closes the connection; the shim keeps running.
func (c *Client) Close() error {
	err := c.tc.Close()
	if errors.Is(err, ttrpc.ErrClosed) {
		return nil
	}
	return err
}

// toNative maps a ttrpc error back into errdefs; a lost connection (the
// shim died) is ErrUnavailable.
func toNative(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ttrpc.ErrClosed) || errors.Is(err, ttrpc.ErrServerClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("shim %s: connection lost: %w", op, errors.Join(errdefs.ErrUnavailable, err))
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shim %s: %w", op, err)
	}
	return fmt.Errorf("shim %s: %w", op, errgrpc.ToNative(err))
}

// Create creates the container and returns its init pid.
func (c *Client) Create(ctx context.Context, o CreateOpts) (int, error) {
	resp, err := c.svc.Create(ctx, &api.CreateRequest{
		Bundle:        o.Bundle,
		RuntimeBinary: o.RuntimeBinary,
		RuntimeRoot:   o.RuntimeRoot,
		LogPath:       o.LogPath,
		Stdin:         o.Stdin,
		StdinOnce:     o.StdinOnce,
		Terminal:      o.Terminal,
		RestoreFrom:   o.RestoreFrom,
		CriuPath:      o.CriuPath,
	})
	if err != nil {
		return 0, toNative("create", err)
	}
	return int(resp.Pid), nil
}

// Start starts the created container.
func (c *Client) Start(ctx context.Context) (int, error) {
	return c.start(ctx, &api.StartRequest{})
}

// Restore starts a container created from a checkpoint: the shim restores
// it within timeout (0: ctx's deadline alone), killing CRIU and deleting
// the half-restored container when that passes. ctx must outlast timeout
// by the shim's cleanup time.
func (c *Client) Restore(ctx context.Context, timeout time.Duration) (int, error) {
	return c.start(ctx, &api.StartRequest{TimeoutMs: uint64(timeout.Milliseconds())})
}

func (c *Client) start(ctx context.Context, r *api.StartRequest) (int, error) {
	resp, err := c.svc.Start(ctx, r)
	if err != nil {
		return 0, toNative("start", err)
	}
	return int(resp.Pid), nil
}

// Kill signals the init process (all: every process of the container).
// Killing a process that already exited succeeds.
func (c *Client) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	_, err := c.svc.Kill(ctx, &api.KillRequest{Signal: uint32(sig), All: all})
	return toNative("kill", err)
}

// State returns the container's state.
func (c *Client) State(ctx context.Context) (State, error) {
	resp, err := c.svc.State(ctx, &api.StateRequest{})
	if err != nil {
		return State{}, toNative("state", err)
	}
	st := State{Pid: int(resp.Pid), Status: statusName(resp.Status)}
	if resp.HasExited {
		st.Exit = &Exit{Status: resp.ExitStatus, ExitedAt: time.Unix(0, resp.ExitedAt)}
	}
	return st, nil
}

func statusName(s api.Status) string {
	switch s {
	case api.Status_STATUS_CREATED:
		return StatusCreated
	case api.Status_STATUS_RUNNING:
		return StatusRunning
	case api.Status_STATUS_STOPPED:
		return StatusStopped
	}
	return StatusUnknown
}

// Wait blocks until the container exited and its exit file is written. A
// lost connection (the shim died) is a wrapped errdefs.ErrUnavailable;
// ReadExit and Cleanup are the way on from there.
func (c *Client) Wait(ctx context.Context) (Exit, error) {
	resp, err := c.svc.Wait(ctx, &api.WaitRequest{})
	if err != nil {
		return Exit{}, toNative("wait", err)
	}
	return Exit{Status: resp.ExitStatus, ExitedAt: time.Unix(0, resp.ExitedAt)}, nil
}

// Delete removes the exited (or never started) container from the runtime.
func (c *Client) Delete(ctx context.Context) (Exit, error) {
	resp, err := c.svc.Delete(ctx, &api.DeleteRequest{})
	if err != nil {
		return Exit{}, toNative("delete", err)
	}
	return Exit{Status: resp.ExitStatus, ExitedAt: time.Unix(0, resp.ExitedAt)}, nil
}

// Shutdown makes the shim exit; refused (ErrFailedPrecondition) while the
// container runs. The connection is closed afterwards.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := c.svc.Shutdown(ctx, &api.ShutdownRequest{})
	// The shim may close the connection before its reply is read; that it
	// is gone is what was asked for (containerd's shim client agrees).
	if err != nil && !errors.Is(err, ttrpc.ErrClosed) {
		return toNative("shutdown", err)
	}
	return c.Close()
}

// WaitGone waits, after Shutdown, until the shim process is gone: reaped
// when this client spawned it, else no longer alive by its pid file. It
// returns ctx's error when the shim outlives ctx.
func (c *Client) WaitGone(ctx context.Context) error {
	if c.exited != nil {
		select {
		case <-c.exited:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("shim %q still running: %w", c.socket, ctx.Err())
		}
	}
	if c.stateDir == "" {
		return nil
	}
	for delay := time.Millisecond; ShimAlive(c.stateDir); delay = min(2*delay, 50*time.Millisecond) {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return fmt.Errorf("shim %q still running: %w", c.socket, ctx.Err())
		}
	}
	return nil
}

// ReadExit returns the exit recorded in stateDir; errdefs.ErrNotFound when
// there is none yet.
func ReadExit(stateDir string) (Exit, error) {
	e, err := api.ReadExitFile(stateDir)
	if err != nil {
		return Exit{}, err
	}
	return Exit{Status: e.ExitStatus, ExitedAt: time.Unix(0, e.ExitedAt)}, nil
}

// ShimProcess is a shim's pid and its start time (clock ticks since boot),
// which tell it from a later process given the same pid.
type ShimProcess struct {
	Pid   int
	Start uint64
}

// ReadShimProcess returns the shim recorded in stateDir.
func ReadShimProcess(stateDir string) (ShimProcess, error) {
	pid, start, err := api.ReadShimPid(stateDir)
	return ShimProcess{Pid: pid, Start: start}, err
}

// Alive reports whether p still runs and is no zombie.
func (p ShimProcess) Alive() bool { return p.Pid > 0 && processIs(p.Pid, p.Start) }

// ShimAlive reports whether the shim recorded in stateDir still runs: its
// pid exists, is no zombie, and has the recorded start time (so a reused
// pid does not count).
func ShimAlive(stateDir string) bool {
	p, err := ReadShimProcess(stateDir)
	return err == nil && p.Alive()
}

func processIs(pid int, start uint64) bool {
	st, err := api.ReadProcStat(pid)
	return err == nil && st.StartTime == start && !st.Gone()
}

// killShim SIGKILLs the shim recorded in stateDir if it still runs.
func killShim(stateDir string) {
	p, err := ReadShimProcess(stateDir)
	if err != nil || !p.Alive() {
		return
	}
	_ = syscall.Kill(p.Pid, syscall.SIGKILL)
}

// CleanupOpts clean up after a dead shim.
type CleanupOpts struct {
	ID            string
	ShimBinary    string
	Socket        string
	StateDir      string
	RuntimeBinary string
	RuntimeRoot   string
}

// Cleanup runs `berth-shim delete` for a shim that died: the container is
// force-deleted from the runtime, the socket removed, and an exit recorded
// if the shim wrote none. Running it again succeeds.
func Cleanup(ctx context.Context, o CleanupOpts) error {
	if o.ID == "" || o.ShimBinary == "" || o.Socket == "" || o.StateDir == "" || o.RuntimeBinary == "" {
		return fmt.Errorf("cleanup shim: id, binaries, socket and state dir required: %w", errdefs.ErrInvalidArgument)
	}
	args := []string{"delete", "--id", o.ID, "--socket", o.Socket, "--state-dir", o.StateDir,
		"--runtime", o.RuntimeBinary}
	if o.RuntimeRoot != "" {
		args = append(args, "--runtime-root", o.RuntimeRoot)
	}
	out, err := exec.CommandContext(ctx, o.ShimBinary, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cleanup shim of container %q: %s: %w", o.ID, strings.TrimSpace(string(out)), err)
	}
	return nil
}

// readyMsg is what `serve` writes on its readiness pipe once it listens.
const readyMsg = "ok"

// spawn runs `serve` directly, in its own session, rather than through the
// `start` launcher: one exec fewer per container, and while berthd lives it
// is the shim's parent and reaps it, so an exited shim never lingers as a
// zombie under an init that does not reap. After a berthd restart shims are
// reparented like any orphan.
func spawn(ctx context.Context, o StartOpts) (<-chan struct{}, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create readiness pipe: %w", err)
	}
	defer r.Close()
	// Not CommandContext: the shim must outlive the request that made it.
	cmd := exec.Command(o.ShimBinary, "serve", "--id", o.ID, "--socket", o.Socket, "--state-dir", o.StateDir)
	cmd.Dir = o.StateDir
	// One P is plenty for a shim (one container, mostly blocked in syscalls)
	// and each P costs memory (its caches, GC worker): test/bench measured
	// shim+infra PSS per pod 1.62 -> 1.30 MiB at 50 pods, latencies unchanged
	// within noise (docs/benchmarks.md). Its runc children inherit it.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", errors.Join(errdefs.ErrUnavailable, err))
	}
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = r.SetReadDeadline(deadline)
	msg, readErr := io.ReadAll(io.LimitReader(r, 64*1024))
	if strings.TrimSpace(string(msg)) == readyMsg {
		return reapWhenExited(cmd), nil
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if len(msg) == 0 && readErr != nil {
		return nil, fmt.Errorf("shim did not become ready: %w", errors.Join(errdefs.ErrUnavailable, readErr))
	}
	return nil, fmt.Errorf("shim failed: %s: %w", strings.TrimSpace(string(msg)), errdefs.ErrUnavailable)
}
