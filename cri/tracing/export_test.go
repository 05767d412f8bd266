package tracing

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/berth-runtime/berth/cri/config"
)

// received collects span names from OTLP exports.
type received struct {
	collectorpb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	names []string
}

func (r *received) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.names = append(r.names, s.GetName())
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// serveHTTP receives OTLP over http/protobuf on loopback.
func (r *received) serveHTTP(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var msg collectorpb.ExportTraceServiceRequest
		if err != nil || req.URL.Path != "/v1/traces" || proto.Unmarshal(body, &msg) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		resp, _ := r.Export(req.Context(), &msg)
		out, _ := proto.Marshal(resp)
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// serveGRPC receives OTLP over gRPC on loopback.
func (r *received) serveGRPC(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(g, r)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// TestExportProtocols: both protocols reach a receiver, and Shutdown
// flushes what is buffered without waiting for the batch timeout.
func TestExportProtocols(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			r := &received{}
			c := config.Default().Tracing
			c.Enabled, c.Protocol = true, protocol
			if protocol == "grpc" {
				c.Endpoint = r.serveGRPC(t)
			} else {
				c.Endpoint = r.serveHTTP(t)
			}
			p, err := New(context.Background(), c, "test")
			if err != nil {
				t.Fatal(err)
			}
			ctx, span := p.TracerProvider().Tracer("test").Start(context.Background(), "call")
			_, child := Start(ctx, "step")
			End(child, nil)
			span.End()
			if err := p.Shutdown(context.Background()); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.names) != 2 {
				t.Errorf("received %v, want call and step", r.names)
			}
		})
	}
}

// TestReceiverDown: a receiver that is not there fails neither New nor a
// call; Shutdown gives up when its context ends.
func TestReceiverDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c := config.Default().Tracing
	c.Enabled, c.Endpoint = true, addr
	p, err := New(context.Background(), c, "test")
	if err != nil {
		t.Fatalf("New with the receiver down: %v", err)
	}
	_, span := p.TracerProvider().Tracer("test").Start(context.Background(), "call")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_ = p.Shutdown(ctx)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s with a 2s bound", d)
	}
}
