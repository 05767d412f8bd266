package client

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// Checkpoint and restore need a runc and a CRIU that work on this kernel:
// the ones `make setup` installs (Debian 12's CRIU 3.17 does not).
const (
	crRunc = "/usr/local/lib/berth/runc"
	crCriu = "/usr/local/sbin/criu"
)

func requireCRIU(t *testing.T) {
	t.Helper()
	requireRoot(t)
	for _, p := range []string{crRunc, crCriu} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("requires %s (make setup)", p)
		}
	}
}

const counter = `i=0; while true; do i=$((i+1)); echo "n=$i"; sleep 0.05; done`

var countRe = regexp.MustCompile(`n=(\d+)`)

// counts returns the numbers the counter logged, in order.
func counts(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []int
	for _, m := range countRe.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

func TestCheckpointRestore(t *testing.T) {
	requireCRIU(t)
	ctx := ctxT(t)
	src := newEnv(t)
	src.writeBundle(t, bundleOpts{args: []string{"sh", "-c", counter}})
	c := src.startShim(t)
	opts := src.createOpts(false)
	opts.RuntimeBinary, opts.CriuPath = crRunc, crCriu
	if _, err := c.Create(ctx, opts); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitFor(t, "counting", func() bool { return len(counts(t, src.logPath)) >= 5 })

	images := filepath.Join(src.dir, "images")
	err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: images, WorkPath: filepath.Join(src.dir, "work")})
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	// Without leave-running the container is gone after the dump.
	if ex, err := c.Wait(ctx); err != nil {
		t.Fatalf("Wait after checkpoint: %+v, %v", ex, err)
	}
	before := counts(t, src.logPath)
	if _, err := os.Stat(filepath.Join(images, "inventory.img")); err != nil {
		t.Fatalf("no CRIU images: %v", err)
	}
	if _, err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	shutdown(t, src, c)

	dst := newEnv(t)
	dst.writeBundle(t, bundleOpts{args: []string{"sh", "-c", counter}})
	d := dst.startShim(t)
	ropts := dst.createOpts(false)
	ropts.RuntimeBinary, ropts.CriuPath, ropts.RestoreFrom = crRunc, crCriu, images
	if _, err := d.Create(ctx, ropts); err != nil {
		t.Fatalf("Create for restore: %v", err)
	}
	if st, err := d.State(ctx); err != nil || st.Status != StatusCreated || st.Pid != 0 {
		t.Fatalf("State before restore = %+v, %v; want created, no pid", st, err)
	}
	pid, err := d.Start(ctx)
	if err != nil {
		t.Fatalf("Start (restore): %v", err)
	}
	if st, err := d.State(ctx); err != nil || st.Status != StatusRunning || st.Pid != pid || pid == 0 {
		t.Fatalf("State after restore = %+v, %v; want running pid %d", st, err, pid)
	}
	waitFor(t, "restored counting", func() bool { return len(counts(t, dst.logPath)) >= 5 })
	after := counts(t, dst.logPath)
	last := before[len(before)-1]
	// The restored shell continues where the dump froze it: its first
	// number follows the last one logged before, it does not start over.
	if after[0] < last || after[0] > last+1 {
		t.Errorf("restored counter starts at %d, want %d or %d (before: ...%v, after: %v...)", after[0], last, last+1, before[max(0, len(before)-3):], after[:3])
	}
	if err := d.Kill(ctx, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	if ex, err := d.Wait(ctx); err != nil || ex.Status != 137 {
		t.Errorf("Wait = %+v, %v; want 137", ex, err)
	}
	if _, err := d.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	shutdown(t, dst, d)
}

func TestRestorePendingDeleted(t *testing.T) {
	requireCRIU(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"true"}})
	c := e.startShim(t)
	opts := e.createOpts(false)
	opts.RuntimeBinary, opts.RestoreFrom = crRunc, filepath.Join(e.dir, "no-images")
	if _, err := c.Create(ctx, opts); err != nil {
		t.Fatalf("Create: %v", err)
	}
	// A restore from images that are not there fails with CRIU's reason,
	// and leaves a container that can still be removed.
	if _, err := c.Start(ctx); err == nil {
		t.Fatal("Start from missing images succeeded")
	} else if !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start from missing images: %v, want FailedPrecondition", err)
	}
	if err := c.Kill(ctx, syscall.SIGKILL, true); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if ex, err := c.Wait(ctx); err != nil || ex.Status != 137 {
		t.Errorf("Wait = %+v, %v; want 137", ex, err)
	}
	if ex, err := c.Delete(ctx); err != nil || ex.Status != 137 {
		t.Errorf("Delete = %+v, %v", ex, err)
	}
	shutdown(t, e, c)
}

func TestCheckpointRefusesTerminalRestore(t *testing.T) {
	requireCRIU(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"true"}, terminal: true})
	c := e.startShim(t)
	opts := e.createOpts(true)
	opts.RuntimeBinary, opts.RestoreFrom = crRunc, e.dir
	if _, err := c.Create(ctx, opts); !errdefs.IsNotImplemented(err) {
		t.Errorf("Create terminal restore: %v, want NotImplemented", err)
	}
	shutdown(t, e, c)
}

// TestCheckpointNotRunning: a created container has no process to dump.
func TestCheckpointNotRunning(t *testing.T) {
	requireCRIU(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"true"}})
	c := e.startShim(t)
	opts := e.createOpts(false)
	opts.RuntimeBinary = crRunc
	if _, err := c.Create(ctx, opts); err != nil {
		t.Fatal(err)
	}
	err := c.Checkpoint(ctx, CheckpointOpts{ImagePath: filepath.Join(e.dir, "i"), WorkPath: filepath.Join(e.dir, "w")})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "created") {
		t.Errorf("Checkpoint of created container: %v, want FailedPrecondition", err)
	}
	if _, err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	shutdown(t, e, c)
}

// hangingCRIU is a CRIU stand-in that hangs, as CRIU 4.1.1 does in every
// dump on kernel 6.18; its sleeps carry a marker so that any left running
// is found.
func hangingCRIU(t *testing.T) (path, marker string) {
	t.Helper()
	marker = strconv.Itoa(4000+int(time.Now().UnixNano()%1000)) + ".5"
	path = filepath.Join(t.TempDir(), "criu")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexec sleep "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			if b, _ := os.ReadFile(p); string(b) == "sleep\x00"+marker+"\x00" {
				t.Errorf("CRIU stand-in left running: %s", p)
			}
		}
	})
	return path, marker
}

// TestCheckpointHangingCRIU: a dump that outlives its bound kills the
// runtime with its CRIU, thaws the container it froze, and fails
// DeadlineExceeded; a container its caller froze stays frozen for the
// caller to thaw.
func TestCheckpointHangingCRIU(t *testing.T) {
	requireCRIU(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"sh", "-c", counter}})
	c := e.startShim(t)
	opts := e.createOpts(false)
	opts.RuntimeBinary = crRunc
	if _, err := c.Create(ctx, opts); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitFor(t, "counting", func() bool { return len(counts(t, e.logPath)) >= 3 })
	criu, _ := hangingCRIU(t)
	dump := func() error {
		t.Helper()
		start := time.Now()
		err := c.Checkpoint(ctx, CheckpointOpts{
			ImagePath: filepath.Join(e.dir, "images"), WorkPath: filepath.Join(e.dir, "work"),
			LeaveRunning: true, CriuPath: criu, Timeout: 2 * time.Second,
		})
		if el := time.Since(start); el < 2*time.Second || el > 20*time.Second {
			t.Errorf("Checkpoint returned after %s, want the 2s bound", el)
		}
		return err
	}
	if err := dump(); !errdefs.IsDeadlineExceeded(err) || !strings.Contains(err.Error(), e.id) {
		t.Fatalf("Checkpoint with a hanging CRIU: %v, want DeadlineExceeded naming %s", err, e.id)
	}
	if st, err := c.State(ctx); err != nil || st.Status != StatusRunning {
		t.Errorf("State = %+v, %v; want running", st, err)
	}
	n := len(counts(t, e.logPath))
	waitFor(t, "counting on", func() bool { return len(counts(t, e.logPath)) >= n+3 })

	if err := c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dump(); !errdefs.IsDeadlineExceeded(err) {
		t.Fatalf("Checkpoint of a paused container with a hanging CRIU: %v", err)
	}
	n = len(counts(t, e.logPath))
	time.Sleep(300 * time.Millisecond)
	if m := len(counts(t, e.logPath)); m > n {
		t.Errorf("the caller's pause was undone: %d counts, then %d", n, m)
	}
	if err := c.Resume(ctx); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	waitFor(t, "counting after resume", func() bool { return len(counts(t, e.logPath)) >= n+3 })
	if err := c.Kill(ctx, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	shutdown(t, e, c)
}

// TestRestoreHangingCRIU: a restore that outlives its bound kills the
// runtime with its CRIU and leaves a container that can be removed.
func TestRestoreHangingCRIU(t *testing.T) {
	requireCRIU(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"true"}})
	c := e.startShim(t)
	criu, _ := hangingCRIU(t)
	images := filepath.Join(e.dir, "images")
	if err := os.Mkdir(images, 0o700); err != nil {
		t.Fatal(err)
	}
	opts := e.createOpts(false)
	opts.RuntimeBinary, opts.CriuPath, opts.RestoreFrom = crRunc, criu, images
	if _, err := c.Create(ctx, opts); err != nil {
		t.Fatalf("Create: %v", err)
	}
	start := time.Now()
	if _, err := c.Restore(ctx, 2*time.Second); !errdefs.IsDeadlineExceeded(err) || !strings.Contains(err.Error(), e.id) {
		t.Fatalf("Restore with a hanging CRIU: %v, want DeadlineExceeded naming %s", err, e.id)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Errorf("Restore returned after %s, want the 2s bound", el)
	}
	if err := c.Kill(ctx, syscall.SIGKILL, true); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if ex, err := c.Wait(ctx); err != nil || ex.Status != 137 {
		t.Errorf("Wait = %+v, %v; want 137", ex, err)
	}
	if _, err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	shutdown(t, e, c)
}
