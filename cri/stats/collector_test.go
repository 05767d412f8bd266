package stats

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/store"
)

func TestParseNetDev(t *testing.T) {
	data := []byte(`Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:  123456     100    2    0    0     0          0         0    65432      50    3    0    0     0       0          0
`)
	got := parseNetDev(data)
	if len(got) != 2 {
		t.Fatalf("%d interfaces", len(got))
	}
	e := got[1]
	if e.Name != "eth0" || e.RxBytes.Value != 123456 || e.RxErrors.Value != 2 || e.TxBytes.Value != 65432 || e.TxErrors.Value != 3 {
		t.Errorf("eth0 = %v", e)
	}
}

// A pod whose netns holds only lo (its CNI teardown has run) must report no
// network usage: kubelet v1.37 with PodAndContainerStatsFromCRI dereferences
// DefaultInterface whenever Network is set, and panicked on berth's empty one.
func TestNetworkUsage(t *testing.T) {
	iface := func(name string) *runtime.NetworkInterfaceUsage {
		return &runtime.NetworkInterfaceUsage{Name: name, RxBytes: &runtime.UInt64Value{Value: 1}}
	}
	now := time.Unix(100, 0)
	if got := networkUsage([]*runtime.NetworkInterfaceUsage{iface("lo")}, now); got != nil {
		t.Errorf("lo only: %v, want nil", got)
	}
	if got := networkUsage(nil, now); got != nil {
		t.Errorf("no interfaces: %v, want nil", got)
	}
	got := networkUsage([]*runtime.NetworkInterfaceUsage{iface("lo"), iface("net1"), iface("eth0")}, now)
	if got == nil || got.DefaultInterface.GetName() != "eth0" || len(got.Interfaces) != 2 || got.Timestamp != now.UnixNano() {
		t.Errorf("lo, net1, eth0: %v", got)
	}
	got = networkUsage([]*runtime.NetworkInterfaceUsage{iface("lo"), iface("net1")}, now)
	if got == nil || got.DefaultInterface.GetName() != "net1" {
		t.Errorf("no eth0: %v, want net1 as default", got)
	}
}

func TestNanoCores(t *testing.T) {
	c := New(Options{Cgroups: cgroups.NewVersion(t.TempDir(), false)})
	t0 := time.Unix(100, 0)
	if v := c.nanoCores("a", 1e9, t0); v != nil {
		t.Errorf("first sample gave %v", v)
	}
	if v := c.nanoCores("a", 1.5e9, t0.Add(2*time.Second)); v.GetValue() != 250_000_000 {
		t.Errorf("0.5 s of CPU over 2 s = %v, want 0.25 cores", v)
	}
	// A call within the window is measured against the same base sample.
	if v := c.nanoCores("a", 1.6e9, t0.Add(2500*time.Millisecond)); v.GetValue() != 200_000_000 {
		t.Errorf("0.1 s over 0.5 s = %v", v)
	}
	c.Forget(map[string]bool{})
	if v := c.nanoCores("a", 2e9, t0.Add(3*time.Second)); v != nil {
		t.Errorf("after forget: %v", v)
	}
}

// kubelet's two stats lists in a row read each container's cgroup once:
// within sampleTTL the sample answers again, with its own timestamp and
// CPU rate; after it the cgroup is read anew.
func TestContainerSampleReused(t *testing.T) {
	root := t.TempDir()
	write := func(controller, file, v string) {
		t.Helper()
		dir := filepath.Join(root, controller, "pods", "c1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("memory", "memory.usage_in_bytes", "1000\n")
	write("memory", "memory.stat", "total_inactive_file 0\ntotal_rss 800\n")
	write("cpuacct", "cpuacct.usage", "1000000000\n")
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"linux":{"cgroupsPath":"/pods/c1"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	berthRoot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(berthRoot, "containers", "c1", "upper"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := New(Options{Cgroups: cgroups.NewVersion(root, false), Root: berthRoot})
	clock := time.Unix(100, 0)
	c.now = func() time.Time { return clock }
	rec := store.Container{ContainerMeta: store.ContainerMeta{ID: "c1", Bundle: bundle}, Status: store.ContainerStatus{State: store.ContainerRunning}}

	c.Container(context.Background(), rec) // the first CPU sample gives no rate
	clock = clock.Add(2 * time.Second)
	write("cpuacct", "cpuacct.usage", "1500000000\n")
	first, _ := c.Container(context.Background(), rec)
	if first.GetCpu().GetUsageNanoCores().GetValue() != 250_000_000 || first.GetMemory().GetUsageBytes().GetValue() != 1000 {
		t.Fatalf("first sample: cpu %v memory %v", first.GetCpu(), first.GetMemory())
	}

	write("memory", "memory.usage_in_bytes", "2000\n")
	clock = clock.Add(500 * time.Millisecond)
	again, raw := c.Container(context.Background(), rec)
	if again.GetMemory().GetUsageBytes().GetValue() != 1000 || raw == nil || raw.MemoryUsage != 1000 ||
		again.GetCpu().GetTimestamp() != first.GetCpu().GetTimestamp() || again.GetCpu().GetUsageNanoCores().GetValue() != 250_000_000 {
		t.Errorf("within %s: cpu %v memory %v, want the first sample again", sampleTTL, again.GetCpu(), again.GetMemory())
	}

	clock = clock.Add(sampleTTL)
	later, _ := c.Container(context.Background(), rec)
	if later.GetMemory().GetUsageBytes().GetValue() != 2000 || later.GetCpu().GetTimestamp() != clock.UnixNano() {
		t.Errorf("after %s: memory %v at %d, want a new sample", sampleTTL, later.GetMemory(), later.GetCpu().GetTimestamp())
	}
	c.Forget(map[string]bool{})
	if _, ok := c.recentSample("c1", clock); ok {
		t.Error("Forget kept the sample")
	}

	// A removed container and pod leave nothing cached even when nobody
	// polls the stats (no Forget).
	c.Container(context.Background(), rec)
	c.writableLayer(context.Background(), "c1", clock)
	c.nanoCores(PodKeyPrefix+"p1", 1, clock)
	c.ForgetContainer("c1")
	c.ForgetPod("p1")
	if n := len(c.paths) + len(c.cpu) + len(c.layers) + len(c.samples); n != 0 {
		t.Errorf("after ForgetContainer and ForgetPod: %d paths, %d cpu, %d layers, %d samples cached",
			len(c.paths), len(c.cpu), len(c.layers), len(c.samples))
	}
	// A stats call that read the records before the removal and samples
	// them after it caches nothing again.
	clock = clock.Add(sampleTTL)
	if st, _ := c.Container(context.Background(), rec); st.GetMemory() == nil {
		t.Errorf("late call: memory %v, want the cgroup read", st.GetMemory())
	}
	c.writableLayer(context.Background(), "c1", clock)
	c.nanoCores(PodKeyPrefix+"p1", 2, clock)
	if n := len(c.paths) + len(c.cpu) + len(c.layers) + len(c.samples); n != 0 {
		t.Errorf("a call in flight across the removal cached %d paths, %d cpu, %d layers, %d samples",
			len(c.paths), len(c.cpu), len(c.layers), len(c.samples))
	}
}

// The forgotten set keeps the last forgetRing keys and no more.
func TestForgottenBounded(t *testing.T) {
	var f forgotten
	for i := range forgetRing + 10 {
		f.add(fmt.Sprint(i))
		f.add(fmt.Sprint(i)) // twice: still one slot
	}
	if len(f.keys) != forgetRing {
		t.Errorf("%d keys held, want %d", len(f.keys), forgetRing)
	}
	if f.has("9") || !f.has("10") || !f.has(fmt.Sprint(forgetRing+9)) {
		t.Errorf("has 9 %v, 10 %v, %d %v: want only the last %d", f.has("9"), f.has("10"),
			forgetRing+9, f.has(fmt.Sprint(forgetRing+9)), forgetRing)
	}
}
