package client

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not reported exited after 10 s", what)
	}
}

func assertReaped(t *testing.T, pid int) {
	t.Helper()
	var ws unix.WaitStatus
	if pid <= 0 {
		t.Fatalf("pid %d", pid)
	}
	if _, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); !errors.Is(err, unix.ECHILD) {
		t.Errorf("pid %d: wait4 after the exit was reported = %v, want ECHILD (reaped)", pid, err)
	}
}

func TestReapWhenExited(t *testing.T) {
	cmd := exec.Command("sleep", "0.1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	waitClosed(t, reapWhenExited(cmd), "sleep 0.1")
	assertReaped(t, pid)

	// Killed, and already a zombie when watched.
	cmd = exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid = cmd.Process.Pid
	_ = cmd.Process.Kill()
	time.Sleep(50 * time.Millisecond)
	waitClosed(t, reapWhenExited(cmd), "killed sleep")
	assertReaped(t, pid)
}

// A running child must not cost berthd a thread: one per shim was 418
// threads on a 250-pod node.
func TestReapHoldsNoThread(t *testing.T) {
	const n = 64
	before := threads(t)
	cmds := make([]*exec.Cmd, n)
	pids := make([]int, n)
	chans := make([]<-chan struct{}, n)
	for i := range cmds {
		cmds[i] = exec.Command("sleep", "30")
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
		pids[i] = cmds[i].Process.Pid
		t.Cleanup(func() {
			select {
			case <-chans[i]: // reaped: the pid may belong to another process now
			default:
				_ = unix.Kill(pids[i], unix.SIGKILL)
			}
		})
		chans[i] = reapWhenExited(cmds[i])
	}
	time.Sleep(200 * time.Millisecond)
	if grown := threads(t) - before; grown >= n/2 {
		t.Errorf("watching %d running children took %d more threads, want far fewer than one each", n, grown)
	}
	for i, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
		waitClosed(t, chans[i], "killed child")
		assertReaped(t, pid)
	}
}
