package store

import (
	"maps"
	"path/filepath"
	"testing"
)

func TestCounts(t *testing.T) {
	s, err := Open(openDB(t, filepath.Join(t.TempDir(), "meta.db")))
	if err != nil {
		t.Fatal(err)
	}
	sbs, ctrs := s.Counts()
	if want := map[string]int{"READY": 0, "NOTREADY": 0}; !maps.Equal(sbs, want) {
		t.Errorf("empty store sandboxes = %v, want %v", sbs, want)
	}
	if want := map[string]int{"CREATED": 0, "RUNNING": 0, "EXITED": 0, "UNKNOWN": 0}; !maps.Equal(ctrs, want) {
		t.Errorf("empty store containers = %v, want %v", ctrs, want)
	}
	for _, sb := range []Sandbox{
		{SandboxMeta: SandboxMeta{ID: "s1", Name: "p1"}, Status: SandboxStatus{State: SandboxReady}},
		{SandboxMeta: SandboxMeta{ID: "s2", Name: "p2"}, Status: SandboxStatus{State: SandboxReady}},
		{SandboxMeta: SandboxMeta{ID: "s3", Name: "p3"}, Status: SandboxStatus{State: SandboxNotReady}},
	} {
		if err := s.AddSandbox(sb); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []Container{
		{ContainerMeta: ContainerMeta{ID: "c1", SandboxID: "s1", Name: "c1"}, Status: ContainerStatus{State: ContainerRunning}},
		{ContainerMeta: ContainerMeta{ID: "c2", SandboxID: "s1", Name: "c2"}, Status: ContainerStatus{State: ContainerExited}},
		{ContainerMeta: ContainerMeta{ID: "c3", SandboxID: "s2", Name: "c3"}, Status: ContainerStatus{State: ContainerRunning}},
	} {
		if err := s.AddContainer(c); err != nil {
			t.Fatal(err)
		}
	}
	sbs, ctrs = s.Counts()
	if want := map[string]int{"READY": 2, "NOTREADY": 1}; !maps.Equal(sbs, want) {
		t.Errorf("sandboxes = %v, want %v", sbs, want)
	}
	if want := map[string]int{"CREATED": 0, "RUNNING": 2, "EXITED": 1, "UNKNOWN": 0}; !maps.Equal(ctrs, want) {
		t.Errorf("containers = %v, want %v", ctrs, want)
	}
}
