// Package task owns berthd's live links to its containers' shims: it spawns
// one shim per container, has it create the container through the OCI
// runtime, watches the init process until it exits, records the exit,
// and releases the shim and the runtime's state. It is the only part of
// berthd that speaks to shims and that knows where the OCI runtime keeps
// its state; cri/server consumes it through an interface of its own.
package task

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/shim/client"
)

// Exit is how a process ended.
type Exit = client.Exit

// ShimProcess identifies a container's shim process.
type ShimProcess = client.ShimProcess

// ExecOpts, AttachOpts and CheckpointOpts are the shim's own options.
type (
	ExecOpts       = client.ExecOpts
	AttachOpts     = client.AttachOpts
	CheckpointOpts = client.CheckpointOpts
)

// Task is the live link to the shim of a container that has not finished
// yet.
type Task interface {
	Start(ctx context.Context) (pid int, err error)
	// Restore starts the container from the checkpoint it was created
	// from, CRIU bounded by timeout.
	Restore(ctx context.Context, timeout time.Duration) (pid int, err error)
	Kill(ctx context.Context, sig syscall.Signal, all bool) error
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Checkpoint(ctx context.Context, o CheckpointOpts) error
	Update(ctx context.Context, res *specs.LinuxResources) error
	ReopenLog(ctx context.Context) error
	Exec(ctx context.Context, o ExecOpts) (Process, error)
	Attach(ctx context.Context, o AttachOpts) error
	ResizePty(ctx context.Context, width, height uint32) error
	// Done is closed once the container's exit is recorded.
	Done() <-chan struct{}
}

// Process is a process exec'd in a container.
type Process interface {
	ID() string
	Wait(ctx context.Context) (Exit, error)
	Resize(ctx context.Context, width, height uint32) error
	// Close kills the process if it still runs and releases it.
	Close(ctx context.Context) error
}

// Hooks tell the manager's owner about a container's end. Each may be nil.
type Hooks struct {
	// Watching runs when the manager starts watching rec (before it runs
	// for a new container; soon after the reattachment for one found
	// running after a restart); what it returns is handed to Exiting.
	Watching func(rec store.Container) uint64
	// Exiting runs once the init process is gone, before the runtime
	// deletes the container and its cgroup.
	Exiting func(rec store.Container, watched uint64)
	// Exited runs once the exit is recorded.
	Exited func(rec store.Container, exit Exit)
}

// Options configure a Manager; Store, ShimPath and SocketsDir are required.
type Options struct {
	Config     config.Config // runtime handlers and their state roots
	Store      *store.Store
	ShimPath   string // the berth-shim binary
	SocketsDir string // where shims listen, one socket per container
	Logger     *slog.Logger
	Hooks      Hooks
}

// Manager keeps the tasks of the containers that have not finished.
type Manager struct {
	cfg        config.Config
	store      *store.Store
	shimPath   string
	socketsDir string
	log        *slog.Logger
	hooks      Hooks

	mu         sync.Mutex           // guards the fields below
	tasks      map[string]*shimTask // by container ID
	unattached []unattached         // found by Recover, for Reattach
}

// New returns a manager with no tasks; Recover and Reattach take over the
// running containers' shims.
func New(o Options) (*Manager, error) {
	if o.Store == nil || o.ShimPath == "" || o.SocketsDir == "" {
		return nil, fmt.Errorf("task manager options incomplete: %w", errdefs.ErrInvalidArgument)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Manager{
		cfg: o.Config, store: o.Store, shimPath: o.ShimPath, socketsDir: o.SocketsDir,
		log: o.Logger, hooks: o.Hooks, tasks: map[string]*shimTask{},
	}, nil
}

// Get returns the task of container id, if it has one.
func (m *Manager) Get(id string) (Task, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[id]
	if !ok {
		return nil, false
	}
	return t, true
}

func (m *Manager) socket(id string) string { return filepath.Join(m.socketsDir, id+".sock") }

// runtimeBinary resolves a handler's binary once per call: PATH may differ
// between the daemon and the shim's environment, so the shim gets a path.
func (m *Manager) runtimeBinary(handler string) (string, error) {
	h, ok := m.cfg.Runtime.Handlers[handler]
	if !ok {
		return "", fmt.Errorf("runtime handler %q is not configured: %w", handler, errdefs.ErrFailedPrecondition)
	}
	p, err := exec.LookPath(h.Binary)
	if err != nil {
		return "", fmt.Errorf("runtime handler %q binary %q: %w", handler, h.Binary, errdefs.ErrFailedPrecondition)
	}
	return p, nil
}

// shimTask is a Task over a shim client. One found running after a
// restart is served before its shim is connected (Manager.Recover): until
// ready is closed its calls wait, and cli stays nil if the shim was lost.
type shimTask struct {
	id    string // the container's, for errors
	ready chan struct{}
	cli   *client.Client // set before ready is closed
	done  chan struct{}
	// attach, set for a task Recover made, connects the shim and closes
	// ready; the first call that needs the shim runs it if Reattach has
	// not come to it yet.
	attach     func()
	attachOnce sync.Once
}

var _ Task = (*shimTask)(nil)

// closedChan is the ready of every task whose shim is connected when it
// is made.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func connectedTask(id string, cli *client.Client) *shimTask {
	return &shimTask{id: id, ready: closedChan, cli: cli, done: make(chan struct{})}
}

// conn waits for the shim's connection, making it now if no one has.
func (t *shimTask) conn(ctx context.Context) (*client.Client, error) {
	if t.attach != nil {
		select {
		case <-t.ready:
		default:
			// In its own goroutine: the caller's ctx bounds the wait,
			// not the connection, which others may be waiting for.
			go t.reattach()
		}
	}
	select {
	case <-t.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the shim of container %q to be reattached: %w", t.id, ctx.Err())
	}
	if t.cli == nil {
		return nil, fmt.Errorf("shim of container %q lost while berthd restarted: %w", t.id, errdefs.ErrUnavailable)
	}
	return t.cli, nil
}

// reattach runs attach once; a second caller waits for the first.
func (t *shimTask) reattach() { t.attachOnce.Do(t.attach) }

// do runs f once the shim is connected.
func (t *shimTask) do(ctx context.Context, f func(*client.Client) error) error {
	cli, err := t.conn(ctx)
	if err != nil {
		return err
	}
	return f(cli)
}

// pid runs f, which returns a pid, once the shim is connected.
func (t *shimTask) pid(ctx context.Context, f func(*client.Client) (int, error)) (pid int, err error) {
	err = t.do(ctx, func(cli *client.Client) error { pid, err = f(cli); return err })
	return pid, err
}

func (t *shimTask) Start(ctx context.Context) (int, error) {
	return t.pid(ctx, func(cli *client.Client) (int, error) { return cli.Start(ctx) })
}
func (t *shimTask) Restore(ctx context.Context, timeout time.Duration) (int, error) {
	return t.pid(ctx, func(cli *client.Client) (int, error) { return cli.Restore(ctx, timeout) })
}
func (t *shimTask) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	return t.do(ctx, func(cli *client.Client) error { return cli.Kill(ctx, sig, all) })
}
func (t *shimTask) Pause(ctx context.Context) error {
	return t.do(ctx, func(cli *client.Client) error { return cli.Pause(ctx) })
}
func (t *shimTask) Resume(ctx context.Context) error {
	return t.do(ctx, func(cli *client.Client) error { return cli.Resume(ctx) })
}
func (t *shimTask) Checkpoint(ctx context.Context, o CheckpointOpts) error {
	return t.do(ctx, func(cli *client.Client) error { return cli.Checkpoint(ctx, o) })
}
func (t *shimTask) Update(ctx context.Context, res *specs.LinuxResources) error {
	return t.do(ctx, func(cli *client.Client) error { return cli.Update(ctx, res) })
}
func (t *shimTask) ReopenLog(ctx context.Context) error {
	return t.do(ctx, func(cli *client.Client) error { return cli.ReopenLog(ctx) })
}
func (t *shimTask) Exec(ctx context.Context, o ExecOpts) (p Process, err error) {
	err = t.do(ctx, func(cli *client.Client) error {
		proc, err := cli.Exec(ctx, o)
		if err == nil {
			p = proc // not a typed nil on failure
		}
		return err
	})
	return p, err
}
func (t *shimTask) Attach(ctx context.Context, o AttachOpts) error {
	return t.do(ctx, func(cli *client.Client) error { return cli.Attach(ctx, o) })
}
func (t *shimTask) ResizePty(ctx context.Context, width, height uint32) error {
	return t.do(ctx, func(cli *client.Client) error { return cli.ResizePty(ctx, width, height) })
}
func (t *shimTask) Done() <-chan struct{} { return t.done }
