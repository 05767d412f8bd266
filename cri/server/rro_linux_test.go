package server

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The probe behind each handler's recursive_read_only_mounts answers yes
// on a kernel that has mount_setattr (this one, if >= 5.12), and leaves
// the directory it tried on writable and the mount table as it was.
func TestRROSupported(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("open_tree(OPEN_TREE_CLONE) needs CAP_SYS_ADMIN")
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &major, &minor); err != nil {
		t.Fatalf("kernel release: %v", err)
	}
	dir := t.TempDir()
	before, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	err = rroSupported(dir)
	if major > 5 || major == 5 && minor >= 12 {
		if err != nil {
			t.Errorf("rroSupported on Linux %d.%d: %v", major, minor, err)
		}
	} else if err == nil {
		t.Errorf("rroSupported on Linux %d.%d says yes", major, minor)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
		t.Errorf("the probed dir is no longer writable: %v", err)
	}
	if after, _ := os.ReadFile("/proc/self/mountinfo"); string(after) != string(before) {
		t.Errorf("the probe changed the mount table")
	}
	if err := rroSupported(filepath.Join(dir, "missing")); err == nil {
		t.Error("rroSupported of a missing dir says yes")
	}
}
