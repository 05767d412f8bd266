package netplugin

import (
	"context"
	"net"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// startSpan opens a child of the span in ctx (the CRI call's, when berthd
// traces) from that span's provider, naming the pod; with tracing off it
// is a no-op span.
func startSpan(ctx context.Context, name string, p PodNetwork) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer("github.com/berth-runtime/berth/netplugin").
		Start(ctx, name, trace.WithAttributes(
			attribute.String("berth.sandbox_id", p.ID),
			attribute.String("k8s.pod.name", p.Name),
			attribute.String("k8s.namespace.name", p.Namespace),
			attribute.String("k8s.pod.uid", p.UID),
		))
}

// endSpan records err, if any, on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// ipStrings renders ips for a span attribute; nil for none.
func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}
