package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestAddCritestResults(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"pod_benchmark_data.json": `{"operationsNames":["CreatePod","StatusPod","StopPod","RemovePod"],"numParallel":1,
			"datapoints":[{"sampleIndex":0,"operationsDurationsNs":[40000000,1000000,80000000,3000000]},
			              {"sampleIndex":1,"operationsDurationsNs":[60000000,1000000,90000000,5000000]}]}`,
		"image_listing_benchmark_data.json": `{"operationsNames":["ListImages"],"datapoints":[{"operationsDurationsNs":[500000]}]}`,
		// What ginkgo's -json-report holds for the spec that records a
		// gmeasure experiment instead of a data file.
		"ginkgo.json": `[{"SuiteDescription":"x","SpecReports":[
			{"ReportEntries":[{"Name":"other","Value":{"AsJSON":"{}"}}]},
			{"ReportEntries":[{"Name":"start-container-benchmark","Value":{"Representation":"...",
				"AsJSON":"{\"Name\":\"start-container-benchmark\",\"Measurements\":[{\"Type\":2,\"Name\":\"create PodSandbox and container\",\"Durations\":[250000000]}]}"}}]}]}]`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := &bench{res: newResults(), log: slog.Default()}
	if err := b.addCritestResults(dir, "berth"); err != nil {
		t.Fatalf("addCritestResults: %v", err)
	}
	got := map[string]*Summary{}
	for _, m := range b.res.summarize() {
		got[m.Name] = m.Values["berth"]
	}
	tests := []struct {
		row     string
		n       int
		p50, mx float64
	}{
		{"critest pod lifecycle (sum of its steps)", 2, 124, 156},
		{"  critest pod: CreatePod", 2, 40, 60},
		{"  critest pod: RemovePod", 2, 3, 5},
		{"  critest image listing: ListImages", 1, 0.5, 0.5},
		{mCritestScratch, 1, 250, 250},
	}
	for _, tt := range tests {
		s := got[tt.row]
		if s == nil {
			t.Errorf("row %q missing; have %v", tt.row, keys(got))
			continue
		}
		if s.N != tt.n || s.P50 != tt.p50 || s.Max != tt.mx {
			t.Errorf("row %q = n %d p50 %v max %v, want n %d p50 %v max %v", tt.row, s.N, s.P50, s.Max, tt.n, tt.p50, tt.mx)
		}
	}
	if _, ok := got["critest image listing lifecycle (sum of its steps)"]; ok {
		t.Error("a one-step lifecycle got a sum row")
	}
}

func TestAddCritestResultsEmpty(t *testing.T) {
	b := &bench{res: newResults(), log: slog.Default()}
	if err := b.addCritestResults(t.TempDir(), "berth"); err == nil {
		t.Fatal("no data files: want an error")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pod_benchmark_data.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.addCritestResults(dir, "berth"); err == nil || !strings.Contains(err.Error(), "pod_benchmark_data.json") {
		t.Fatalf("corrupt data file: err = %v, want one naming the file", err)
	}
}

func keys(m map[string]*Summary) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// versionRuntime answers Version with errs first, then successfully.
type versionRuntime struct {
	internalapi.RuntimeService
	errs  []error
	calls int
}

func (v *versionRuntime) Version(ctx context.Context, _ string) (*runtimeapi.VersionResponse, error) {
	v.calls++
	if v.calls <= len(v.errs) {
		return nil, v.errs[v.calls-1]
	}
	return &runtimeapi.VersionResponse{RuntimeName: "fake", RuntimeVersion: "1"}, nil
}

func TestWaitVersion(t *testing.T) {
	notInit := errors.New("rpc error: code = Unknown desc = server is not initialized yet")
	tests := []struct {
		name      string
		failures  int
		timeout   time.Duration
		wantErr   bool
		wantCalls int
	}{
		{name: "answers at once", failures: 0, timeout: time.Second, wantCalls: 1},
		{name: "cri plugin initialising", failures: 3, timeout: 5 * time.Second, wantCalls: 4},
		{name: "never answers", failures: 1000, timeout: 300 * time.Millisecond, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &versionRuntime{}
			for range tt.failures {
				rt.errs = append(rt.errs, notInit)
			}
			start := time.Now()
			v, err := waitVersion(context.Background(), rt, tt.timeout)
			if took := time.Since(start); took > tt.timeout+time.Second {
				t.Errorf("took %s, bound %s", took, tt.timeout)
			}
			if tt.wantErr {
				if err == nil || !errors.Is(err, notInit) {
					t.Fatalf("err = %v, want one wrapping the last Version error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("waitVersion: %v", err)
			}
			if v.GetRuntimeName() != "fake" || rt.calls != tt.wantCalls {
				t.Errorf("got %q after %d calls, want fake after %d", v.GetRuntimeName(), rt.calls, tt.wantCalls)
			}
		})
	}
}
