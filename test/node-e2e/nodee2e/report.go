package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// skipEntry is one line of the skip list: a literal piece of a spec's full
// text and why no runtime can pass it here.
type skipEntry struct {
	Spec, Reason string
}

// parseSkipList reads "SPEC TEXT # reason" lines; blank lines and lines
// starting with # are comments. A reason is required: an entry nobody can
// explain is not a skip but a failure.
func parseSkipList(r io.Reader) ([]skipEntry, error) {
	var out []skipEntry
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		spec, reason, ok := strings.Cut(line, " # ")
		spec, reason = strings.TrimSpace(spec), strings.TrimSpace(reason)
		if !ok || spec == "" || reason == "" {
			return nil, fmt.Errorf("line %d: want \"SPEC TEXT # reason\": %q", n, line)
		}
		out = append(out, skipEntry{Spec: spec, Reason: reason})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read skip list: %w", err)
	}
	return out, nil
}

func readSkipList(path string) ([]skipEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open skip list: %w", err)
	}
	defer f.Close()
	return parseSkipList(f)
}

// skipRegex is the --ginkgo.skip expression of entries: each spec text
// matched literally.
func skipRegex(entries []skipEntry) string {
	parts := make([]string, len(entries))
	for i, e := range entries {
		parts[i] = regexp.QuoteMeta(e.Spec)
	}
	return strings.Join(parts, "|")
}

func skipRegexCmd(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: nodee2e skip-regex SKIPLIST")
	}
	entries, err := readSkipList(args[0])
	if err != nil {
		return err
	}
	fmt.Println(skipRegex(entries))
	return nil
}

// ginkgoReport is the part of ginkgo v2's JSON report (--json-report) the
// summary reads; the file holds a list of these, one per suite.
type ginkgoReport struct {
	SpecReports []struct {
		ContainerHierarchyTexts []string
		LeafNodeType            string
		LeafNodeText            string
		State                   string
		Failure                 struct {
			Message string
		}
	}
}

// outcome of one spec, in the form results.txt lists it.
type outcome struct {
	State  string // PASS, FAIL or SKIP
	Spec   string
	Reason string // failure or skip message
}

// summarize classifies every spec whose full text focus matches and
// exclude does not (the report also holds the specs the two filtered out,
// as skipped: they are not part of the run) and
// every failed suite-level node (a failed BeforeSuite fails the run).
func summarize(reports []ginkgoReport, focus, exclude *regexp.Regexp, skips []skipEntry) []outcome {
	var out []outcome
	for _, r := range reports {
		for _, s := range r.SpecReports {
			text := strings.Join(append(append([]string{}, s.ContainerHierarchyTexts...), s.LeafNodeText), " ")
			if s.LeafNodeType != "It" {
				if isFailure(s.State) {
					out = append(out, outcome{"FAIL", "[" + s.LeafNodeType + "] " + text, firstLine(s.Failure.Message)})
				}
				continue
			}
			if !focus.MatchString(text) || (exclude != nil && exclude.MatchString(text)) {
				continue
			}
			o := outcome{Spec: text}
			switch {
			case s.State == "passed":
				o.State = "PASS"
			case isFailure(s.State):
				o.State, o.Reason = "FAIL", firstLine(s.Failure.Message)
			default: // skipped at run time, by the skip list, or pending
				o.State, o.Reason = "SKIP", firstLine(s.Failure.Message)
				for _, e := range skips {
					if strings.Contains(text, e.Spec) {
						o.Reason = "skip list: " + e.Reason
						break
					}
				}
			}
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Spec != out[j].Spec {
			return out[i].Spec < out[j].Spec
		}
		return out[i].State < out[j].State
	})
	return out
}

func isFailure(state string) bool {
	switch state {
	case "failed", "panicked", "interrupted", "aborted", "timedout":
		return true
	}
	return false
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	const limit = 300
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return s
}

func counts(out []outcome) (pass, fail, skip int) {
	for _, o := range out {
		switch o.State {
		case "PASS":
			pass++
		case "FAIL":
			fail++
		default:
			skip++
		}
	}
	return pass, fail, skip
}

// errSpecsFailed makes summary exit non-zero without another message: the
// failures are already printed.
var errSpecsFailed = errors.New("specs failed")

func summaryCmd(args []string) error {
	fl := flag.NewFlagSet("summary", flag.ContinueOnError)
	report := fl.String("report", "", "ginkgo JSON report")
	focus := fl.String("focus", `\[NodeConformance\]`, "the run's focus (ginkgo.focus)")
	excl := fl.String("exclude", "", "specs the run left out of the focus (a regexp)")
	skipList := fl.String("skips", "", "skip list")
	outDir := fl.String("out", "", "directory for results.txt, failures.txt, summary.txt")
	if err := fl.Parse(args); err != nil {
		return err
	}
	re, err := regexp.Compile(*focus)
	if err != nil {
		return fmt.Errorf("focus: %w", err)
	}
	var exclude *regexp.Regexp
	if *excl != "" {
		if exclude, err = regexp.Compile(*excl); err != nil {
			return fmt.Errorf("exclude: %w", err)
		}
	}
	var skips []skipEntry
	if *skipList != "" {
		if skips, err = readSkipList(*skipList); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(*report)
	if err != nil {
		return fmt.Errorf("read report: %w", err)
	}
	var reports []ginkgoReport
	if err := json.Unmarshal(data, &reports); err != nil {
		return fmt.Errorf("parse report %s: %w", *report, err)
	}
	out := summarize(reports, re, exclude, skips)
	var results, failures strings.Builder
	for _, o := range out {
		fmt.Fprintf(&results, "%s\t%s\n", o.State, o.Spec)
		if o.State == "FAIL" {
			fmt.Fprintf(&failures, "%s\n\t%s\n", o.Spec, o.Reason)
			// The reason goes to stdout too: a CI log is often all there is.
			fmt.Printf("FAIL %s\n\t%s\n", o.Spec, o.Reason)
		}
	}
	pass, fail, skip := counts(out)
	line := fmt.Sprintf("%d passed, %d failed, %d skipped", pass, fail, skip)
	if *outDir != "" {
		for name, body := range map[string]string{
			"results.txt":  results.String(),
			"failures.txt": failures.String(),
			"skipped.txt":  skippedText(out),
			"summary.txt":  line + "\n",
		} {
			if err := os.WriteFile(filepath.Join(*outDir, name), []byte(body), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
		}
	}
	fmt.Println(line)
	if fail > 0 {
		return errSpecsFailed
	}
	return nil
}

func skippedText(out []outcome) string {
	var b strings.Builder
	for _, o := range out {
		if o.State == "SKIP" {
			fmt.Fprintf(&b, "%s\n\t%s\n", o.Spec, o.Reason)
		}
	}
	return b.String()
}

// compareCmd prints, as Markdown for docs/node-conformance.md, the totals
// of two runs' results.txt side by side and every spec whose outcome
// differs between them.
func compareCmd(args []string) error {
	if len(args) != 4 {
		return errors.New("usage: nodee2e compare NAME_A RESULTS_A NAME_B RESULTS_B")
	}
	a, err := readResults(args[1])
	if err != nil {
		return err
	}
	b, err := readResults(args[3])
	if err != nil {
		return err
	}
	fmt.Print(compareMarkdown(args[0], a, args[2], b))
	return nil
}

// readResults maps each spec of a results.txt to its state.
func readResults(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		state, spec, ok := strings.Cut(line, "\t")
		if ok {
			out[spec] = state
		}
	}
	return out, nil
}

func compareMarkdown(nameA string, a map[string]string, nameB string, b map[string]string) string {
	var sb strings.Builder
	total := func(m map[string]string, state string) int {
		n := 0
		for _, s := range m {
			if s == state {
				n++
			}
		}
		return n
	}
	fmt.Fprintf(&sb, "| | %s | %s |\n| --- | --- | --- |\n", nameA, nameB)
	for _, st := range []string{"PASS", "FAIL", "SKIP"} {
		fmt.Fprintf(&sb, "| %s | %d | %d |\n", st, total(a, st), total(b, st))
	}
	specs := map[string]bool{}
	for s := range a {
		specs[s] = true
	}
	for s := range b {
		specs[s] = true
	}
	var diff []string
	for s := range specs {
		if a[s] != b[s] {
			diff = append(diff, s)
		}
	}
	sort.Strings(diff)
	fmt.Fprintf(&sb, "\nSpecs whose outcome differs: %d\n", len(diff))
	if len(diff) > 0 {
		fmt.Fprintf(&sb, "\n| spec | %s | %s |\n| --- | --- | --- |\n", nameA, nameB)
		for _, s := range diff {
			fmt.Fprintf(&sb, "| %s | %s | %s |\n", strings.ReplaceAll(s, "|", `\|`), orDash(a[s]), orDash(b[s]))
		}
	}
	return sb.String()
}

func orDash(s string) string {
	if s == "" {
		return "not run"
	}
	return s
}
