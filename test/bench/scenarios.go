package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Metric names: the scenario totals carry the goals; the indented
// step rows show where the time goes.
const (
	mSandbox    = "pod sandbox run+status+stop+remove"
	mContainer  = "container create+start+running+stop+remove"
	mColdStart  = "cold pod start (run+create+start->running)"
	mExec       = "execsync true"
	mConcurrent = "N pods started concurrently (wall)"
	mConcStop   = "N pods stopped+removed concurrently (wall)"
	mPull       = "image pull+unpack cold"
	mPullRate   = "image pull throughput"
	mPSSPerPod  = "memory per pod: daemon+shims+infra PSS / pods"
	mShimPerPod = "memory per pod: shims+infra PSS / pods"
	mDaemonPSS  = "memory: daemon PSS at N pods"
	mRSSIdle    = "daemon RSS before lifecycles"
	mRSSAfter   = "daemon RSS after lifecycles"
	mRSSGrowth  = "daemon RSS growth over lifecycles"
)

// bench holds what every scenario uses.
type bench struct {
	targets []*target
	res     *results
	image   string
	log     *slog.Logger
	// stopTimeout is the grace period of StopContainer/StopPodSandbox.
	stopTimeout int64
	// afterRound, when set, runs after every round of alternate (each
	// target once) with the round's metric: the floor's turn.
	afterRound func(metric string)
	// floorDir is where the node scenario starts its floor servers.
	floorDir string
	// nodeRestarts is how many times the node scenario times a recovery.
	nodeRestarts int
	// nodeBusy gives the node scenario's containers the forking workload
	// instead of the idle one.
	nodeBusy bool
}

// alternate runs fn n times for each target, alternating which runtime goes
// first, so drift on the machine hits both alike. A target whose iteration
// fails is recorded under metric and skipped for the rest of the scenario.
func (b *bench) alternate(ctx context.Context, n int, metric, unit, goal string, fn func(i int, t *target) error) {
	failed := map[string]bool{}
	for i := range n {
		for k := range b.targets {
			idx := k
			if i%2 == 1 {
				idx = len(b.targets) - 1 - k
			}
			t := b.targets[idx]
			if failed[t.name] {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if err := fn(i, t); err != nil {
				b.log.Warn("scenario failed", "metric", metric, "target", t.name, "iteration", i, "err", err)
				b.res.fail(metric, unit, goal, t.name, fmt.Errorf("iteration %d: %w", i, err))
				failed[t.name] = true
			}
		}
		if b.afterRound != nil {
			b.afterRound(metric)
		}
	}
}

// step times one call and records it under metric name for t.
func (b *bench) step(t *target, name string, fn func() error) error {
	start := time.Now()
	err := fn()
	if err == nil && name != "" {
		b.res.add(name, "ms", "", t.name, ms(time.Since(start)))
	}
	return err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (b *bench) removePod(ctx context.Context, t *target, id string) error {
	if err := t.rt.StopPodSandbox(ctx, id); err != nil {
		return fmt.Errorf("stop pod %q: %w", id, err)
	}
	if err := t.rt.RemovePodSandbox(ctx, id); err != nil {
		return fmt.Errorf("remove pod %q: %w", id, err)
	}
	return nil
}

func (b *bench) sandboxLifecycle(ctx context.Context, n int) {
	b.alternate(ctx, n, mSandbox, "ms", "<= 0.5", func(i int, t *target) error {
		cfg, err := t.podConfig(fmt.Sprintf("sb-%d", i))
		if err != nil {
			return err
		}
		start := time.Now()
		var id string
		if err := b.step(t, "  sandbox: RunPodSandbox", func() (err error) {
			id, err = t.rt.RunPodSandbox(ctx, cfg, t.handler)
			return err
		}); err != nil {
			return err
		}
		if err := b.step(t, "  sandbox: PodSandboxStatus", func() error {
			st, err := t.rt.PodSandboxStatus(ctx, id, false)
			if err == nil && st.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
				err = fmt.Errorf("pod %q is %s", id, st.GetStatus().GetState())
			}
			return err
		}); err != nil {
			_ = b.removePod(ctx, t, id)
			return err
		}
		if err := b.step(t, "  sandbox: StopPodSandbox", func() error { return t.rt.StopPodSandbox(ctx, id) }); err != nil {
			_ = b.removePod(ctx, t, id)
			return err
		}
		if err := b.step(t, "  sandbox: RemovePodSandbox", func() error { return t.rt.RemovePodSandbox(ctx, id) }); err != nil {
			return err
		}
		b.res.addDuration(mSandbox, t.name, time.Since(start))
		return nil
	})
}

// containerLifecycle runs containers one after another in one ready pod per
// target.
func (b *bench) containerLifecycle(ctx context.Context, n int) {
	pods := map[string]*runtimeapi.PodSandboxConfig{}
	ids := map[string]string{}
	defer func() {
		for _, t := range b.targets {
			if id := ids[t.name]; id != "" {
				_ = b.removePod(context.WithoutCancel(ctx), t, id)
			}
		}
	}()
	b.alternate(ctx, n, mContainer, "ms", "<= 0.5", func(i int, t *target) error {
		if ids[t.name] == "" {
			cfg, err := t.podConfig("ctr-pod")
			if err != nil {
				return err
			}
			id, err := t.rt.RunPodSandbox(ctx, cfg, t.handler)
			if err != nil {
				return fmt.Errorf("run pod: %w", err)
			}
			pods[t.name], ids[t.name] = cfg, id
		}
		podID, podCfg := ids[t.name], pods[t.name]
		logName := fmt.Sprintf("work-%d.log", i)
		var total time.Duration
		timed := func(name string, fn func() error) error {
			start := time.Now()
			err := b.step(t, name, fn)
			total += time.Since(start)
			return err
		}
		var cid string
		if err := timed("  container: CreateContainer", func() (err error) {
			cid, err = t.rt.CreateContainer(ctx, podID, containerConfig(b.image, logName, i), podCfg)
			return err
		}); err != nil {
			return err
		}
		cleanup := func() {
			_ = t.rt.StopContainer(ctx, cid, 0)
			_ = t.rt.RemoveContainer(ctx, cid)
		}
		if err := timed("  container: StartContainer", func() error { return t.rt.StartContainer(ctx, cid) }); err != nil {
			cleanup()
			return err
		}
		if err := timed("  container: ContainerStatus->running", func() error { return t.waitRunning(ctx, cid) }); err != nil {
			cleanup()
			return err
		}
		// Untimed: a stop sent before the workload's handler exists would
		// wait out the whole grace period.
		if err := waitReady(ctx, filepath.Join(podCfg.GetLogDirectory(), logName)); err != nil {
			cleanup()
			return err
		}
		if err := timed("  container: StopContainer", func() error { return t.rt.StopContainer(ctx, cid, b.stopTimeout) }); err != nil {
			cleanup()
			return err
		}
		if err := timed("  container: RemoveContainer", func() error { return t.rt.RemoveContainer(ctx, cid) }); err != nil {
			return err
		}
		b.res.addDuration(mContainer, t.name, total)
		return nil
	})
}

// startPod is kubelet's cold start of a one-container pod; steps (when not
// empty) prefixes the per-call metrics.
func (b *bench) startPod(ctx context.Context, t *target, name, steps string) (podID string, err error) {
	cfg, err := t.podConfig(name)
	if err != nil {
		return "", err
	}
	stepName := func(s string) string {
		if steps == "" {
			return ""
		}
		return steps + s
	}
	if err := b.step(t, stepName("RunPodSandbox"), func() (err error) {
		podID, err = t.rt.RunPodSandbox(ctx, cfg, t.handler)
		return err
	}); err != nil {
		return "", err
	}
	var cid string
	err = b.step(t, stepName("CreateContainer"), func() (err error) {
		cid, err = t.rt.CreateContainer(ctx, podID, containerConfig(b.image, "work.log", 0), cfg)
		return err
	})
	if err == nil {
		err = b.step(t, stepName("StartContainer"), func() error { return t.rt.StartContainer(ctx, cid) })
	}
	if err == nil {
		err = b.step(t, stepName("ContainerStatus->running"), func() error { return t.waitRunning(ctx, cid) })
	}
	if err != nil {
		_ = b.removePod(context.WithoutCancel(ctx), t, podID)
		return "", err
	}
	return podID, nil
}

func (b *bench) coldStart(ctx context.Context, n int) {
	b.alternate(ctx, n, mColdStart, "ms", "<= 0.5", func(i int, t *target) error {
		start := time.Now()
		id, err := b.startPod(ctx, t, fmt.Sprintf("cold-%d", i), "  cold start: ")
		if err != nil {
			return err
		}
		b.res.addDuration(mColdStart, t.name, time.Since(start))
		return b.removePod(ctx, t, id)
	})
}

func (b *bench) execSync(ctx context.Context, n int) {
	ids := map[string]string{}
	ctrs := map[string]string{}
	defer func() {
		for _, t := range b.targets {
			if id := ids[t.name]; id != "" {
				_ = b.removePod(context.WithoutCancel(ctx), t, id)
			}
		}
	}()
	b.alternate(ctx, n, mExec, "ms", "<= 0.5", func(i int, t *target) error {
		if ids[t.name] == "" {
			id, err := b.startPod(ctx, t, "exec", "")
			if err != nil {
				return fmt.Errorf("start pod: %w", err)
			}
			ids[t.name] = id
			cs, err := t.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: id})
			if err != nil || len(cs) != 1 {
				return fmt.Errorf("list containers of pod %q: %d, %v", id, len(cs), err)
			}
			ctrs[t.name] = cs[0].Id
		}
		start := time.Now()
		_, stderr, err := t.rt.ExecSync(ctx, ctrs[t.name], []string{"true"}, 10*time.Second)
		if err != nil {
			return fmt.Errorf("execsync: %w (stderr %q)", err, stderr)
		}
		b.res.addDuration(mExec, t.name, time.Since(start))
		return nil
	})
}

// concurrent starts pods at once per target and round, measures the wall
// time until all run, the memory of the runtime's processes while they run,
// and the wall time of removing them all at once.
func (b *bench) concurrent(ctx context.Context, pods, rounds int) {
	b.alternate(ctx, rounds, mConcurrent, "ms", "<= 0.5", func(round int, t *target) error {
		ids := make([]string, pods)
		errs := make([]error, pods)
		var wg sync.WaitGroup
		start := time.Now()
		for p := range pods {
			wg.Go(func() {
				ids[p], errs[p] = b.startPod(ctx, t, fmt.Sprintf("conc-%d-%d", round, p), "")
			})
		}
		wg.Wait()
		wall := time.Since(start)
		var firstErr error
		for _, err := range errs {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if firstErr == nil {
			b.res.addDuration(mConcurrent, t.name, wall)
			b.measurePods(t, pods)
		}
		start = time.Now()
		for p := range pods {
			if ids[p] == "" {
				continue
			}
			wg.Go(func() { errs[p] = b.removePod(context.WithoutCancel(ctx), t, ids[p]) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if firstErr == nil {
			b.res.addDuration(mConcStop, t.name, time.Since(start))
		}
		return firstErr
	})
}

// measurePods records the PSS of the runtime's own processes while pods run.
func (b *bench) measurePods(t *target, pods int) {
	if t.daemon == nil {
		return
	}
	// Let the start settle: shims finish their setup after Start returns.
	time.Sleep(time.Second)
	procs := t.daemon.Procs()
	total := pssKB(procs)
	daemon := pssKB([]int{t.daemon.Pid()})
	b.res.add(mPSSPerPod, "MiB", "<= 0.5", t.name, float64(total)/1024/float64(pods))
	b.res.add(mShimPerPod, "MiB", "", t.name, float64(total-daemon)/1024/float64(pods))
	b.res.add(mDaemonPSS, "MiB", "", t.name, float64(daemon)/1024)
	b.log.Info("memory at pods", "target", t.name, "pods", pods, "processes", len(procs), "pss_kb", total, "daemon_pss_kb", daemon)
}

// lifecycles runs n pod lifecycles per target (one target after the other:
// this measures growth, not latency) and records daemon RSS before and after.
func (b *bench) lifecycles(ctx context.Context, n int) {
	for _, t := range b.targets {
		if t.daemon == nil || ctx.Err() != nil {
			continue
		}
		run := func(i int) error {
			id, err := b.startPod(ctx, t, fmt.Sprintf("life-%d", i), "")
			if err != nil {
				return err
			}
			return b.removePod(ctx, t, id)
		}
		var err error
		for i := 0; i < 5 && err == nil; i++ {
			err = run(i)
		}
		before := rssKB(t.daemon.Pid())
		for i := 0; i < n && err == nil && ctx.Err() == nil; i++ {
			err = run(i)
		}
		if err != nil {
			b.res.fail(mRSSAfter, "MiB", "", t.name, err)
			continue
		}
		time.Sleep(2 * time.Second)
		after := rssKB(t.daemon.Pid())
		b.res.add(mRSSIdle, "MiB", "", t.name, float64(before)/1024)
		b.res.add(mRSSAfter, "MiB", "", t.name, float64(after)/1024)
		b.res.add(mRSSGrowth, "MiB", "", t.name, float64(after-before)/1024)
	}
}

// pull pulls a fresh big image per iteration into every target (cold: each
// iteration's image is new to both), then removes it.
func (b *bench) pull(ctx context.Context, im *images, n, totalMB, layers int) {
	var big bigImage
	b.alternate(ctx, n, mPull, "ms", "", func(i int, t *target) error {
		if big.Ref == "" || big.Ref != im.reg.Ref(fmt.Sprintf("bench/big%d:latest", i)) {
			var err error
			big, err = im.pushBig(ctx, fmt.Sprintf("bench/big%d:latest", i), uint64(i), totalMB, layers)
			if err != nil {
				return fmt.Errorf("build big image: %w", err)
			}
			b.log.Info("big image", "ref", big.Ref, "layers", big.Layers, "bytes", big.Bytes, "compressed", big.CompressedBytes, "took", big.GenerateDuration)
		}
		spec := &runtimeapi.ImageSpec{Image: big.Ref}
		start := time.Now()
		if _, err := t.img.PullImage(ctx, spec, nil, nil); err != nil {
			return fmt.Errorf("pull %s: %w", big.Ref, err)
		}
		d := time.Since(start)
		b.res.add(mPull, "ms", "", t.name, ms(d))
		b.res.add(mPullRate, "MB/s", ">= 1.5", t.name, float64(big.CompressedBytes)/1e6/d.Seconds())
		if err := t.img.RemoveImage(ctx, spec); err != nil {
			return fmt.Errorf("remove %s: %w", big.Ref, err)
		}
		return nil
	})
}
