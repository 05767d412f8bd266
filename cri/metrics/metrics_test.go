package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
)

func TestRequestsByMethodAndCode(t *testing.T) {
	m := New(Options{})
	m.ObserveRequest("RunPodSandbox", codes.OK, 20*time.Millisecond)
	m.ObserveRequest("RunPodSandbox", codes.OK, 30*time.Millisecond)
	m.ObserveRequest("ContainerStatus", codes.NotFound, time.Millisecond)
	for _, tc := range []struct {
		method, code string
		want         float64
	}{
		{"RunPodSandbox", "OK", 2},
		{"ContainerStatus", "NotFound", 1},
		{"ContainerStatus", "OK", 0},
	} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(tc.method, tc.code)); got != tc.want {
			t.Errorf("requests{%s,%s} = %v, want %v", tc.method, tc.code, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.latency, "berth_cri_request_duration_seconds"); n != 2 {
		t.Errorf("latency series = %d, want 2 (one per method and code observed)", n)
	}
}

func TestPulls(t *testing.T) {
	m := New(Options{})
	m.ObservePull(1000, time.Second, nil)
	m.ObservePull(500, 2*time.Second, nil)
	m.ObservePull(0, time.Second, errors.New("boom"))
	if got := testutil.ToFloat64(m.pullBytes); got != 1500 {
		t.Errorf("pull bytes = %v, want 1500", got)
	}
	if got := testutil.ToFloat64(m.pulls.WithLabelValues("success")); got != 2 {
		t.Errorf("successful pulls = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.pulls.WithLabelValues("failure")); got != 1 {
		t.Errorf("failed pulls = %v, want 1", got)
	}
}

func TestScrapeTimeGauges(t *testing.T) {
	shims := 3
	m := New(Options{
		States: func() (map[string]int, map[string]int) {
			return map[string]int{"READY": 2, "NOTREADY": 0}, map[string]int{"RUNNING": 4, "EXITED": 1}
		},
		Shims: func() int { return shims },
	})
	want := `
# HELP berth_containers Containers, by state.
# TYPE berth_containers gauge
berth_containers{state="EXITED"} 1
berth_containers{state="RUNNING"} 4
# HELP berth_pod_sandboxes Pod sandboxes, by state.
# TYPE berth_pod_sandboxes gauge
berth_pod_sandboxes{state="NOTREADY"} 0
berth_pod_sandboxes{state="READY"} 2
# HELP berth_shims berth-shim processes berthd knows to be alive.
# TYPE berth_shims gauge
berth_shims 3
`
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), "berth_containers", "berth_pod_sandboxes", "berth_shims"); err != nil {
		t.Fatal(err)
	}
	shims = 1
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(strings.Replace(want, "berth_shims 3", "berth_shims 1", 1)), "berth_shims"); err != nil {
		t.Errorf("the shim gauge is not read at scrape time: %v", err)
	}
}

func TestServe(t *testing.T) {
	m := New(Options{})
	m.ObserveRequest("Version", codes.OK, time.Millisecond)
	srv, err := m.Serve("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`berth_cri_requests_total{code="OK",method="Version"} 1`,
		"go_goroutines ",
		"berth_process_open_fds ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get("http://" + srv.Addr().String() + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("endpoint still answers after Shutdown")
	}
}
