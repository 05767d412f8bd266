package cgroups

import (
	"reflect"
	"testing"
)

func TestDetail(t *testing.T) {
	const p = "/pod/c1"
	v1 := NewVersion(writeTree(t, map[string]string{
		"memory" + p + "/memory.stat":                              "total_cache 4096\ntotal_mapped_file 8192\n",
		"memory" + p + "/memory.kmem.usage_in_bytes":               "100\n",
		"memory" + p + "/memory.max_usage_in_bytes":                "200\n",
		"memory" + p + "/memory.failcnt":                           "3\n",
		"memory" + p + "/memory.soft_limit_in_bytes":               "9223372036854771712\n",
		"cpuacct" + p + "/cpuacct.stat":                            "user 150\nsystem 50\n",
		"cpu" + p + "/cpu.stat":                                    "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\n",
		"cpu" + p + "/cpu.shares":                                  "512\n",
		"cpu" + p + "/cpu.cfs_period_us":                           "100000\n",
		"cpu" + p + "/cpu.cfs_quota_us":                            "20000\n",
		"pids" + p + "/cgroup.procs":                               "10\n11\n",
		"pids" + p + "/tasks":                                      "10\n11\n12\n",
		"pids" + p + "/pids.max":                                   "max\n",
		"blkio" + p + "/blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\nTotal 4608\n",
		"blkio" + p + "/blkio.throttle.io_serviced_recursive":      "8:0 Read 2\n8:0 Write 1\n",
	}), false)
	want1 := Detail{
		CPUUserNanos: 1500000000, CPUSystemNanos: 500000000, Periods: 10, ThrottledPeriods: 2, ThrottledNanos: 5000,
		CPUShares: 512, CPUPeriod: 100000, CPUQuota: 20000,
		MemoryCache: 4096, MemoryMappedFile: 8192, MemoryKernel: 100, MemoryMaxUsage: 200, MemoryFailcnt: 3,
		Procs: []int{10, 11}, Threads: 3,
		Blkio: []DeviceIO{{Major: 8, Minor: 0, ReadBytes: 4096, WriteBytes: 512, Reads: 2, Writes: 1}},
	}
	v2 := NewVersion(writeTree(t, map[string]string{
		p + "/memory.stat":    "file 4096\nfile_mapped 8192\nkernel 100\n",
		p + "/memory.peak":    "200\n",
		p + "/memory.events":  "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n",
		p + "/memory.low":     "1024\n",
		p + "/cpu.stat":       "usage_usec 2000000\nuser_usec 1500000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 2\nthrottled_usec 5\n",
		p + "/cpu.weight":     "100\n",
		p + "/cpu.max":        "max 100000\n",
		p + "/cgroup.procs":   "10\n",
		p + "/cgroup.threads": "10\n",
		p + "/pids.max":       "64\n",
		p + "/io.stat":        "8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
	}), true)
	want2 := Detail{
		CPUUserNanos: 1500000000, CPUSystemNanos: 500000000, Periods: 10, ThrottledPeriods: 2, ThrottledNanos: 5000,
		CPUShares: 2597, CPUPeriod: 100000, CPUQuota: -1,
		MemoryCache: 4096, MemoryMappedFile: 8192, MemoryKernel: 100, MemoryMaxUsage: 200, MemoryFailcnt: 3, MemoryReservation: 1024,
		Procs: []int{10}, Threads: 1, PidsMax: 64,
		Blkio: []DeviceIO{{Major: 8, Minor: 0, ReadBytes: 4096, WriteBytes: 512, Reads: 2, Writes: 1}},
	}
	for name, tc := range map[string]struct {
		m    *Manager
		want Detail
	}{"v1": {v1, want1}, "v2": {v2, want2}} {
		got, err := tc.m.Detail(p)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Detail = %+v, %v\nwant %+v", name, got, err, tc.want)
		}
		if _, err := tc.m.Detail("/gone"); !IsGone(err) {
			t.Errorf("%s: missing cgroup: %v, want not found", name, err)
		}
	}
}
