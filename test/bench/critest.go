package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// critestOpts run cri-tools' own benchmark specs (`critest -benchmark`).
type critestOpts struct {
	bin     string // critest binary; built by ../shared/conformance/setup
	samples int    // samples per spec and round (pods, containers, images)
	rounds  int    // rounds per runtime, alternating which runtime goes first
	timeout time.Duration
}

// critestImages are the images the critest specs use, served by the bench
// registry: a workload with busybox's `top` (critest's container command)
// and a distinct image (own layer, own digest) for the pull benchmark, which
// removes it after every sample, so removing it never touches the workload.
type critestImages struct {
	Workload string
	Pull     string
}

func (im *images) pushCritest(ctx context.Context) (critestImages, error) {
	var ci critestImages
	top, err := testutil.NewLayer([]testutil.File{{Path: "/bin/top", Symlink: "busybox"}})
	if err != nil {
		return ci, err
	}
	work, err := testutil.NewImage(testutil.ImageSpec{Extra: []v1.Layer{top}, Cmd: []string{"top"}})
	if err != nil {
		return ci, err
	}
	p, err := im.reg.Push(ctx, "bench/critest-busybox:1", work)
	if err != nil {
		return ci, err
	}
	ci.Workload = p.Ref
	marker, err := testutil.NewLayer([]testutil.File{{Path: "/critest-pull", Body: "pull benchmark\n"}})
	if err != nil {
		return ci, err
	}
	pull, err := testutil.NewImage(testutil.ImageSpec{Extra: []v1.Layer{top, marker}, Cmd: []string{"top"}})
	if err != nil {
		return ci, err
	}
	if p, err = im.reg.Push(ctx, "bench/critest-pull:1", pull); err != nil {
		return ci, err
	}
	ci.Pull = p.Ref
	return ci, nil
}

// critestFiles are the datapoint files the benchmark specs write to
// -benchmarking-output-dir, with the row prefix each gets in the report.
var critestFiles = []struct{ file, prefix string }{
	{"pod_benchmark_data.json", "critest pod"},
	{"container_benchmark_data.json", "critest container"},
	{"image_lifecycle_benchmark_data.json", "critest image"},
	{"image_listing_benchmark_data.json", "critest image listing"},
}

// mCritestScratch is the spec that measures one pod + container start from
// scratch (RunPodSandbox, CreateContainer, StartContainer, stop, remove).
const mCritestScratch = "critest pod+container from scratch (run+create+start+stop+remove)"

// critest runs the suite's benchmark specs against every target, rounds
// times, alternating the order, and adds each datapoint to the report.
func (b *bench) critest(ctx context.Context, dir string, o critestOpts, ci critestImages) {
	if _, err := os.Stat(o.bin); err != nil {
		b.log.Warn("critest benchmarks skipped: no critest (run ../shared/conformance/setup)", "bin", o.bin, "err", err)
		b.res.fail(mCritestScratch, "ms", "", b.targets[0].name, fmt.Errorf("critest missing: %w", err))
		return
	}
	failed := map[string]bool{}
	for r := range o.rounds {
		for k := range b.targets {
			idx := k
			if r%2 == 1 {
				idx = len(b.targets) - 1 - k
			}
			t := b.targets[idx]
			if failed[t.name] || ctx.Err() != nil {
				continue
			}
			out := filepath.Join(dir, "critest", fmt.Sprintf("%s-%d", t.name, r))
			start := time.Now()
			err := runCritest(ctx, o, t, out, ci)
			b.log.Info("critest benchmarks", "target", t.name, "round", r, "took", time.Since(start).Round(time.Millisecond), "err", err)
			if err != nil {
				failed[t.name] = true
				b.res.fail(mCritestScratch, "ms", "", t.name, err)
				continue
			}
			if err := b.addCritestResults(out, t.name); err != nil {
				failed[t.name] = true
				b.res.fail(mCritestScratch, "ms", "", t.name, err)
			}
		}
	}
}

// runCritest runs `critest -benchmark` once against t, writing its data and
// log to out.
func runCritest(ctx context.Context, o critestOpts, t *target, out string, ci critestImages) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("make critest dir: %w", err)
	}
	params := fmt.Sprintf(`containersNumber: %[1]d
containersNumberParallel: 1
podsNumber: %[1]d
podsNumberParallel: 1
imagesNumber: %[1]d
imagesNumberParallel: 1
imagePullingBenchmarkImage: %[2]q
imageListingBenchmarkImages: [%[2]q]
`, o.samples, ci.Pull)
	imgs := fmt.Sprintf("defaultTestContainerImage: %q\nwebServerTestImage: %q\n", ci.Workload, ci.Workload)
	paramsFile, imagesFile := filepath.Join(out, "params.yaml"), filepath.Join(out, "images.yaml")
	if err := os.WriteFile(paramsFile, []byte(params), 0o644); err != nil {
		return fmt.Errorf("write critest params: %w", err)
	}
	if err := os.WriteFile(imagesFile, []byte(imgs), 0o644); err != nil {
		return fmt.Errorf("write critest images: %w", err)
	}
	args := []string{"-benchmark",
		"-runtime-endpoint", t.endpoint, "-image-endpoint", t.endpoint,
		"-benchmarking-params-file", paramsFile, "-benchmarking-output-dir", out,
		"-test-images-file", imagesFile,
		"-ginkgo.json-report", filepath.Join(out, "ginkgo.json"), "-ginkgo.no-color",
	}
	if t.handler != "" {
		args = append(args, "-runtime-handler", t.handler)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	logPath := filepath.Join(out, "critest.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create critest log: %w", err)
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, o.bin, args...)
	cmd.Dir = out
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("critest -benchmark against %s: %w (log %s: %s)", t.name, err, logPath, lastLines(logPath, 3))
	}
	return nil
}

// lifecycleData is cri-tools' LifecycleBenchmarksResultsSet.
type lifecycleData struct {
	OperationsNames []string `json:"operationsNames"`
	Datapoints      []struct {
		OperationsDurationsNs []int64 `json:"operationsDurationsNs"`
	} `json:"datapoints"`
}

// addCritestResults reads one critest run's data files: one row per
// operation, plus the lifecycle's sum when it has several operations.
func (b *bench) addCritestResults(out, rt string) error {
	found := 0
	for _, f := range critestFiles {
		data, err := os.ReadFile(filepath.Join(out, f.file))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		var d lifecycleData
		if err := json.Unmarshal(data, &d); err != nil {
			return fmt.Errorf("parse %s: %w", f.file, err)
		}
		found++
		for _, dp := range d.Datapoints {
			var sum int64
			for _, ns := range dp.OperationsDurationsNs {
				sum += ns
			}
			if len(d.OperationsNames) > 1 {
				b.res.addDuration(f.prefix+" lifecycle (sum of its steps)", rt, time.Duration(sum))
			}
			for i, ns := range dp.OperationsDurationsNs {
				if i < len(d.OperationsNames) {
					b.res.add("  "+f.prefix+": "+d.OperationsNames[i], "ms", "", rt, ms(time.Duration(ns)))
				}
			}
		}
	}
	scratch, err := scratchDurations(filepath.Join(out, "ginkgo.json"))
	if err != nil {
		return err
	}
	for _, d := range scratch {
		b.res.addDuration(mCritestScratch, rt, d)
	}
	if found == 0 && len(scratch) == 0 {
		return fmt.Errorf("critest wrote no benchmark data in %s", out)
	}
	return nil
}

// scratchDurations digs the "start a container from scratch" measurement out
// of ginkgo's JSON report: that spec records a gmeasure experiment as a
// report entry instead of writing a data file.
func scratchDurations(path string) ([]time.Duration, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var suites []struct {
		SpecReports []struct {
			ReportEntries []struct {
				Name  string
				Value struct{ AsJSON string }
			}
		}
	}
	if err := json.Unmarshal(data, &suites); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	var out []time.Duration
	for _, s := range suites {
		for _, sr := range s.SpecReports {
			for _, e := range sr.ReportEntries {
				if e.Name != "start-container-benchmark" || e.Value.AsJSON == "" {
					continue
				}
				var exp struct {
					Measurements []struct {
						Name      string
						Durations []time.Duration
					}
				}
				if err := json.Unmarshal([]byte(e.Value.AsJSON), &exp); err != nil {
					return nil, fmt.Errorf("parse gmeasure experiment in %s: %w", path, err)
				}
				for _, m := range exp.Measurements {
					out = append(out, m.Durations...)
				}
			}
		}
	}
	return out, nil
}

// lastLines is the tail of a log, for error messages.
func lastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// critestScenario pushes the critest images and runs the benchmark specs.
func (b *bench) critestScenario(ctx context.Context, im *images, p params) {
	ci, err := im.pushCritest(ctx)
	if err != nil {
		for _, t := range b.targets {
			b.res.fail(mCritestScratch, "ms", "", t.name, fmt.Errorf("push critest images: %w", err))
		}
		return
	}
	o := critestOpts{bin: p.Critest, samples: p.CritestSamples, rounds: p.CritestRounds, timeout: 15 * time.Minute}
	b.critest(ctx, filepath.Dir(im.CertsDir), o, ci)
}
