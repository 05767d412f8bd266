package interceptor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	rtrace "runtime/trace"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.opentelemetry.io/otel/trace"
	xtrace "golang.org/x/exp/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type observed struct {
	method string
	code   codes.Code
}

// TestRequestLinesCarryIDs checks that every line logged during a request,
// by the interceptor and by the handler through Logger(ctx), carries the
// request id, the method and the object ids, and that observers see the
// code the client gets.
func TestRequestLinesCarryIDs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		req      any
		err      error
		wantCode codes.Code
		wantKeys map[string]string
	}{
		{
			name: "container", req: &runtime.StartContainerRequest{ContainerId: "c1"},
			wantCode: codes.OK, wantKeys: map[string]string{"container_id": "c1", "method": "StartContainer"},
		},
		{
			name: "sandbox", req: &runtime.StopPodSandboxRequest{PodSandboxId: "p1"},
			err:      fmt.Errorf("stop sandbox %q: %w", "p1", errdefs.ErrFailedPrecondition),
			wantCode: codes.FailedPrecondition, wantKeys: map[string]string{"sandbox_id": "p1", "method": "StopPodSandbox"},
		},
		{
			name: "create in pod", req: &runtime.CreateContainerRequest{PodSandboxId: "p2"},
			err:      errdefs.ErrNotFound,
			wantCode: codes.NotFound, wantKeys: map[string]string{"sandbox_id": "p2", "method": "CreateContainer"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			base := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			var got []observed
			obs := func(method string, code codes.Code, _ time.Duration) { got = append(got, observed{method, code}) }
			info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/" + tc.wantKeys["method"]}
			_, err := Unary(base, obs)(context.Background(), tc.req, info, func(ctx context.Context, _ any) (any, error) {
				Logger(ctx).Info("handler line")
				Logger(With(ctx, "extra", "x")).Info("handler line with more")
				return nil, tc.err
			})
			if status.Code(err) != tc.wantCode {
				t.Errorf("client code = %v, want %v", status.Code(err), tc.wantCode)
			}
			if len(got) != 1 || got[0] != (observed{tc.wantKeys["method"], tc.wantCode}) {
				t.Errorf("observer saw %v, want one %s/%v", got, tc.wantKeys["method"], tc.wantCode)
			}
			lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
			if len(lines) != 3 {
				t.Fatalf("logged %d lines, want 3:\n%s", len(lines), buf.String())
			}
			reqID := ""
			for _, line := range lines {
				var rec map[string]any
				if err := json.Unmarshal(line, &rec); err != nil {
					t.Fatalf("bad log line %s: %v", line, err)
				}
				id, _ := rec["request_id"].(string)
				if id == "" || (reqID != "" && id != reqID) {
					t.Errorf("line %s: request_id %q, want one non-empty id for all lines", line, id)
				}
				reqID = id
				for k, v := range tc.wantKeys {
					if rec[k] != v {
						t.Errorf("line %s: %s = %v, want %q", line, k, rec[k], v)
					}
				}
			}
		})
	}
}

func TestRequestIDsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		seen[requestID()] = true
	}
	if len(seen) != 100 {
		t.Fatalf("100 request ids, %d distinct", len(seen))
	}
}

// TestTraceIDLogged: a sampled call's lines name its trace; others do not.
func TestTraceIDLogged(t *testing.T) {
	tid := trace.TraceID{1, 2, 3}
	for _, flags := range []trace.TraceFlags{trace.FlagsSampled, 0} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{4}, TraceFlags: flags})
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		var buf bytes.Buffer
		base := slog.New(slog.NewJSONHandler(&buf, nil))
		info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/Version"}
		_, _ = Unary(base)(ctx, &runtime.VersionRequest{}, info, func(ctx context.Context, _ any) (any, error) {
			Logger(ctx).Info("handler line")
			return nil, nil
		})
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("bad log line %s: %v", buf.Bytes(), err)
		}
		want := ""
		if flags.IsSampled() {
			want = tid.String()
		}
		if got, _ := rec["trace_id"].(string); got != want {
			t.Errorf("flags %v: trace_id %q, want %q", flags, got, want)
		}
	}
}

// TestRegionWhileTracing checks that a call served while an execution
// trace is taken shows in it as a region named after its method, on the
// goroutine that ran the handler.
func TestRegionWhileTracing(t *testing.T) {
	var buf bytes.Buffer
	if err := rtrace.Start(&buf); err != nil {
		t.Skipf("an execution trace is already being taken: %v", err)
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/ListContainers"}
	_, err := Unary(slog.New(slog.DiscardHandler))(context.Background(), &runtime.ListContainersRequest{}, info,
		func(context.Context, any) (any, error) { return &runtime.ListContainersResponse{}, nil })
	rtrace.Stop()
	if err != nil {
		t.Fatal(err)
	}
	r, err := xtrace.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	begun := map[xtrace.GoID]bool{}
	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind() {
		case xtrace.EventRegionBegin:
			begun[ev.Goroutine()] = begun[ev.Goroutine()] || ev.Region().Type == "ListContainers"
		case xtrace.EventRegionEnd:
			if ev.Region().Type == "ListContainers" && begun[ev.Goroutine()] {
				return
			}
		}
	}
	t.Error("the trace holds no ListContainers region begun and ended on one goroutine")
}
