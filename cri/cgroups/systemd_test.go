package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

func TestSystemdSlice(t *testing.T) {
	for _, tc := range []struct {
		parent, want string
		err          error
	}{
		{parent: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice", want: "kubepods-besteffort-pod1a2b.slice"},
		{parent: "kubepods-burstable.slice", want: "kubepods-burstable.slice"},
		{parent: "system.slice", want: "system.slice"},
		{parent: "/berth", want: "berth.slice"},
		{parent: "/kubepods/burstable/pod-1", want: "kubepods-burstable-pod_1.slice"},
		{parent: "/", want: "-.slice"},
		{parent: "berth", err: errdefs.ErrInvalidArgument},
		{parent: "a:b:c.slice", err: errdefs.ErrInvalidArgument},
		{parent: "", err: errdefs.ErrInvalidArgument},
	} {
		got, err := SystemdSlice(tc.parent)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("SystemdSlice(%q) = %q, %v; want %v", tc.parent, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("SystemdSlice(%q) = %q, %v; want %q", tc.parent, got, err, tc.want)
		}
	}
}

// The systemd cgroupsPath of a container reads back, through Path, as the
// cgroupfs directory systemd makes for the scope, so stats and OOM
// counters find it.
func TestSystemdCgroupsPathRoundTrip(t *testing.T) {
	for parent, want := range map[string]string{
		"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/berth-abc.scope",
		"/berth": "/berth.slice/berth-abc.scope",
	} {
		p, err := SystemdCgroupsPath(parent, "abc")
		if err != nil {
			t.Fatalf("SystemdCgroupsPath(%q): %v", parent, err)
		}
		if got := Path(p); got != want {
			t.Errorf("Path(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestSystemdBooted(t *testing.T) {
	dir := t.TempDir()
	if systemdBootedAt(filepath.Join(dir, "system")) {
		t.Error("booted without the directory")
	}
	if err := os.Mkdir(filepath.Join(dir, "system"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !systemdBootedAt(filepath.Join(dir, "system")) {
		t.Error("not booted with the directory")
	}
}

func TestSystemdSlicePath(t *testing.T) {
	for _, tc := range []struct{ parent, want string }{
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"},
		{"kubepods-burstable-pod2.slice", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2.slice"},
		{"/berth", "/berth.slice"},
		{"/", "/"},
	} {
		got, err := SystemdSlicePath(tc.parent)
		if err != nil || got != tc.want {
			t.Errorf("SystemdSlicePath(%q) = %q, %v; want %q", tc.parent, got, err, tc.want)
		}
	}
	if _, err := SystemdSlicePath("a:b:c"); err == nil {
		t.Error("SystemdSlicePath of a runc cgroupsPath: no error")
	}
}
