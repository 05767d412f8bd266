// Package interceptor is the one place where CRI requests get a request id
// and a logger, and where internal errors become gRPC status codes. Handlers
// return errdefs-wrapped errors and never build gRPC statuses themselves.
package interceptor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	rtrace "runtime/trace"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type loggerKey struct{}

// WithLogger returns ctx carrying l.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// Logger returns the logger carried by ctx, or slog.Default().
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// With adds attributes to the logger carried by ctx.
func With(ctx context.Context, args ...any) context.Context {
	return WithLogger(ctx, Logger(ctx).With(args...))
}

func requestID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// idFields are request fields that identify the object a request acts on;
// they are added to every log line of that request.
type podIDer interface{ GetPodSandboxId() string }
type containerIDer interface{ GetContainerId() string }

func seed(ctx context.Context, base *slog.Logger, method string, req any) (context.Context, *slog.Logger) {
	l := base.With("request_id", requestID(), "method", method[strings.LastIndex(method, "/")+1:])
	if r, ok := req.(podIDer); ok && r.GetPodSandboxId() != "" {
		l = l.With("sandbox_id", r.GetPodSandboxId())
	}
	if r, ok := req.(containerIDer); ok && r.GetContainerId() != "" {
		l = l.With("container_id", r.GetContainerId())
	}
	// With tracing on, the call's span (the stats handler opened it before
	// any interceptor runs) ties its log lines to its trace.
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		l = l.With("trace_id", sc.TraceID().String())
	}
	return WithLogger(ctx, l), l
}

// ToStatus maps an internal error to a gRPC status error. Context errors
// keep their gRPC meaning; errors that are already statuses pass through.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errdefs.IsNotFound(err), errdefs.IsAlreadyExists(err), errdefs.IsInvalidArgument(err),
		errdefs.IsFailedPrecondition(err), errdefs.IsNotImplemented(err), errdefs.IsUnavailable(err),
		errdefs.IsPermissionDenied(err), errdefs.IsResourceExhausted(err), errdefs.IsAborted(err),
		errdefs.IsOutOfRange(err), errdefs.IsConflict(err), errdefs.IsDeadlineExceeded(err),
		errdefs.IsCanceled(err), errdefs.IsUnauthorized(err):
		// errgrpc keeps the whole message; its code follows the sentinel.
		return errgrpc.ToGRPC(err)
	}
	return status.Error(codes.Unknown, err.Error())
}

// Observer is told about every finished request: its short method name
// ("RunPodSandbox"), the gRPC code the client got, and how long it took.
// Metrics hook in here so the error mapping stays in this one place.
type Observer func(method string, code codes.Code, d time.Duration)

func observe(obs []Observer, fullMethod string, err error, d time.Duration) {
	if len(obs) == 0 {
		return
	}
	method := fullMethod[strings.LastIndex(fullMethod, "/")+1:]
	code := status.Code(err)
	for _, o := range obs {
		o(method, code, d)
	}
}

// Unary logs each request, maps its error and reports it to obs.
func Unary(base *slog.Logger, obs ...Observer) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, l := seed(ctx, base, info.FullMethod, req)
		start := time.Now()
		resp, err := traced(ctx, info.FullMethod, handler, req)
		logDone(ctx, l, start, err)
		err = ToStatus(err)
		observe(obs, info.FullMethod, err, time.Since(start))
		return resp, err
	}
}

// Stream logs each streaming request, maps its error and reports it to obs.
func Stream(base *slog.Logger, obs ...Observer) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, l := seed(ss.Context(), base, info.FullMethod, nil)
		start := time.Now()
		err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		logDone(ctx, l, start, err)
		err = ToStatus(err)
		observe(obs, info.FullMethod, err, time.Since(start))
		return err
	}
}

// traced runs handler inside an execution-trace region named after the
// method while an execution trace is being taken (admin socket,
// /debug/pprof/trace), so the trace tells which goroutine served which
// call; otherwise it only checks a flag.
func traced(ctx context.Context, fullMethod string, handler grpc.UnaryHandler, req any) (any, error) {
	if !rtrace.IsEnabled() {
		return handler(ctx, req)
	}
	defer rtrace.StartRegion(ctx, fullMethod[strings.LastIndex(fullMethod, "/")+1:]).End()
	return handler(ctx, req)
}

func logDone(ctx context.Context, l *slog.Logger, start time.Time, err error) {
	d := time.Since(start)
	if err != nil {
		lvl := slog.LevelWarn
		if errdefs.IsNotFound(err) {
			// kubelet probes for objects that are gone all the time.
			lvl = slog.LevelDebug
		}
		l.Log(ctx, lvl, "request failed", "duration", d, "error", err)
		return
	}
	l.Debug("request done", "duration", d)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
