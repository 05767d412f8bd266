package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

var sandboxCases = []sharedCase{
	{"PodFiles", testPodFiles},
	{"SharedNamespaces", testSharedNamespaces},
	{"SharedPIDInfra", testSharedPID},
	{"CgroupParent", testCgroupParent},
	{"PodSandboxStatus", testPodSandboxStatus},
	{"ListPodSandbox", testListPodSandbox},
	{"StopPodSandbox", testStopPodSandbox},
	{"RemoveRunningPod", testRemoveRunningPod},
}

// A container sees the pod's hostname, resolv.conf from DNSConfig, an
// /etc/hosts, a tmpfs /dev/shm, and a network namespace with only lo, up.
func testPodFiles(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "files")
	pod.Hostname = "e2e-host"
	pod.DnsConfig = &runtimeapi.DNSConfig{
		Servers:  []string{"10.0.0.10", "10.0.0.11"},
		Searches: []string{"e2e.svc.cluster.local", "cluster.local"},
		Options:  []string{"ndots:5"},
	}
	podID := runPod(t, d, pod)
	script := `hostname; echo ---; cat /etc/resolv.conf; echo ---; test -s /etc/hosts && grep -c . /etc/hosts >/dev/null && echo hosts-ok; echo ---
awk '$2 == "/dev/shm" {print $3}' /proc/mounts; echo ---; ls /sys/class/net; echo ---; cat /sys/class/net/lo/flags; echo ---; cat /proc/sys/kernel/hostname`
	st, out, errOut := runToExit(t, d, podID, pod, shConfig("files", script))
	if st.ExitCode != 0 {
		t.Fatalf("exit %d, stderr %q", st.ExitCode, errOut)
	}
	s := sections(out)
	if len(s) != 7 {
		t.Fatalf("output has %d sections, want 7: %q", len(s), out)
	}
	if s[0] != "e2e-host" || s[6] != "e2e-host" {
		t.Errorf("hostname %q (kernel %q), want e2e-host", s[0], s[6])
	}
	resolv := s[1]
	for _, want := range []string{"nameserver 10.0.0.10", "nameserver 10.0.0.11", "search e2e.svc.cluster.local cluster.local", "options ndots:5"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, resolv)
		}
	}
	if s[2] != "hosts-ok" {
		t.Errorf("/etc/hosts missing or empty (stderr %q)", errOut)
	}
	if s[3] != "tmpfs" {
		t.Errorf("/dev/shm file system %q, want tmpfs", s[3])
	}
	if s[4] != "lo" {
		t.Errorf("network interfaces %q, want only lo", s[4])
	}
	if !strings.HasSuffix(s[5], "9") { // IFF_UP|IFF_LOOPBACK = 0x9
		t.Errorf("lo flags %q, want up (0x9)", s[5])
	}
	removePod(t, d, podID)
}

const nsScript = `readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts`

// Containers of one pod share its network, IPC and UTS namespaces; another
// pod and the host have their own.
func testSharedNamespaces(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "ns")
	podID := runPod(t, d, pod)
	pins, err := os.ReadDir(filepath.Join(d.State, "netns"))
	if err != nil || len(pins) == 0 {
		t.Errorf("no namespace pins under %s/netns while a pod exists: %v", d.State, err)
	}
	_, a, _ := runToExit(t, d, podID, pod, shConfig("a", nsScript))
	_, b, _ := runToExit(t, d, podID, pod, shConfig("b", nsScript))
	other := podConfig(t, d, "ns-other")
	otherID := runPod(t, d, other)
	_, c, _ := runToExit(t, d, otherID, other, shConfig("c", nsScript))
	la, lb, lc := strings.Fields(a), strings.Fields(b), strings.Fields(c)
	if len(la) != 3 || len(lb) != 3 || len(lc) != 3 {
		t.Fatalf("namespace links: %q %q %q", a, b, c)
	}
	var host []string
	for _, ns := range []string{"net", "ipc", "uts"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		host = append(host, l)
	}
	for i, ns := range []string{"net", "ipc", "uts"} {
		if la[i] != lb[i] {
			t.Errorf("%s namespace differs between containers of one pod: %s vs %s", ns, la[i], lb[i])
		}
		if la[i] == lc[i] {
			t.Errorf("%s namespace shared between two pods: %s", ns, la[i])
		}
		if la[i] == host[i] {
			t.Errorf("%s namespace of the pod is the host's: %s", ns, la[i])
		}
	}
	removePod(t, d, podID)
	removePod(t, d, otherID)
}

// A pod sharing one PID namespace runs berth-pause as its PID 1, and its
// containers see each other's processes.
func testSharedPID(t *testing.T, d *testutil.Daemon) {
	pod := sharePID(podConfig(t, d, "pid"))
	podID := runPod(t, d, pod)
	runCtr(t, d, podID, pod, shConfig("sleeper", "exec sleep 1000"))
	st, out, errOut := runToExit(t, d, podID, pod, shConfig("looker", "cat /proc/1/comm; echo ---; ps -o pid,args"))
	s := sections(out)
	if st.ExitCode != 0 || len(s) != 2 {
		t.Fatalf("exit %d, output %q, stderr %q", st.ExitCode, out, errOut)
	}
	if s[0] != "berth-pause" {
		t.Errorf("PID 1 of a shared-PID pod is %q, want berth-pause", s[0])
	}
	if !strings.Contains(s[1], "sleep 1000") {
		t.Errorf("ps in a shared-PID pod does not show the sibling container:\n%s", s[1])
	}
	// Without sharing, the container is its own PID 1 and no infra runs.
	plain := podConfig(t, d, "nopid")
	plainID := runPod(t, d, plain)
	_, out, _ = runToExit(t, d, plainID, plain, shConfig("self", "cat /proc/1/comm; echo ---; ps -o pid,args"))
	if s := sections(out); len(s) != 2 || strings.Contains(out, "berth-pause") || strings.Contains(out, "sleep 1000") {
		t.Errorf("a pod with per-container PID namespaces sees %q", out)
	}
	removePod(t, d, podID)
	removePod(t, d, plainID)
}

// The pod's containers live below the cgroup parent the pod names (and the
// default one from config when it names none).
func testCgroupParent(t *testing.T, d *testutil.Daemon) {
	podCg := d.CgroupParent + "/pod" + randID()
	pod := podConfig(t, d, "cgroup")
	pod.Linux.CgroupParent = podCg
	podID := runPod(t, d, pod)
	runCtr(t, d, podID, pod, shConfig("sleeper", "exec sleep 1000"))
	if n := procsBelow(t, podCg); n == 0 {
		t.Errorf("no process in a cgroup below the pod's cgroup parent %s", podCg)
	}
	def := podConfig(t, d, "cgroup-default")
	defID := runPod(t, d, def)
	runCtr(t, d, defID, def, shConfig("sleeper", "exec sleep 1000"))
	if n := procsBelow(t, d.CgroupParent) - procsBelow(t, podCg); n == 0 {
		t.Errorf("no process below the default cgroup parent %s for a pod that names none", d.CgroupParent)
	}
	removePod(t, d, podID)
	removePod(t, d, defID)
	// kubelet owns the pod cgroup and removes it once the pod is gone; that
	// fails if berth left a container cgroup inside it.
	hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hierarchies {
		p := filepath.Join("/sys/fs/cgroup", h.Name(), podCg)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove pod cgroup %s after the pod is gone: %v", p, err)
		}
	}
}

// procsBelow counts processes in pids cgroups at or below parent.
func procsBelow(t *testing.T, parent string) int {
	t.Helper()
	n := 0
	top := filepath.Join("/sys/fs/cgroup/pids", parent)
	_ = filepath.WalkDir(top, func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() && de.Name() == "cgroup.procs" {
			b, _ := os.ReadFile(p)
			n += len(strings.Fields(string(b)))
		}
		return nil
	})
	return n
}

func testPodSandboxStatus(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := podConfig(t, d, "status")
	pod.Labels = map[string]string{"app": "status", "tier": "e2e"}
	pod.Annotations = map[string]string{"note": "hello", "k8s.io/x": "y"}
	before := time.Now().UnixNano()
	podID := runPod(t, d, pod)
	after := time.Now().UnixNano()
	resp, err := d.Runtime.PodSandboxStatus(ctx, podID, false)
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	st := resp.GetStatus()
	if st.Id != podID {
		t.Errorf("id %q, want %q", st.Id, podID)
	}
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("state %s, want READY", st.State)
	}
	if m := st.GetMetadata(); m.GetName() != pod.Metadata.Name || m.GetUid() != pod.Metadata.Uid || m.GetNamespace() != pod.Metadata.Namespace || m.GetAttempt() != pod.Metadata.Attempt {
		t.Errorf("metadata %v, want %v", m, pod.Metadata)
	}
	if !mapsEqual(st.Labels, pod.Labels) || !mapsEqual(st.Annotations, pod.Annotations) {
		t.Errorf("labels %v annotations %v, want %v %v", st.Labels, st.Annotations, pod.Labels, pod.Annotations)
	}
	if st.CreatedAt < before || st.CreatedAt > after {
		t.Errorf("created_at %d not within the RunPodSandbox call [%d, %d]", st.CreatedAt, before, after)
	}
	if err := d.Runtime.StopPodSandbox(ctx, podID); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	resp, err = d.Runtime.PodSandboxStatus(ctx, podID, false)
	if err != nil {
		t.Fatalf("PodSandboxStatus after stop: %v", err)
	}
	if resp.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("state after stop %s, want NOTREADY", resp.GetStatus().GetState())
	}
	removePod(t, d, podID)
	_, err = d.Runtime.PodSandboxStatus(ctx, podID, false)
	wantCode(t, "PodSandboxStatus of a removed pod", err, codes.NotFound)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// listPods runs the filter through ListPodSandbox and StreamPodSandboxes and
// checks both agree.
func listPods(t *testing.T, d *testutil.Daemon, f *runtimeapi.PodSandboxFilter) map[string]bool {
	t.Helper()
	ctx := context.Background()
	list, err := d.Runtime.ListPodSandbox(ctx, f)
	if err != nil {
		t.Fatalf("ListPodSandbox(%v): %v", f, err)
	}
	unary := podIDs(list)
	stream, err := d.RuntimeClient.StreamPodSandboxes(ctx, &runtimeapi.StreamPodSandboxesRequest{Filter: f})
	if err != nil {
		t.Fatalf("StreamPodSandboxes(%v): %v", f, err)
	}
	streamed := streamedIDs(t, fmt.Sprintf("StreamPodSandboxes(%v)", f), stream.Recv,
		func(r *runtimeapi.StreamPodSandboxesResponse) map[string]bool { return podIDs(r.GetPodSandboxes()) })
	if !maps.Equal(unary, streamed) {
		t.Errorf("filter %v: ListPodSandbox %v, StreamPodSandboxes %v", f, unary, streamed)
	}
	return unary
}

func testListPodSandbox(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	ca := podConfig(t, d, "list-a")
	ca.Labels = map[string]string{"app": "a", "tier": "x"}
	cb := podConfig(t, d, "list-b")
	cb.Labels = map[string]string{"app": "b", "tier": "x"}
	a, b := runPod(t, d, ca), runPod(t, d, cb)
	if err := d.Runtime.StopPodSandbox(ctx, b); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	ready, notReady := runtimeapi.PodSandboxState_SANDBOX_READY, runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	for _, tc := range []struct {
		name   string
		filter *runtimeapi.PodSandboxFilter
		want   []string
	}{
		{"none", nil, []string{a, b}},
		{"id", &runtimeapi.PodSandboxFilter{Id: a}, []string{a}},
		{"unknown id", &runtimeapi.PodSandboxFilter{Id: "0123456789abcdef"}, nil},
		{"ready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: ready}}, []string{a}},
		{"notready", &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: notReady}}, []string{b}},
		{"label", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "a"}}, []string{a}},
		{"shared label", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "x"}}, []string{a, b}},
		{"two labels", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "x", "app": "b"}}, []string{b}},
		{"id and wrong state", &runtimeapi.PodSandboxFilter{Id: a, State: &runtimeapi.PodSandboxStateValue{State: notReady}}, nil},
		{"label and state", &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"tier": "x"}, State: &runtimeapi.PodSandboxStateValue{State: notReady}}, []string{b}},
	} {
		got := listPods(t, d, tc.filter)
		want := map[string]bool{}
		for _, id := range tc.want {
			want[id] = true
		}
		if !maps.Equal(got, want) {
			t.Errorf("filter %s: got %v, want %v", tc.name, got, want)
		}
	}
	list, err := d.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{Id: a})
	if err != nil || len(list) != 1 {
		t.Fatalf("ListPodSandbox(id): %v %v", list, err)
	}
	if p := list[0]; p.GetMetadata().GetName() != "list-a" || p.Labels["app"] != "a" || p.State != ready || p.CreatedAt == 0 {
		t.Errorf("listed pod %v: want metadata, labels, state and created_at", p)
	}
	removePod(t, d, a)
	removePod(t, d, b)
}

// StopPodSandbox stops the pod's containers, even one that ignores SIGTERM,
// and is idempotent; RemovePodSandbox removes them and is idempotent too.
func testStopPodSandbox(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := podConfig(t, d, "stop")
	podID := runPod(t, d, pod)
	sleeper := runCtr(t, d, podID, pod, shConfig("sleeper", "exec sleep 1000"))
	stubborn := runCtr(t, d, podID, pod, shConfig("stubborn", "trap '' TERM; while true; do sleep 1; done"))
	created := createCtr(t, d, podID, pod, shConfig("created", "true"))
	start := time.Now()
	if err := d.Runtime.StopPodSandbox(ctx, podID); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	t.Logf("StopPodSandbox took %s", time.Since(start))
	for _, id := range []string{sleeper, stubborn} {
		if st := ctrStatus(t, d, id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			t.Errorf("container %s is %s after StopPodSandbox, want EXITED", st.GetMetadata().GetName(), st.State)
		}
	}
	if st := ctrStatus(t, d, created); st.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("created container is RUNNING after StopPodSandbox")
	}
	if err := d.Runtime.StopPodSandbox(ctx, podID); err != nil {
		t.Errorf("second StopPodSandbox: %v", err)
	}
	if err := d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	for _, id := range []string{sleeper, stubborn, created} {
		_, err := d.Runtime.ContainerStatus(ctx, id, false)
		wantCode(t, "ContainerStatus of a container of a removed pod", err, codes.NotFound)
	}
	cs, err := d.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: podID})
	if err != nil || len(cs) != 0 {
		t.Errorf("ListContainers of a removed pod: %v, %v; want none", cs, err)
	}
	if err := d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
		t.Errorf("second RemovePodSandbox: %v", err)
	}
	if err := d.Runtime.StopPodSandbox(ctx, podID); err != nil {
		t.Errorf("StopPodSandbox of a removed pod: %v", err)
	}
	pods, _ := d.Runtime.ListPodSandbox(ctx, nil)
	if slices.ContainsFunc(pods, func(p *runtimeapi.PodSandbox) bool { return p.Id == podID }) {
		t.Errorf("removed pod still listed")
	}
}

// RemovePodSandbox of a ready pod with a running container kills and
// removes it.
func testRemoveRunningPod(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := sharePID(podConfig(t, d, "rm-running"))
	podID := runPod(t, d, pod)
	id := runCtr(t, d, podID, pod, shConfig("sleeper", "exec sleep 1000"))
	if err := d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatalf("RemovePodSandbox of a running pod: %v", err)
	}
	_, err := d.Runtime.ContainerStatus(ctx, id, false)
	wantCode(t, "ContainerStatus after RemovePodSandbox", err, codes.NotFound)
	_, err = d.Runtime.PodSandboxStatus(ctx, podID, false)
	wantCode(t, "PodSandboxStatus after RemovePodSandbox", err, codes.NotFound)
}
