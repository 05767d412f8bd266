package cgroups

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// Fixtures recorded from a v1 host (Debian 12, kernel 6.x) and a v2 host,
// trimmed to the lines the readers use plus neighbours that must be skipped.
var v1Files = map[string]string{
	"memory/pod/c1/memory.usage_in_bytes":       "10485760\n",
	"memory/pod/c1/memory.memsw.usage_in_bytes": "11534336\n",
	"memory/pod/c1/memory.stat": "cache 4096\nrss 8192\ninactive_file 1\n" +
		"hierarchical_memory_limit 67108864\nhierarchical_memsw_limit 134217728\n" +
		"total_cache 2097152\ntotal_rss 6291456\ntotal_pgfault 1234\ntotal_pgmajfault 5\n" +
		"total_inactive_file 1048576\ntotal_active_file 1048576\n",
	"memory/pod/c1/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
	"cpuacct/pod/c1/cpuacct.usage":     "987654321\n",
	"pids/pod/c1/pids.current":         "3\n",
	// An unlimited cgroup.
	"memory/pod/c2/memory.usage_in_bytes": "4096\n",
	"memory/pod/c2/memory.stat":           "total_inactive_file 8192\nhierarchical_memory_limit 9223372036854771712\n",
	"cpuacct/pod/c2/cpuacct.usage":        "1\n",
}

var v2Files = map[string]string{
	"pod/c1/memory.current":      "10485760\n",
	"pod/c1/memory.stat":         "anon 6291456\nfile 2097152\ninactive_file 1048576\npgfault 1234\npgmajfault 5\n",
	"pod/c1/memory.max":          "67108864\n",
	"pod/c1/memory.swap.current": "1048576\n",
	"pod/c1/memory.swap.max":     "max\n",
	"pod/c1/memory.events":       "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
	"pod/c1/cpu.stat":            "usage_usec 987654\nuser_usec 600000\nsystem_usec 387654\n",
	"pod/c1/pids.current":        "3\n",
	"pod/c1/cpu.pressure":        "some avg10=1.50 avg60=0.25 avg300=0.00 total=4242\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=17\n",
	"pod/c1/memory.pressure":     "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
	// No swap accounting (no memory.swap.*), unlimited, a "some"-only
	// cpu.pressure as kernels before 5.13 write it, and io.pressure.
	"pod/c2/memory.current": "4096\n",
	"pod/c2/memory.stat":    "anon 4096\ninactive_file 8192\n",
	"pod/c2/memory.max":     "max\n",
	"pod/c2/cpu.stat":       "usage_usec 1\n",
	"pod/c2/cpu.pressure":   "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
	"pod/c2/io.pressure":    "some avg10=0.00 avg60=0.00 avg300=0.00 total=3\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=2\n",
	// Swap accounted but swap forbidden (memory.swap.max 0, as kubelet's
	// NoSwap writes it), and the memory controller's other files off.
	"pod/c3/memory.swap.current": "0\n",
	"pod/c3/memory.swap.max":     "0\n",
	"pod/c3/cpu.stat":            "usage_usec 2\n",
}

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, data := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestStats(t *testing.T) {
	v1 := NewVersion(writeTree(t, v1Files), false)
	v2 := NewVersion(writeTree(t, v2Files), true)
	for _, tc := range []struct {
		name string
		m    *Manager
		path string
		want Stats
	}{
		{"v1 limited", v1, "/pod/c1", Stats{
			CPUUsageNanos: 987654321, MemoryUsage: 10485760, MemoryWorkingSet: 10485760 - 1048576,
			MemoryRSS: 6291456, PageFaults: 1234, MajorPageFaults: 5,
			MemoryLimit: 67108864, HasMemoryLimit: true,
			SwapUsage: 1048576, HasSwap: true, SwapLimit: 134217728 - 67108864, HasSwapLimit: true,
			Pids: 3,
		}},
		{"v1 unlimited, inactive above usage", v1, "/pod/c2", Stats{CPUUsageNanos: 1, MemoryUsage: 4096}},
		{"v2", v2, "/pod/c1", Stats{
			CPUUsageNanos: 987654000, MemoryUsage: 10485760, MemoryWorkingSet: 10485760 - 1048576,
			MemoryRSS: 6291456, PageFaults: 1234, MajorPageFaults: 5,
			MemoryLimit: 67108864, HasMemoryLimit: true, SwapUsage: 1048576, HasSwap: true, Pids: 3,
			CPUPressure: &Pressure{
				Some: PressureData{Avg10: 1.5, Avg60: 0.25, Total: 4242},
				Full: PressureData{Total: 17},
			},
			MemoryPressure: &Pressure{},
		}},
		{"v2 no swap accounting, unlimited", v2, "/pod/c2", Stats{
			CPUUsageNanos: 1000, MemoryUsage: 4096, MemoryRSS: 4096,
			CPUPressure: &Pressure{Some: PressureData{Total: 9}},
			IOPressure:  &Pressure{Some: PressureData{Total: 3}, Full: PressureData{Total: 2}},
		}},
		{"v2 swap forbidden", v2, "/pod/c3", Stats{
			CPUUsageNanos: 2000, HasSwap: true, HasSwapLimit: true,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.m.Stats(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if !equalStats(got, tc.want) {
				t.Errorf("Stats(%s)\n got %+v\nwant %+v", tc.path, got, tc.want)
			}
		})
	}
	for _, m := range []*Manager{v1, v2} {
		if _, err := m.Stats("/pod/gone"); !errdefs.IsNotFound(err) || !IsGone(err) {
			t.Errorf("stats of a missing cgroup (unified=%v): %v, want not found", m.Unified(), err)
		}
	}
}

func equalStats(a, b Stats) bool {
	eqP := func(x, y *Pressure) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	if !eqP(a.CPUPressure, b.CPUPressure) || !eqP(a.MemoryPressure, b.MemoryPressure) || !eqP(a.IOPressure, b.IOPressure) {
		return false
	}
	a.CPUPressure, a.MemoryPressure, a.IOPressure = nil, nil, nil
	b.CPUPressure, b.MemoryPressure, b.IOPressure = nil, nil, nil
	return a == b
}

func TestOOMKills(t *testing.T) {
	for _, tc := range []struct {
		name    string
		m       *Manager
		path    string
		want    uint64
		missing bool
	}{
		{"v1", NewVersion(writeTree(t, v1Files), false), "/pod/c1", 2, false},
		{"v2", NewVersion(writeTree(t, v2Files), true), "/pod/c1", 2, false},
		{"v1 gone", NewVersion(writeTree(t, v1Files), false), "/pod/x", 0, true},
		{"v2 gone", NewVersion(writeTree(t, v2Files), true), "/pod/x", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := tc.m.OOMKills(tc.path)
			if tc.missing {
				if !errdefs.IsNotFound(err) {
					t.Fatalf("OOMKills: %v, want not found", err)
				}
				return
			}
			if err != nil || n != tc.want {
				t.Errorf("OOMKills = %d, %v; want %d", n, err, tc.want)
			}
		})
	}
}

func TestPath(t *testing.T) {
	for in, want := range map[string]string{
		"/berth/abc": "/berth/abc",
		"berth/abc":  "/berth/abc",
		"kubepods-besteffort-pod1.slice:cri-berth:abc": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-berth-abc.scope",
		"system.slice:berth:abc":                       "/system.slice/berth-abc.scope",
		":berth:abc":                                   "/system.slice/berth-abc.scope",
		"-.slice:p:x":                                  "/p-x.scope",
	} {
		if got := Path(in); got != want {
			t.Errorf("Path(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLiveHost reads the cgroup berth's tests run in: whatever the host's
// version, the readers must understand its files.
func TestLiveHost(t *testing.T) {
	m := New("")
	if !m.Exists("/") {
		t.Skip("no cgroup hierarchy mounted")
	}
	s, err := m.Stats("/")
	if err != nil {
		t.Fatalf("stats of the root cgroup (unified=%v): %v", m.Unified(), err)
	}
	if s.MemoryUsage == 0 || s.MemoryWorkingSet > s.MemoryUsage {
		t.Errorf("root cgroup memory: %+v", s)
	}
}

// TestLiveUnified reads the unified hierarchy through cgroups/v3 on a v2
// host's root or a hybrid host's /sys/fs/cgroup/unified: real kernfs
// cpu.stat and PSI files.
func TestLiveUnified(t *testing.T) {
	root := DefaultRoot
	if !New("").Unified() {
		root = filepath.Join(DefaultRoot, "unified")
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
		t.Skip("no unified hierarchy mounted")
	}
	s, err := NewVersion(root, true).Stats("/")
	if err != nil {
		t.Fatalf("stats of the unified root: %v", err)
	}
	if s.CPUUsageNanos == 0 {
		t.Errorf("unified root cpu usage 0: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(root, "cpu.pressure")); err == nil && s.CPUPressure == nil {
		t.Errorf("cpu.pressure present but not read: %+v", s)
	}
	if _, err := NewVersion(root, true).Stats("/berth-no-such-cgroup"); !IsGone(err) {
		t.Errorf("stats of a missing unified cgroup: %v, want not found", err)
	}
}

// The raw reader grows past its buffer, and eachKV and parseUint take
// only well-formed numbers.
func TestReadIntoAndEachKV(t *testing.T) {
	dir := t.TempDir()
	var big strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&big, "key%d %d\n", i, i)
	}
	big.WriteString("neg -1\nword x\nnospace\nhuge 18446744073709551616\nmaxu 18446744073709551615\n")
	p := filepath.Join(dir, "kv")
	if err := os.WriteFile(p, []byte(big.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := readInto(p, make([]byte, 0, 8))
	if err != nil || string(data) != big.String() {
		t.Fatalf("readInto: %d bytes, %v; want %d", len(data), err, big.Len())
	}
	got := map[string]uint64{}
	if err := eachKV(p, func(k []byte, v uint64) { got[string(k)] = v }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2001 || got["key1999"] != 1999 || got["maxu"] != math.MaxUint64 {
		t.Fatalf("eachKV: %d keys, key1999=%d maxu=%d", len(got), got["key1999"], got["maxu"])
	}
	for _, k := range []string{"neg", "word", "nospace", "huge"} {
		if _, ok := got[k]; ok {
			t.Errorf("eachKV took malformed line %q", k)
		}
	}
	if _, err := readInto(filepath.Join(dir, "none"), nil); !IsGone(err) {
		t.Fatalf("missing file: %v, want not found", err)
	}
	long := filepath.Join(dir, "long")
	if err := os.WriteFile(long, []byte(strings.Repeat("1", 100)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readUint(long); err == nil {
		t.Fatal("readUint took a 100-digit number")
	}
}
