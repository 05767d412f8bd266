package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestParseSkipList(t *testing.T) {
	in := `# comment

[sig-node] A spec (with parens) [NodeConformance] # needs an image built upstream only
  Another spec # a host feature
`
	got, err := parseSkipList(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []skipEntry{
		{"[sig-node] A spec (with parens) [NodeConformance]", "needs an image built upstream only"},
		{"Another spec", "a host feature"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	re := regexp.MustCompile(skipRegex(got))
	if !re.MatchString("[sig-node] A spec (with parens) [NodeConformance] [Conformance]") {
		t.Errorf("skip regex %q does not match its spec literally", re)
	}
	if re.MatchString("[sig-node] A spec with parens [NodeConformance]") {
		t.Errorf("skip regex %q treats the spec text as a pattern", re)
	}
	for _, bad := range []string{"spec without reason\n", "spec # \n", "spec #reason\n"} {
		if _, err := parseSkipList(strings.NewReader(bad)); err == nil {
			t.Errorf("parseSkipList(%q) accepted an entry without spec or reason", bad)
		}
	}
}

func TestSummary(t *testing.T) {
	type spec struct {
		ContainerHierarchyTexts []string
		LeafNodeType            string
		LeafNodeText            string
		State                   string
		Failure                 struct{ Message string }
	}
	mk := func(typ, state, msg string, texts ...string) spec {
		s := spec{ContainerHierarchyTexts: texts[:len(texts)-1], LeafNodeType: typ, LeafNodeText: texts[len(texts)-1], State: state}
		s.Failure.Message = msg
		return s
	}
	report := []map[string]any{{"SpecReports": []spec{
		mk("SynchronizedBeforeSuite", "passed", "", ""),
		mk("It", "passed", "", "[sig-node] Pods", "should run [NodeConformance]"),
		mk("It", "failed", "timed out\nwaiting", "[sig-node] Probes", "should restart [NodeConformance]"),
		mk("It", "timedout", "deadline", "[sig-node] Probes", "should time out [NodeConformance]"),
		mk("It", "skipped", "Only supported for node OS distro [gci ubuntu]", "[sig-node] Sysctls", "should work [NodeConformance]"),
		mk("It", "skipped", "", "[sig-node] Image", "should pull by digest [NodeConformance]"),
		mk("It", "skipped", "", "[sig-node] Memory", "unfocused spec [Serial]"),
		mk("It", "skipped", "", "[sig-node] Memory", "excluded spec [NodeConformance] [Serial]"),
		mk("It", "passed", "", "[sig-node] Other", "unfocused but run [Feature:X]"),
		mk("ReportAfterSuite", "failed", "report broke", "Kubernetes e2e JUnit report"),
	}}}
	dir := t.TempDir()
	data, err := json.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	rp := filepath.Join(dir, "report.json")
	if err := os.WriteFile(rp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(dir, "skip.txt")
	if err := os.WriteFile(sp, []byte("should pull by digest # digest of an upstream image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = summaryCmd([]string{"-report", rp, "-focus", `\[NodeConformance\]`, "-exclude", `\[Serial\]`, "-skips", sp, "-out", dir})
	if !errors.Is(err, errSpecsFailed) {
		t.Fatalf("summary returned %v, want errSpecsFailed", err)
	}
	line, err := os.ReadFile(filepath.Join(dir, "summary.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(line), "1 passed, 3 failed, 2 skipped\n"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	results, _ := os.ReadFile(filepath.Join(dir, "results.txt"))
	for _, want := range []string{
		"PASS\t[sig-node] Pods should run [NodeConformance]",
		"FAIL\t[sig-node] Probes should time out [NodeConformance]",
		"FAIL\t[ReportAfterSuite] Kubernetes e2e JUnit report",
	} {
		if !strings.Contains(string(results), want+"\n") {
			t.Errorf("results.txt lacks %q:\n%s", want, results)
		}
	}
	if strings.Contains(string(results), "unfocused") || strings.Contains(string(results), "excluded") {
		t.Errorf("results.txt lists specs outside the focus:\n%s", results)
	}
	skipped, _ := os.ReadFile(filepath.Join(dir, "skipped.txt"))
	for _, want := range []string{"skip list: digest of an upstream image", "Only supported for node OS distro"} {
		if !strings.Contains(string(skipped), want) {
			t.Errorf("skipped.txt lacks reason %q:\n%s", want, skipped)
		}
	}
	failures, _ := os.ReadFile(filepath.Join(dir, "failures.txt"))
	if !strings.Contains(string(failures), "\ttimed out\n") || strings.Contains(string(failures), "waiting") {
		t.Errorf("failures.txt should give the first line of each message:\n%s", failures)
	}
}

func TestCompareMarkdown(t *testing.T) {
	a := map[string]string{"s1": "PASS", "s2": "FAIL", "s3": "SKIP"}
	b := map[string]string{"s1": "PASS", "s2": "PASS", "s4 | piped": "PASS"}
	got := compareMarkdown("berth", a, "containerd", b)
	for _, want := range []string{
		"| PASS | 1 | 3 |", "| FAIL | 1 | 0 |", "| SKIP | 1 | 0 |",
		"Specs whose outcome differs: 3",
		"| s2 | FAIL | PASS |", "| s3 | SKIP | not run |", `| s4 \| piped | not run | PASS |`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("compare output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "| s1 |") {
		t.Errorf("a spec with the same outcome is listed as differing:\n%s", got)
	}
}

// The checked-in skip list parses, and its conditional entries name only
// the conditions run.sh knows how to find.
func TestCheckedInSkipList(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "skip.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, err := parseSkipList(f)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"cgroup-v1": true, "no-dummy-link": true}
	for _, e := range entries {
		cond, rest, ok := strings.Cut(e.Spec, " ")
		if c, isWhen := strings.CutPrefix(cond, "when:"); isWhen {
			if !ok || !known[c] || !strings.HasPrefix(rest, "[") {
				t.Errorf("entry %q: unknown condition %q or no spec after it", e.Spec, c)
			}
		}
	}
	if len(entries) == 0 {
		t.Error("empty skip list")
	}
}
