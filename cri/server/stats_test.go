package server

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
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

func TestNanoCores(t *testing.T) {
	c := newStatsCollector(cgroups.NewVersion(t.TempDir(), false))
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
	c.forget(map[string]bool{})
	if v := c.nanoCores("a", 2e9, t0.Add(3*time.Second)); v != nil {
		t.Errorf("after forget: %v", v)
	}
}

func TestMergeResources(t *testing.T) {
	cfg := &runtime.ContainerConfig{Linux: &runtime.LinuxContainerConfig{Resources: &runtime.LinuxContainerResources{
		CpuShares: 1024, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20, OomScoreAdj: 500, CpusetCpus: "0",
	}}}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := mergeResources(raw, &runtime.LinuxContainerResources{CpuQuota: 20000, MemoryLimitInBytes: 128 << 20, OomScoreAdj: -999})
	if err != nil {
		t.Fatal(err)
	}
	var got runtime.ContainerConfig
	if err := proto.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	r := got.GetLinux().GetResources()
	if r.CpuQuota != 20000 || r.MemoryLimitInBytes != 128<<20 || r.CpuShares != 1024 || r.CpuPeriod != 100000 ||
		r.CpusetCpus != "0" || r.OomScoreAdj != 500 {
		t.Errorf("merged resources %v", r)
	}
}
