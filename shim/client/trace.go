package client

import (
	"context"
	"strings"

	"github.com/containerd/ttrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"
)

const scope = "github.com/berth-runtime/berth/shim/client"

// startSpan opens a child of the span in ctx (the CRI call's, when berthd
// traces) from that span's provider: with tracing off it is a no-op span.
func startSpan(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(scope).Start(ctx, name, opts...)
}

// endSpan records err, if any, on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// traceCalls is the ttrpc client interceptor that makes each call to a
// shim (runc create, start, kill, exec ... through it) a client span of
// the CRI call that made it, and passes that span's W3C traceparent to
// the shim in the call's metadata. Calls made outside a traced context
// (tracing off, recovery, the exit monitor) go out as they are.
func traceCalls(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, info *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) (err error) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return invoke(ctx, req, resp)
	}
	name := strings.TrimPrefix(info.FullMethod, "/")
	ctx, span := startSpan(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("rpc.system", "ttrpc"),
		attribute.String("rpc.service", req.Service),
		attribute.String("rpc.method", req.Method),
	))
	defer func() { endSpan(span, err) }()
	propagation.TraceContext{}.Inject(ctx, metadataCarrier{req})
	if err := invoke(ctx, req, resp); err != nil {
		return err
	}
	if st := resp.Status; st != nil && st.Code != int32(grpccodes.OK) {
		span.SetStatus(codes.Error, st.Message)
	}
	return nil
}

// metadataCarrier reads and writes a ttrpc request's metadata for a
// propagator.
type metadataCarrier struct{ r *ttrpc.Request }

func (c metadataCarrier) Get(key string) string {
	for _, kv := range c.r.Metadata {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) {
	for _, kv := range c.r.Metadata {
		if kv.Key == key {
			kv.Value = value
			return
		}
	}
	c.r.Metadata = append(c.r.Metadata, &ttrpc.KeyValue{Key: key, Value: value})
}

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c.r.Metadata))
	for _, kv := range c.r.Metadata {
		keys = append(keys, kv.Key)
	}
	return keys
}
