package stats

import (
	"testing"
	"time"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/cgroups"
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
