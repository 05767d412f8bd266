package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/sandbox/netns"
	"github.com/berth-runtime/berth/shim/api"
)

func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "berth-pause")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// childrenOf lists pid -> state of every process whose parent is ppid.
func childrenOf(t *testing.T, ppid int) map[int]string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := api.ReadProcStat(pid); err == nil && st.PPid == ppid {
			out[pid] = string(st.State)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRejectsArguments(t *testing.T) {
	err := exec.Command(buildPause(t), "--netns", "/x").Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("run with args: %v, want exit 2", err)
	}
}

// berth-pause as PID 1 of a new PID namespace must reap an orphan that is
// reparented to it, and exit 0 on SIGTERM.
func TestReapsOrphansAndExitsOnSIGTERM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox")
	}
	pause := exec.Command(buildPause(t))
	pause.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	if err := pause.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pause.Wait() }()
	t.Cleanup(func() {
		_ = pause.Process.Kill()
		<-exited
	})
	ppid := pause.Process.Pid

	// sh runs inside the pause's PID namespace, backgrounds a sleep and
	// exits: the sleep is orphaned and reparented to the namespace's init.
	sh := exec.Command("/bin/busybox", "sh", "-c", "/bin/busybox sleep 0.5 & exit 0")
	err := netns.OnDisposableThread(func() error {
		fd, err := unix.Open("/proc/"+strconv.Itoa(ppid)+"/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWPID); err != nil {
			return err
		}
		return sh.Start()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Wait(); err != nil {
		t.Fatal(err)
	}
	orphans := childrenOf(t, ppid)
	if len(orphans) != 1 {
		t.Fatalf("children of pause after sh exited = %v, want the orphaned sleep", orphans)
	}
	// A zombie would stay listed as a child with state Z.
	waitFor(t, "orphan to be reaped", func() bool { return len(childrenOf(t, ppid)) == 0 })

	if err := pause.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for cleanup
		if err != nil {
			t.Errorf("pause exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pause did not exit on SIGTERM")
	}
}
