package server

import (
	"testing"

	"github.com/containerd/errdefs"

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

func TestPodCgroup(t *testing.T) {
	const slice = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"
	for _, tc := range []struct {
		name, driver, parent, want string
		unified, fails             bool
	}{
		{name: "cgroupfs", driver: "cgroupfs", parent: "/kubepods/pod1", want: "/kubepods/pod1"},
		{name: "cgroupfs v2", driver: "cgroupfs", unified: true, parent: "/kubepods/pod1", want: "/kubepods/pod1"},
		{name: "systemd v2, kubelet's path", driver: "systemd", unified: true, parent: slice, want: slice},
		{name: "systemd v2, bare slice", driver: "systemd", unified: true, parent: "kubepods-besteffort-pod1.slice", want: slice},
		{name: "systemd v1", driver: "systemd", parent: slice, fails: true},
		{name: "systemd root slice", driver: "systemd", unified: true, parent: "-.slice", fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := podCgroup(tc.driver, tc.unified, tc.parent)
			if tc.fails {
				if !errdefs.IsFailedPrecondition(err) {
					t.Fatalf("podCgroup = %q, %v; want FailedPrecondition", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("podCgroup = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
