// Package tracing is berthd's OpenTelemetry tracing: the tracer provider
// built from the [tracing] config, the gRPC stats handler that opens a
// server span for every CRI call, and Start, which opens the child spans
// of a call's steps.
//
// There is no global tracer provider. A child span is made by the
// provider of the span its context carries, so spans nest under the CRI
// call that caused them, and with tracing off (no server span at all) or
// a call not sampled every Start returns a no-op span at the cost of a
// context lookup. imagesvc, netplugin and shim/client, which sit below
// cri, open their spans the same way through the OpenTelemetry API alone.
package tracing

import (
	"context"
	"fmt"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	"github.com/berth-runtime/berth/cri/config"
)

// scope names the instrumentation of cri's own spans.
const scope = "github.com/berth-runtime/berth/cri"

// Start opens a span named name as a child of the span in ctx, made by
// that span's provider, and returns ctx carrying it. End it with End.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(scope).Start(ctx, name, trace.WithAttributes(attrs...))
}

// End records err, if any, as the span's error status and ends it.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Propagator reads and writes the W3C trace context (traceparent) and
// baggage: what kubelet sends with a traced CRI call.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Provider is berthd's tracer provider; with tracing off it holds nothing.
type Provider struct {
	tp *sdktrace.TracerProvider // nil: tracing off
}

// New builds the provider c asks for, exporting to c.Endpoint in batches.
// The exporter connects lazily: a receiver that is down costs dropped
// spans, never a failed start. version is berthd's, for the resource.
func New(ctx context.Context, c config.Tracing, version string) (*Provider, error) {
	if !c.Enabled {
		return &Provider{}, nil
	}
	exp, err := newExporter(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("create otlp %s exporter for %s: %w", c.Protocol, c.Endpoint, err)
	}
	return newProvider(c, version, sdktrace.NewBatchSpanProcessor(exp)), nil
}

// newProvider is New with the span processor given (tests export in
// memory, synchronously).
func newProvider(c config.Tracing, version string, proc sdktrace.SpanProcessor) *Provider {
	res := resource.NewSchemaless(
		attribute.String("service.name", c.ServiceName),
		attribute.String("service.version", version),
	)
	ratio := float64(c.SamplingRatePerMillion) / 1e6
	return &Provider{tp: sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(proc),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)}
}

func newExporter(ctx context.Context, c config.Tracing) (sdktrace.SpanExporter, error) {
	if c.Protocol == "http/protobuf" {
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(c.Endpoint)}
		if c.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, opts...)
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(c.Endpoint)}
	if c.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	return otlptracegrpc.New(ctx, opts...)
}

// Enabled reports whether tracing is on.
func (p *Provider) Enabled() bool { return p.tp != nil }

// TracerProvider returns the provider: a no-op one with tracing off.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p.tp == nil {
		return tracenoop.NewTracerProvider()
	}
	return p.tp
}

// ServerOptions are the options of the CRI gRPC server that open a server
// span per call, continuing the caller's trace when it sent one; none with
// tracing off.
func (p *Provider) ServerOptions() []grpc.ServerOption {
	if p.tp == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(p.tp),
		otelgrpc.WithPropagators(Propagator()),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
	))}
}

// Shutdown exports the spans still buffered and stops the exporter; ctx
// bounds how long a slow receiver may hold berthd's exit.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p.tp == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}
