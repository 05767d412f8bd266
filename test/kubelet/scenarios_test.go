package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// env is one run: a berthd of its own on a CNI bridge of its own, one
// kubelet pointed at it, and the namespace every pod of the run lives in.
type env struct {
	d       *testutil.Daemon
	net     testutil.BridgeNet
	k       *kubelet
	ns      string
	hostDir string // hostPath volume the pods report into
	// seen holds every container ID of the run, for the cgroup leak check.
	seen map[string]bool
	// downtime is when berthd was down on purpose (kubelet's connection
	// errors then are expected).
	downtime []window
	// removed: containers kubelet asked to remove (from its log).
	removed map[string]bool
}

type window struct{ from, to time.Time }

const podTimeout = 150 * time.Second

func setup(t *testing.T) *env {
	t.Helper()
	testutil.RequiresRoot(t)
	if _, err := os.Stat(kubeBin); err != nil {
		t.Fatalf("kubelet binary: %v (run ../shared/kubelet/setup)", err)
	}
	e := &env{seen: map[string]bool{}, removed: map[string]bool{}}
	e.net = testutil.NewBridgeNet(t)
	e.d = testutil.PrepareDaemon(t, testutil.DaemonOptions{
		Binaries:    binaries,
		CNIConfList: e.net.ConfList(`{"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}`),
	})
	if err := e.d.SetRegistryConfigPath(certsD); err != nil {
		t.Fatalf("registry config path: %v", err)
	}
	// 0711 as /run: see testutil.StartDaemonTraversable.
	if err := os.Chmod(e.d.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, e.d.LogTail(16<<10))
	}
	var err error
	if e.hostDir, err = os.MkdirTemp("/tmp", "bkh"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(e.hostDir) })
	e.ns = fmt.Sprintf("berth-kubelet-%d", time.Now().Unix()%1000000)
	e.k = newKubelet(t, "unix://"+e.d.Socket)
	t.Cleanup(func() {
		keep := ""
		if t.Failed() {
			keep = filepath.Join(os.TempDir(), "berth-kubelet-"+e.ns+".log")
			t.Logf("kubelet log kept at %s", keep)
		}
		e.k.remove(t, keep)
	})
	e.k.start(t)
	return e
}

// TestKubeletScenarios runs every scenario against one berthd and one
// kubelet: the pods start together, then each property is checked, then
// both daemons are restarted under them, then they are deleted.
func TestKubeletScenarios(t *testing.T) {
	e := setup(t)
	t0 := time.Now()
	base := e.basePods()
	for _, p := range base {
		e.k.put(t, p)
	}
	e.k.put(t, e.missingPod())
	var names []string
	for _, p := range base {
		names = append(names, p.Metadata.Name)
	}
	took, err := waitFor(podTimeout, "pods "+strings.Join(names, ", ")+" Running and Ready", func() bool {
		for _, n := range names {
			if p, ok := e.k.pod(e.ns, n); !ok || !p.ready() {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("%v; /pods: %s", err, e.describe(names...))
	}
	t.Logf("%d scenario pods Running and Ready in %s", len(names), took.Round(time.Second))

	t.Run("shareProcessNamespace", e.checkSharePID)
	t.Run("hostNamespaces", e.checkHostNamespaces)
	t.Run("securityContext", e.checkSecurityContext)
	t.Run("missingImage", e.checkMissingImage)
	t.Run("kubeletRestart", e.checkKubeletRestart)
	t.Run("berthdKill9", e.checkBerthdKill)
	t.Run("statsAndLogs", func(t *testing.T) { e.checkStatsAndLogs(t, e.allPods(base)) })
	t.Run("gracefulTermination", e.checkTermination)
	t.Run("manyPods", e.checkManyPods)
	t.Run("teardown", func(t *testing.T) { e.teardown(t) })
	t.Logf("kubelet scenarios took %s", time.Since(t0).Round(time.Second))
	t.Run("kubeletLog", e.checkKubeletLog)
}

// allPods: name -> containers of every scenario pod still running at the
// stats check.
func (e *env) allPods(base []pod) map[string][]string {
	m := map[string][]string{}
	for _, p := range append(base, e.missingPod()) {
		for _, c := range append(append([]container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			m[p.Metadata.Name] = append(m[p.Metadata.Name], c.Name)
		}
	}
	return m
}

// describe is the /pods status of the named pods, for failure messages.
func (e *env) describe(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		p, ok := e.k.pod(e.ns, n)
		if !ok {
			fmt.Fprintf(&b, "\n  %s: not in /pods", n)
			continue
		}
		fmt.Fprintf(&b, "\n  %s: phase %s", n, p.Status.Phase)
		for _, c := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, " [%s ready=%v restarts=%d", c.Name, c.Ready, c.RestartCount)
			switch {
			case c.State.Running != nil:
				b.WriteString(" running]")
			case c.State.Waiting != nil:
				fmt.Fprintf(&b, " waiting %s: %.200s]", c.State.Waiting.Reason, c.State.Waiting.Message)
			case c.State.Terminated != nil:
				fmt.Fprintf(&b, " terminated %s %d]", c.State.Terminated.Reason, c.State.Terminated.ExitCode)
			default:
				b.WriteString(" no state]")
			}
		}
	}
	return b.String()
}

// runtimeObjects are the run's sandboxes and containers as berthd lists
// them: id -> "pod/container state attempt".
type runtimeObjects struct {
	sandboxes  map[string]string
	containers map[string]string
}

func (e *env) snapshot(t *testing.T) runtimeObjects {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := runtimeObjects{sandboxes: map[string]string{}, containers: map[string]string{}}
	sbs, err := e.d.Runtime.ListPodSandbox(ctx, nil)
	if err != nil {
		t.Fatalf("ListPodSandbox: %v", err)
	}
	for _, s := range sbs {
		if s.GetMetadata().GetNamespace() == e.ns {
			o.sandboxes[s.Id] = fmt.Sprintf("%s %s attempt %d", s.GetMetadata().GetName(), s.State, s.GetMetadata().GetAttempt())
		}
	}
	cs, err := e.d.Runtime.ListContainers(ctx, nil)
	if err != nil {
		t.Fatalf("ListContainers: %v", err)
	}
	for _, c := range cs {
		if c.Labels["io.kubernetes.pod.namespace"] == e.ns {
			e.seen[c.Id] = true
			o.containers[c.Id] = fmt.Sprintf("%s/%s %s attempt %d", c.Labels["io.kubernetes.pod.name"],
				c.GetMetadata().GetName(), c.State, c.GetMetadata().GetAttempt())
		}
	}
	return o
}

// podObjects counts the sandboxes and containers of one pod.
func (o runtimeObjects) podObjects(name string) (sandboxes, containers []string) {
	for id, s := range o.sandboxes {
		if strings.HasPrefix(s, full(name)+" ") {
			sandboxes = append(sandboxes, id)
		}
	}
	for id, s := range o.containers {
		if strings.HasPrefix(s, full(name)+"/") {
			containers = append(containers, id)
		}
	}
	return sandboxes, containers
}

// diff lists what changed between two snapshots.
func diff(before, after map[string]string) []string {
	var d []string
	for id, s := range before {
		if a, ok := after[id]; !ok {
			d = append(d, fmt.Sprintf("gone: %.12s %s", id, s))
		} else if a != s {
			d = append(d, fmt.Sprintf("changed: %.12s %s -> %s", id, s, a))
		}
	}
	for id, s := range after {
		if _, ok := before[id]; !ok {
			d = append(d, fmt.Sprintf("new: %.12s %s", id, s))
		}
	}
	sort.Strings(d)
	return d
}

// restartCounts is every container's restartCount in kubelet's view.
func (e *env) restartCounts(t *testing.T) map[string]int {
	t.Helper()
	pods, err := e.k.pods()
	if err != nil {
		t.Fatalf("/pods: %v", err)
	}
	m := map[string]int{}
	for _, p := range pods {
		if p.Metadata.Namespace != e.ns {
			continue
		}
		for _, c := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			m[p.Metadata.Name+"/"+c.Name] = c.RestartCount
		}
	}
	return m
}

// settle is how long the pods are watched after a restart: kubelet relists
// every second and syncs every pod at least every syncFrequency (10s), so
// two full syncs see any container it would restart or recreate.
const settle = 25 * time.Second

// checkUndisturbed waits settle, then fails t for any sandbox or container
// created, removed or changed since before, and any restartCount changed.
func (e *env) checkUndisturbed(t *testing.T, before runtimeObjects, counts map[string]int) {
	t.Helper()
	time.Sleep(settle)
	after := e.snapshot(t)
	for _, d := range diff(before.sandboxes, after.sandboxes) {
		t.Errorf("sandbox %s", d)
	}
	for _, d := range diff(before.containers, after.containers) {
		t.Errorf("container %s", d)
	}
	for k, n := range e.restartCounts(t) {
		if counts[k] != n {
			t.Errorf("restartCount of %s: %d, was %d", k, n, counts[k])
		}
	}
	for _, s := range after.containers {
		if !strings.Contains(s, "CONTAINER_RUNNING") {
			t.Errorf("container not running after the restart: %s", s)
		}
	}
}

func (e *env) checkKubeletRestart(t *testing.T) {
	before, counts := e.snapshot(t), e.restartCounts(t)
	t.Logf("restarting kubelet under %d sandboxes, %d containers", len(before.sandboxes), len(before.containers))
	e.k.stop()
	e.k.start(t)
	e.checkUndisturbed(t, before, counts)
}

func (e *env) checkBerthdKill(t *testing.T) {
	before, counts := e.snapshot(t), e.restartCounts(t)
	t.Logf("SIGKILL to berthd under %d sandboxes, %d containers", len(before.sandboxes), len(before.containers))
	w := window{from: time.Now()}
	e.d.Kill9(t)
	// Down long enough for kubelet to notice (it relists every second).
	time.Sleep(5 * time.Second)
	if err := e.d.Start(); err != nil {
		t.Fatalf("restart berthd: %v\n%s", err, e.d.LogTail(16<<10))
	}
	// kubelet's reconnect backoff may fail a call or two after berthd is back.
	w.to = time.Now().Add(10 * time.Second)
	e.downtime = append(e.downtime, w)
	e.checkUndisturbed(t, before, counts)
}

// containerStatus is berthd's status of one container.
func (e *env) containerStatus(id string) (*runtimeapi.ContainerStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.d.RuntimeClient.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, fmt.Errorf("ContainerStatus %.12s: %w", id, err)
	}
	return resp.Status, nil
}

// exitLine is berthd's log line for a container exit.
var exitLine = regexp.MustCompile(`^time=(\S+) level=INFO msg="container exited" container_id=([0-9a-f]+) .*exit_code=(-?\d+)`)

// exitFromLog is when (as berthd logged it, to the millisecond) and how a
// container exited: its status is gone once kubelet removed it, which it
// does within a second for the containers of a deleted pod.
func (e *env) exitFromLog(id string) (exit, bool) {
	data, err := os.ReadFile(e.d.LogPath)
	if err != nil {
		return exit{}, false
	}
	for _, l := range strings.Split(string(data), "\n") {
		m := exitLine.FindStringSubmatch(l)
		if m == nil || m[2] != id {
			continue
		}
		at, err1 := time.Parse(time.RFC3339Nano, m[1])
		code, err2 := strconv.Atoi(m[3])
		if err1 == nil && err2 == nil {
			return exit{at: at, code: int32(code)}, true
		}
	}
	return exit{}, false
}

type exit struct {
	at   time.Time
	code int32
}

// execSync runs cmd in a container through CRI, for commands kubelet's
// /run cannot pass (arguments with spaces) or whose exit code matters.
func (e *env) execSync(t *testing.T, id string, cmd ...string) (stdout, stderr string, code int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := e.d.RuntimeClient.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 15})
	if err != nil {
		t.Fatalf("ExecSync %v in %.12s: %v", cmd, id, err)
	}
	return string(resp.Stdout), string(resp.Stderr), resp.ExitCode
}

// ctrID is the runtime ID of a container of a pod, from kubelet's view.
func (e *env) ctrID(t *testing.T, podName, ctr string) string {
	t.Helper()
	p, ok := e.k.pod(e.ns, podName)
	if !ok {
		t.Fatalf("pod %s not in /pods", podName)
	}
	c, ok := p.container(ctr)
	if !ok || c.id() == "" {
		t.Fatalf("pod %s has no container %s in /pods:%s", podName, ctr, e.describe(podName))
	}
	e.seen[c.id()] = true
	return c.id()
}
