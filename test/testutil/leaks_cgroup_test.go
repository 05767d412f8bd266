package testutil

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
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

// On the machine's own cgroup mount (v1 or v2, whichever it runs): a
// cgroup left below a parent is found in every hierarchy. The node VM
// runs this on cgroup v2 as the leak check's positive control
// (test/nodevm/guest.sh, part leakcheck).
func TestCgroupsBelowLive(t *testing.T) {
	RequiresRoot(t)
	parent := "/berth-leakprobe-" + strconv.Itoa(os.Getpid())
	roots := cgroupRoots()
	var made []string
	t.Cleanup(func() {
		for i := len(made) - 1; i >= 0; i-- {
			_ = os.Remove(made[i])
		}
	})
	for _, r := range roots {
		top := filepath.Join(r, parent)
		if err := os.Mkdir(top, 0o755); err != nil {
			t.Logf("hierarchy %s: %v (skipped)", r, err)
			continue
		}
		made = append(made, top)
		if err := os.Mkdir(filepath.Join(top, "leaked"), 0o755); err != nil {
			t.Fatal(err)
		}
		made = append(made, filepath.Join(top, "leaked"))
	}
	if len(made) == 0 {
		t.Skip("no cgroup hierarchy is writable here")
	}
	got := cgroupsBelow(parent)
	t.Logf("roots %v: leaked %v", roots, got)
	if len(got) != len(made)/2 {
		t.Fatalf("cgroupsBelow(%q) = %v, want the %d leaked cgroups made", parent, got, len(made)/2)
	}
	for _, p := range got {
		if filepath.Base(p) != "leaked" {
			t.Errorf("unexpected cgroup %s", p)
		}
	}
}
