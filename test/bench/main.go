// Command bench measures berthd and containerd side by side through
// kubelet's own CRI client (k8s.io/cri-client): pod and container
// lifecycles, cold pod start, ExecSync, concurrent pod starts, memory per
// pod, daemon growth over many pod lifecycles and a cold pull of a large
// multi-layer image, next to the floor of the same work done by runc and the
// CNI plugins alone. It starts both daemons itself on private dirs, sockets,
// a private CNI bridge and a loopback registry, alternates between them
// iteration by iteration, prints a table and writes JSON, and removes
// everything it created, also on failure or interrupt. Run as root;
// `make bench` runs the full version, -quick a smoke version.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/config"
)

type params struct {
	Quick          bool
	Runtimes       string
	Scenarios      string
	BerthBin       string
	Containerd     string
	Containerd2    string
	Iterations     int
	ExecIterations int
	FloorIter      int
	Pods           int
	Rounds         int
	Lifecycles     int
	Pulls          int
	PullMB         int
	PullLayers     int
	Subnet         string
	JSON           string
	KitRegistry    string
	DaemonLog      string
	KeepLogs       string
	BerthHandler   string
	Runc           string
	StopTimeout    int64
	Critest        string
	CritestSamples int
	CritestRounds  int
	NodePods       string
	Steady         time.Duration
	NodeRestarts   int
	NodeBusy       bool
	Churn          int
	Kubelet        string
	PlegPods       int
	ChurnTraced    int
	Timeout        time.Duration
}

func parseFlags(args []string) (params, error) {
	var p params
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&p.Quick, "quick", false, "smoke version: small counts (explicit flags still win)")
	fs.StringVar(&p.Runtimes, "runtimes", "berth,containerd,containerd2", "runtimes to measure: berth, containerd (Debian's 1.6), containerd2 (2.x from -containerd2)")
	fs.StringVar(&p.Scenarios, "scenarios", "floor,sandbox,container,coldstart,exec,concurrent,pull,lifecycles,critest,node,pleg,churn", "scenarios to run")
	fs.StringVar(&p.BerthBin, "berth-bin", "bin", "directory of berthd, berth-shim, berth-pause (make build)")
	fs.StringVar(&p.Containerd, "containerd", "/usr/bin/containerd", "containerd binary (Debian's containerd package)")
	fs.StringVar(&p.Containerd2, "containerd2", "/var/cache/berth/containerd-v2.4.2/containerd", "containerd 2.x binary, its containerd-shim-runc-v2 beside it (test/lib/containerd-build.sh builds both)")
	fs.IntVar(&p.Iterations, "iterations", 30, "iterations per runtime of the sandbox, container and cold-start scenarios")
	fs.IntVar(&p.ExecIterations, "exec-iterations", 50, "ExecSync calls per runtime")
	fs.IntVar(&p.FloorIter, "floor-iterations", 30, "iterations of the runc+CNI floor")
	fs.IntVar(&p.Pods, "pods", 50, "pods started concurrently (memory is measured at this count)")
	fs.IntVar(&p.Rounds, "rounds", 3, "rounds of the concurrent scenario per runtime")
	fs.IntVar(&p.Lifecycles, "lifecycles", 500, "pod lifecycles per runtime for the daemon RSS leak check")
	fs.IntVar(&p.Pulls, "pulls", 3, "cold pulls of a fresh large image per runtime")
	fs.IntVar(&p.PullMB, "pull-mb", 200, "uncompressed size of the large image (MiB)")
	fs.IntVar(&p.PullLayers, "pull-layers", 8, "layers of the large image")
	fs.StringVar(&p.Subnet, "subnet", "10.235.0.0/24", "subnet of the bench's own CNI bridge")
	fs.StringVar(&p.JSON, "json", "bench-results.json", "JSON report path (make bench: bin/bench-results.json)")
	fs.StringVar(&p.KitRegistry, "kit-registry", cmp.Or(os.Getenv("REGISTRY_ADDR"), "127.0.0.1:5000"), "conformance kit registry to copy pause:3.10 from ('' builds one from berth-pause)")
	fs.StringVar(&p.DaemonLog, "daemon-log-level", "info", "log level of both daemons")
	fs.StringVar(&p.BerthHandler, "berth-handler", "", "RuntimeClass handler berth's pods ask for: '' (runc, like containerd) or crun (an experiment: the floor stays runc)")
	fs.StringVar(&p.Runc, "runc", defaultRunc(), "OCI runtime of berth, containerd and the floor alike (default: berth's bundled runc when installed)")
	fs.StringVar(&p.KeepLogs, "keep-logs", "", "copy the daemons' logs into this directory before cleanup")
	fs.Int64Var(&p.StopTimeout, "stop-timeout", 10, "StopContainer grace period (s); the workload exits on SIGTERM")
	fs.StringVar(&p.Critest, "critest", "/usr/local/bin/critest", "critest binary for the critest scenario (cri-tools' own benchmark specs; ../shared/conformance/setup builds it)")
	fs.IntVar(&p.CritestSamples, "critest-samples", 10, "samples per critest benchmark spec and round (pods, containers, image pulls, image lists)")
	fs.IntVar(&p.CritestRounds, "critest-rounds", 2, "critest -benchmark runs per runtime, alternating which runtime goes first")
	fs.StringVar(&p.NodePods, "node-pods", "10,110,250", "pod counts N of the full-node scenario (a third of the pods with three containers)")
	fs.IntVar(&p.NodeRestarts, "node-restarts", 1, "recoveries after SIGKILL the full-node scenario times at each N")
	fs.BoolVar(&p.NodeBusy, "node-busy", false, "full-node pods fork a sleep every second (at 250 pods they keep 2 cores busy) instead of idling")
	fs.DurationVar(&p.Steady, "steady", time.Minute, "full-node steady state: kubelet's polling replayed this long (after a third of it idle)")
	fs.IntVar(&p.Churn, "churn", 10000, "container lifecycles per runtime of the churn scenario")
	fs.StringVar(&p.Kubelet, "kubelet", "/usr/local/bin/kubelet", "kubelet binary of the pleg scenario (../shared/kubelet/setup builds it)")
	fs.IntVar(&p.PlegPods, "pleg-pods", 110, "static pods kubelet runs on berth in the pleg scenario (generic against Evented PLEG)")
	fs.IntVar(&p.ChurnTraced, "churn-traced", 50, "further churn lifecycles under strace counting fsyncs (0: none)")
	fs.DurationVar(&p.Timeout, "timeout", 6*time.Hour, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return p, err
	}
	if p.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]string{
			"iterations": "5", "exec-iterations": "10", "floor-iterations": "5", "pods": "10",
			"rounds": "1", "lifecycles": "20", "pulls": "1", "pull-mb": "64", "pull-layers": "4",
			"timeout": "15m", "critest-samples": "3", "critest-rounds": "1",
			"node-pods": "10", "pleg-pods": "10", "steady": "9s", "churn": "100", "churn-traced": "10",
		}
		for name, v := range quick {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return p, err
				}
			}
		}
	}
	return p, nil
}

func main() {
	if len(os.Args) >= 3 && os.Args[1] == criFloorArg {
		if err := serveCRIFloor(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "cri floor server:", err)
			os.Exit(1)
		}
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := parseFlags(os.Args[1:])
	if err != nil {
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: run as root (it starts runtimes, bridges and containers)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	if err := run(ctx, p, log); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func has(list, item string) bool {
	for _, s := range strings.Split(list, ",") {
		if strings.TrimSpace(s) == item {
			return true
		}
	}
	return false
}

// run sets everything up, runs the scenarios and always tears down.
func run(ctx context.Context, p params, log *slog.Logger) (retErr error) {
	started := time.Now()
	berthBin, err := filepath.Abs(p.BerthBin)
	if err != nil {
		return err
	}
	e, err := newEnv(p.Subnet, p.Runc, log)
	defer e.cleanup()
	if err != nil {
		return err
	}
	im, err := startImages(ctx, e.Dir, berthBin, p.KitRegistry, log)
	defer im.close()
	if err != nil {
		return fmt.Errorf("bench registry: %w", err)
	}
	b := &bench{res: newResults(), image: im.Busybox, log: log, floorDir: e.Dir, stopTimeout: p.StopTimeout, nodeRestarts: p.NodeRestarts, nodeBusy: p.NodeBusy}
	if p.KeepLogs != "" {
		defer keepLogs(e.Dir, p.KeepLogs, log)
	}
	defer func() {
		// Every runtime's pods go before any daemon stops: a containerd
		// that stops removes the cni-* netns pins made since it started,
		// which may be the other containerd's.
		for _, t := range b.targets {
			t.removeAllPods(context.Background(), log)
		}
		for _, t := range b.targets {
			t.close()
			if t.daemon != nil {
				t.daemon.Stop()
			}
		}
	}()
	for _, name := range runtimeNames {
		if !has(p.Runtimes, name) {
			continue
		}
		t, err := startTarget(ctx, name, p, e, im, berthBin, log)
		if t != nil {
			b.targets = append(b.targets, t)
		}
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
	}
	var fl *floor
	if has(p.Scenarios, "floor") {
		if fl, err = newFloor(e); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		defer fl.cleanup()
	}
	runScenarios(ctx, b, fl, im, p)
	rep := b.report(p, started, im)
	addOverheads(rep)
	if err := writeTable(os.Stdout, rep); err != nil {
		return err
	}
	if err := writeJSON(p.JSON, rep); err != nil {
		return err
	}
	fmt.Printf("\nJSON report: %s (run took %s)\n", p.JSON, time.Since(started).Round(time.Second))
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	return nil
}

// keepLogs copies <dir>/<runtime>/*.log to dst.
func keepLogs(dir, dst string, log *slog.Logger) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		log.Warn("keep logs", "err", err)
		return
	}
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, filepath.Base(l)), data, 0o644)
		}
		if err != nil {
			log.Warn("keep log", "log", l, "err", err)
		}
	}
}

func startTarget(ctx context.Context, name string, p params, e *env, im *images, berthBin string, log *slog.Logger) (*target, error) {
	dir := filepath.Join(e.Dir, name)
	t := &target{name: name, cgroup: e.Cgroup + "/" + name, logDir: filepath.Join(dir, "pods")}
	switch name {
	case "berth":
		t.daemon = &berthDaemon{binDir: berthBin, dir: dir, env: e, registry: im.reg.Host, certsDir: im.CertsDir,
			logLevel: p.DaemonLog, crun: p.BerthHandler == "crun", log: log}
		t.handler = p.BerthHandler
	case "containerd":
		t.daemon = &containerdDaemon{name: name, bin: p.Containerd, dir: dir, env: e, certsDir: im.CertsDir, sandboxImage: im.Pause, logLevel: p.DaemonLog, log: log}
	case "containerd2":
		if _, err := os.Stat(p.Containerd2); err != nil {
			return nil, fmt.Errorf("containerd 2.x binary (build it with test/lib/containerd-build.sh): %w", err)
		}
		t.daemon = &containerdDaemon{name: name, bin: p.Containerd2, v3: true, dir: dir, env: e, certsDir: im.CertsDir, sandboxImage: im.Pause, logLevel: p.DaemonLog, log: log}
	default:
		return nil, fmt.Errorf("unknown runtime %q", name)
	}
	ep, err := t.daemon.Start(ctx)
	if err != nil {
		return t, err
	}
	t.endpoint = ep
	if err := connect(ctx, t, 5*time.Minute); err != nil {
		return t, err
	}
	// Images every scenario needs are pulled before anything is timed.
	pulls := []string{im.Busybox}
	if name != "berth" {
		pulls = append(pulls, im.Pause)
	}
	for _, ref := range pulls {
		if _, err := t.img.PullImage(ctx, imageSpec(ref), nil, nil); err != nil {
			return t, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	log.Info("runtime ready", "target", name, "version", t.version, "endpoint", ep, "pid", t.daemon.Pid())
	return t, nil
}

func runScenarios(ctx context.Context, b *bench, fl *floor, im *images, p params) {
	if fl != nil {
		// The floor takes its turn after every round of the scenarios it
		// is subtracted from, alternating with the runtimes like they do
		// with each other; what they leave of its count is done at the end.
		// Its rows go first in the table, each next to the row it is the
		// floor of, as when it ran up front.
		for _, m := range []struct{ name, goal string }{
			{mFloorAdd, ""}, {mFloorCreate, ""}, {mFloorStart, ""}, {mFloorStop, ""}, {mFloorDelete, ""}, {mFloorDel, ""},
			{mSandbox, "<= 0.5"}, {mContainer, "<= 0.5"}, {mColdStart, "<= 0.5"}, {mFloorExec, ""}, {mExec, "<= 0.5"},
		} {
			b.res.metric(m.name, "ms", m.goal)
		}
		b.afterRound = func(metric string) {
			switch metric {
			case mSandbox, mContainer, mColdStart:
				fl.next(ctx, b)
			case mExec:
				fl.execNext(ctx, b)
			}
		}
		defer func() {
			b.afterRound = nil
			start := time.Now()
			b.log.Info("scenario", "name", "floor (the rest)")
			fl.topUp(ctx, b, p.FloorIter)
			b.log.Info("scenario done", "name", "floor (the rest)", "took", time.Since(start).Round(time.Millisecond))
		}()
	}
	var nodePods []int
	for _, f := range strings.Split(p.NodePods, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			nodePods = append(nodePods, n)
		}
	}
	steps := []struct {
		name string
		fn   func()
	}{
		{"sandbox", func() { b.sandboxLifecycle(ctx, p.Iterations) }},
		{"container", func() { b.containerLifecycle(ctx, p.Iterations) }},
		{"coldstart", func() { b.coldStart(ctx, p.Iterations) }},
		{"exec", func() { b.execSync(ctx, p.ExecIterations) }},
		{"concurrent", func() { b.concurrent(ctx, p.Pods, p.Rounds) }},
		{"pull", func() { b.pull(ctx, im, p.Pulls, p.PullMB, p.PullLayers) }},
		{"lifecycles", func() { b.lifecycles(ctx, p.Lifecycles) }},
		{"critest", func() { b.critestScenario(ctx, im, p) }},
		{"node", func() { b.node(ctx, nodePods, p.Steady) }},
		{"pleg", func() { b.pleg(ctx, p.Kubelet, p.PlegPods, p.Steady) }},
		{"churn", func() { b.churn(ctx, p.Churn, p.ChurnTraced) }},
	}
	for _, s := range steps {
		if !has(p.Scenarios, s.name) || ctx.Err() != nil {
			continue
		}
		start := time.Now()
		b.log.Info("scenario", "name", s.name)
		s.fn()
		b.log.Info("scenario done", "name", s.name, "took", time.Since(start).Round(time.Millisecond))
	}
}

func (b *bench) report(p params, started time.Time, im *images) *Report {
	rep := &Report{
		Command:  strings.Join(os.Args, " "),
		Started:  started.UTC(),
		Duration: time.Since(started).Round(time.Second).String(),
		Machine:  machineInfo(p.Runc),
		Runtimes: map[string]string{},
		Params: map[string]any{
			"iterations": p.Iterations, "exec_iterations": p.ExecIterations, "floor_iterations": p.FloorIter,
			"pods": p.Pods, "rounds": p.Rounds, "lifecycles": p.Lifecycles, "pulls": p.Pulls,
			"pull_mb": p.PullMB, "pull_layers": p.PullLayers, "critest_samples": p.CritestSamples, "critest_rounds": p.CritestRounds, "quick": p.Quick, "subnet": p.Subnet,
			"node_pods": p.NodePods, "node_restarts": p.NodeRestarts, "node_busy": p.NodeBusy, "pleg_pods": p.PlegPods, "steady": p.Steady.String(), "churn": p.Churn, "churn_traced": p.ChurnTraced,
			"stop_timeout_s": p.StopTimeout, "berth_handler": p.BerthHandler, "daemon_log_level": p.DaemonLog, "pause_image_from": im.PauseSrc,
		},
		Metrics: b.res.summarize(),
	}
	for _, t := range b.targets {
		rep.Runtimes[t.name] = t.version
	}
	rep.Notes = append(rep.Notes,
		fmt.Sprintf("N=%d pods in the concurrent and memory rows; lifecycles=%d; big image %d MiB in %d layers",
			p.Pods, p.Lifecycles, p.PullMB, p.PullLayers),
		fmt.Sprintf("node rows: one runtime at a time holds N pods (every third with 3 containers) whose containers %s; steady state %s of kubelet's polling after %s idle; churn %d lifecycles, %d more under strace",
			nodeWorkloadNote(p.NodeBusy), p.Steady, p.Steady/3, p.Churn, p.ChurnTraced),
		"ratio = berth p50 / the better p50 of containerd 1.6 and 2.x (named in 'vs'); floor = the same work by runc and the CNI plugins alone",
		"critest rows: cri-tools' own benchmark specs (critest -benchmark), serial, sample counts in params")
	return rep
}

// addOverheads adds, per runtime, the p50 time above the floor of the rows
// that have one; the goal is berth's pod start under 10 ms above it.
func addOverheads(rep *Report) {
	var extra []*Metric
	for _, m := range rep.Metrics {
		f := m.Values[floorName]
		if f == nil || f.N == 0 || strings.HasPrefix(m.Name, "floor") {
			continue
		}
		o := &Metric{Name: "overhead above floor: " + m.Name, Unit: "ms", Values: map[string]*Summary{}}
		for _, rt := range runtimeNames {
			if s := m.Values[rt]; s != nil && s.N > 0 {
				o.Values[rt] = &Summary{N: 1, P50: s.P50 - f.P50, P90: s.P50 - f.P50, Max: s.P50 - f.P50, Mean: s.P50 - f.P50}
			}
		}
		if m.Name == mColdStart {
			o.Goal = "berth < 10"
			if s := o.Values["berth"]; s != nil {
				ok := s.P50 < 10
				o.Met = &ok
			}
		}
		if len(o.Values) > 0 {
			extra = append(extra, o)
		}
	}
	rep.Metrics = append(rep.Metrics, extra...)
}

func machineInfo(runc string) map[string]string {
	info := map[string]string{}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		info["kernel"] = utsString(u.Release[:])
		info["hostname"] = utsString(u.Nodename[:])
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		n := 0
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "processor") {
				n++
			}
			if strings.HasPrefix(line, "model name") && info["cpu"] == "" {
				info["cpu"] = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
			}
		}
		info["cpus"] = fmt.Sprint(n)
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		info["memory"] = strings.Join(strings.Fields(strings.SplitN(string(data), "\n", 2)[0])[1:], " ")
	}
	if data, err := os.ReadFile("/etc/debian_version"); err == nil {
		info["debian"] = strings.TrimSpace(string(data))
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		info["cgroup"] = "v2"
	} else {
		info["cgroup"] = "v1"
	}
	if out, err := runOut(runc, "--version"); err == nil {
		info["runc"] = strings.SplitN(out, "\n", 2)[0]
	}
	return info
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

var errEmpty = errors.New("no output")

func runOut(bin string, args ...string) (string, error) {
	out, err := execOutput(bin, args...)
	if err == nil && len(out) == 0 {
		return "", errEmpty
	}
	return strings.TrimSpace(out), err
}

// defaultRunc is the runc berthd uses by default: the bundled one `make
// setup` installs, else Debian's.
func defaultRunc() string {
	if _, err := os.Stat(config.BundledRunc); err == nil {
		return config.BundledRunc
	}
	return "/usr/sbin/runc"
}

func execOutput(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).Output()
	return string(out), err
}

func imageSpec(ref string) *runtimeapi.ImageSpec { return &runtimeapi.ImageSpec{Image: ref} }
