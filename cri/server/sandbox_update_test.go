package server

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPodResources(t *testing.T) {
	for _, tc := range []struct {
		name          string
		res, overhead *runtime.LinuxContainerResources
		want          *runtime.LinuxContainerResources
	}{
		{name: "none", want: &runtime.LinuxContainerResources{}},
		{name: "no overhead",
			res:  &runtime.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 1 << 20},
			want: &runtime.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 1 << 20}},
		{name: "overhead adds where both bound",
			res:      &runtime.LinuxContainerResources{CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20},
			overhead: &runtime.LinuxContainerResources{CpuShares: 10, CpuQuota: 5000, CpuPeriod: 50000, MemoryLimitInBytes: 1 << 20},
			want:     &runtime.LinuxContainerResources{CpuShares: 522, CpuQuota: 60000, CpuPeriod: 100000, MemoryLimitInBytes: 65 << 20}},
		{name: "unbounded stays unbounded",
			res:      &runtime.LinuxContainerResources{CpuShares: 2},
			overhead: &runtime.LinuxContainerResources{CpuQuota: 5000, MemoryLimitInBytes: 1 << 20},
			want:     &runtime.LinuxContainerResources{CpuShares: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := podResources(tc.res, tc.overhead); !proto.Equal(got, tc.want) {
				t.Errorf("podResources = %v, want %v", got, tc.want)
			}
		})
	}
}
