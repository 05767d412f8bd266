package runtime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// probeCounter is the throwaway process ProbeCRIU dumps and restores: it
// rewrites its count every 20 ms, so a restored copy shows that it goes on
// from the dumped state.
const probeCounter = `i=0; while :; do i=$((i+1)); echo $i > count; sleep 0.02; done`

// ProbeCRIU proves that criu can checkpoint and restore on this kernel by
// doing it: a throwaway shell that counts is dumped, restored and must go
// on counting. A version string or `criu check` proves nothing: CRIU 4.1.1
// passes `criu check` on 6.18 and then hangs in every dump. Every criu run
// is bounded by ctx; on expiry its whole process group is killed, so a
// hanging CRIU leaves no criu process and no traced task behind. dir holds its
// scratch directory, removed afterwards; what a probe killed with its
// caller left there is the caller's to clear (ClearStaleProbes).
func ProbeCRIU(ctx context.Context, criu, dir string) (retErr error) {
	if _, ok := ctx.Deadline(); !ok {
		return fmt.Errorf("probe criu: a deadline is required: %w", errdefs.ErrInvalidArgument)
	}
	// The counter and each criu die with their parent (Pdeathsig), which
	// the kernel takes to be the thread that forked them, and a Go thread
	// ends when a goroutine exits locked to it: berthd ends one for every
	// pod it creates (netns.OnDisposableThread). Every fork below is made
	// from this goroutine, so holding its thread keeps them alive until
	// the probe ends them (TestProbeCRIUOutlivesItsThread).
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("probe criu: %w", err)
	}
	work, err := os.MkdirTemp(dir, probeDirPattern)
	if err != nil {
		return fmt.Errorf("probe criu: %w", err)
	}
	// Retried: a restored copy killed through its parent's death signal
	// may still write its count for a moment.
	defer removeAllRetry(work)
	images := filepath.Join(work, "images")
	if err := os.Mkdir(images, 0o700); err != nil {
		return fmt.Errorf("probe criu: %w", err)
	}

	sh := exec.Command("/bin/sh", "-c", probeCounter)
	sh.Dir = work
	// Its own session: CRIU dumps a tree whose session leader is inside it
	// without --shell-job. Its own PID namespace, as a container's init:
	// the sleep it forks dies and is reaped with it when the dump ends
	// the tree, instead of lingering as init's zombie and holding the pid
	// the restore needs (this machine's init reaps orphans late).
	// Pdeathsig: a caller killed mid-probe leaves no counter running;
	// CRIU keeps it in the restored copy.
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	if err := sh.Start(); err != nil {
		return fmt.Errorf("probe criu: start the probe process: %w", err)
	}
	reaped := false
	defer func() {
		if !reaped {
			_ = sh.Process.Kill()
			_ = sh.Wait()
		}
	}()
	before, err := waitCount(ctx, work, 0)
	if err != nil {
		return fmt.Errorf("probe criu: the probe process never counted: %w", err)
	}
	dump := exec.Command(criu, "dump", "--tree", strconv.Itoa(sh.Process.Pid),
		"--images-dir", images, "--log-file", "dump.log", "-v4")
	if err := runGroup(ctx, dump); err != nil {
		return fmt.Errorf("probe criu: %s dump: %w", criu, withLog(err, filepath.Join(images, "dump.log")))
	}
	// The dump ended the process; reap it so its pid is free to restore.
	_ = sh.Wait()
	reaped = true
	// The dump may have caught the shell between truncating and writing
	// its count: then the last count seen before is what it had reached.
	dumped, err := readCount(work)
	if err != nil {
		dumped = before
	}
	if dumped < before {
		return fmt.Errorf("probe criu: count went back from %d to %d before the dump", before, dumped)
	}

	// Without --restore-detached criu stays the restored tree's parent and
	// exits when it does: nothing is left for init to reap.
	pidFile := filepath.Join(work, "restored.pid")
	restore := exec.Command(criu, "restore", "--images-dir", images, "--log-file", "restore.log",
		"-v4", "--pidfile", pidFile)
	restore.Dir = work
	done := make(chan error, 1)
	if err := startGroup(restore); err != nil {
		return fmt.Errorf("probe criu: %s restore: %w", criu, err)
	}
	go func() { done <- restore.Wait() }()
	defer func() {
		// The restored counter runs until the probe ends it; killing the
		// group ends criu and, with it, its restored child.
		if pid, err := readPid(pidFile); err == nil {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		killGroup(restore, done)
	}()
	after, err := waitCount(ctx, work, dumped)
	if err != nil {
		select {
		case werr := <-done:
			done <- werr
			err = fmt.Errorf("criu exited: %v", werr)
		default:
		}
		return fmt.Errorf("probe criu: %s restore: the restored process does not go on counting from %d: %w",
			criu, dumped, withLog(err, filepath.Join(images, "restore.log")))
	}
	if after <= dumped {
		return fmt.Errorf("probe criu: restored count %d does not follow %d", after, dumped)
	}
	return nil
}

// ClearStaleProbes removes what probes killed with their caller left in
// dir: their scratch directories and their CRIU processes. CRIU does not
// keep the parent-death signal it was started with, so a criu whose caller
// was SIGKILLed mid-probe runs on, waiting for a tree that is gone.
func ClearStaleProbes(dir string) {
	stale, _ := filepath.Glob(filepath.Join(dir, probeDirPattern))
	if len(stale) == 0 {
		return
	}
	killProbesIn(dir)
	for _, d := range stale {
		_ = os.RemoveAll(d)
	}
}

// killProbesIn kills every process whose command line names a probe
// scratch directory in dir.
func killProbesIn(dir string) {
	mark := []byte(filepath.Join(dir, strings.TrimSuffix(probeDirPattern, "*")))
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, mark) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != os.Getpid() {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func removeAllRetry(dir string) {
	for range 50 {
		if err := os.RemoveAll(dir); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCount waits until the probe's count exceeds min.
func waitCount(ctx context.Context, dir string, min int) (int, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if n, err := readCount(dir); err == nil && n > min {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

func readCount(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "count"))
	if err != nil {
		return 0, fmt.Errorf("read probe count: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("read probe count: %w", err)
	}
	return n, nil
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// probeDirPattern names a probe's scratch directory.
const probeDirPattern = "criu-probe-*"

// startGroup starts cmd as the leader of a new process group, so that
// everything it forks (runc's `criu swrk`, criu's helpers) can be killed
// at once.
func startGroup(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Nor does a caller killed mid-run leave the group's leader running.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd.Start()
}

// killGroup kills cmd's process group and waits (bounded) for cmd, whose
// Wait result arrives on done.
func killGroup(cmd *exec.Cmd, done <-chan error) {
	_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	select {
	case <-done: //nolint:errcheck // only the exit matters here, not how Wait saw it
	case <-time.After(groupKillWait):
	}
}

// groupKillWait bounds the wait for a SIGKILLed group: a process in
// uninterruptible sleep may outlive it, and the caller must not hang.
const groupKillWait = 10 * time.Second

// runGroup runs cmd in its own process group and waits for it; when ctx
// ends first, the whole group is killed and the error wraps ctx's.
func runGroup(ctx context.Context, cmd *exec.Cmd) error {
	var out bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &out
	}
	if err := startGroup(cmd); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil && out.Len() > 0 {
			return fmt.Errorf("%w: %s", err, lastLines(out.String(), 3))
		}
		return err
	case <-ctx.Done():
		killGroup(cmd, done)
		return fmt.Errorf("killed after %s: %w", filepath.Base(cmd.Path), ctx.Err())
	}
}

// withLog adds CRIU's last logged errors to err.
func withLog(err error, log string) error {
	lines := criuLogErrors(log, 3)
	if len(lines) == 0 {
		return err
	}
	return fmt.Errorf("%w; criu: %s", err, strings.Join(lines, "; "))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
