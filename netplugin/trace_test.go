package netplugin

import (
	"context"
	"path/filepath"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestSpans: CNI ADD and DEL are children of the call's span and name the
// pod; a failed ADD's span carries the error.
func TestSpans(t *testing.T) {
	e := newDumpEnv(t, "1.0.0", "")
	m := newManager(t, Options{ConfDir: e.confDir, CacheDir: e.cacheDir, BinDirs: []string{e.binDir}})
	netns := filepath.Join(t.TempDir(), "not-a-netns")
	writeFile(t, netns, "", 0o600)
	p := PodNetwork{ID: "tr1", Name: "web", Namespace: "prod", UID: "u-1", NetNS: netns}

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	ctx, call := tp.Tracer("test").Start(context.Background(), "RunPodSandbox")
	if _, err := m.Setup(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Setup(ctx, p); err == nil {
		t.Fatal("second Setup succeeded")
	}
	if err := m.Teardown(ctx, p); err != nil {
		t.Fatal(err)
	}
	call.End()

	spans := exp.GetSpans()
	if len(spans) != 4 {
		t.Fatalf("%d spans, want 4: %v", len(spans), spans.Snapshots())
	}
	root := spans[3].SpanContext.SpanID()
	for i, want := range []struct {
		name string
		code codes.Code
	}{{"cni.add", codes.Unset}, {"cni.add", codes.Error}, {"cni.del", codes.Unset}} {
		s := spans[i]
		if s.Name != want.name || s.Status.Code != want.code || s.Parent.SpanID() != root {
			t.Errorf("span %d: %s, %v, parent %s; want %s, %v, parent %s", i, s.Name, s.Status.Code, s.Parent.SpanID(), want.name, want.code, root)
		}
		attrs := attribute.NewSet(s.Attributes...)
		for k, v := range map[attribute.Key]string{"berth.sandbox_id": "tr1", "k8s.pod.name": "web", "k8s.namespace.name": "prod", "k8s.pod.uid": "u-1"} {
			if got, _ := attrs.Value(k); got.AsString() != v {
				t.Errorf("span %d: %s = %q, want %q", i, k, got.AsString(), v)
			}
		}
	}
	add := attribute.NewSet(spans[0].Attributes...)
	if ips, _ := add.Value("cni.ips"); len(ips.AsStringSlice()) != 2 {
		t.Errorf("ADD span ips %v, want the pod's two", ips.AsStringSlice())
	}
}
