package server

import (
	"testing"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

func TestMergeResources(t *testing.T) {
	cur := store.ResourcesFromCRI(&runtime.LinuxContainerResources{
		CpuShares: 1024, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20, OomScoreAdj: 500, CpusetCpus: "0",
	})
	r := mergeResources(cur, &runtime.LinuxContainerResources{CpuQuota: 20000, MemoryLimitInBytes: 128 << 20, OomScoreAdj: -999}).CRI()
	if r.CpuQuota != 20000 || r.MemoryLimitInBytes != 128<<20 || r.CpuShares != 1024 || r.CpuPeriod != 100000 ||
		r.CpusetCpus != "0" || r.OomScoreAdj != 500 {
		t.Errorf("merged resources %v", r)
	}
}
