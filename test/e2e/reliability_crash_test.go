package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// StressKillsEnv raises the number of berthd kills of the crash loop (and
// StressEnv in general makes the reliability tests run their long form).
const (
	StressKillsEnv = "BERTH_STRESS_KILLS"
	StressEnv      = "BERTH_STRESS"
)

func stressInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	if os.Getenv(StressEnv) != "" {
		return def * 10
	}
	return def
}

// gate lets the crash loop stop its workers between two CRI calls, so the
// state can be checked while nothing changes.
type gate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	open   bool
	parked int
	stop   bool
}

func newGate() *gate {
	g := &gate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// pass blocks while the gate is closed; false means the workers must end.
func (g *gate) pass() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for !g.open && !g.stop {
		g.parked++
		g.cond.Broadcast()
		g.cond.Wait()
		g.parked--
	}
	return !g.stop
}

func (g *gate) set(open, stop bool) {
	g.mu.Lock()
	g.open, g.stop = open, stop
	g.cond.Broadcast()
	g.mu.Unlock()
}

// waitParked waits until n workers wait at the closed gate.
func (g *gate) waitParked(n int) {
	g.mu.Lock()
	for g.parked < n {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// crashWorker runs pod lifecycles as kubelet would: every call may fail
// (berthd is killed under it), and whatever a failed lifecycle left is
// found by label and removed at the start of the next one.
type crashWorker struct {
	t     *testing.T
	d     *testutil.Daemon
	rc    runtimeapi.RuntimeServiceClient
	g     *gate
	n     int
	rnd   *rand.Rand
	calls *atomic.Int64
	fails *atomic.Int64
	done  *atomic.Int64 // complete lifecycles
}

func (w *crashWorker) call(fn func(ctx context.Context) error) bool {
	if !w.g.pass() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w.calls.Add(1)
	if err := fn(ctx); err != nil {
		if w.fails.Add(1) < 40 {
			w.t.Logf("worker %d: %v", w.n, err)
		}
		return false
	}
	return true
}

func (w *crashWorker) label() map[string]string {
	return map[string]string{"crash-worker": strconv.Itoa(w.n)}
}

// sweep removes every pod of this worker, as kubelet's pod cleanup does.
func (w *crashWorker) sweep() {
	var pods []*runtimeapi.PodSandbox
	if !w.call(func(ctx context.Context) error {
		resp, err := w.rc.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: w.label()}})
		pods = resp.GetItems()
		return err
	}) {
		return
	}
	for _, p := range pods {
		if w.rnd.IntN(2) == 0 {
			w.call(func(ctx context.Context) error {
				_, err := w.rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
				return err
			})
		}
		w.call(func(ctx context.Context) error {
			_, err := w.rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
			return err
		})
	}
}

func (w *crashWorker) run() {
	for w.g.pass() {
		w.sweep()
		w.lifecycle()
	}
}

func (w *crashWorker) lifecycle() {
	pod := podConfig(w.t, w.d, fmt.Sprintf("crash-%d", w.n))
	pod.Labels = w.label()
	if w.rnd.IntN(2) == 0 {
		sharePID(pod)
	}
	var podID string
	if !w.call(func(ctx context.Context) error {
		resp, err := w.rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		podID = resp.GetPodSandboxId()
		return err
	}) {
		return
	}
	cfg := ctrConfig("c", images.Busybox.Ref, "sleep", "3600")
	cfg.Linux.SecurityContext.NamespaceOptions = pod.Linux.SecurityContext.NamespaceOptions
	var ctrID string
	if !w.call(func(ctx context.Context) error {
		resp, err := w.rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		ctrID = resp.GetContainerId()
		return err
	}) {
		return
	}
	if !w.call(func(ctx context.Context) error {
		_, err := w.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctrID})
		return err
	}) {
		return
	}
	if w.rnd.IntN(2) == 0 {
		w.call(func(ctx context.Context) error {
			_, err := w.rc.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctrID, Timeout: int64(w.rnd.IntN(2))})
			return err
		})
		w.call(func(ctx context.Context) error {
			_, err := w.rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctrID})
			return err
		})
	}
	if w.rnd.IntN(3) > 0 {
		w.call(func(ctx context.Context) error {
			_, err := w.rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
			return err
		})
	}
	if w.call(func(ctx context.Context) error {
		_, err := w.rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
		return err
	}) {
		w.done.Add(1)
	}
}

// TestReliabilityCrashLoop kills berthd with SIGKILL at random points while
// workers run pod and container lifecycles over a bridge network, restarts
// it, and after each restart checks that what berthd reports matches the
// kernel both ways. At the end everything is removed and nothing may be
// left: mount, pin, process, cgroup, bundle, snapshot, IPAM address, veth.
func TestReliabilityCrashLoop(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	kills := stressInt(StressKillsEnv, 50)
	const workers = 4
	net := testutil.NewBridgeNet(t)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host}, CNIConfList: net.ConfList(),
	})
	ensureImage(t, d, images.Busybox.Ref)
	conn, rc := dialCRI(t, d)
	g := newGate()
	var calls, fails, done atomic.Int64
	var wg sync.WaitGroup
	for n := range workers {
		w := &crashWorker{t: t, d: d, rc: rc, g: g, n: n, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(n))),
			calls: &calls, fails: &fails, done: &done}
		wg.Add(1)
		go func() { defer wg.Done(); w.run() }()
	}
	stopWorkers := func() { g.set(false, true); wg.Wait() }
	defer stopWorkers()

	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	start := time.Now()
	for i := range kills {
		before := done.Load()
		g.set(true, false)
		time.Sleep(time.Duration(20+rnd.IntN(600)) * time.Millisecond)
		if i%5 == 4 {
			// Every fifth kill waits (bounded) for a whole lifecycle: on a
			// loaded machine a lifecycle outlasts every 20-620 ms window,
			// and the kills would never meet a workload that runs.
			for deadline := time.Now().Add(20 * time.Second); done.Load() == before && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
		}
		// Closed first: calls in flight are killed, no new ones start
		// against a dead socket.
		g.set(false, false)
		d.Kill9(t)
		g.waitParked(workers)
		if err := d.Start(); err != nil {
			t.Fatalf("restart %d: %v\n%s", i, err, d.LogTail(64<<10))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		bad, err := checkConsistency(ctx, d, d.RuntimeClient)
		cancel()
		if err != nil {
			t.Fatalf("after kill %d: %v", i+1, err)
		}
		for _, b := range bad {
			t.Errorf("after kill %d: %s", i+1, b)
		}
		if len(bad) > 0 {
			t.FailNow()
		}
		if !waitReady(conn, 10*time.Second) {
			t.Fatalf("workers' connection not ready after restart %d", i+1)
		}
	}
	stopWorkers()
	t.Logf("%d kills in %s: %d calls, %d failed, %d complete pod lifecycles",
		kills, time.Since(start).Round(time.Millisecond), calls.Load(), fails.Load(), done.Load())
	if done.Load() == 0 {
		t.Errorf("no pod lifecycle completed: the workload never ran")
	}
	removeEverything(t, d)
	testutil.AssertNothingLeft(t, d, net)
}

// removeEverything removes every pod and container, retrying a few times:
// after a crash loop a removal may fail once while a shim is reaped.
func removeEverything(t *testing.T, d *testutil.Daemon) {
	t.Helper()
	ctx := context.Background()
	var lastErr error
	for range 3 {
		lastErr = nil
		pods, err := d.RuntimeClient.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("ListPodSandbox: %v", err)
		}
		for _, p := range pods.Items {
			if _, err := d.RuntimeClient.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				lastErr = fmt.Errorf("StopPodSandbox(%s): %w", p.Id, err)
			}
			if _, err := d.RuntimeClient.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				lastErr = fmt.Errorf("RemovePodSandbox(%s): %w", p.Id, err)
			}
		}
		ctrs, err := d.RuntimeClient.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatalf("ListContainers: %v", err)
		}
		if lastErr == nil && len(ctrs.Containers) == 0 {
			return
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("%d containers left after every pod was removed", len(ctrs.Containers))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("remove everything: %v", lastErr)
}
