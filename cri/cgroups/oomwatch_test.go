package cgroups

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeEvents(t *testing.T, dir string, kills int) {
	t.Helper()
	data := []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill " + string(rune('0'+kills)) + "\noom_group_kill 0\n")
	// Rewrite in place (no rename), as the kernel changes a cgroup file.
	f, err := os.OpenFile(filepath.Join(dir, "memory.events"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A scope that systemd removes right after its OOM-killed process died
// must still read as OOM-killed: the watcher kept the count it saw.
func TestOOMWatcherKeepsCountOfRemovedCgroup(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("memory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const path = "/pod.slice/berth-c1.scope"
	dir := filepath.Join(root, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeEvents(t, dir, 0)
	w, err := New(root).NewOOMWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(path); err != nil {
		t.Fatal(err)
	}
	if n, ok := w.Kills(path); !ok || n != 0 {
		t.Fatalf("Kills after Add = %d, %v; want 0, true", n, ok)
	}
	writeEvents(t, dir, 1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, _ := w.Kills(path); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher never saw oom_kill 1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.RemoveAll(filepath.Join(root, "pod.slice")); err != nil {
		t.Fatal(err)
	}
	if _, err := New(root).OOMKills(path); !IsGone(err) {
		t.Fatalf("OOMKills of the removed cgroup: %v, want not found", err)
	}
	time.Sleep(50 * time.Millisecond) // let the IN_IGNORED event arrive
	if n, ok := w.Kills(path); !ok || n != 1 {
		t.Fatalf("Kills after removal = %d, %v; want 1, true", n, ok)
	}
	w.Remove(path)
	if _, ok := w.Kills(path); ok {
		t.Fatal("Kills after Remove still answers")
	}
}

// On v1 the watcher knows nothing; the counter is read at exit.
func TestOOMWatcherV1KnowsNothing(t *testing.T) {
	w, err := NewVersion(t.TempDir(), false).NewOOMWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add("/x"); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.Kills("/x"); ok {
		t.Fatal("v1 watcher reported a count")
	}
}
