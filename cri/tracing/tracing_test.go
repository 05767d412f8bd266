package tracing

import (
	"context"
	"errors"
	"net"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/berth-runtime/berth/cri/config"
)

func memProvider(t *testing.T, rate int) (*Provider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	c := config.Default().Tracing
	c.Enabled, c.SamplingRatePerMillion = true, rate
	p := newProvider(c, "test", sdktrace.NewSimpleSpanProcessor(exp))
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p, exp
}

func byName(spans tracetest.SpanStubs) map[string]tracetest.SpanStub {
	m := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		m[s.Name] = s
	}
	return m
}

func TestStartWithoutSpanIsNoop(t *testing.T) {
	ctx, span := Start(context.Background(), "step")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Errorf("span without a parent records or has a valid context")
	}
	if trace.SpanFromContext(ctx) != span {
		t.Errorf("ctx does not carry the span")
	}
	End(span, errors.New("ignored"))

	off, err := New(context.Background(), config.Default().Tracing, "test")
	if err != nil || off.Enabled() || off.ServerOptions() != nil || off.Shutdown(context.Background()) != nil {
		t.Errorf("tracing off: %v, enabled %v, %d server options", err, off.Enabled(), len(off.ServerOptions()))
	}
}

func TestStartNestsUnderParent(t *testing.T) {
	p, exp := memProvider(t, 1_000_000)
	ctx, root := p.TracerProvider().Tracer("test").Start(context.Background(), "call")
	cctx, child := Start(ctx, "step", attribute.String("k8s.pod.name", "p"))
	_, grandchild := Start(cctx, "substep")
	End(grandchild, nil)
	End(child, errors.New("boom"))
	root.End()

	spans := byName(exp.GetSpans())
	if len(spans) != 3 {
		t.Fatalf("got %d spans, want 3: %v", len(spans), spans)
	}
	call, step, sub := spans["call"], spans["step"], spans["substep"]
	if step.Parent.SpanID() != call.SpanContext.SpanID() || sub.Parent.SpanID() != step.SpanContext.SpanID() {
		t.Errorf("parents: step's %s (want %s), substep's %s (want %s)",
			step.Parent.SpanID(), call.SpanContext.SpanID(), sub.Parent.SpanID(), step.SpanContext.SpanID())
	}
	if step.SpanContext.TraceID() != call.SpanContext.TraceID() {
		t.Errorf("child in another trace")
	}
	if step.Status.Code != codes.Error || step.Status.Description != "boom" || sub.Status.Code != codes.Unset {
		t.Errorf("status: step %+v, substep %+v", step.Status, sub.Status)
	}
	if len(step.Attributes) != 1 || step.Attributes[0].Value.AsString() != "p" {
		t.Errorf("step attributes %v", step.Attributes)
	}
	if got := call.Resource.Attributes(); len(got) != 2 {
		t.Errorf("resource %v, want service.name and service.version", got)
	}
}

// health answers Check with a child span, as a CRI handler's step would.
type health struct {
	healthpb.UnimplementedHealthServer
}

func (health) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	_, span := Start(ctx, "step")
	End(span, nil)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// serve runs a gRPC server with p's options on loopback and returns a
// client connection whose calls carry the trace context of clientTP.
func serve(t *testing.T, p *Provider, clientTP trace.TracerProvider) healthpb.HealthClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(p.ServerOptions()...)
	healthpb.RegisterHealthServer(g, health{})
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(clientTP), otelgrpc.WithPropagators(Propagator()))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// TestServerSpans: every call gets a server span with its steps below
// it, continuing the caller's trace (kubelet's) when it sends one, and
// following the caller's sampling decision over the local rate.
func TestServerSpans(t *testing.T) {
	for _, tc := range []struct {
		name          string
		rate          int
		callerSampled bool
		want          int // spans exported by the server
	}{
		{"all", 1_000_000, false, 2},
		{"none", 0, false, 0},
		{"caller sampled wins over rate 0", 0, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, exp := memProvider(t, tc.rate)
			ctx := context.Background()
			var clientTP trace.TracerProvider = tracenoop.NewTracerProvider() // a caller that sends no trace context
			var caller trace.Span
			if tc.callerSampled {
				cexp := tracetest.NewInMemoryExporter()
				ctp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(cexp))
				clientTP = ctp
				ctx, caller = ctp.Tracer("kubelet").Start(ctx, "kubelet")
				defer caller.End()
			}
			c := serve(t, p, clientTP)
			if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
			spans := exp.GetSpans()
			if len(spans) != tc.want {
				t.Fatalf("server exported %d spans, want %d: %v", len(spans), tc.want, spans.Snapshots())
			}
			if tc.want == 0 {
				return
			}
			m := byName(spans)
			call, step := m["grpc.health.v1.Health/Check"], m["step"]
			if call.SpanKind != trace.SpanKindServer || step.Parent.SpanID() != call.SpanContext.SpanID() {
				t.Errorf("server span %q kind %v; step's parent %s, want %s", call.Name, call.SpanKind, step.Parent.SpanID(), call.SpanContext.SpanID())
			}
			if tc.callerSampled && call.SpanContext.TraceID() != caller.SpanContext().TraceID() {
				t.Errorf("server span in trace %s, caller's is %s", call.SpanContext.TraceID(), caller.SpanContext().TraceID())
			}
		})
	}
}
