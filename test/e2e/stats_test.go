package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestStats covers what kubelet reads back from a running workload: usage
// stats, live resource updates, log rotation and the event stream.
func TestStats(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	for _, tc := range []sharedCase{
		{"Events", testEvents},
		{"StatsMove", testStatsMove},
		{"UpdateContainerResources", testUpdateResources},
		{"LogRotation", testLogRotation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() {
				removeAllPods(t, d)
				testutil.AssertNoLeaks(t, d)
			})
			tc.fn(t, d)
		})
	}
}

// A subscriber sees every transition of a pod's life, in order, with the
// pod status kubelet's evented PLEG keys its cache on.
func testEvents(t *testing.T, d *testutil.Daemon) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan *runtimeapi.ContainerEventResponse, 100)
	connected := make(chan struct{})
	go func() {
		_ = d.Runtime.GetContainerEvents(ctx, ch, func(runtimeapi.RuntimeService_GetContainerEventsClient) { close(connected) })
	}()
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("GetContainerEvents did not connect")
	}
	time.Sleep(300 * time.Millisecond) // the server subscribes once the stream's handler runs

	pod := podConfig(t, d, "events")
	podID := runPod(t, d, pod)
	ctrID := runCtr(t, d, podID, pod, shConfig("sleeper", "sleep 60"))
	waitState(t, d, ctrID, runtimeapi.ContainerState_CONTAINER_RUNNING, 10*time.Second)
	removePod(t, d, podID)

	const (
		created = runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT
		started = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
		stopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
		deleted = runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
	)
	want := []string{
		fmt.Sprint(podID, created), fmt.Sprint(podID, started),
		fmt.Sprint(ctrID, created), fmt.Sprint(ctrID, started),
		fmt.Sprint(ctrID, stopped), fmt.Sprint(podID, stopped),
		fmt.Sprint(ctrID, deleted), fmt.Sprint(podID, deleted),
	}
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case ev := <-ch:
			if ev.GetPodSandboxStatus().GetId() != podID {
				continue
			}
			if ev.GetPodSandboxStatus().GetMetadata().GetUid() != pod.Metadata.Uid {
				t.Errorf("event %v carries pod uid %q", ev.ContainerEventType, ev.GetPodSandboxStatus().GetMetadata().GetUid())
			}
			if ev.ContainerId == ctrID && ev.ContainerEventType == stopped {
				if len(ev.ContainersStatuses) != 1 || ev.ContainersStatuses[0].State != runtimeapi.ContainerState_CONTAINER_EXITED {
					t.Errorf("stopped event statuses %v, want the exited container", ev.ContainersStatuses)
				}
			}
			got = append(got, fmt.Sprint(ev.ContainerId, ev.ContainerEventType))
		case <-deadline:
			t.Fatalf("events so far:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// CPU and memory stats of the container and its pod move when the
// container burns CPU and fills 40 MiB of its pod's /dev/shm.
func testStatsMove(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := podConfig(t, d, "stats")
	podID := runPod(t, d, pod)
	id := runCtr(t, d, podID, pod, shConfig("burner",
		"dd if=/dev/zero of=/dev/shm/blob bs=1M count=40 2>/dev/null; echo > /scratch; while :; do :; done"))
	waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING, 10*time.Second)
	var first *runtimeapi.ContainerStats
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := d.Runtime.ContainerStats(ctx, id)
		if err != nil {
			t.Fatalf("ContainerStats: %v", err)
		}
		if st.GetMemory().GetWorkingSetBytes().GetValue() >= 40<<20 {
			first = st
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("memory never reached 40 MiB: %v", st.GetMemory())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	stats, err := d.Runtime.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{PodSandboxId: podID})
	if err != nil || len(stats) != 1 {
		t.Fatalf("ListContainerStats: %v, %d items", err, len(stats))
	}
	second := stats[0]
	if second.GetAttributes().GetId() != id || second.GetAttributes().GetMetadata().GetName() != "burner" {
		t.Errorf("attributes %v", second.GetAttributes())
	}
	c1, c2 := first.GetCpu().GetUsageCoreNanoSeconds().GetValue(), second.GetCpu().GetUsageCoreNanoSeconds().GetValue()
	// The machine is shared by parallel tests: ask for a fraction of a core.
	if c2 <= c1+100_000_000 {
		t.Errorf("CPU usage went from %d to %d over 1.5 s of a busy loop", c1, c2)
	}
	if nc := second.GetCpu().GetUsageNanoCores().GetValue(); nc < 50_000_000 {
		t.Errorf("usage_nano_cores %d for a busy loop, want at least 0.05 cores", nc)
	}
	if m := second.GetMemory(); m.GetUsageBytes().GetValue() < m.GetWorkingSetBytes().GetValue() || m.GetPageFaults() == nil {
		t.Errorf("memory %v", m)
	}
	if wl := second.GetWritableLayer(); wl.GetInodesUsed().GetValue() < 1 || wl.GetFsId().GetMountpoint() == "" {
		t.Errorf("writable layer %v, want the written /scratch counted", wl)
	}

	ps, err := d.Runtime.PodSandboxStats(ctx, podID)
	if err != nil {
		t.Fatalf("PodSandboxStats: %v", err)
	}
	l := ps.GetLinux()
	if ps.GetAttributes().GetId() != podID || len(l.GetContainers()) != 1 {
		t.Errorf("pod stats attributes %v, %d containers", ps.GetAttributes(), len(l.GetContainers()))
	}
	if l.GetCpu().GetUsageCoreNanoSeconds().GetValue() < c1 || l.GetMemory().GetWorkingSetBytes().GetValue() < 40<<20 {
		t.Errorf("pod cpu %v memory %v", l.GetCpu(), l.GetMemory())
	}
	if n := l.GetProcess().GetProcessCount().GetValue(); n < 1 {
		t.Errorf("pod process count %d", n)
	}
	// This daemon's pods have lo only: no network usage, since kubelet
	// dereferences the default interface of any it gets (TestNetwork
	// checks eth0's counters).
	if l.GetNetwork() != nil {
		t.Errorf("pod network stats %v for a pod with lo only, want none", l.GetNetwork())
	}
	all, err := d.Runtime.ListPodSandboxStats(ctx, &runtimeapi.PodSandboxStatsFilter{Id: podID})
	if err != nil || len(all) != 1 {
		t.Errorf("ListPodSandboxStats: %v, %d items", err, len(all))
	}
	removePod(t, d, podID)
}

// cgroupFile reads a file of the container's cgroup for controller (v1)
// or from its unified directory (v2).
func cgroupFile(t *testing.T, d *testutil.Daemon, id, controller, v1name, v2name string) string {
	t.Helper()
	resp, err := d.Runtime.ContainerStatus(context.Background(), id, true)
	if err != nil {
		t.Fatalf("ContainerStatus: %v", err)
	}
	var info struct{ Bundle string }
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil || info.Bundle == "" {
		t.Fatalf("verbose info %q: %v", resp.Info["info"], err)
	}
	data, err := os.ReadFile(filepath.Join(info.Bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec struct{ Linux struct{ CgroupsPath string } }
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join("/sys/fs/cgroup", controller, spec.Linux.CgroupsPath, v1name)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		p = filepath.Join("/sys/fs/cgroup", spec.Linux.CgroupsPath, v2name)
	}
	out, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func testUpdateResources(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := podConfig(t, d, "update")
	podID := runPod(t, d, pod)
	cfg := shConfig("resized", "sleep 60")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 50000, MemoryLimitInBytes: 64 << 20,
	}
	id := runCtr(t, d, podID, pod, cfg)
	if got := cgroupFile(t, d, id, "memory", "memory.limit_in_bytes", "memory.max"); got != strconv.Itoa(64<<20) {
		t.Fatalf("memory limit at start %s", got)
	}
	upd := &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 20000, CpuShares: 512, MemoryLimitInBytes: 128 << 20,
	}
	if err := d.Runtime.UpdateContainerResources(ctx, id, &runtimeapi.ContainerResources{Linux: upd}); err != nil {
		t.Fatalf("UpdateContainerResources: %v", err)
	}
	if got := cgroupFile(t, d, id, "memory", "memory.limit_in_bytes", "memory.max"); got != strconv.Itoa(128<<20) {
		t.Errorf("memory limit after update %s, want %d", got, 128<<20)
	}
	if got := cgroupFile(t, d, id, "cpu", "cpu.cfs_quota_us", "cpu.max"); got != "20000" && got != "20000 100000" {
		t.Errorf("cpu quota after update %s, want 20000", got)
	}
	res := ctrStatus(t, d, id).GetResources().GetLinux()
	if res.GetMemoryLimitInBytes() != 128<<20 || res.GetCpuQuota() != 20000 || res.GetCpuShares() != 512 {
		t.Errorf("ContainerStatus.resources %v after update", res)
	}
	removePod(t, d, podID)
}

// Rotating the log under a container that writes continuously loses no
// line and splits none: kubelet renames the file, then asks for a reopen.
func testLogRotation(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := podConfig(t, d, "rotate")
	podID := runPod(t, d, pod)
	id := runCtr(t, d, podID, pod, shConfig("writer",
		"i=0; while [ $i -lt 4000 ]; do echo line-$i; i=$((i+1)); [ $((i % 100)) = 0 ] && sleep 0.05; done"))
	st := ctrStatus(t, d, id)
	var rotated []string
	for n := range 3 {
		time.Sleep(300 * time.Millisecond)
		old := fmt.Sprintf("%s.%d", st.LogPath, n)
		if err := os.Rename(st.LogPath, old); err != nil {
			t.Fatal(err)
		}
		rotated = append(rotated, old)
		if err := d.Runtime.ReopenContainerLog(ctx, id); err != nil {
			t.Fatalf("ReopenContainerLog: %v", err)
		}
	}
	waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	next := 0
	for _, f := range append(rotated, st.LogPath) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			if l == "" {
				continue
			}
			fields := strings.SplitN(l, " ", 4)
			if len(fields) != 4 || fields[2] != "F" || fields[3] != fmt.Sprintf("line-%d", next) {
				t.Fatalf("%s: line %q, want a full line-%d", f, l, next)
			}
			next++
		}
	}
	if next != 4000 {
		t.Errorf("read %d lines across %d files, want 4000", next, len(rotated)+1)
	}
	if _, err := os.Stat(rotated[len(rotated)-1]); err != nil {
		t.Error(err)
	}
	removePod(t, d, podID)
}
