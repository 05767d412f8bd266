package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	utilexec "k8s.io/utils/exec"

	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/streaming"
	"github.com/berth-runtime/berth/cri/task"
)

// maxExecSyncOutput caps what ExecSync keeps of stdout and stderr
// together, so a runaway probe cannot exhaust berthd's memory and the
// response stays below the 16 MiB gRPC message limit kubelet's client and
// berthd use. Output past it is read and dropped, so the command still runs
// to its end.
const maxExecSyncOutput = 16<<20 - 64<<10

// StreamServer hands out the URLs of streaming sessions (cri/streaming).
type StreamServer interface {
	GetExec(*runtime.ExecRequest) (*runtime.ExecResponse, error)
	GetAttach(*runtime.AttachRequest) (*runtime.AttachResponse, error)
	GetPortForward(*runtime.PortForwardRequest) (*runtime.PortForwardResponse, error)
}

var _ StreamServer = (*streaming.Server)(nil)

// runningTask returns the record and shim of a running container:
// errdefs.ErrNotFound for an unknown one, ErrFailedPrecondition for one
// that does not run.
func (s *Server) runningTask(id string) (store.Container, task.Task, error) {
	c, err := s.store.Container(id)
	if err != nil {
		return store.Container{}, nil, err
	}
	t := s.task(c.ID)
	if c.Status.State != store.ContainerRunning || t == nil {
		return store.Container{}, nil, fmt.Errorf("container %q is %s, not running: %w", c.ID, c.Status.State, errdefs.ErrFailedPrecondition)
	}
	return c, t, nil
}

// fifoDir is where the stdio FIFOs of a container's execs and attaches
// live: in its bundle, so removing the container removes any left over.
func fifoDir(c store.Container) string { return filepath.Join(c.Bundle, "io") }

func validateCmd(cmd []string) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return fmt.Errorf("exec: command required: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// Exec returns the URL of a streaming exec session.
func (s *Server) Exec(ctx context.Context, r *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	if err := validateCmd(r.GetCmd()); err != nil {
		return nil, err
	}
	if _, _, err := s.runningTask(r.GetContainerId()); err != nil {
		return nil, err
	}
	if s.streams == nil {
		return nil, fmt.Errorf("exec: no streaming server: %w", errdefs.ErrUnavailable)
	}
	return s.streams.GetExec(r)
}

// ExecSync runs a command to its end and returns its output, without a
// streaming round trip: probes call it every few seconds on every pod.
// The command is killed at the request's timeout, which is reported as
// DeadlineExceeded (kubelet turns that into a probe timeout).
func (s *Server) ExecSync(ctx context.Context, r *runtime.ExecSyncRequest) (*runtime.ExecSyncResponse, error) {
	if err := validateCmd(r.GetCmd()); err != nil {
		return nil, err
	}
	c, t, err := s.runningTask(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(r.GetTimeout()) * time.Second
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	out := &cappedBuffer{limit: maxExecSyncOutput}
	errb := &cappedBuffer{limit: maxExecSyncOutput, shared: out}
	out.shared = errb
	p, err := t.Exec(ctx, task.ExecOpts{Args: r.GetCmd(), FifoDir: fifoDir(c), Stdout: out, Stderr: errb})
	if err != nil {
		return nil, execSyncError(c.ID, timeout, err)
	}
	defer closeProcess(p, s)
	exit, err := p.Wait(ctx)
	if err != nil {
		return nil, execSyncError(c.ID, timeout, err)
	}
	interceptor.Logger(ctx).Debug("exec sync done", "container_id", c.ID, "exit_code", exit.Status)
	return &runtime.ExecSyncResponse{Stdout: out.Bytes(), Stderr: errb.Bytes(), ExitCode: exit.Status}, nil
}

func execSyncError(id string, timeout time.Duration, err error) error {
	if timeout > 0 && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("exec in container %q timed out after %s: %w", id, timeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("exec in container %q: %w", id, err)
}

// closeProcess kills the process if it still runs and releases it, with a
// fresh context: the request's may be what ended.
func closeProcess(p task.Process, s *Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		s.log.Warn("release exec", "exec_id", p.ID(), "error", err)
	}
}

// cappedBuffer keeps what is written up to a limit shared with a sibling
// (stdout and stderr together) and drops the rest, reporting success so the
// copy keeps draining the process's output.
type cappedBuffer struct {
	limit  int
	shared *cappedBuffer
	mu     sync.Mutex
	buf    []byte // guarded by mu
}

func (b *cappedBuffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf)
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := b.limit - b.shared.len()
	b.mu.Lock()
	defer b.mu.Unlock()
	room -= len(b.buf)
	if room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Bytes returns what was kept.
func (b *cappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf
}

// streamRuntime is what the streaming server calls; it is a type of its own
// because its method names are those of the CRI RPCs on Server.
type streamRuntime struct{ s *Server }

// StreamRuntime returns the Runtime the streaming server serves.
func (s *Server) StreamRuntime() streaming.Runtime { return streamRuntime{s} }

// Exec runs an exec session: the process is killed when the client goes
// away (ctx), and a non-zero exit reaches the client as its exit code.
func (r streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan streaming.TerminalSize) error {
	if err := validateCmd(cmd); err != nil {
		return err
	}
	c, t, err := r.s.runningTask(id)
	if err != nil {
		return err
	}
	o := task.ExecOpts{Args: cmd, Terminal: tty, FifoDir: fifoDir(c)}
	// Typed nils would count as set.
	if in != nil {
		o.Stdin = in
	}
	if out != nil {
		o.Stdout = out
	}
	if errw != nil && !tty {
		o.Stderr = errw
	}
	p, err := t.Exec(ctx, o)
	if err != nil {
		return fmt.Errorf("exec in container %q: %w", id, err)
	}
	defer closeProcess(p, r.s)
	if tty && resize != nil {
		go forwardResize(ctx, resize, p.Resize)
	}
	exit, err := p.Wait(ctx)
	if err != nil {
		return fmt.Errorf("exec in container %q: %w", id, err)
	}
	if exit.Status != 0 {
		return utilexec.CodeExitError{
			Err:  fmt.Errorf("command terminated with exit code %d", exit.Status),
			Code: int(exit.Status),
		}
	}
	return nil
}

// forwardResize applies terminal sizes until the channel closes or ctx
// ends. The first size may arrive before the process has a terminal; a
// failed resize is not worth ending the session for.
func forwardResize(ctx context.Context, ch <-chan streaming.TerminalSize, resize func(context.Context, uint32, uint32) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case sz, ok := <-ch:
			if !ok {
				return
			}
			if sz.Width == 0 && sz.Height == 0 {
				continue
			}
			_ = resize(ctx, uint32(sz.Width), uint32(sz.Height))
		}
	}
}
