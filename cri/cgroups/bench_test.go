package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup1"
)

// The benchmarks behind the package doc's choices. The v1 ones read a
// fresh cgroup of the live host (root, cgroup v1 or hybrid) both ways:
// berth's reader and cgroups/v3's cgroup1 Stat narrowed to the
// controllers the call needs. Compare CPU time per op, e.g.
//
//	go test -c -o cg.test ./cri/cgroups
//	/usr/bin/time -f "%U %S" ./cg.test -test.run XXX -test.bench '^BenchmarkStatsV1$' -test.benchtime 3000x

func liveV1(b *testing.B) (*Manager, string) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	m := New("")
	if m.Unified() {
		b.Skip("cgroup v1 host only")
	}
	r := make([]byte, 4)
	_, _ = rand.Read(r)
	path := "/berth-cgb-" + hex.EncodeToString(r)
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "blkio"} {
		d := m.dir(c, path)
		if err := os.Mkdir(d, 0o755); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue // cpu and cpuacct share one hierarchy
			}
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = os.Remove(d) })
	}
	return m, path
}

func libV1(b *testing.B, path string, subsystems ...cgroup1.Subsystem) {
	cg, err := cgroup1.Load(cgroup1.StaticPath(path), cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subsystems, nil }))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cg.Stat(cgroup1.IgnoreNotExist); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkStatsV1(b *testing.B) {
	m, path := liveV1(b)
	for b.Loop() {
		if _, err := m.Stats(path); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStatsV1CgroupsV3(b *testing.B) {
	m, path := liveV1(b)
	for b.Loop() {
		libV1(b, path, cgroup1.NewMemory(m.root, cgroup1.OptionalSwap()), cgroup1.NewCpuacct(m.root), cgroup1.NewPids(m.root))
	}
}

func BenchmarkDetailV1(b *testing.B) {
	m, path := liveV1(b)
	for b.Loop() {
		if _, err := m.Detail(path); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDetailV1CgroupsV3 adds the reads cgroup1's Stat does not do
// (the CPU and memory settings, the pid lists).
func BenchmarkDetailV1CgroupsV3(b *testing.B) {
	m, path := liveV1(b)
	for b.Loop() {
		libV1(b, path, cgroup1.NewMemory(m.root, cgroup1.OptionalSwap()), cgroup1.NewCpu(m.root),
			cgroup1.NewCpuacct(m.root), cgroup1.NewPids(m.root), cgroup1.NewBlkio(m.root))
		cpu := m.dir("cpu", path)
		for _, f := range []string{"cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"} {
			_, _ = readFile(filepath.Join(cpu, f))
		}
		_ = readOr(filepath.Join(m.dir("memory", path), "memory.soft_limit_in_bytes"))
		_ = readInts(filepath.Join(m.dir("pids", path), "cgroup.procs"))
		_ = readInts(filepath.Join(m.dir("pids", path), "tasks"))
	}
}

// benchV2 is a v2 container cgroup as a 6.x kernel shows it.
var benchV2 = map[string]string{
	"pod/c1/memory.current": "10485760\n",
	"pod/c1/memory.stat": "anon 6291456\nfile 2097152\nkernel 1\nkernel_stack 2\npagetables 3\nsec_pagetables 0\npercpu 4\n" +
		"sock 0\nvmalloc 0\nshmem 0\nzswap 0\nzswapped 0\nfile_mapped 0\nfile_dirty 0\nfile_writeback 0\nswapcached 0\n" +
		"anon_thp 0\nfile_thp 0\nshmem_thp 0\ninactive_anon 1\nactive_anon 2\ninactive_file 1048576\nactive_file 3\n" +
		"unevictable 0\nslab_reclaimable 1\nslab_unreclaimable 2\nslab 3\nworkingset_refault_anon 0\n" +
		"workingset_refault_file 0\nworkingset_activate_anon 0\nworkingset_activate_file 0\nworkingset_restore_anon 0\n" +
		"workingset_restore_file 0\nworkingset_nodereclaim 0\npgdemote_kswapd 0\npgdemote_direct 0\n" +
		"pgdemote_khugepaged 0\npgscan 0\npgsteal 0\npgscan_kswapd 0\npgscan_direct 0\npgscan_khugepaged 0\n" +
		"pgsteal_kswapd 0\npgsteal_direct 0\npgsteal_khugepaged 0\npgfault 1234\npgmajfault 5\npgrefill 0\n" +
		"pgactivate 0\npgdeactivate 0\npglazyfree 0\npglazyfreed 0\nzswpin 0\nzswpout 0\nzswpwb 0\n" +
		"thp_fault_alloc 0\nthp_collapse_alloc 0\nthp_swpout 0\nthp_swpout_fallback 0\n",
	"pod/c1/memory.max":          "67108864\n",
	"pod/c1/memory.peak":         "67108864\n",
	"pod/c1/memory.low":          "0\n",
	"pod/c1/memory.swap.current": "1048576\n",
	"pod/c1/memory.swap.max":     "max\n",
	"pod/c1/memory.swap.peak":    "0\n",
	"pod/c1/memory.events":       "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
	"pod/c1/cpu.stat": "usage_usec 987654\nuser_usec 600000\nsystem_usec 387654\nnr_periods 0\nnr_throttled 0\n" +
		"throttled_usec 0\nnr_bursts 0\nburst_usec 0\n",
	"pod/c1/cpu.weight":      "100\n",
	"pod/c1/cpu.max":         "max 100000\n",
	"pod/c1/pids.current":    "3\n",
	"pod/c1/pids.max":        "max\n",
	"pod/c1/cgroup.procs":    "1\n",
	"pod/c1/cgroup.threads":  "1\n",
	"pod/c1/io.stat":         "8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
	"pod/c1/cpu.pressure":    "some avg10=1.50 avg60=0.25 avg300=0.00 total=4242\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=17\n",
	"pod/c1/memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
	"pod/c1/io.pressure":     "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
}

func BenchmarkStatsV2(b *testing.B) {
	m := NewVersion(benchTree(b, benchV2), true)
	for b.Loop() {
		if _, err := m.Stats("/pod/c1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDetailV2(b *testing.B) {
	m := NewVersion(benchTree(b, benchV2), true)
	for b.Loop() {
		if _, err := m.Detail("/pod/c1"); err != nil {
			b.Fatal(err)
		}
	}
}

func benchTree(b *testing.B, files map[string]string) string {
	b.Helper()
	root := b.TempDir()
	for rel, data := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return root
}
