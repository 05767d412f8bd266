package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The full-node scenarios (issue 24): N pods as kubelet runs them, a third
// with three containers (an app and two sidecars), the rest with one. One
// runtime holds its N pods at a time (the others are idle and empty), so
// what is measured is that runtime alone at that size.

// nodeShape is the container count of the i-th pod of a node.
func nodeShape(i int) int {
	if i%3 == 0 {
		return 3
	}
	return 1
}

// nodePod is one started pod of the node scenario.
type nodePod struct {
	id   string
	ctrs []string
}

func nodeMetric(n int, what string) string { return fmt.Sprintf("node N=%d: %s", n, what) }

// node runs the full-node scenarios at every N, one target after the other,
// alternating which goes first from one N to the next.
func (b *bench) node(ctx context.Context, ns []int, steady time.Duration) {
	for k, n := range ns {
		for j := range b.targets {
			idx := j
			if k%2 == 1 {
				idx = len(b.targets) - 1 - j
			}
			t := b.targets[idx]
			if t.daemon == nil || ctx.Err() != nil {
				continue
			}
			if err := b.nodeAt(ctx, t, n, steady); err != nil {
				b.log.Warn("node scenario failed", "target", t.name, "pods", n, "err", err)
				b.res.fail(nodeMetric(n, mNodeStart), "ms", "<= 0.5", t.name, err)
			}
		}
	}
}

const (
	mNodeStart    = "start all pods to RUNNING (wall)"
	mNodeStop     = "stop+remove all pods until gone (wall)"
	mNodeRecovery = "recovery after SIGKILL: restart to Status ready and every pod and container listed (wall)"
	// berthd serves a restart before every shim is reconnected (calls
	// that need one wait for it); this shows when all of that is done.
	mNodeRecoveryDriven = "  recovery after SIGKILL: restart to every container answering ReopenContainerLog (wall)"
)

// nodeAt starts n pods at once on t, measures memory, steady-state CPU and
// polling latencies, recovery after SIGKILL, then stops them all at once.
func (b *bench) nodeAt(ctx context.Context, t *target, n int, steady time.Duration) error {
	b.log.Info("node", "target", t.name, "pods", n)
	pods := make([]nodePod, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() { pods[i], errs[i] = b.startNodePod(ctx, t, fmt.Sprintf("node-%d", i), nodeShape(i)) })
	}
	wg.Wait()
	wall := time.Since(start)
	defer func() {
		// A failure half way leaves pods behind: the next runtime must
		// find the node empty.
		if ctx.Err() == nil {
			t.removeAllPods(context.WithoutCancel(ctx), b.log)
		}
	}()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("start %d pods: %w", n, err)
		}
	}
	b.res.add(nodeMetric(n, mNodeStart), "ms", "<= 0.5", t.name, ms(wall))
	time.Sleep(2 * time.Second) // shims finish their setup after Start returns
	b.nodeMemory(t, n, pods)
	if err := b.steadyState(ctx, t, n, pods, steady); err != nil {
		return fmt.Errorf("steady state: %w", err)
	}
	// A restart's time varies with what the loaded node schedules first:
	// -node-restarts samples it more than once.
	for range max(1, b.nodeRestarts) {
		if err := b.recovery(ctx, t, n, pods); err != nil {
			return fmt.Errorf("recovery: %w", err)
		}
	}
	start = time.Now()
	for i := range pods {
		wg.Go(func() { errs[i] = b.stopNodePod(context.WithoutCancel(ctx), t, pods[i]) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("stop %d pods: %w", n, err)
		}
	}
	left, err := t.rt.ListPodSandbox(ctx, nil)
	if err != nil || len(left) != 0 {
		return fmt.Errorf("pods left after removing all: %d (%v)", len(left), err)
	}
	b.res.add(nodeMetric(n, mNodeStop), "ms", "<= 0.5", t.name, ms(time.Since(start)))
	return nil
}

var nodeContainerNames = []string{"app", "sidecar-a", "sidecar-b"}

// startNodePod is kubelet's start of a pod: the sandbox, then its
// containers one after another (kubelet's SyncPod starts them in order),
// then each is seen RUNNING.
func (b *bench) startNodePod(ctx context.Context, t *target, name string, containers int) (nodePod, error) {
	var p nodePod
	cfg, err := t.podConfig(name)
	if err != nil {
		return p, err
	}
	if p.id, err = t.rt.RunPodSandbox(ctx, cfg, t.handler); err != nil {
		return p, fmt.Errorf("run pod %s: %w", name, err)
	}
	for c := range containers {
		cc := containerConfig(b.image, nodeContainerNames[c]+".log", 0)
		cc.Metadata.Name = nodeContainerNames[c]
		if !b.nodeBusy {
			cc.Command = idleWorkload
		}
		cid, err := t.rt.CreateContainer(ctx, p.id, cc, cfg)
		if err == nil {
			p.ctrs = append(p.ctrs, cid)
			err = t.rt.StartContainer(ctx, cid)
		}
		if err != nil {
			return p, fmt.Errorf("container %s of pod %s: %w", nodeContainerNames[c], name, err)
		}
	}
	for _, cid := range p.ctrs {
		if err := t.waitRunning(ctx, cid); err != nil {
			return p, err
		}
	}
	return p, nil
}

// stopNodePod is kubelet's kill and garbage collection of a pod: its
// containers stopped in parallel, the sandbox stopped, then everything
// removed.
func (b *bench) stopNodePod(ctx context.Context, t *target, p nodePod) error {
	errs := make([]error, len(p.ctrs))
	var wg sync.WaitGroup
	for i, cid := range p.ctrs {
		wg.Go(func() { errs[i] = t.rt.StopContainer(ctx, cid, b.stopTimeout) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if err := t.rt.StopPodSandbox(ctx, p.id); err != nil {
		return err
	}
	for _, cid := range p.ctrs {
		if err := t.rt.RemoveContainer(ctx, cid); err != nil {
			return err
		}
	}
	return t.rt.RemovePodSandbox(ctx, p.id)
}

// nodeMemory attributes the PSS of every shim and infra process to the pod
// whose sandbox or container id its command line names (or its parent's:
// containerd's pause is its shim's child), and splits the daemon's PSS over
// all containers. Memory per container is then given for each pod shape.
func (b *bench) nodeMemory(t *target, n int, pods []nodePod) {
	owner := map[string]int{} // sandbox or container id -> pod index
	for i, p := range pods {
		owner[p.id] = i
		for _, c := range p.ctrs {
			owner[c] = i
		}
	}
	procs := listProcs()
	byPid := map[int]procInfo{}
	for _, p := range procs {
		byPid[p.Pid] = p
	}
	daemonPid := t.daemon.Pid()
	podOf := map[int]int{}
	var unattributed []int
	mine := t.daemon.Procs()
	for _, pid := range mine {
		if pid == daemonPid {
			continue
		}
		if i, ok := podNamed(byPid[pid].Cmdline, owner); ok {
			podOf[pid] = i
		}
	}
	for _, pid := range mine {
		if _, ok := podOf[pid]; ok || pid == daemonPid {
			continue
		}
		if i, ok := podOf[byPid[pid].PPid]; ok {
			podOf[pid] = i
		} else {
			unattributed = append(unattributed, pid)
		}
	}
	shared := pssKB(append([]int{daemonPid}, unattributed...))
	var containers [4]int
	var pss [4]int64
	for _, p := range pods {
		containers[len(p.ctrs)] += len(p.ctrs)
	}
	for pid, i := range podOf {
		pss[len(pods[i].ctrs)] += pssKB([]int{pid})
	}
	total := containers[1] + containers[3]
	for _, shape := range []int{1, 3} {
		if containers[shape] == 0 {
			continue
		}
		share := float64(shared) * float64(containers[shape]) / float64(total)
		per := (float64(pss[shape]) + share) / 1024 / float64(containers[shape])
		b.res.add(nodeMetric(n, fmt.Sprintf("memory per container, %d-container pods (daemon share+shims+infra PSS)", shape)), "MiB", "<= 0.5", t.name, per)
		b.res.add(nodeMetric(n, fmt.Sprintf("  memory per container, %d-container pods, shims+infra only", shape)), "MiB", "", t.name,
			float64(pss[shape])/1024/float64(containers[shape]))
	}
	b.res.add(nodeMetric(n, "memory: daemon PSS"), "MiB", "", t.name, float64(pssKB([]int{daemonPid}))/1024)
	b.log.Info("node memory", "target", t.name, "pods", n, "containers", total, "processes", len(mine),
		"unattributed", len(unattributed), "daemon_and_unattributed_pss_kb", shared)
}

// podNamed finds the pod whose sandbox or container id a command line
// names as a whole word or a path component.
func podNamed(cmdline string, owner map[string]int) (int, bool) {
	for _, f := range strings.FieldsFunc(cmdline, func(r rune) bool { return r == ' ' || r == '/' || r == '=' || r == '.' }) {
		if i, ok := owner[f]; ok {
			return i, true
		}
	}
	return 0, false
}

// cpuTicks is the user+system CPU time of the processes (fields 14 and 15
// of /proc/<pid>/stat), in clock ticks; processes gone meanwhile count zero.
func cpuTicks(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command, which may hold spaces and ')'.
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += u + s
	}
	return total
}

// clockTicks is USER_HZ, which /proc/<pid>/stat counts in; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuMsPerSec is the CPU the processes used over d, in ms per second.
func cpuMsPerSec(ticks int64, d time.Duration) float64 {
	return float64(ticks) * 1000 / clockTicks / d.Seconds()
}

// steadyState measures CPU while nothing calls the runtime, then replays
// kubelet's polling for d: every second the PLEG relist (ListPodSandbox,
// ListContainers) and the periodic pod syncs (every pod once a minute:
// PodSandboxStatus, ListContainers of the pod, ContainerStatus of each);
// every 5 s Status (the runtime health check); every 10 s the stats the
// eviction manager and the summary API read (ListPodSandboxStats,
// ListContainerStats, ImageFsInfo).
func (b *bench) steadyState(ctx context.Context, t *target, n int, pods []nodePod, d time.Duration) error {
	idle := d / 3
	procs := t.daemon.Procs()
	d0, a0 := cpuTicks([]int{t.daemon.Pid()}), cpuTicks(procs)
	select {
	case <-time.After(idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	b.res.add(nodeMetric(n, "idle CPU: daemon"), "ms/s", "<= 0.5", t.name, cpuMsPerSec(cpuTicks([]int{t.daemon.Pid()})-d0, idle))
	b.res.add(nodeMetric(n, "idle CPU: daemon+shims+infra"), "ms/s", "<= 0.5", t.name, cpuMsPerSec(cpuTicks(procs)-a0, idle))

	var mu sync.Mutex
	lat := map[string][]float64{}
	call := func(name string, fn func() error) error {
		start := time.Now()
		err := fn()
		mu.Lock()
		lat[name] = append(lat[name], ms(time.Since(start)))
		mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	// kubelet polls from its start on, so a node's steady state is warm:
	// one untimed round first, or the window's p99 is each runtime's first
	// call after the idle period (a cold cache, a first walk of its dirs).
	warm := func(_ string, fn func() error) error { return fn() }
	if err := b.relist(ctx, t.rt, warm); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := t.rt.Status(ctx, false); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := b.statsPoll(ctx, t, warm, nil, false); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	fl, err := b.answerFloor(ctx, t, n)
	if err != nil {
		return err
	}
	defer fl.close()
	procs = t.daemon.Procs()
	d0, a0 = cpuTicks([]int{t.daemon.Pid()}), cpuTicks(procs)
	start := time.Now()
	end := start.Add(d)
	perTick := (n + 59) / 60
	var wg sync.WaitGroup
	var pollErr [3]error
	// kubelet's loops slide: v1.37's PLEG resets its relist timer after
	// each relist, updateRuntimeUp runs under wait.UntilWithContext
	// (sliding), so each period counts from the end of the previous round
	// and the relist (1 s) and the health check (5 s) drift apart; they
	// also start at different moments of kubelet's start (half a relist
	// period apart here). Fixed-rate timers started together measured the
	// two calls colliding at every Status.
	wg.Go(func() {
		next := 0
		for time.Now().Before(end) && ctx.Err() == nil {
			if err := b.relist(ctx, t.rt, call); err != nil {
				pollErr[0] = err
				return
			}
			// Warm, as a floor must be: the round trip of a call right
			// after others, not of the first after a second idle.
			for range 2 {
				if _, err := fl.call(ctx); err != nil {
					pollErr[0] = err
					return
				}
			}
			if err := call(floorName, func() error { _, err := fl.call(ctx); return err }); err != nil {
				pollErr[0] = err
				return
			}
			for range perTick {
				if err := b.podSync(ctx, t, pods[next%len(pods)], call); err != nil {
					pollErr[0] = err
					return
				}
				next++
			}
			// The runtime's relist is the first call after the loop's
			// sleep, and the floor's relist is too, half a period later:
			// both pay the wake-up after idle, which a floor timed right
			// after the empty calls did not.
			time.Sleep(time.Second / 2)
			if err := b.relist(ctx, fl.rt, func(name string, fn func() error) error { return call(floorName+" "+name, fn) }); err != nil {
				pollErr[0] = err
				return
			}
			time.Sleep(time.Second / 2)
		}
	})
	// The health check and the stats are loops of their own in kubelet
	// too: a runtime slow to answer the stats (containerd 1.6 took 24 s
	// for ListPodSandboxStats at 250 pods) does not thin out its Status
	// samples.
	wg.Go(func() {
		time.Sleep(500 * time.Millisecond)
		for time.Now().Before(end) && ctx.Err() == nil {
			if err := call("Status", func() error { _, err := t.rt.Status(ctx, false); return err }); err != nil {
				pollErr[1] = err
				return
			}
			// Status's floor is the empty call sent as Status is: alone,
			// at a moment of its own loop, not right after other calls
			// (the relists' warm floor). Half a period away from Status,
			// so the two never queue behind each other.
			time.Sleep(5 * time.Second / 2)
			if err := call(floorName+" alone", func() error { _, err := fl.call(ctx); return err }); err != nil {
				pollErr[1] = err
				return
			}
			time.Sleep(5 * time.Second / 2)
		}
	})
	wg.Go(func() {
		time.Sleep(250 * time.Millisecond)
		for round := 0; time.Now().Before(end) && ctx.Err() == nil; round++ {
			if err := b.statsPoll(ctx, t, call, fl, round%2 == 1); err != nil {
				pollErr[2] = err
				return
			}
			time.Sleep(10 * time.Second)
		}
	})
	wg.Wait()
	took := time.Since(start)
	for _, err := range pollErr {
		if err != nil {
			return err
		}
	}
	b.res.add(nodeMetric(n, "steady CPU under kubelet's polling: daemon"), "ms/s", "<= 0.5", t.name, cpuMsPerSec(cpuTicks([]int{t.daemon.Pid()})-d0, took))
	b.res.add(nodeMetric(n, "steady CPU under kubelet's polling: daemon+shims+infra"), "ms/s", "<= 0.5", t.name, cpuMsPerSec(cpuTicks(procs)-a0, took))
	// Every row gets the empty call's figures as its floor: the round trip
	// through kubelet's client that no runtime's handler can go below
	// (Status the one sent alone, as Status is). The
	// relists get the floor server's sending of this runtime's answer.
	// Each runtime's steady state adds to the floor column, so a relist's
	// floor is the pool of every runtime's answer (the same pods listed);
	// the "floor with this runtime's answer" rows keep them apart.
	for _, name := range steadyCalls {
		floor := lat[floorName]
		if name == "Status" && len(lat[floorName+" alone"]) > 0 {
			floor = lat[floorName+" alone"]
		}
		if name == "ImageFsInfo" && len(lat[floorName+" after the stats"]) > 0 {
			floor = lat[floorName+" after the stats"]
		}
		if fs, ok := lat[floorName+" "+name]; ok {
			floor = fs
			for _, v := range fs {
				b.res.add(nodeMetric(n, "steady floor: "+name+" with this runtime's answer"), "ms", "", t.name, v)
			}
		}
		for _, v := range lat[name] {
			b.res.add(nodeMetric(n, "steady "+name), "ms", "<= 0.5", t.name, v)
		}
		for _, v := range floor {
			b.res.add(nodeMetric(n, "steady "+name), "ms", "<= 0.5", floorName, v)
		}
		if vs := lat[name]; len(vs) > 0 {
			b.res.add(nodeMetric(n, "steady "+name+" p99"), "ms", "<= 0.5", t.name, percentileOf(vs, 99))
		}
		if len(floor) > 0 {
			b.res.add(nodeMetric(n, "steady "+name+" p99"), "ms", "<= 0.5", floorName, percentileOf(floor, 99))
		}
	}
	return nil
}

// answerFloor starts a floor server that answers the relists with what t
// answers now, and records the answers' encoded sizes.
func (b *bench) answerFloor(ctx context.Context, t *target, n int) (*callFloor, error) {
	var a relistAnswers
	sbs, err := t.rt.ListPodSandbox(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("answer for the floor: %w", err)
	}
	cs, err := t.rt.ListContainers(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("answer for the floor: %w", err)
	}
	a.sandboxes = &runtimeapi.ListPodSandboxResponse{Items: sbs}
	a.containers = &runtimeapi.ListContainersResponse{Containers: cs}
	b.res.add(nodeMetric(n, "steady ListPodSandbox: answer encoded"), "KiB", "", t.name, float64(proto.Size(a.sandboxes))/1024)
	b.res.add(nodeMetric(n, "steady ListContainers: answer encoded"), "KiB", "", t.name, float64(proto.Size(a.containers))/1024)
	dir, err := os.MkdirTemp(b.floorDir, "cri-floor-"+t.name+"-")
	if err != nil {
		return nil, err
	}
	return startCallFloor(ctx, dir, &a)
}

// steadyCalls orders the steady-state rows.
var steadyCalls = []string{"ListPodSandbox", "ListContainers", "PodSandboxStatus", "ListContainers (pod)", "ContainerStatus",
	"Status", "ListPodSandboxStats", "ListContainerStats", "ImageFsInfo"}

type timedCall func(name string, fn func() error) error

// relist is the generic PLEG's relist: every sandbox and every container.
func (b *bench) relist(ctx context.Context, rt internalapi.RuntimeService, call timedCall) error {
	if err := call("ListPodSandbox", func() error { _, err := rt.ListPodSandbox(ctx, nil); return err }); err != nil {
		return err
	}
	return call("ListContainers", func() error { _, err := rt.ListContainers(ctx, nil); return err })
}

// podSync is kubelet's GetPodStatus of one pod.
func (b *bench) podSync(ctx context.Context, t *target, p nodePod, call timedCall) error {
	if err := call("PodSandboxStatus", func() error { _, err := t.rt.PodSandboxStatus(ctx, p.id, false); return err }); err != nil {
		return err
	}
	var ctrs []*runtimeapi.Container
	if err := call("ListContainers (pod)", func() (err error) {
		ctrs, err = t.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: p.id})
		return err
	}); err != nil {
		return err
	}
	for _, c := range ctrs {
		if err := call("ContainerStatus", func() error { _, err := t.rt.ContainerStatus(ctx, c.Id, false); return err }); err != nil {
			return err
		}
	}
	return nil
}

// statsPoll is what the eviction manager and the summary API read. With
// floorRound set, the empty call to fl goes first where ImageFsInfo goes,
// right after both stats answers (the client has just decoded 250 pods'
// and 400 containers' stats, the runtime has just sent them), as
// ImageFsInfo's floor; that round's ImageFsInfo, sent after it, is not
// counted.
func (b *bench) statsPoll(ctx context.Context, t *target, call timedCall, fl *callFloor, floorRound bool) error {
	if err := call("ListPodSandboxStats", func() error { _, err := t.rt.ListPodSandboxStats(ctx, nil); return err }); err != nil {
		return err
	}
	if err := call("ListContainerStats", func() error { _, err := t.rt.ListContainerStats(ctx, nil); return err }); err != nil {
		return err
	}
	imageFs := func() error { _, err := t.img.ImageFsInfo(ctx); return err }
	if !floorRound {
		return call("ImageFsInfo", imageFs)
	}
	if err := call(floorName+" after the stats", func() error { _, err := fl.call(ctx); return err }); err != nil {
		return err
	}
	// Sent, as kubelet would, but not timed: it follows the floor call,
	// not the stats answers.
	if err := imageFs(); err != nil {
		return fmt.Errorf("ImageFsInfo: %w", err)
	}
	return nil
}

func percentileOf(vs []float64, p float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	return percentile(s, p)
}

// recovery SIGKILLs the daemon with every pod running, restarts it and
// times until Status reports it ready and every pod is listed READY and
// every container RUNNING, as kubelet's first relist after a restart would
// need.
func (b *bench) recovery(ctx context.Context, t *target, n int, pods []nodePod) error {
	want := 0
	for _, p := range pods {
		want += len(p.ctrs)
	}
	t.daemon.Kill()
	t.close()
	start := time.Now()
	ep, err := t.daemon.Start(ctx)
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	t.endpoint = ep
	listening := time.Since(start)
	if err := connect(ctx, t, 5*time.Minute); err != nil {
		return fmt.Errorf("reconnect: %w", err)
	}
	connected := time.Since(start)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ready, running, ok := b.recovered(ctx, t)
		if ok && ready == n && running == want {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("after %s: %d/%d pods ready, %d/%d containers running", time.Since(start).Round(time.Millisecond), ready, n, running, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	listed := time.Since(start)
	b.res.add(nodeMetric(n, mNodeRecovery), "ms", "berth < 1000", t.name, ms(listed))
	if err := reopenLogs(ctx, t, pods); err != nil {
		return err
	}
	// Where the client's side of a restart goes: the daemon's log says
	// what happened inside it meanwhile.
	b.log.Info("recovery", "target", t.name, "listening", listening.Round(time.Millisecond),
		"connected", connected.Round(time.Millisecond), "listed", listed.Round(time.Millisecond),
		"reopened", time.Since(start).Round(time.Millisecond))
	b.res.add(nodeMetric(n, mNodeRecoveryDriven), "ms", "", t.name, ms(time.Since(start)))
	return nil
}

// reopenLogs has every container reopen its log, a call that goes to the
// container's shim in berth, a few at a time.
func reopenLogs(ctx context.Context, t *target, pods []nodePod) error {
	sem := make(chan struct{}, 16)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, p := range pods {
		for _, id := range p.ctrs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := t.rt.ReopenContainerLog(ctx, id); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("reopen log of %s after restart: %w", id, err))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// recovered reports the READY pods and RUNNING containers the daemon lists,
// and whether Status says the runtime and its network are ready.
func (b *bench) recovered(ctx context.Context, t *target) (ready, running int, ok bool) {
	st, err := t.rt.Status(ctx, false)
	if err != nil {
		return 0, 0, false
	}
	// kubelet needs these two; containerd 2 adds others (its deprecation
	// warnings: cgroup v1 here) that are false on this host and say
	// nothing about readiness.
	conds := 0
	for _, c := range st.GetStatus().GetConditions() {
		if c.GetType() == runtimeapi.RuntimeReady || c.GetType() == runtimeapi.NetworkReady {
			if !c.GetStatus() {
				return 0, 0, false
			}
			conds++
		}
	}
	ok = conds == 2
	sbs, err := t.rt.ListPodSandbox(ctx, nil)
	if err != nil {
		return 0, 0, false
	}
	for _, s := range sbs {
		if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready++
		}
	}
	cs, err := t.rt.ListContainers(ctx, nil)
	if err != nil {
		return ready, 0, false
	}
	for _, c := range cs {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			running++
		}
	}
	return ready, running, ok
}

// fdCount is the number of open descriptors of pid.
func fdCount(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// writeBytes is write_bytes of /proc/<pid>/io: what the process caused to be
// written to storage.
func writeBytes(pid int) int64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "io"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
