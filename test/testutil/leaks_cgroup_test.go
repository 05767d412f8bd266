package testutil

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// On cgroup v2 the mount is the one hierarchy: a cgroup left below the
// parent must be found there, not looked for below system.slice & co.
func TestCgroupsBelowUnified(t *testing.T) {
	mnt := t.TempDir()
	if err := os.WriteFile(filepath.Join(mnt, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, mnt, "system.slice/berth.service", "init.scope", "berth-e2e/pod1/ctr1")
	if got, want := cgroupRootsAt(mnt), []string{mnt}; !reflect.DeepEqual(got, want) {
		t.Fatalf("roots = %v, want %v", got, want)
	}
	got := cgroupsBelowIn(cgroupRootsAt(mnt), "/berth-e2e")
	want := []string{filepath.Join(mnt, "berth-e2e/pod1/ctr1"), filepath.Join(mnt, "berth-e2e/pod1")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("leaked cgroups = %v, want %v", got, want)
	}
}

// On cgroup v1 each controller is its own hierarchy; a joined mount
// (cpu,cpuacct with cpu and cpuacct symlinks to it) counts once.
func TestCgroupsBelowV1(t *testing.T) {
	mnt := t.TempDir()
	mkdirs(t, mnt, "memory/berth-e2e/ctr1", "cpu,cpuacct/berth-e2e/ctr1", "memory/system.slice")
	for _, l := range []string{"cpu", "cpuacct"} {
		if err := os.Symlink("cpu,cpuacct", filepath.Join(mnt, l)); err != nil {
			t.Fatal(err)
		}
	}
	roots := cgroupRootsAt(mnt)
	if len(roots) != 2 {
		t.Fatalf("roots = %v, want the memory and cpu,cpuacct hierarchies", roots)
	}
	got := cgroupsBelowIn(roots, "/berth-e2e")
	if len(got) != 2 {
		t.Fatalf("leaked cgroups = %v, want ctr1 in both hierarchies", got)
	}
}
