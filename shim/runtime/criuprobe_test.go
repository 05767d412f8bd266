package runtime

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-runtime/berth/shim/api"
)

// alive reports whether pid still runs a moment after it was killed (a
// SIGKILL is delivered asynchronously; a zombie counts as gone: it holds
// nothing).
func alive(pid int) bool {
	for range 50 {
		if !running(pid) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func running(pid int) bool {
	st, err := api.ReadProcStat(pid)
	return err == nil && !st.Gone()
}

// pidsIn reads the pids a stand-in wrote, one a line.
func pidsIn(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, l := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(l)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// hangingCRIU writes a CRIU stand-in that records its pid and a child's,
// then hangs: what CRIU 4.1.1 does in every dump on kernel 6.18.
func hangingCRIU(t *testing.T) (path, pids string) {
	t.Helper()
	dir := t.TempDir()
	path, pids = filepath.Join(dir, "criu"), filepath.Join(dir, "pids")
	script := "#!/bin/sh\necho $$ >> " + pids + "\nsleep 600 &\necho $! >> " + pids + "\nwait\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, pids
}

func TestRunGroupKillsTheGroup(t *testing.T) {
	criu, pids := hangingCRIU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := runGroup(ctx, exec.Command(criu, "swrk", "3"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RunGroup = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("RunGroup returned after %s", el)
	}
	for _, pid := range pidsIn(t, pids) {
		if alive(pid) {
			t.Errorf("pid %d of the killed group still runs", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func TestRunGroupReportsFailure(t *testing.T) {
	err := runGroup(context.Background(), exec.Command("/bin/sh", "-c", "echo Error: no such thing >&2; exit 3"))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(err.Error(), "no such thing") {
		t.Errorf("RunGroup = %v, want exit status 3 with its output", err)
	}
}

func TestProbeCRIUNeedsDeadline(t *testing.T) {
	if err := ProbeCRIU(context.Background(), "/bin/true", t.TempDir()); err == nil {
		t.Error("ProbeCRIU without a deadline succeeded")
	}
}

// TestProbeCRIUHangs: a CRIU that hangs fails the probe within its bound,
// and neither it nor the probe's own process is left behind.
func TestProbeCRIUHangs(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the probe's process gets a PID namespace of its own: needs root")
	}
	criu, pids := hangingCRIU(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err := ProbeCRIU(ctx, criu, dir)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), criu) {
		t.Fatalf("ProbeCRIU = %v, want DeadlineExceeded naming %s", err, criu)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("ProbeCRIU returned after %s", el)
	}
	for _, pid := range pidsIn(t, pids) {
		if alive(pid) {
			t.Errorf("stand-in pid %d still runs", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if e, _ := os.ReadDir(dir); len(e) > 0 {
		t.Errorf("probe left %v in its scratch dir", e)
	}
}

// TestProbeCRIUFails: a CRIU that refuses fails the probe with its words.
func TestProbeCRIUFails(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the probe's process gets a PID namespace of its own: needs root")
	}
	criu := filepath.Join(t.TempDir(), "criu")
	if err := os.WriteFile(criu, []byte("#!/bin/sh\necho 'Error (criu/cr-dump.c:1): dump not supported' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := ProbeCRIU(ctx, criu, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "dump not supported") {
		t.Errorf("ProbeCRIU = %v, want the stand-in's error", err)
	}
}

// installedCRIU is the CRIU `make criu` installs; the test is skipped
// without it or without root.
func installedCRIU(t *testing.T) string {
	t.Helper()
	const criu = "/usr/local/sbin/criu"
	if os.Getuid() != 0 {
		t.Skip("CRIU needs root")
	}
	if _, err := os.Stat(criu); err != nil {
		t.Skipf("no CRIU installed by make criu: %v", err)
	}
	return criu
}

// TestProbeCRIU runs the probe against the CRIU `make criu` installs.
func TestProbeCRIU(t *testing.T) {
	criu := installedCRIU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := ProbeCRIU(ctx, criu, t.TempDir()); err != nil {
		t.Fatalf("ProbeCRIU(%s): %v", criu, err)
	}
}

// TestProbeCRIUOutlivesItsThread: the probe's processes die with their
// parent (Pdeathsig), and the kernel means the forking thread, not the
// process. A Go thread ends when a goroutine exits locked to it, as
// berthd's network-namespace code lets a thread it could not restore end:
// the probe must hold the thread it forks from while its processes run.
// Before it did, berthd's probe failed twice in a row while 250 pods
// started ("Unable to detach from <pid>: No such process").
func TestProbeCRIUOutlivesItsThread(t *testing.T) {
	criu := installedCRIU(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ended := make(chan struct{})
				go func() {
					goruntime.LockOSThread()
					close(ended)
				}()
				<-ended
			}
		})
	}
	// Its processes, killed, leave the probe waiting for a count.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := ProbeCRIU(ctx, criu, t.TempDir())
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("ProbeCRIU(%s) while threads end: %v", criu, err)
	}
}

// TestProbeKillsStaleCRIU: a criu left running by a caller killed
// mid-probe is killed when the next caller clears the directory.
func TestProbeKillsStaleCRIU(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "criu-probe-123", "images")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	// A process whose command line names the stale scratch dir, as a
	// hung `criu dump --images-dir` does.
	leftover := exec.Command("/bin/sh", "-c", "sleep 600", "criu", "--images-dir", stale)
	if err := leftover.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- leftover.Wait() }()
	ClearStaleProbes(dir)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = leftover.Process.Kill()
		t.Fatal("the stale criu survived ClearStaleProbes")
	}
	if _, err := os.Stat(filepath.Dir(stale)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale scratch dir left: %v", err)
	}
}
