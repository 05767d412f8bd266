package imagesvc

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestPullSpans: a traced pull has its resolve and one span per layer
// below it, each layer with its fetch and unpack; a second pull of the
// same image fetches nothing and has no layer spans. Without a span in
// the context nothing is recorded (tracing off).
func TestPullSpans(t *testing.T) {
	e := newEnv(t)
	img := image(t, v1.Config{}, layer(t, ent{name: "a", body: "1"}), zstdLayer(t, ent{name: "b", body: "2"}))
	e.reg.push(t, "test/traced:v1", img)
	ref := e.reg.host + "/test/traced:v1"

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tctx, call := tp.Tracer("test").Start(ctx, "PullImage")
	if _, err := e.svc.Pull(tctx, ref, nil); err != nil {
		t.Fatal(err)
	}
	call.End()

	ids := map[string]string{} // span id -> name
	for _, s := range exp.GetSpans() {
		ids[s.SpanContext.SpanID().String()] = s.Name
	}
	count := map[string]int{}
	for _, s := range exp.GetSpans() {
		edge := ids[s.Parent.SpanID().String()] + " > " + s.Name
		count[edge]++
		if s.Name == "image.layer" && len(s.Attributes) != 3 {
			t.Errorf("layer span attributes %v, want digest, size, chain id", s.Attributes)
		}
	}
	want := map[string]int{
		" > PullImage": 1, "PullImage > image.pull": 1, "image.pull > image.resolve": 1, "image.pull > image.layer": 2,
		"image.layer > image.layer.fetch": 2, "image.layer > image.layer.unpack": 2,
	}
	for edge, n := range want {
		if count[edge] != n {
			t.Errorf("%d spans %q, want %d (all: %v)", count[edge], edge, n, count)
		}
	}
	if len(count) != len(want) {
		t.Errorf("spans %v, want %v", count, want)
	}

	exp.Reset()
	tctx, call = tp.Tracer("test").Start(ctx, "PullImage")
	if _, err := e.svc.Pull(tctx, ref, nil); err != nil {
		t.Fatal(err)
	}
	call.End()
	for _, s := range exp.GetSpans() {
		if s.Name == "image.layer" {
			t.Errorf("second pull traced a layer fetch")
		}
	}

	exp.Reset()
	if _, err := e.svc.Pull(ctx, ref, nil); err != nil || len(exp.GetSpans()) != 0 {
		t.Errorf("untraced pull: %v, %d spans", err, len(exp.GetSpans()))
	}
}
