package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	tests := []struct {
		vals     []float64
		p, want  float64
		wantNaN  bool
		describe string
	}{
		{vals: []float64{5}, p: 50, want: 5, describe: "one value"},
		{vals: []float64{1, 2, 3, 4}, p: 50, want: 2, describe: "even count takes the lower middle"},
		{vals: []float64{1, 2, 3, 4, 5}, p: 50, want: 3, describe: "odd count"},
		{vals: []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, p: 90, want: 9, describe: "p90 nearest rank"},
		{vals: []float64{1, 2, 3}, p: 100, want: 3, describe: "p100 is max"},
		{vals: []float64{1, 2, 3}, p: 0, want: 1, describe: "p0 is min"},
		{vals: nil, p: 50, wantNaN: true, describe: "empty"},
	}
	for _, tt := range tests {
		got := percentile(tt.vals, tt.p)
		if tt.wantNaN {
			if !math.IsNaN(got) {
				t.Errorf("%s: percentile = %v, want NaN", tt.describe, got)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("%s: percentile(%v, %v) = %v, want %v", tt.describe, tt.vals, tt.p, got, tt.want)
		}
	}
}

func TestSummarizeDoesNotReorderSamples(t *testing.T) {
	vals := []float64{30, 10, 20}
	s := summarize(vals)
	if s.N != 3 || s.P50 != 20 || s.Max != 30 || s.Mean != 20 {
		t.Errorf("summarize = %+v", s)
	}
	if vals[0] != 30 {
		t.Errorf("summarize sorted its input: %v", vals)
	}
}

func TestMeets(t *testing.T) {
	tests := []struct {
		goal       string
		v          float64
		ok, judged bool
	}{
		{"<= 0.5", 0.4, true, true},
		{"<= 0.5", 0.5, true, true},
		{"<= 0.5", 0.51, false, true},
		{">= 1.5", 1.6, true, true},
		{">= 1.5", 1.2, false, true},
		{"", 1, false, false},
		{"berth < 10", 1, false, false},
	}
	for _, tt := range tests {
		ok, judged := meets(tt.goal, tt.v)
		if ok != tt.ok || judged != tt.judged {
			t.Errorf("meets(%q, %v) = %v, %v; want %v, %v", tt.goal, tt.v, ok, judged, tt.ok, tt.judged)
		}
	}
}

func TestResultsRatioAndErrors(t *testing.T) {
	r := newResults()
	for _, d := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond} {
		r.addDuration("run", "berth", d)
		r.addDuration("run", "containerd", d*4)
	}
	r.addDuration("exec", "containerd", 5*time.Millisecond)
	r.fail("exec", "ms", "<= 0.5", "berth", errors.New("unimplemented"))
	ms := r.summarize()
	if len(ms) != 2 || ms[0].Name != "run" || ms[1].Name != "exec" {
		t.Fatalf("metrics not in first-seen order: %+v", ms)
	}
	run := ms[0]
	if run.Ratio == nil || *run.Ratio != 0.25 {
		t.Fatalf("run ratio = %v, want 0.25", run.Ratio)
	}
	if run.Met == nil || !*run.Met {
		t.Errorf("run goal %q should be met at 0.25", run.Goal)
	}
	exec := ms[1]
	if exec.Ratio != nil {
		t.Errorf("exec has a ratio without berth samples: %v", *exec.Ratio)
	}
	if got := exec.Values["berth"].Error; got != "unimplemented" {
		t.Errorf("berth error = %q", got)
	}
}

func TestAddOverheads(t *testing.T) {
	rep := &Report{Metrics: []*Metric{{
		Name: mColdStart, Unit: "ms",
		Values: map[string]*Summary{
			"berth": {N: 3, P50: 85}, "containerd": {N: 3, P50: 200}, floorName: {N: 3, P50: 80},
		},
	}}}
	addOverheads(rep)
	if len(rep.Metrics) != 2 {
		t.Fatalf("got %d metrics, want the overhead row added", len(rep.Metrics))
	}
	o := rep.Metrics[1]
	if o.Values["berth"].P50 != 5 || o.Values["containerd"].P50 != 120 {
		t.Errorf("overheads = berth %v, containerd %v", o.Values["berth"].P50, o.Values["containerd"].P50)
	}
	if o.Met == nil || !*o.Met {
		t.Errorf("5 ms above the floor should meet %q", o.Goal)
	}
}

func TestWriteTableAndJSON(t *testing.T) {
	r := newResults()
	r.addDuration(mSandbox, "berth", 40*time.Millisecond)
	r.addDuration(mSandbox, "containerd", 100*time.Millisecond)
	r.add(mSandbox, "ms", "<= 0.5", floorName, 30)
	r.fail(mExec, "ms", "<= 0.5", "berth", errors.New("method ExecSync not implemented"))
	rep := &Report{Metrics: r.summarize(), Runtimes: map[string]string{"berth": "x"}}
	var buf bytes.Buffer
	if err := writeTable(&buf, rep); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{mSandbox, "40.0", "100", "30.0", "0.40", "<= 0.5 ok", "method ExecSync not implemented"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := writeJSON(path, rep); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
	if len(back.Metrics) != 2 || back.Metrics[0].Values["berth"].P50 != 40 || *back.Metrics[0].Ratio != 0.4 {
		t.Errorf("JSON round trip lost data: %s", data)
	}
}

func TestQuickFlagsKeepExplicitValues(t *testing.T) {
	p, err := parseFlags([]string{"-quick", "-pods", "7"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Pods != 7 {
		t.Errorf("explicit -pods lost: %d", p.Pods)
	}
	if p.Iterations != 5 || p.Lifecycles != 20 || p.Timeout != 15*time.Minute || p.NodePods != "10" {
		t.Errorf("quick defaults not applied: %+v", p)
	}
	full, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if full.Pods != 50 || full.Lifecycles != 500 || full.PullMB != 200 {
		t.Errorf("full defaults wrong: %+v", full)
	}
}

func TestProcHelpers(t *testing.T) {
	self := os.Getpid()
	if rssKB(self) <= 0 {
		t.Errorf("rssKB(self) = %d", rssKB(self))
	}
	if pssKB([]int{self}) <= 0 {
		t.Errorf("pssKB(self) = %d", pssKB([]int{self}))
	}
	if got := pssKB([]int{1 << 30}); got != 0 {
		t.Errorf("pssKB of a missing pid = %d, want 0", got)
	}
	procs := runtimeProcs(self, "/nonexistent-dir", "no-such-shim")
	if len(procs) != 1 || procs[0] != self {
		t.Errorf("runtimeProcs = %v, want only the daemon %d", procs, self)
	}
}

func TestRatioAgainstTheBetterContainerd(t *testing.T) {
	r := newResults()
	r.addDuration("run", "berth", 30*time.Millisecond)
	r.addDuration("run", "containerd", 100*time.Millisecond)
	r.addDuration("run", "containerd2", 60*time.Millisecond)
	r.add("rate", "MB/s", ">= 1.5", "berth", 150)
	r.add("rate", "MB/s", ">= 1.5", "containerd", 50)
	r.add("rate", "MB/s", ">= 1.5", "containerd2", 100)
	r.add("only2", "MiB", "<= 0.5", "berth", 1)
	r.add("only2", "MiB", "<= 0.5", "containerd2", 4)
	ms := r.summarize()
	for _, tt := range []struct {
		ratio   float64
		against string
	}{{0.5, "containerd2"}, {1.5, "containerd2"}, {0.25, "containerd2"}} {
		m := ms[0]
		ms = ms[1:]
		if m.Ratio == nil || *m.Ratio != tt.ratio || m.Against != tt.against {
			t.Errorf("%s: ratio %v against %q, want %v against %q", m.Name, m.Ratio, m.Against, tt.ratio, tt.against)
		}
	}
}
