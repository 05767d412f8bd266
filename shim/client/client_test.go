package client

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// shutdown shuts the shim down and asserts that its process ends and its
// socket goes.
func shutdown(t *testing.T, e *env, c *Client) {
	t.Helper()
	pid := shimPid(t, e.stateDir)
	if err := c.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := c.WaitGone(ctxT(t)); err != nil {
		t.Fatalf("WaitGone: %v", err)
	}
	if alive(pid) {
		t.Fatalf("shim %d alive after WaitGone returned", pid)
	}
	waitFor(t, "socket removal", func() bool { _, err := os.Stat(e.socket); return err != nil })
	if ShimAlive(e.stateDir) {
		t.Error("ShimAlive after shutdown")
	}
}

func TestExitStatusAndLog(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
	c := e.startShim(t)

	pid, err := c.Create(ctx, e.createOpts(false))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if st, err := c.State(ctx); err != nil || st.Status != StatusCreated || st.Pid != pid || st.Exit != nil {
		t.Fatalf("State after create = %+v, %v; want created pid %d", st, err, pid)
	}
	if _, err := c.Create(ctx, e.createOpts(false)); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Create: %v, want AlreadyExists", err)
	}
	if _, err := ReadExit(e.stateDir); !errdefs.IsNotFound(err) {
		t.Errorf("ReadExit before exit: %v, want NotFound", err)
	}

	// Several waiters, on their own connections, all get the exit.
	var wg sync.WaitGroup
	waits := make([]Exit, 3)
	werrs := make([]error, 3)
	for i := range waits {
		wc, err := Connect(ctx, e.socket, e.stateDir)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			waits[i], werrs[i] = wc.Wait(ctx)
		}()
	}
	if spid, err := c.Start(ctx); err != nil || spid != pid {
		t.Fatalf("Start = %d, %v; want %d", spid, err, pid)
	}
	wg.Wait()
	for i := range waits {
		if werrs[i] != nil || waits[i].Status != 3 || waits[i].ExitedAt.IsZero() {
			t.Errorf("waiter %d: %+v, %v; want status 3", i, waits[i], werrs[i])
		}
	}
	// The exit file is written before waiters are answered.
	if ex, err := ReadExit(e.stateDir); err != nil || ex.Status != 3 || !ex.ExitedAt.Equal(waits[0].ExitedAt) {
		t.Errorf("ReadExit = %+v, %v; want status 3 at %v", ex, err, waits[0].ExitedAt)
	}
	st, err := c.State(ctx)
	if err != nil || st.Status != StatusStopped || st.Exit == nil || st.Exit.Status != 3 {
		t.Errorf("State after exit = %+v, %v", st, err)
	}
	if err := c.Kill(ctx, syscall.SIGKILL, false); err != nil {
		t.Errorf("Kill of exited container: %v, want nil", err)
	}

	log, err := os.ReadFile(e.logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{" stdout F out\n", " stderr F err\n"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if ex, err := c.Delete(ctx); err != nil || ex.Status != 3 {
		t.Errorf("Delete = %+v, %v", ex, err)
	}
	if ex, err := c.Delete(ctx); err != nil || ex.Status != 3 {
		t.Errorf("second Delete = %+v, %v; want idempotent", ex, err)
	}
	shutdown(t, e, c)
}

func TestKill(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		hostPID bool
		sig     syscall.Signal
		want    int32
	}{
		// A pid namespace's init ignores SIGTERM without a handler, so the
		// SIGTERM case runs without one.
		{"sigterm", true, syscall.SIGTERM, 143},
		{"sigkill pidns", false, syscall.SIGKILL, 137},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			e := newEnv(t)
			e.writeBundle(t, bundleOpts{args: []string{"sleep", "1000"}, hostPID: tc.hostPID})
			c := e.startShim(t)
			if _, err := c.Create(ctx, e.createOpts(false)); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := c.Start(ctx); err != nil {
				t.Fatalf("Start: %v", err)
			}
			if st, err := c.State(ctx); err != nil || st.Status != StatusRunning {
				t.Fatalf("State = %+v, %v; want running", st, err)
			}
			if err := c.Shutdown(ctx); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Shutdown while running: %v, want FailedPrecondition", err)
			}
			if _, err := c.Delete(ctx); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Delete while running: %v, want FailedPrecondition", err)
			}
			if err := c.Kill(ctx, tc.sig, false); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			ex, err := c.Wait(ctx)
			if err != nil || ex.Status != tc.want {
				t.Fatalf("Wait = %+v, %v; want %d", ex, err, tc.want)
			}
			if _, err := c.Delete(ctx); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			shutdown(t, e, c)
		})
	}
}

func TestDeleteCreatedKillsIt(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"sleep", "1000"}})
	c := e.startShim(t)
	pid, err := c.Create(ctx, e.createOpts(false))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	ex, err := c.Delete(ctx)
	if err != nil || ex.Status != 137 {
		t.Fatalf("Delete of created = %+v, %v; want 137", ex, err)
	}
	if alive(pid) {
		t.Errorf("init %d still alive", pid)
	}
	if _, err := c.Start(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start after delete: %v, want FailedPrecondition", err)
	}
	shutdown(t, e, c)
}

func TestShimDetached(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e := newEnv(t)
	c := e.startShim(t)
	pid := shimPid(t, e.stateDir)
	if !ShimAlive(e.stateDir) {
		t.Fatal("ShimAlive = false for a running shim")
	}
	// The starter is the shim's parent, so it can reap it, but the shim
	// leads its own session: signals to berthd's group never reach it.
	// That it outlives a killed berthd is proven by the e2e restart tests.
	if _, ppid, ok := procStat(pid); !ok || ppid != os.Getpid() {
		t.Errorf("shim parent = %d (ok %v), want the starting process %d", ppid, ok, os.Getpid())
	}
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("shim session = %d, %v; want own session %d", sid, err, pid)
	}
	// Reconnecting (berthd restart) works; before Create there is nothing.
	c2, err := Connect(ctx, e.socket, e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.State(ctx); !errdefs.IsNotFound(err) {
		t.Errorf("State before Create: %v, want NotFound", err)
	}
	_ = c2.Close()
	shutdown(t, e, c)
}

func TestCreateFailure(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"nosuchbinary"}})
	c := e.startShim(t)
	_, err := c.Create(ctx, e.createOpts(false))
	if err == nil {
		t.Fatal("Create of missing binary succeeded")
	}
	if !strings.Contains(err.Error(), "nosuchbinary") {
		t.Errorf("error lacks the runtime's message: %v", err)
	}
	// Nothing was created, so the shim can go.
	shutdown(t, e, c)
}

func TestCleanupAfterShimKilled(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"sleep", "1000"}})
	c := e.startShim(t)
	initPid, err := c.Create(ctx, e.createOpts(false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { _, err := c.Wait(ctx); waitErr <- err }()
	time.Sleep(100 * time.Millisecond)

	pid := shimPid(t, e.stateDir)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; !errdefs.IsUnavailable(err) {
		t.Errorf("Wait on killed shim: %v, want Unavailable", err)
	}
	waitFor(t, "shim death", func() bool { return !ShimAlive(e.stateDir) })
	if !alive(initPid) {
		t.Fatal("container died with its shim; it must outlive it")
	}

	for i := 0; i < 2; i++ { // the second run checks idempotence
		if err := Cleanup(ctx, e.cleanupOpts(t)); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
	}
	waitFor(t, "container death", func() bool { return !alive(initPid) })
	ex, err := ReadExit(e.stateDir)
	if err != nil || ex.Status != 137 {
		t.Errorf("ReadExit after cleanup = %+v, %v; want 137", ex, err)
	}
	if _, err := Connect(ctx, e.socket, e.stateDir); !errdefs.IsUnavailable(err) {
		t.Errorf("Connect after cleanup: %v, want Unavailable", err)
	}
}

func TestTerminal(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e := newEnv(t)
	e.writeBundle(t, bundleOpts{args: []string{"sh", "-c", "echo hello-tty; exit 5"}, terminal: true})
	c := e.startShim(t)
	if _, err := c.Create(ctx, e.createOpts(true)); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ex, err := c.Wait(ctx); err != nil || ex.Status != 5 {
		t.Fatalf("Wait = %+v, %v; want 5", ex, err)
	}
	log, err := os.ReadFile(e.logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The PTY turns \n into \r\n; the \r stays in the content as with
	// containerd.
	if !strings.Contains(string(log), " stdout F hello-tty") {
		t.Errorf("log lacks tty output:\n%q", log)
	}
	if _, err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	shutdown(t, e, c)
}

func TestOrphansReaped(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	e := newEnv(t)
	// The inner sh leaves `sleep 1` orphaned; without a pid namespace it is
	// reparented to the shim, the nearest subreaper, which must reap it.
	e.writeBundle(t, bundleOpts{
		args:    []string{"sh", "-c", `sh -c "sleep 1 &"; exec sleep 1000`},
		hostPID: true,
	})
	c := e.startShim(t)
	initPid, err := c.Create(ctx, e.createOpts(false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid := shimPid(t, e.stateDir)
	waitFor(t, "orphan reparented to the shim", func() bool {
		for child, st := range children(pid) {
			if child != initPid && st != 'Z' {
				return true
			}
		}
		return false
	})
	waitFor(t, "orphan reaped", func() bool {
		for child := range children(pid) {
			if child != initPid {
				return false
			}
		}
		return true
	})
	if err := c.Kill(ctx, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	if ex, err := c.Wait(ctx); err != nil || ex.Status != 137 {
		t.Fatalf("Wait = %+v, %v", ex, err)
	}
	for child, st := range children(pid) {
		t.Errorf("child %d (state %c) left under the shim", child, st)
	}
	if _, err := c.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	shutdown(t, e, c)
}

func TestConnectMissing(t *testing.T) {
	_, err := Connect(context.Background(), "/tmp/berth-no-such.sock", "")
	if !errdefs.IsUnavailable(err) {
		t.Errorf("Connect to missing socket: %v, want Unavailable", err)
	}
	if ShimAlive(t.TempDir()) {
		t.Error("ShimAlive with no pid file")
	}
	if _, err := ReadExit(t.TempDir()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("ReadExit: %v, want NotFound", err)
	}
}
