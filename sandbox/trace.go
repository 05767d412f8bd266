package sandbox

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// startSpan opens a child of the span in ctx (the CRI call's, when berthd
// traces) from that span's provider, naming the sandbox; with tracing off
// it is a no-op span.
func startSpan(ctx context.Context, name, id string) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer("github.com/berth-runtime/berth/sandbox").
		Start(ctx, name, trace.WithAttributes(attribute.String("berth.sandbox_id", id)))
}

// endSpan records err, if any, on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
