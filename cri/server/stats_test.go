package server

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

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
