package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func ptr[T any](v T) *T { return &v }

// Control files as a fresh cgroup has them, so writes land in existing files.
var v1Control = map[string]string{
	"cpu/pod/cpu.shares":                     "1024\n",
	"cpu/pod/cpu.cfs_quota_us":               "-1\n",
	"cpu/pod/cpu.cfs_period_us":              "100000\n",
	"cpuset/pod/cpuset.cpus":                 "0-3\n",
	"cpuset/pod/cpuset.mems":                 "0\n",
	"memory/pod/memory.limit_in_bytes":       "9223372036854771712\n",
	"memory/pod/memory.memsw.limit_in_bytes": "9223372036854771712\n",
	"hugetlb/pod/hugetlb.2MB.limit_in_bytes": "9223372036854771712\n",
}

var v2Control = map[string]string{
	"pod/cpu.weight":      "100\n",
	"pod/cpu.max":         "max 100000\n",
	"pod/cpuset.cpus":     "\n",
	"pod/cpuset.mems":     "\n",
	"pod/memory.max":      "max\n",
	"pod/memory.swap.max": "max\n",
	"pod/memory.high":     "max\n",
	"pod/hugetlb.2MB.max": "max\n",
}

func TestUpdateFixtures(t *testing.T) {
	full := &specs.LinuxResources{
		CPU:            &specs.LinuxCPU{Shares: ptr(uint64(512)), Quota: ptr(int64(50000)), Period: ptr(uint64(200000)), Cpus: "1", Mems: "0"},
		Memory:         &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Swap: ptr(int64(96 << 20))},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}},
	}
	for _, tc := range []struct {
		name    string
		unified bool
		files   map[string]string
		res     *specs.LinuxResources
		want    map[string]string
		wantErr error
	}{{
		name: "v1 all", files: v1Control, res: full,
		want: map[string]string{
			"cpu/pod/cpu.shares": "512", "cpu/pod/cpu.cfs_quota_us": "50000", "cpu/pod/cpu.cfs_period_us": "200000",
			"cpuset/pod/cpuset.cpus": "1", "cpuset/pod/cpuset.mems": "0",
			"memory/pod/memory.limit_in_bytes": "67108864", "memory/pod/memory.memsw.limit_in_bytes": "100663296",
			"hugetlb/pod/hugetlb.2MB.limit_in_bytes": "4194304",
		},
	}, {
		name: "v1 unset fields untouched", files: v1Control,
		res:  &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(int64(20000))}},
		want: map[string]string{"cpu/pod/cpu.cfs_quota_us": "20000", "cpu/pod/cpu.shares": "1024\n", "cpu/pod/cpu.cfs_period_us": "100000\n", "memory/pod/memory.limit_in_bytes": "9223372036854771712\n"},
	}, {
		name: "v1 refuses unified", files: v1Control,
		res:     &specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}},
		wantErr: errdefs.ErrInvalidArgument,
	}, {
		name: "v2 all", unified: true, files: v2Control, res: full,
		want: map[string]string{
			"pod/cpu.weight": "20", "pod/cpu.max": "50000 200000", "pod/cpuset.cpus": "1", "pod/cpuset.mems": "0",
			"pod/memory.max": "67108864", "pod/memory.swap.max": "33554432", "pod/hugetlb.2MB.max": "4194304",
		},
	}, {
		name: "v2 period keeps quota", unified: true, files: map[string]string{"pod/memory.max": "max\n", "pod/cpu.max": "30000 100000\n"},
		res:  &specs.LinuxResources{CPU: &specs.LinuxCPU{Period: ptr(uint64(50000))}},
		want: map[string]string{"pod/cpu.max": "30000 50000"},
	}, {
		name: "v2 unlimited memory and unified", unified: true, files: v2Control,
		res:  &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(-1))}, Unified: map[string]string{"memory.high": "1000000"}},
		want: map[string]string{"pod/memory.max": "max", "pod/memory.high": "1000000"},
	}, {
		name: "v2 limit with unlimited swap, shares at the bounds", unified: true, files: v2Control,
		res: &specs.LinuxResources{
			CPU:    &specs.LinuxCPU{Shares: ptr(uint64(1 << 20)), Quota: ptr(int64(-1))},
			Memory: &specs.LinuxMemory{Limit: ptr(int64(64 << 20)), Swap: ptr(int64(-1))},
		},
		want: map[string]string{"pod/cpu.weight": "10000", "pod/cpu.max": "max 100000", "pod/memory.max": "67108864", "pod/memory.swap.max": "max"},
	}, {
		name: "v2 unlimited limit, finite memory+swap", unified: true, files: v2Control,
		res:  &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(-1)), Swap: ptr(int64(1 << 30))}},
		want: map[string]string{"pod/memory.max": "max", "pod/memory.swap.max": "1073741824"},
	}, {
		name: "v2 unset fields untouched", unified: true, files: v2Control,
		res:  &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0"}, Memory: &specs.LinuxMemory{}},
		want: map[string]string{"pod/cpuset.cpus": "0", "pod/cpu.weight": "100\n", "pod/cpu.max": "max 100000\n", "pod/memory.max": "max\n", "pod/memory.swap.max": "max\n"},
	}, {
		name: "v2 missing cgroup", unified: true, files: map[string]string{"other/memory.max": "max\n"}, res: full,
		wantErr: errdefs.ErrNotFound,
	}, {
		name: "v2 unified key escaping the cgroup", unified: true, files: v2Control,
		res:     &specs.LinuxResources{Unified: map[string]string{"../memory.max": "1"}},
		wantErr: errdefs.ErrInvalidArgument,
	}, {
		name: "missing cgroup", files: map[string]string{"memory/other/memory.limit_in_bytes": "1\n"}, res: full,
		wantErr: errdefs.ErrNotFound,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			root := writeTree(t, tc.files)
			err := NewVersion(root, tc.unified).Update("/pod", tc.res)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Update: %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			for rel, want := range tc.want {
				got, err := os.ReadFile(filepath.Join(root, rel))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q (%v), want %q", rel, got, err, want)
				}
			}
		})
	}
}

func TestSharesToWeight(t *testing.T) {
	for shares, want := range map[uint64]uint64{0: 0, 1: 1, 2: 1, 1024: 39, 262144: 10000, 1 << 20: 10000} {
		if got := SharesToWeight(shares); got != want {
			t.Errorf("SharesToWeight(%d) = %d, want %d", shares, got, want)
		}
	}
}

// TestUpdateLive writes limits to a real cgroup of the host's hierarchy and
// reads back what the kernel took, including a quota lowered under a
// child's (which the kernel refuses) and memory+swap ordering.
func TestUpdateLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	m := New("")
	if m.Unified() {
		t.Skip("live write test covers the v1 host layout; v2 is fixture-tested")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	path := "/berth-cgw-" + hex.EncodeToString(b)
	var made []string
	for _, c := range []string{"cpu", "memory"} {
		d := m.dir(c, path)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("make test cgroup: %v", err)
		}
		made = append(made, d)
	}
	t.Cleanup(func() {
		for _, d := range made {
			_ = os.Remove(filepath.Join(d, "child"))
			if err := os.Remove(d); err != nil {
				t.Errorf("remove test cgroup: %v", err)
			}
		}
	})
	res := &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Shares: ptr(uint64(256)), Quota: ptr(int64(150000)), Period: ptr(uint64(100000))},
		Memory: &specs.LinuxMemory{Limit: ptr(int64(32 << 20))},
	}
	if _, err := os.Stat(filepath.Join(m.dir("memory", "/"), "memory.memsw.limit_in_bytes")); err == nil {
		res.Memory.Swap = ptr(int64(48 << 20))
	}
	if err := m.Update(path, res); err != nil {
		t.Fatalf("Update: %v", err)
	}
	read := func(c, f string) string {
		data, err := os.ReadFile(filepath.Join(m.dir(c, path), f))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(data))
	}
	want := map[[2]string]string{
		{"cpu", "cpu.shares"}: "256", {"cpu", "cpu.cfs_quota_us"}: "150000", {"cpu", "cpu.cfs_period_us"}: "100000",
		{"memory", "memory.limit_in_bytes"}: "33554432",
	}
	if res.Memory.Swap != nil {
		want[[2]string{"memory", "memory.memsw.limit_in_bytes"}] = "50331648"
	}
	for k, v := range want {
		if got := read(k[0], k[1]); got != v {
			t.Errorf("%s/%s = %s, want %s", k[0], k[1], got, v)
		}
	}
	// Shrinking memory below memsw needs limit first; growing past it
	// needs memsw first: both orders must work.
	grow := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(128 << 20)), Swap: res.Memory.Swap}}
	if res.Memory.Swap != nil {
		grow.Memory.Swap = ptr(int64(160 << 20))
	}
	if err := m.Update(path, grow); err != nil {
		t.Fatalf("grow memory: %v", err)
	}
	if got := read("memory", "memory.limit_in_bytes"); got != "134217728" {
		t.Errorf("memory limit after growing = %s", got)
	}
	// A child with a bigger quota than its parent may get: the kernel
	// refuses the parent's new value, reported as invalid argument.
	child := filepath.Join(m.dir("cpu", path), "child")
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(child, "cpu.cfs_quota_us", "150000"); err != nil {
		t.Fatalf("child quota: %v", err)
	}
	err := m.Update(path, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr(int64(50000))}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("quota below a child's: %v, want invalid argument", err)
	}
}

// TestUpdateLiveUnified writes through cgroups/v3 to a real cgroup of the
// unified hierarchy (a v2 host's, or a hybrid host's, where it holds no
// controller): a controller's file that is not there is a precondition
// failure whether cgroups/v3 (O_CREAT: EACCES) or berth (ENOENT) opened
// it, a core file takes a unified key, and a value the kernel refuses is
// an invalid argument.
func TestUpdateLiveUnified(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root := DefaultRoot
	if !New("").Unified() {
		root = filepath.Join(DefaultRoot, "unified")
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
		t.Skip("no unified hierarchy mounted")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	path := "/berth-cgw-" + hex.EncodeToString(b)
	dir := filepath.Join(root, path)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("make test cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	m := NewVersion(root, true)
	if err := m.Update(path, &specs.LinuxResources{Unified: map[string]string{"cgroup.max.depth": "3"}}); err != nil {
		t.Fatalf("unified core file: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "cgroup.max.depth")); strings.TrimSpace(string(got)) != "3" {
		t.Errorf("cgroup.max.depth = %q, want 3", got)
	}
	err := m.Update(path, &specs.LinuxResources{Unified: map[string]string{"cgroup.max.depth": "-5"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("refused value: %v, want invalid argument", err)
	}
	ctrls, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	for _, c := range []struct {
		controller string
		res        *specs.LinuxResources
	}{
		{"hugetlb", &specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}}}},
		{"memory", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(int64(-1))}}},
	} {
		if strings.Contains(string(ctrls), c.controller) {
			continue
		}
		if err := m.Update(path, c.res); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("%s controller off: %v, want failed precondition", c.controller, err)
		}
	}
}
