package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	mChurnRSS     = "churn: daemon RSS"
	mChurnFDs     = "churn: daemon open fds"
	mChurnMeta    = "churn: metadata file size"
	mChurnWrite   = "churn: daemon bytes written to storage per lifecycle"
	mChurnFsync   = "churn: fsync-family calls per lifecycle (daemon+shims+runc, strace)"
	mChurnPerLife = "churn: container lifecycle (create+start+stop 0+remove)"
)

// churnSample is what churn watches for growth.
type churnSample struct {
	rssKB, fds, metaBytes int64
}

func (t *target) churnSample() churnSample {
	s := churnSample{rssKB: rssKB(t.daemon.Pid()), fds: int64(fdCount(t.daemon.Pid()))}
	if st, err := os.Stat(t.daemon.MetaDB()); err == nil {
		s.metaBytes = st.Size()
	}
	return s
}

// churn runs n container lifecycles in one pod per target (one target after
// the other: this measures growth, not latency), sampling the daemon's RSS,
// descriptors and metadata file size 20 times, and the bytes it wrote; then
// traced lifecycles count the fsync-family calls of the daemon, its shims and
// everything they run. Stop uses timeout 0 (SIGKILL): the grace period is
// not what churn is about.
func (b *bench) churn(ctx context.Context, n, traced int) {
	for _, t := range b.targets {
		if t.daemon == nil || ctx.Err() != nil {
			continue
		}
		if err := b.churnOne(ctx, t, n, traced); err != nil {
			b.log.Warn("churn failed", "target", t.name, "err", err)
			b.res.fail(mChurnRSS+" after", "MiB", "", t.name, err)
		}
	}
}

func (b *bench) churnOne(ctx context.Context, t *target, n, traced int) error {
	cfg, err := t.podConfig("churn")
	if err != nil {
		return err
	}
	podID, err := t.rt.RunPodSandbox(ctx, cfg, t.handler)
	if err != nil {
		return fmt.Errorf("run pod: %w", err)
	}
	defer func() { _ = b.removePod(context.WithoutCancel(ctx), t, podID) }()
	life := func(i int) error {
		cid, err := t.rt.CreateContainer(ctx, podID, containerConfig(b.image, fmt.Sprintf("c%d.log", i%4), i), cfg)
		if err != nil {
			return fmt.Errorf("lifecycle %d: create: %w", i, err)
		}
		if err := t.rt.StartContainer(ctx, cid); err != nil {
			return fmt.Errorf("lifecycle %d: start: %w", i, err)
		}
		if err := t.rt.StopContainer(ctx, cid, 0); err != nil {
			return fmt.Errorf("lifecycle %d: stop: %w", i, err)
		}
		if err := t.rt.RemoveContainer(ctx, cid); err != nil {
			return fmt.Errorf("lifecycle %d: remove: %w", i, err)
		}
		return nil
	}
	// Warm-up: caches, the first log file, bbolt's first pages.
	for i := range 10 {
		if err := life(i); err != nil {
			return err
		}
	}
	every := max(1, n/20)
	var series []churnSample
	first := t.churnSample()
	series = append(series, first)
	w0 := writeBytes(t.daemon.Pid())
	start := time.Now()
	done := 0
	for i := 0; i < n && ctx.Err() == nil; i++ {
		ls := time.Now()
		if err := life(10 + i); err != nil {
			return err
		}
		b.res.add(mChurnPerLife, "ms", "", t.name, ms(time.Since(ls)))
		done++
		if done%every == 0 {
			series = append(series, t.churnSample())
		}
	}
	took := time.Since(start)
	written := writeBytes(t.daemon.Pid()) - w0
	time.Sleep(2 * time.Second)
	last := t.churnSample()
	series = append(series, last)
	b.log.Info("churn", "target", t.name, "lifecycles", done, "took", took.Round(time.Millisecond))
	b.res.add(mChurnRSS+" before", "MiB", "", t.name, float64(first.rssKB)/1024)
	b.res.add(mChurnRSS+" after", "MiB", "", t.name, float64(last.rssKB)/1024)
	b.res.add(mChurnFDs+" before", "fds", "", t.name, float64(first.fds))
	b.res.add(mChurnFDs+" after", "fds", "", t.name, float64(last.fds))
	b.res.add(mChurnMeta+" before", "KiB", "", t.name, float64(first.metaBytes)/1024)
	b.res.add(mChurnMeta+" after", "KiB", "", t.name, float64(last.metaBytes)/1024)
	if done > 0 {
		b.res.add(mChurnWrite, "KiB", "<= 0.5", t.name, float64(written)/1024/float64(done))
	}
	b.res.note(mChurnRSS+" after", t.name+" RSS MiB every "+strconv.Itoa(every)+": "+seriesString(series, func(s churnSample) float64 { return float64(s.rssKB) / 1024 }))
	b.res.note(mChurnFDs+" after", t.name+" fds: "+seriesString(series, func(s churnSample) float64 { return float64(s.fds) }))
	b.res.note(mChurnMeta+" after", t.name+" KiB: "+seriesString(series, func(s churnSample) float64 { return float64(s.metaBytes) / 1024 }))
	if traced > 0 && ctx.Err() == nil {
		calls, err := traceSyncs(ctx, t.daemon.Procs(), func() error {
			for i := range traced {
				if err := life(10 + n + i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("traced lifecycles: %w", err)
		}
		b.res.add(mChurnFsync, "calls", "<= 0.5", t.name, float64(calls)/float64(traced))
	}
	return nil
}

func seriesString(series []churnSample, f func(churnSample) float64) string {
	parts := make([]string, len(series))
	for i, s := range series {
		parts[i] = num(f(s))
	}
	return strings.Join(parts, " ")
}

// syncCalls are the calls that force data to disk.
const syncCalls = "fsync,fdatasync,sync_file_range,syncfs,sync,msync"

// traceSyncs counts the sync-family calls of pids and every process they
// start while fn runs, with strace -f -c (attached to all their threads).
func traceSyncs(ctx context.Context, pids []int, fn func() error) (int64, error) {
	if _, err := exec.LookPath("strace"); err != nil {
		return 0, fmt.Errorf("strace (Debian's strace package) counts the fsyncs: %w", err)
	}
	out, err := os.CreateTemp("", "bench-strace-")
	if err != nil {
		return 0, err
	}
	out.Close()
	defer os.Remove(out.Name())
	args := []string{"-f", "-c", "-o", out.Name(), "-e", "trace=" + syncCalls}
	for _, pid := range pids {
		args = append(args, "-p", strconv.Itoa(pid))
	}
	cmd := exec.CommandContext(ctx, "strace", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("strace: %w", err)
	}
	// strace attaches asynchronously; give it the threads before timing.
	time.Sleep(time.Second)
	runErr := fn()
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil && runErr == nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return 0, fmt.Errorf("strace: %w", err)
		}
	}
	if runErr != nil {
		return 0, runErr
	}
	return parseStraceCounts(out.Name())
}

// parseStraceCounts sums the calls column of strace -c's summary.
func parseStraceCounts(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || fs[len(fs)-1] == "total" || fs[len(fs)-1] == "syscall" {
			continue
		}
		if !strings.Contains(","+syncCalls+",", ","+fs[len(fs)-1]+",") {
			continue
		}
		n, err := strconv.ParseInt(fs[3], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("strace summary line %q: %w", sc.Text(), err)
		}
		total += n
	}
	return total, sc.Err()
}
