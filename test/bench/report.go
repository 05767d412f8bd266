package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary is one metric of one runtime.
type Summary struct {
	N     int     `json:"n"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
	Error string  `json:"error,omitempty"`
}

// Metric is one row of the report. Values are in Unit; latencies in ms.
type Metric struct {
	Name string `json:"name"`
	Unit string `json:"unit"`
	// Values by runtime name ("berth", "containerd", "floor").
	Values map[string]*Summary `json:"values"`
	// Ratio is berth p50 / the better p50 of the containerds (nil when
	// berth or both of them are missing); Against names that containerd.
	Ratio   *float64 `json:"ratio,omitempty"`
	Against string   `json:"against,omitempty"`
	// Goal is the target on the ratio, e.g. "<= 0.5", or on berth's
	// value for overhead rows; Met says whether this run reached it.
	Goal string `json:"goal,omitempty"`
	Met  *bool  `json:"met,omitempty"`
	Note string `json:"note,omitempty"`
}

// Report is the JSON document the bench writes.
type Report struct {
	Command  string            `json:"command"`
	Started  time.Time         `json:"started"`
	Duration string            `json:"duration"`
	Machine  map[string]string `json:"machine"`
	Runtimes map[string]string `json:"runtimes"`
	Params   map[string]any    `json:"params"`
	Metrics  []*Metric         `json:"metrics"`
	Notes    []string          `json:"notes,omitempty"`
}

// results collects samples as the scenarios run.
type results struct {
	order   []string
	metrics map[string]*Metric
	samples map[string]map[string][]float64
}

func newResults() *results {
	return &results{metrics: map[string]*Metric{}, samples: map[string]map[string][]float64{}}
}

func (r *results) metric(name, unit, goal string) *Metric {
	m, ok := r.metrics[name]
	if !ok {
		m = &Metric{Name: name, Unit: unit, Goal: goal, Values: map[string]*Summary{}}
		r.metrics[name] = m
		r.samples[name] = map[string][]float64{}
		r.order = append(r.order, name)
	}
	return m
}

// addDuration records a latency sample in ms.
func (r *results) addDuration(name, rt string, d time.Duration) {
	r.add(name, "ms", "<= 0.5", rt, float64(d.Microseconds())/1000)
}

func (r *results) add(name, unit, goal, rt string, v float64) {
	r.metric(name, unit, goal)
	r.samples[name][rt] = append(r.samples[name][rt], v)
}

// note appends text to the note of metric name.
func (r *results) note(name, text string) {
	m := r.metric(name, "", "")
	if m.Note != "" {
		m.Note += "; "
	}
	m.Note += text
}

// fail records that rt could not run the scenario behind metric name.
func (r *results) fail(name, unit, goal, rt string, err error) {
	m := r.metric(name, unit, goal)
	if _, ok := m.Values[rt]; !ok {
		m.Values[rt] = &Summary{}
	}
	m.Values[rt].Error = err.Error()
}

// summarize turns samples into summaries and ratios.
func (r *results) summarize() []*Metric {
	out := make([]*Metric, 0, len(r.order))
	for _, name := range r.order {
		m := r.metrics[name]
		for rt, vs := range r.samples[name] {
			s := summarize(vs)
			if old := m.Values[rt]; old != nil {
				s.Error = old.Error
			}
			m.Values[rt] = &s
		}
		b := m.Values["berth"]
		against, c := better(m)
		if b != nil && c != nil && b.N > 0 && c.P50 > 0 {
			ratio := b.P50 / c.P50
			m.Ratio, m.Against = &ratio, against
			if ok, judged := meets(m.Goal, ratio); judged {
				m.Met = &ok
			}
		}
		if limit, ok := strings.CutPrefix(m.Goal, "berth < "); ok && b != nil && b.N > 0 {
			if x, err := strconv.ParseFloat(limit, 64); err == nil {
				met := b.P50 < x
				m.Met = &met
			}
		}
		out = append(out, m)
	}
	return out
}

// runtimeNames are the report's columns, berth first; the others are what
// berth is compared with.
var runtimeNames = []string{"berth", "containerd", "containerd2"}

// better is the containerd with the better p50 on m: the higher for a goal
// of ">=" (throughput), else the lower (time, memory, CPU, size).
func better(m *Metric) (string, *Summary) {
	var name string
	var best *Summary
	higher := strings.HasPrefix(m.Goal, ">=")
	for _, rt := range runtimeNames[1:] {
		s := m.Values[rt]
		if s == nil || s.N == 0 {
			continue
		}
		if best == nil || (higher && s.P50 > best.P50) || (!higher && s.P50 < best.P50) {
			name, best = rt, s
		}
	}
	return name, best
}

// meets judges v against a goal of the form "<= x" or ">= x".
func meets(goal string, v float64) (ok, judged bool) {
	var op string
	var x float64
	if _, err := fmt.Sscanf(goal, "%s %g", &op, &x); err != nil {
		return false, false
	}
	switch op {
	case "<=":
		return v <= x, true
	case ">=":
		return v >= x, true
	}
	return false, false
}

func summarize(vs []float64) Summary {
	if len(vs) == 0 {
		return Summary{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	return Summary{
		N:    len(s),
		P50:  percentile(s, 50),
		P90:  percentile(s, 90),
		Max:  s[len(s)-1],
		Mean: sum / float64(len(s)),
	}
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// writeTable prints the human report.
func writeTable(w io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tunit\tberth p50/p90/max\tcontainerd 1.6 p50/p90/max\tcontainerd 2 p50/p90/max\tfloor p50\tratio\tvs\tgoal\t")
	for _, m := range rep.Metrics {
		ratio, goal := "-", m.Goal
		if m.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *m.Ratio)
		}
		if m.Met != nil {
			if *m.Met {
				goal += " ok"
			} else {
				goal += " MISS"
			}
		}
		floor := "-"
		if f := m.Values["floor"]; f != nil && f.N > 0 {
			floor = num(f.P50)
		}
		vs := "-"
		if m.Against != "" {
			vs = m.Against
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", m.Name, m.Unit,
			cell(m.Values["berth"]), cell(m.Values["containerd"]), cell(m.Values["containerd2"]), floor, ratio, vs, goal)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var errs []string
	for _, m := range rep.Metrics {
		for _, rt := range slices.Concat(runtimeNames, []string{floorName}) {
			if s := m.Values[rt]; s != nil && s.Error != "" {
				errs = append(errs, fmt.Sprintf("  %s [%s]: %s", m.Name, rt, s.Error))
			}
		}
		if m.Note != "" {
			errs = append(errs, fmt.Sprintf("  %s: %s", m.Name, m.Note))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintln(w, "\nerrors and notes:")
		fmt.Fprintln(w, strings.Join(errs, "\n"))
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	return nil
}

func cell(s *Summary) string {
	switch {
	case s == nil:
		return "-"
	case s.N == 0 && s.Error != "":
		return "error"
	case s.N == 0:
		return "-"
	case s.N == 1:
		return num(s.P50)
	}
	c := fmt.Sprintf("%s/%s/%s", num(s.P50), num(s.P90), num(s.Max))
	if s.Error != "" {
		c += " (errors)"
	}
	return c
}

func num(v float64) string {
	switch {
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func writeJSON(path string, rep *Report) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
