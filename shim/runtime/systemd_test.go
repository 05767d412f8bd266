package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSystemdCgroupsPath(t *testing.T) {
	for spec, want := range map[string]bool{
		`{"linux": {"cgroupsPath": "kubepods-besteffort-pod1.slice:berth:abc"}}`: true,
		`{"linux": {"cgroupsPath": "/berth/abc"}}`:                               false,
		`{"linux": {}}`: false,
		`{}`:            false,
		`not json`:      false,
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := SystemdCgroupsPath(dir); got != want {
			t.Errorf("SystemdCgroupsPath(%s) = %v, want %v", spec, got, want)
		}
	}
	if SystemdCgroupsPath(t.TempDir()) {
		t.Error("a bundle without config.json reads as systemd")
	}
}

// --systemd-cgroup is a global flag: it goes before the subcommand.
func TestSystemdCgroupFlag(t *testing.T) {
	r := &Runtime{Binary: "runc", Root: "/run/x", SystemdCgroup: true}
	got := r.command("update", "--resources", "-", "id").Args
	want := []string{"runc", "--root", "/run/x", "--systemd-cgroup", "update", "--resources", "-", "id"}
	if !slices.Equal(got, want) {
		t.Errorf("args = %q, want %q", got, want)
	}
	r.SystemdCgroup = false
	if slices.Contains(r.command("delete", "id").Args, "--systemd-cgroup") {
		t.Error("cgroupfs runtime passes --systemd-cgroup")
	}
}
