package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPodNamed(t *testing.T) {
	owner := map[string]int{"aaaa": 1, "bbbb": 2}
	tests := []struct {
		cmdline string
		want    int
		ok      bool
	}{
		{"/bin/berth-shim serve --id bbbb --socket /tmp/bb1/berth/run/s/bbbb.sock", 2, true},
		{"/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id aaaa -address /tmp/bb1/containerd/c.sock", 1, true},
		{"/usr/bin/containerd-shim-runc-v2 -id aaaab", 0, false},
		{"/pause", 0, false},
	}
	for _, tt := range tests {
		got, ok := podNamed(tt.cmdline, owner)
		if got != tt.want || ok != tt.ok {
			t.Errorf("podNamed(%q) = %d, %v; want %d, %v", tt.cmdline, got, ok, tt.want, tt.ok)
		}
	}
}

func TestNamesPathUnder(t *testing.T) {
	cmd := "/usr/bin/containerd-shim-runc-v2 -id x -address /tmp/bb1/containerd2/c.sock"
	if namesPathUnder(cmd, "/tmp/bb1/containerd") {
		t.Errorf("containerd2's shim counted as containerd's")
	}
	if !namesPathUnder(cmd, "/tmp/bb1/containerd2") {
		t.Errorf("containerd2's shim not found")
	}
}

func TestParseStraceCounts(t *testing.T) {
	summary := `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 90.00    0.009000          45       200           fsync
 10.00    0.001000          10        12         3 fdatasync
------ ----------- ----------- --------- --------- ----------------
100.00    0.010000          47       212         3 total
`
	path := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(path, []byte(summary), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := parseStraceCounts(path)
	if err != nil || n != 212 {
		t.Errorf("parseStraceCounts = %d, %v; want 212", n, err)
	}
}

func TestCPUTicksOfSelf(t *testing.T) {
	x := 0
	for i := range 200_000_000 {
		x += i
	}
	if cpuTicks([]int{os.Getpid()}) <= 0 || x == 0 {
		t.Errorf("cpuTicks(self) = %d after a busy loop", cpuTicks([]int{os.Getpid()}))
	}
}
