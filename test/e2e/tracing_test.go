package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/berth-runtime/berth/test/testutil"
)

// collector is an in-process OTLP/gRPC trace receiver on loopback.
type collector struct {
	collectorpb.UnimplementedTraceServiceServer
	addr string

	mu       sync.Mutex
	services map[string]bool          // service.name of every export
	spans    map[string]*tracepb.Span // by span id (hex)
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{addr: lis.Addr().String(), services: map[string]bool{}, spans: map[string]*tracepb.Span{}}
	g := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(g, c)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return c
}

func (c *collector) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				c.services[kv.GetValue().GetStringValue()] = true
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans[hex.EncodeToString(s.GetSpanId())] = s
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// named returns the spans called name.
func (c *collector) named(name string) []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range c.spans {
		if s.GetName() == name {
			out = append(out, s)
		}
	}
	return out
}

// parent returns s's parent span, nil for a root or one not received.
func (c *collector) parent(s *tracepb.Span) *tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.spans[hex.EncodeToString(s.GetParentSpanId())]
}

// children returns the spans whose parent is s.
func (c *collector) children(s *tracepb.Span, name string) []*tracepb.Span {
	var out []*tracepb.Span
	for _, k := range c.named(name) {
		if string(k.GetParentSpanId()) == string(s.GetSpanId()) && string(k.GetTraceId()) == string(s.GetTraceId()) {
			out = append(out, k)
		}
	}
	return out
}

// callOf returns the CRI call span (a root) that span s descends from.
func (c *collector) callOf(s *tracepb.Span) string {
	for p := c.parent(s); p != nil; p = c.parent(s) {
		s = p
	}
	if len(s.GetParentSpanId()) != 0 {
		return fmt.Sprintf("%s (parent not received)", s.GetName())
	}
	return s.GetName()
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// TestTracing (issue 22 item 3): with [tracing] on, every CRI call is a
// span exported over OTLP to the configured receiver, with its steps as
// children: CNI ADD under RunPodSandbox, the layers' fetch and unpack
// under PullImage, shim spawn and calls under the container calls, CNI
// DEL under StopPodSandbox. The spans still buffered at shutdown are
// flushed before berthd exits.
func TestTracing(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	col := startCollector(t)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries:      bins,
		InsecureHosts: []string{reg.Host},
		ExtraTOML:     fmt.Sprintf("\n[tracing]\nenabled = true\nendpoint = %q\nprotocol = \"grpc\"\n", col.addr),
	})
	pull(t, d, images.Busybox.Ref)
	pod := podConfig(t, d, "traced")
	podID := runPod(t, d, pod)
	runCtr(t, d, podID, pod, shConfig("t", "sleep 300"))
	removeAllPods(t, d)
	// berthd flushes on SIGTERM: everything must be there without waiting
	// for the exporter's batch timeout.
	if err := d.Stop(); err != nil {
		t.Fatalf("stop berthd: %v", err)
	}
	testutil.AssertNoLeaks(t, d)

	col.mu.Lock()
	services, n := col.services, len(col.spans)
	col.mu.Unlock()
	t.Logf("%d spans received", n)
	if !services["berthd"] {
		t.Errorf("exports came from services %v, want berthd", services)
	}

	runs := col.named("runtime.v1.RuntimeService/RunPodSandbox")
	if len(runs) != 1 {
		t.Fatalf("%d RunPodSandbox spans, want 1", len(runs))
	}
	adds := col.children(runs[0], "cni.add")
	if len(adds) != 1 || attr(adds[0], "berth.sandbox_id") != podID || attr(adds[0], "k8s.pod.name") != pod.GetMetadata().GetName() {
		t.Errorf("cni.add children of RunPodSandbox: %v, want one naming sandbox %s", adds, podID)
	}

	pulls := col.named("runtime.v1.ImageService/PullImage")
	if len(pulls) != 1 {
		t.Fatalf("%d PullImage spans, want 1", len(pulls))
	}
	ip := col.children(pulls[0], "image.pull")
	if len(ip) != 1 {
		t.Fatalf("image.pull children of PullImage: %d, want 1", len(ip))
	}
	layers := col.children(ip[0], "image.layer")
	if len(layers) == 0 {
		t.Errorf("no image.layer spans under image.pull")
	}
	for _, l := range layers {
		if len(col.children(l, "image.layer.fetch")) != 1 || len(col.children(l, "image.layer.unpack")) != 1 {
			t.Errorf("layer %s: want one fetch and one unpack child", attr(l, "image.layer.digest"))
		}
	}

	// Container and teardown steps: wherever cri puts its own spans between them and the
	// call, they descend from the call that caused them.
	for name, call := range map[string]string{
		"shim.spawn":                "runtime.v1.RuntimeService/CreateContainer",
		"image.rootfs":              "runtime.v1.RuntimeService/CreateContainer",
		"sandbox.create":            "runtime.v1.RuntimeService/RunPodSandbox",
		"sandbox.remove":            "runtime.v1.RuntimeService/RemovePodSandbox",
		"berth.shim.v1.Shim/Create": "runtime.v1.RuntimeService/CreateContainer",
		"berth.shim.v1.Shim/Start":  "runtime.v1.RuntimeService/StartContainer",
		"cni.del":                   "runtime.v1.RuntimeService/StopPodSandbox",
	} {
		spans := col.named(name)
		if len(spans) == 0 {
			t.Errorf("no %s span", name)
		}
		for _, s := range spans {
			if got := col.callOf(s); got != call {
				t.Errorf("%s under %s, want %s", name, got, call)
			}
		}
	}
}
