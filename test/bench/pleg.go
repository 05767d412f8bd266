package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// The Evented PLEG scenario (issue 24): a real kubelet runs N static pods
// on berth (the node scenario's shapes), once with the generic PLEG (a
// relist every second) and once with EventedPLEG (container events from
// GetContainerEvents, a relist every 5 minutes). berthd's own request
// counters, its CPU and kubelet's, over the same window of a settled node,
// say how much relist work the events save. berth only: the call counts
// come from berthd's /metrics.

const plegNamespace = "bench-pleg"

func plegMetric(n int, mode, what string) string {
	return fmt.Sprintf("pleg N=%d, %s PLEG: %s", n, mode, what)
}

// relistMethods are the calls a generic PLEG relist and the pod status
// refreshes it triggers make.
var relistMethods = []string{"ListPodSandbox", "ListContainers", "PodSandboxStatus", "ContainerStatus"}

func (b *bench) pleg(ctx context.Context, kubelet string, n int, window time.Duration) {
	var t *target
	for _, c := range b.targets {
		if c.name == "berth" && c.daemon != nil {
			t = c
		}
	}
	if t == nil {
		b.log.Info("pleg scenario skipped: it needs berth among -runtimes")
		return
	}
	if _, err := os.Stat(kubelet); err != nil {
		b.log.Warn("pleg scenario skipped: no kubelet (../shared/kubelet/setup builds it)", "kubelet", kubelet, "err", err)
		b.res.fail(plegMetric(n, "generic", "CRI calls from kubelet"), "calls/s", "", t.name, err)
		return
	}
	got := map[string]map[string]float64{}
	for _, mode := range []string{"generic", "evented"} {
		if ctx.Err() != nil {
			return
		}
		m, err := b.plegRun(ctx, t, kubelet, n, window, mode == "evented")
		if err != nil {
			b.log.Warn("pleg run failed", "mode", mode, "err", err)
			b.res.fail(plegMetric(n, mode, "CRI calls from kubelet"), "calls/s", "", t.name, err)
			continue
		}
		got[mode] = m
		for _, k := range plegRows {
			b.res.add(plegMetric(n, mode, k.name), k.unit, "", t.name, m[k.name])
		}
	}
	if g, e := got["generic"], got["evented"]; g != nil && e != nil {
		for _, k := range []string{"CRI calls from kubelet", "relist calls", "berthd CPU", "kubelet CPU"} {
			if g[k] > 0 {
				b.res.add(fmt.Sprintf("pleg N=%d: evented over generic, %s", n, k), "x", "", t.name, e[k]/g[k])
			}
		}
	}
}

var plegRows = []struct{ name, unit string }{
	{"CRI calls from kubelet", "calls/s"},
	{"relist calls", "calls/s"},
	{"ListPodSandbox", "calls/s"},
	{"ListContainers", "calls/s"},
	{"PodSandboxStatus", "calls/s"},
	{"ContainerStatus", "calls/s"},
	{"berthd CPU", "ms/s"},
	{"kubelet CPU", "ms/s"},
}

// plegRun starts kubelet with N static pods, waits until berth runs them
// all, lets the node settle, measures a window, then stops kubelet and
// removes the pods through CRI.
func (b *bench) plegRun(ctx context.Context, t *target, kubelet string, n int, window time.Duration, evented bool) (map[string]float64, error) {
	mode := map[bool]string{false: "generic", true: "evented"}[evented]
	bd, ok := t.daemon.(*berthDaemon)
	if !ok || bd.metricsAddr == "" {
		return nil, fmt.Errorf("berthd runs without a metrics address")
	}
	dir := filepath.Join(bd.env.Dir, "kubelet-"+mode)
	manifests := filepath.Join(dir, "manifests")
	if err := os.MkdirAll(manifests, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			b.log.Warn("remove kubelet dir", "dir", dir, "err", err)
		}
	}()
	containers := 0
	for i := range n {
		containers += nodeShape(i)
		if err := writeStaticPod(manifests, i, nodeShape(i), b.image); err != nil {
			return nil, err
		}
	}
	cg := bd.env.Cgroup + "/kubelet"
	if err := makeCgroup(cg); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	healthz, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(kubeletConfig(t.endpoint, manifests, dir, cg, port, healthz)), 0o644); err != nil {
		return nil, err
	}
	// Beside the daemons' logs, where -keep-logs finds it.
	logPath := filepath.Join(bd.env.Dir, "kubelet", mode+"-pleg-kubelet.log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	kp, err := startProcess(kubelet, []string{
		"--config=" + cfg, "--root-dir=" + filepath.Join(dir, "root"), "--cert-dir=" + filepath.Join(dir, "root", "pki"),
		"--hostname-override=bench-pleg", "--v=1", fmt.Sprintf("--feature-gates=EventedPLEG=%t", evented),
	}, logPath)
	if err != nil {
		return nil, err
	}
	defer func() {
		kp.stop(30 * time.Second)
		// kubelet leaves its pods running when it stops.
		t.removeAllPods(context.WithoutCancel(ctx), b.log)
		unmountUnder(dir, b.log)
	}()
	b.log.Info("pleg: kubelet started", "mode", mode, "pods", n, "containers", containers, "pid", kp.pid(), "log", logPath)
	start := time.Now()
	if err := waitPlegPods(ctx, t, kp, n, containers, 20*time.Minute); err != nil {
		return nil, fmt.Errorf("%s PLEG: %w (kubelet log %s)", mode, err, logPath)
	}
	b.log.Info("pleg: all pods running", "mode", mode, "took", time.Since(start).Round(time.Second))
	// kubelet's first pod syncs and status updates run on after the last
	// container starts.
	select {
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	sample := func() (plegSample, error) {
		c, err := criRequests(bd.metricsAddr)
		return plegSample{calls: c, daemon: cpuTicks([]int{bd.Pid()}), kubelet: cpuTicks([]int{kp.pid()})}, err
	}
	s0, err := sample()
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s1, err := sample()
	if err != nil {
		return nil, err
	}
	took := time.Since(begin)
	if kp.pid() == 0 {
		return nil, fmt.Errorf("kubelet exited during the window (log %s)", logPath)
	}
	out := map[string]float64{
		"berthd CPU":  cpuMsPerSec(s1.daemon-s0.daemon, took),
		"kubelet CPU": cpuMsPerSec(s1.kubelet-s0.kubelet, took),
	}
	var total, relist float64
	for method, v := range s1.calls {
		rate := (v - s0.calls[method]) / took.Seconds()
		total += rate
		for _, r := range relistMethods {
			if method == r {
				relist += rate
				out[r] = rate
			}
		}
	}
	out["CRI calls from kubelet"], out["relist calls"] = total, relist
	b.log.Info("pleg: measured", "mode", mode, "window", took.Round(time.Millisecond), "calls_per_s", total, "relist_per_s", relist,
		"berthd_ms_per_s", out["berthd CPU"], "kubelet_ms_per_s", out["kubelet CPU"])
	return out, nil
}

// plegSample is what the window is measured between: berthd's request
// counters and the CPU ticks of berthd and kubelet.
type plegSample struct {
	calls           map[string]float64
	daemon, kubelet int64
}

// writeStaticPod writes pod i with the node scenario's workload in each of
// its containers.
func writeStaticPod(dir string, i, containers int, image string) error {
	type ctr struct {
		Name            string   `json:"name"`
		Image           string   `json:"image"`
		ImagePullPolicy string   `json:"imagePullPolicy"`
		Command         []string `json:"command"`
	}
	var cs []ctr
	for _, name := range nodeContainerNames[:containers] {
		cs = append(cs, ctr{Name: name, Image: image, ImagePullPolicy: "IfNotPresent", Command: workload})
	}
	pod := map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   map[string]any{"name": fmt.Sprintf("pleg-%d", i), "namespace": plegNamespace},
		"spec": map[string]any{
			"containers":                    cs,
			"dnsPolicy":                     "Default",
			"enableServiceLinks":            false,
			"terminationGracePeriodSeconds": 2,
		},
	}
	data, err := json.Marshal(pod)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("pleg-%d.json", i)), data, 0o644)
}

// kubeletConfig is the kubelet kit's standalone configuration with
// kubelet's default sync and relist periods, its cgroups under the bench's
// cgroup subtree.
func kubeletConfig(endpoint, manifests, dir, cgroupRoot string, port, healthz int) string {
	return testutil.KubeletConfig{
		Endpoint: endpoint, Manifests: manifests, PodLogsDir: filepath.Join(dir, "pod-logs"),
		Port: port, Healthz: healthz,
		Extra: []string{"cgroupRoot: " + cgroupRoot, "maxPods: 250"},
	}.YAML()
}

// waitPlegPods waits until berth holds n READY sandboxes of the run's
// namespace with the given number of RUNNING containers.
func waitPlegPods(ctx context.Context, t *target, kp *process, n, containers int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var ready, running int
	for {
		if kp.pid() == 0 {
			return fmt.Errorf("kubelet exited: %v", kp.err)
		}
		pods, err := t.rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{
			State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
			LabelSelector: map[string]string{"io.kubernetes.pod.namespace": plegNamespace},
		})
		if err == nil {
			ready = len(pods)
			var ctrs []*runtimeapi.Container
			ctrs, err = t.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{
				State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
			})
			running = len(ctrs)
		}
		if err == nil && ready == n && running == containers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d/%d pods ready, %d/%d containers running after %s (%v)", ready, n, running, containers, timeout, err)
		}
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// criRequests reads berthd's berth_cri_requests_total counters, summed over
// status codes, by method name ("ListContainers").
func criRequests(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("read berthd metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("read berthd metrics: %s: %s", resp.Status, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "berth_cri_requests_total{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `method="`)
		method, _, _ := strings.Cut(rest, `"`)
		method = method[strings.LastIndexByte(method, '/')+1:]
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return nil, fmt.Errorf("berthd metrics line %q: %w", line, err)
		}
		out[method] += v
	}
	return out, sc.Err()
}

// freePort is a loopback TCP port nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// makeCgroup creates cgroupfs path cg in every mounted hierarchy (kubelet
// refuses a cgroupRoot that does not exist), giving a v1 cpuset its parent's
// CPUs and memory nodes, which a new cpuset cgroup starts without.
func makeCgroup(cg string) error {
	for _, root := range cgroupRoots() {
		dir := filepath.Join(root, cg)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("make cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if cur, err := os.ReadFile(filepath.Join(dir, f)); err != nil || strings.TrimSpace(string(cur)) != "" {
				continue
			}
			if err := copyCpuset(root, cg, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyCpuset fills file f of cg and of its empty ancestors from the nearest
// ancestor that has it set, top down.
func copyCpuset(root, cg, f string) error {
	var chain []string
	for p := cg; p != "/" && p != "."; p = filepath.Dir(p) {
		chain = append([]string{p}, chain...)
	}
	val, err := os.ReadFile(filepath.Join(root, f))
	if err != nil {
		return err
	}
	for _, p := range chain {
		path := filepath.Join(root, p, f)
		if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) != "" {
			val = cur
			continue
		}
		if err := os.WriteFile(path, val, 0o644); err != nil {
			return fmt.Errorf("set %s: %w", path, err)
		}
	}
	return nil
}
