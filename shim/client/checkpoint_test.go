package client

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

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
	if err != nil && !os.IsNotExist(err) {
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
