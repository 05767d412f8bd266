// Package task is the shim's ttrpc service: it turns berth.shim.v1.Shim
// requests into calls on the container's init process and maps errdefs
// errors to ttrpc status codes in one interceptor.
package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/shim/process"
)

// Options configure a Service.
type Options struct {
	// ID is the container id the shim serves.
	ID string
	// StateDir holds the pid files, the exit file and the runtime's log.
	StateDir string
	Reaper   *process.Reaper
	// Logger should already carry container_id.
	Logger *slog.Logger
	// OnShutdown runs after a Shutdown request was accepted; it must stop
	// the server (which lets the reply go out first) and end the shim.
	OnShutdown func()
}

// Service implements api.ShimService for one container.
type Service struct {
	opts Options
	log  *slog.Logger

	mu sync.Mutex
	// init is nil until Create succeeds; guarded by mu.
	init *process.Init
	// creating is true while a Create runs, so a second one is refused
	// without holding mu across the runtime call; guarded by mu.
	creating bool
	// created is closed when the Create that set creating ends; guarded
	// by mu (the channel itself is safe to wait on).
	created chan struct{}
	// shutdown is set once Shutdown was accepted; guarded by mu.
	shutdown bool
}

var _ api.ShimService = (*Service)(nil)

// New returns the service.
func New(o Options) *Service {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{opts: o, log: log}
}

// Create creates the container.
func (s *Service) Create(ctx context.Context, r *api.CreateRequest) (*api.CreateResponse, error) {
	s.mu.Lock()
	if s.init != nil || s.creating {
		s.mu.Unlock()
		return nil, fmt.Errorf("container %q: %w", s.opts.ID, errdefs.ErrAlreadyExists)
	}
	if s.shutdown {
		s.mu.Unlock()
		return nil, fmt.Errorf("shim of container %q is shutting down: %w", s.opts.ID, errdefs.ErrUnavailable)
	}
	s.creating = true
	created := make(chan struct{})
	s.created = created
	s.mu.Unlock()
	defer close(created)

	// berthd dying closes the connection and cancels ctx, but runc create
	// would go on without us and leave a container no one knows; so the
	// create ends on its own terms, within the caller's deadline only.
	cctx := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		cctx, cancel = context.WithDeadline(cctx, dl)
		defer cancel()
	}
	p, err := process.New(cctx, process.Config{
		ID:            s.opts.ID,
		StateDir:      s.opts.StateDir,
		Bundle:        r.Bundle,
		RuntimeBinary: r.RuntimeBinary,
		RuntimeRoot:   r.RuntimeRoot,
		LogPath:       r.LogPath,
		Stdin:         r.Stdin,
		StdinOnce:     r.StdinOnce,
		Terminal:      r.Terminal,
		RestoreFrom:   r.RestoreFrom,
		CriuPath:      r.CriuPath,
		Reaper:        s.opts.Reaper,
		Logger:        s.log,
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creating = false
	if err != nil {
		return nil, err
	}
	s.init = p
	return &api.CreateResponse{Pid: uint32(p.Pid())}, nil
}

// awaitCreate waits for a Create in flight: a berthd restarted while it
// ran reattaches and waits, and must learn how that create ended rather
// than find no container yet and clean up under it.
func (s *Service) awaitCreate(ctx context.Context) error {
	s.mu.Lock()
	creating, created := s.creating, s.created
	s.mu.Unlock()
	if !creating {
		return nil
	}
	select {
	case <-created:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) process() (*process.Init, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.init == nil {
		return nil, fmt.Errorf("container %q not created: %w", s.opts.ID, errdefs.ErrNotFound)
	}
	return s.init, nil
}

// Start starts the created container.
func (s *Service) Start(ctx context.Context, r *api.StartRequest) (*api.StartResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	if r.TimeoutMs > 0 {
		// Only a restore can take long; see StartRequest.timeout_ms.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(r.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	return &api.StartResponse{Pid: uint32(p.Pid())}, nil
}

// Kill signals the container.
func (s *Service) Kill(ctx context.Context, r *api.KillRequest) (*api.KillResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	if r.ExecId != "" {
		e, err := p.LookupExec(r.ExecId)
		if err != nil {
			return nil, err
		}
		if err := e.Kill(syscall.Signal(r.Signal)); err != nil {
			return nil, err
		}
		return &api.KillResponse{}, nil
	}
	if err := p.Kill(ctx, syscall.Signal(r.Signal), r.All); err != nil {
		return nil, err
	}
	return &api.KillResponse{}, nil
}

// State reports the init process.
func (s *Service) State(_ context.Context, _ *api.StateRequest) (*api.StateResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	info := p.State()
	resp := &api.StateResponse{Pid: uint32(info.Pid), Status: apiStatus(info.Status)}
	if info.Exit != nil {
		resp.HasExited = true
		resp.ExitStatus = int32(info.Exit.Status)
		resp.ExitedAt = info.Exit.At.UnixNano()
	}
	return resp, nil
}

func apiStatus(st process.Status) api.Status {
	switch st {
	case process.StatusCreated:
		return api.Status_STATUS_CREATED
	case process.StatusRunning:
		return api.Status_STATUS_RUNNING
	case process.StatusStopped, process.StatusDeleted:
		return api.Status_STATUS_STOPPED
	}
	return api.Status_STATUS_UNKNOWN
}

// Wait blocks until the init's exit is recorded.
func (s *Service) Wait(ctx context.Context, r *api.WaitRequest) (*api.WaitResponse, error) {
	if err := s.awaitCreate(ctx); err != nil {
		return nil, err
	}
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	wait := p.Wait
	if r.ExecId != "" {
		x, err := p.LookupExec(r.ExecId)
		if err != nil {
			return nil, err
		}
		wait = x.Wait
	}
	e, err := wait(ctx)
	if err != nil {
		return nil, err
	}
	return &api.WaitResponse{ExitStatus: int32(e.Status), ExitedAt: e.At.UnixNano()}, nil
}

// Delete removes the container from the runtime.
func (s *Service) Delete(ctx context.Context, r *api.DeleteRequest) (*api.DeleteResponse, error) {
	p, err := s.process()
	if err != nil {
		return nil, err
	}
	if r.ExecId != "" {
		e, err := p.DeleteExec(ctx, r.ExecId)
		if err != nil {
			return nil, err
		}
		return &api.DeleteResponse{Pid: uint32(e.Pid), ExitStatus: int32(e.Status), ExitedAt: e.At.UnixNano()}, nil
	}
	e, err := p.Delete(ctx)
	if err != nil {
		return nil, err
	}
	return &api.DeleteResponse{Pid: uint32(p.Pid()), ExitStatus: int32(e.Status), ExitedAt: e.At.UnixNano()}, nil
}

// Shutdown ends the shim after the reply. A container still running is
// refused: the shim owns its stdio and exit status. One that exited but was
// not deleted is deleted first, so no runtime state outlives the shim.
func (s *Service) Shutdown(ctx context.Context, _ *api.ShutdownRequest) (*api.ShutdownResponse, error) {
	s.mu.Lock()
	p, creating := s.init, s.creating
	s.mu.Unlock()
	if creating {
		return nil, fmt.Errorf("shutdown shim of container %q during create: %w", s.opts.ID, errdefs.ErrFailedPrecondition)
	}
	if p != nil {
		if !p.Exited() {
			return nil, fmt.Errorf("shutdown shim of running container %q: %w", s.opts.ID, errdefs.ErrFailedPrecondition)
		}
		if _, err := p.Delete(ctx); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	first := !s.shutdown
	s.shutdown = true
	s.mu.Unlock()
	if first && s.opts.OnShutdown != nil {
		go s.opts.OnShutdown()
	}
	return &api.ShutdownResponse{}, nil
}

// ErrorInterceptor converts errdefs errors returned by the service into
// ttrpc status errors, the one place this happens. The client maps them
// back with errgrpc.ToNative.
func ErrorInterceptor(ctx context.Context, unmarshal ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
	resp, err := m(ctx, unmarshal)
	if err == nil {
		return resp, nil
	}
	if _, ok := status.FromError(err); ok {
		return nil, err
	}
	return nil, status.Error(statusCode(err), err.Error())
}

func statusCode(err error) codes.Code {
	switch {
	case errdefs.IsNotFound(err):
		return codes.NotFound
	case errdefs.IsAlreadyExists(err):
		return codes.AlreadyExists
	case errdefs.IsInvalidArgument(err):
		return codes.InvalidArgument
	case errdefs.IsFailedPrecondition(err):
		return codes.FailedPrecondition
	case errdefs.IsPermissionDenied(err):
		return codes.PermissionDenied
	case errdefs.IsUnavailable(err):
		return codes.Unavailable
	case errdefs.IsNotImplemented(err):
		return codes.Unimplemented
	case errdefs.IsDataLoss(err):
		return codes.DataLoss
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	return codes.Unknown
}
