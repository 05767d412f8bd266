package client

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runningContainer starts a container running args and registers its
// teardown (kill, delete, shutdown).
func runningContainer(t *testing.T, o bundleOpts, stdin, stdinOnce bool) (*env, *Client) {
	t.Helper()
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, o)
	c := e.startShim(t)
	co := e.createOpts(o.terminal)
	co.Stdin, co.StdinOnce = stdin, stdinOnce
	if _, err := c.Create(ctx, co); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Kill(ctx, syscall.SIGKILL, true)
		if _, err := c.Wait(ctx); err != nil {
			t.Errorf("Wait: %v", err)
		}
		if _, err := c.Delete(ctx); err != nil {
			t.Errorf("Delete: %v", err)
		}
		shutdown(t, e, c)
	})
	return e, c
}

// syncBuffer is a bytes.Buffer safe for a copier and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestExec(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e, c := runningContainer(t, bundleOpts{args: []string{"sleep", "100"}}, false, false)
	fifoDir := filepath.Join(e.dir, "io")
	shim := shimPid(t, e.stateDir)

	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantOut    string
		wantErr    string
		wantStatus int32
	}{
		{"stdio and status", []string{"sh", "-c", "echo out; echo err >&2; cat; exit 3"}, "in-data", "out\nin-data", "err\n", 3},
		{"zero", []string{"true"}, "", "", "", 0},
		{"env from the container", []string{"sh", "-c", "echo $PATH $EXTRA"}, "", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin x\n", "", 0},
		{"killed by signal", []string{"sh", "-c", "kill -9 $$"}, "", "", "", 137},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb syncBuffer
			o := ExecOpts{Args: tc.args, FifoDir: fifoDir, Stdout: &out, Stderr: &errb, Env: []string{"EXTRA=x"}}
			if tc.stdin != "" {
				o.Stdin = strings.NewReader(tc.stdin)
			}
			p, err := c.Exec(ctx, o)
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			ex, err := p.Wait(ctx)
			if err != nil || ex.Status != tc.wantStatus {
				t.Errorf("Wait = %+v, %v; want status %d", ex, err, tc.wantStatus)
			}
			if out.String() != tc.wantOut || errb.String() != tc.wantErr {
				t.Errorf("output %q / %q, want %q / %q", out.String(), errb.String(), tc.wantOut, tc.wantErr)
			}
			if err := p.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	if _, err := c.Exec(ctx, ExecOpts{FifoDir: fifoDir}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Exec without args: %v, want InvalidArgument", err)
	}
	p, err := c.Exec(ctx, ExecOpts{ID: "dup", Args: []string{"sleep", "100"}, FifoDir: fifoDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, ExecOpts{ID: "dup", Args: []string{"true"}, FifoDir: fifoDir}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("Exec with a used id: %v, want AlreadyExists", err)
	}
	// Close kills a running exec.
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close running exec: %v", err)
	}
	if alive(p.Pid()) {
		t.Errorf("exec %d alive after Close", p.Pid())
	}
	// Nothing is left: no zombies under the shim, no FIFOs, no exec files.
	for pid, st := range children(shim) {
		if st == 'Z' {
			t.Errorf("zombie %d under the shim", pid)
		}
	}
	if ents, _ := os.ReadDir(fifoDir); len(ents) != 0 {
		t.Errorf("fifo dirs left: %v", ents)
	}
	if m, _ := filepath.Glob(filepath.Join(e.stateDir, "exec-*")); len(m) != 0 {
		t.Errorf("exec files left: %v", m)
	}
}

func TestExecNotRunning(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"true"}})
	c := e.startShim(t)
	if _, err := c.Create(ctx, e.createOpts(false)); err != nil {
		t.Fatal(err)
	}
	o := ExecOpts{Args: []string{"true"}, FifoDir: filepath.Join(e.dir, "io")}
	if _, err := c.Exec(ctx, o); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Exec in created container: %v, want FailedPrecondition", err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, o); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Exec in exited container: %v, want FailedPrecondition", err)
	}
	if _, err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	shutdown(t, e, c)
}

// Without its own pid namespace the kernel would not end an exec'd process
// with init: the shim must.
func TestExecKilledWhenContainerStops(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e, c := runningContainer(t, bundleOpts{args: []string{"sleep", "100"}, hostPID: true}, false, false)
	p, err := c.Exec(ctx, ExecOpts{Args: []string{"sleep", "100"}, FifoDir: filepath.Join(e.dir, "io")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if err := c.Kill(ctx, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	ex, err := p.Wait(ctx)
	if err != nil || ex.Status != 137 {
		t.Errorf("exec Wait = %+v, %v; want 137", ex, err)
	}
	if alive(p.Pid()) {
		t.Errorf("exec %d alive after the container stopped", p.Pid())
	}
}

func TestExecTerminal(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e, c := runningContainer(t, bundleOpts{args: []string{"sleep", "100"}}, false, false)
	pr, pw := io.Pipe()
	var out syncBuffer
	p, err := c.Exec(ctx, ExecOpts{
		Args: []string{"sh", "-c", "read x; busybox stty size; exit 4"}, Terminal: true,
		FifoDir: filepath.Join(e.dir, "io"), Stdin: pr, Stdout: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if err := p.Resize(ctx, 100, 40); err != nil {
		t.Fatalf("Resize: %v", err)
	}
	if _, err := io.WriteString(pw, "go\n"); err != nil {
		t.Fatal(err)
	}
	ex, err := p.Wait(ctx)
	if err != nil || ex.Status != 4 {
		t.Errorf("Wait = %+v, %v; want 4", ex, err)
	}
	_ = pw.Close()
	if !strings.Contains(out.String(), "40 100") {
		t.Errorf("terminal output %q lacks the size 40 100", out.String())
	}
	if err := c.ResizePty(ctx, 10, 10); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("ResizePty of a container without terminal: %v, want FailedPrecondition", err)
	}
}

func TestAttach(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e, c := runningContainer(t, bundleOpts{
		args: []string{"sh", "-c", "while read l; do echo got:$l; echo err:$l >&2; done; echo bye"},
	}, true, true)
	fifoDir := filepath.Join(e.dir, "io")
	var out1, err1, out2 syncBuffer
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[0] = c.Attach(ctx, AttachOpts{FifoDir: fifoDir, Stdin: pr, Stdout: &out1, Stderr: &err1})
	}()
	go func() {
		defer wg.Done()
		errs[1] = c.Attach(ctx, AttachOpts{FifoDir: fifoDir, Stdout: &out2})
	}()
	// Both sessions must be in place before the input arrives.
	waitFor(t, "two attach sessions", func() bool {
		ents, _ := os.ReadDir(fifoDir)
		return len(ents) == 2
	})
	time.Sleep(100 * time.Millisecond)
	if _, err := io.WriteString(pw, "a\nb\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "echo", func() bool { return strings.Contains(out2.String(), "got:b") })
	// stdin_once: the first session's EOF closes the container's stdin, the
	// loop ends, the container exits, and both sessions end.
	_ = pw.Close()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Attach %d: %v", i, err)
		}
	}
	if want := "got:a\ngot:b\nbye\n"; out1.String() != want || out2.String() != want {
		t.Errorf("attached stdout %q and %q, want %q", out1.String(), out2.String(), want)
	}
	if want := "err:a\nerr:b\n"; err1.String() != want {
		t.Errorf("attached stderr %q, want %q", err1.String(), want)
	}
	ex, err := c.Wait(ctx)
	if err != nil || ex.Status != 0 {
		t.Errorf("Wait = %+v, %v", ex, err)
	}
	log, _ := os.ReadFile(e.logPath)
	for _, want := range []string{" stdout F got:a\n", " stderr F err:b\n", " stdout F bye\n"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if err := c.Attach(ctx, AttachOpts{FifoDir: fifoDir, Stdout: &out1}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Attach after exit: %v, want FailedPrecondition", err)
	}
	if ents, _ := os.ReadDir(fifoDir); len(ents) != 0 {
		t.Errorf("fifo dirs left: %v", ents)
	}
}

func TestUpdateAndReopenLog(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e, c := runningContainer(t, bundleOpts{
		args: []string{"sh", "-c", "while true; do echo tick; sleep 0.05; done"},
	}, false, false)
	limit := int64(64 << 20)
	if err := c.Update(ctx, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	cg := fmt.Sprintf("/sys/fs/cgroup/memory/berth-test/%s/memory.limit_in_bytes", e.id)
	if b, err := os.ReadFile(cg); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(limit) {
		t.Errorf("memory limit %q, %v; want %d", b, err, limit)
	}
	if err := c.Update(ctx, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Update(nil): %v, want InvalidArgument", err)
	}

	// Rotate only once the log holds a line, or there is none to keep.
	waitFor(t, "ticks in the log", func() bool {
		b, _ := os.ReadFile(e.logPath)
		return strings.Contains(string(b), " stdout F tick\n")
	})
	rotated := e.logPath + ".1"
	if err := os.Rename(e.logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := c.ReopenLog(ctx); err != nil {
		t.Fatalf("ReopenLog: %v", err)
	}
	waitFor(t, "ticks in the reopened log", func() bool {
		b, _ := os.ReadFile(e.logPath)
		return strings.Contains(string(b), " stdout F tick\n")
	})
	if b, _ := os.ReadFile(rotated); !strings.Contains(string(b), "tick") {
		t.Errorf("rotated log lost its lines: %q", b)
	}
}
