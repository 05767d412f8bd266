package client

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/berth-runtime/berth/shim/api"
)

// fakeShim serves the shim API's State and Kill on a socket, recording
// the traceparent each call carried; Kill fails NotFound.
func fakeShim(t *testing.T) (socket string, got chan string) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan string, 4)
	record := func(ctx context.Context) {
		tp, _ := ttrpc.GetMetadataValue(ctx, "traceparent")
		got <- tp
	}
	srv.RegisterService("berth.shim.v1.Shim", &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"State": func(ctx context.Context, _ func(any) error) (any, error) {
			record(ctx)
			return &api.StateResponse{Pid: 1, Status: api.Status_STATUS_RUNNING}, nil
		},
		"Kill": func(ctx context.Context, _ func(any) error) (any, error) {
			record(ctx)
			return nil, errgrpc.ToGRPC(errdefs.ErrNotFound)
		},
	}})
	go func() { _ = srv.Serve(context.Background(), lis) }()
	t.Cleanup(func() { srv.Close() })
	return socket, got
}

// TestShimCallSpans: a call made in a traced context is a client span
// below it whose context reaches the shim as a W3C traceparent; an
// untraced call sends none.
func TestShimCallSpans(t *testing.T) {
	socket, got := fakeShim(t)
	c, err := Connect(context.Background(), socket, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.State(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tp := <-got; tp != "" {
		t.Errorf("untraced call sent traceparent %q", tp)
	}

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	ctx, call := tp.Tracer("test").Start(context.Background(), "StartContainer")
	if _, err := c.State(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(ctx, 9, false); !errdefs.IsNotFound(err) {
		t.Fatalf("Kill: %v, want not found", err)
	}
	call.End()

	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3: %v", len(spans), spans.Snapshots())
	}
	for i, want := range []struct {
		name string
		code codes.Code
	}{{"berth.shim.v1.Shim/State", codes.Unset}, {"berth.shim.v1.Shim/Kill", codes.Error}} {
		s := spans[i]
		if s.Name != want.name || s.SpanKind != trace.SpanKindClient || s.Status.Code != want.code || s.Parent.SpanID() != call.SpanContext().SpanID() {
			t.Errorf("span %d: %s kind %v status %v parent %s; want %s, client, %v, parent %s",
				i, s.Name, s.SpanKind, s.Status.Code, s.Parent.SpanID(), want.name, want.code, call.SpanContext().SpanID())
		}
		wantTP := "00-" + s.SpanContext.TraceID().String() + "-" + s.SpanContext.SpanID().String() + "-01"
		if tp := <-got; tp != wantTP {
			t.Errorf("shim got traceparent %q, want %q", tp, wantTP)
		}
	}
}
