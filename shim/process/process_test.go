package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/shim/api"
)

var testReaper *Reaper

// TestMain makes the test binary a subreaper like the shim, so the fake
// runtime's orphaned "init" becomes our child, and runs one reaper for all
// tests.
func TestMain(m *testing.M) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "set subreaper:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	testReaper = NewReaper(nil)
	go testReaper.Run(ctx)
	code := m.Run()
	cancel()
	os.Exit(code)
}

func TestReaperStart(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"exit code", []string{"-c", "exit 4"}, 4},
		{"success", []string{"-c", "true"}, 0},
		{"signal", []string{"-c", "kill -9 $$"}, 128 + 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", tc.args...)
			ch, err := testReaper.Start(cmd)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-ch:
				if got != tc.want {
					t.Errorf("status %d, want %d", got, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no exit reported")
			}
		})
	}
}

type fixture struct {
	root     string
	stateDir string
}

func newFixture(t *testing.T, switches ...string) fixture {
	t.Helper()
	f := fixture{root: t.TempDir(), stateDir: t.TempDir()}
	for _, s := range switches {
		if err := os.WriteFile(filepath.Join(f.root, s), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f fixture) config(t *testing.T) Config {
	bin, err := filepath.Abs("testdata/fake-runtime")
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		ID: "c1", StateDir: f.stateDir, Bundle: "/nonexistent", RuntimeBinary: bin,
		RuntimeRoot: f.root, LogPath: filepath.Join(f.stateDir, "c.log"), Reaper: testReaper,
	}
}

func (f fixture) calls(t *testing.T) []string {
	b, err := os.ReadFile(filepath.Join(f.root, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantStatus(t *testing.T, p *Init, want Status) {
	t.Helper()
	if got := p.State().Status; got != want {
		t.Fatalf("status %s, want %s", got, want)
	}
}

func wantPrecondition(t *testing.T, op string, err error) {
	t.Helper()
	var te *TransitionError
	if !errors.As(err, &te) || !errdefs.IsFailedPrecondition(err) {
		t.Errorf("%s: %v, want a TransitionError (failed precondition)", op, err)
	}
}

func TestLifecycle(t *testing.T) {
	ctx := ctx10(t)
	f := newFixture(t)
	p, err := New(ctx, f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, p, StatusCreated)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, p, StatusRunning)
	wantPrecondition(t, "start running", p.Start(ctx))
	_, err = p.Delete(ctx)
	wantPrecondition(t, "delete running", err)

	if err := p.Kill(ctx, syscall.SIGTERM, false); err != nil {
		t.Fatal(err)
	}
	e, err := p.Wait(ctx)
	if err != nil || e.Status != 143 || e.Pid != p.Pid() {
		t.Fatalf("Wait = %+v, %v; want 143 from pid %d", e, err, p.Pid())
	}
	wantStatus(t, p, StatusStopped)
	if info := p.State(); info.Exit == nil || info.Exit.Status != 143 {
		t.Errorf("State exit = %+v", info.Exit)
	}
	ef, err := api.ReadExitFile(f.stateDir)
	if err != nil || ef.ExitStatus != 143 || ef.ExitedAt != e.At.UnixNano() {
		t.Errorf("exit file = %+v, %v", ef, err)
	}
	if err := p.Kill(ctx, syscall.SIGKILL, false); err != nil {
		t.Errorf("kill stopped: %v, want nil", err)
	}
	wantPrecondition(t, "start stopped", p.Start(ctx))
	if e, err := p.Delete(ctx); err != nil || e.Status != 143 {
		t.Fatalf("Delete = %+v, %v", e, err)
	}
	wantStatus(t, p, StatusDeleted)
	if _, err := p.Delete(ctx); err != nil {
		t.Errorf("second Delete: %v, want nil", err)
	}
	if err := p.Kill(ctx, syscall.SIGKILL, false); !errdefs.IsNotFound(err) {
		t.Errorf("kill deleted: %v, want NotFound", err)
	}

	// SIGTERM reached the init (exit 143) without the runtime: the shim
	// signals its own unreaped child directly.
	calls := f.calls(t)
	want := []string{"create", "start", "delete"}
	if len(calls) != len(want) {
		t.Fatalf("runtime calls %q, want commands %q", calls, want)
	}
	for i, c := range calls {
		if !strings.HasPrefix(c, want[i]+" ") {
			t.Errorf("call %d = %q, want %s", i, c, want[i])
		}
	}
}

func TestDeleteCreated(t *testing.T) {
	ctx := ctx10(t)
	f := newFixture(t)
	p, err := New(ctx, f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	e, err := p.Delete(ctx)
	if err != nil || e.Status != 137 {
		t.Fatalf("Delete created = %+v, %v; want 137", e, err)
	}
	wantStatus(t, p, StatusDeleted)
	wantPrecondition(t, "start deleted", p.Start(ctx))
	if c := f.calls(t); c[len(c)-1] != "delete --force c1" {
		t.Errorf("last call %q, want forced delete", c[len(c)-1])
	}
}

// An init that exits before its pid file is read must still be reported.
func TestExitBeforeWatch(t *testing.T) {
	ctx := ctx10(t)
	f := newFixture(t, "quick")
	p, err := New(ctx, f.config(t))
	if err != nil {
		t.Fatal(err)
	}
	e, err := p.Wait(ctx)
	if err != nil || e.Status != 7 {
		t.Fatalf("Wait = %+v, %v; want 7", e, err)
	}
	wantStatus(t, p, StatusStopped)
}

func TestCreateFailure(t *testing.T) {
	ctx := ctx10(t)
	f := newFixture(t, "fail")
	_, err := New(ctx, f.config(t))
	if err == nil {
		t.Fatal("New succeeded")
	}
	calls := f.calls(t)
	if calls[len(calls)-1] != "delete --force c1" {
		t.Errorf("calls %q: want a forced delete after the failed create", calls)
	}
	if _, err := os.Stat(filepath.Join(f.stateDir, api.ExitFileName)); err == nil {
		t.Error("exit file written for a container never created")
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{ID: "c", StateDir: "/s", Bundle: "/b", RuntimeBinary: "runc", Reaper: testReaper}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no id", func(c *Config) { c.ID = "" }},
		{"no bundle", func(c *Config) { c.Bundle = "" }},
		{"no runtime", func(c *Config) { c.RuntimeBinary = "" }},
		{"no state dir", func(c *Config) { c.StateDir = "" }},
		{"no reaper", func(c *Config) { c.Reaper = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			if _, err := New(context.Background(), c); !errdefs.IsInvalidArgument(err) {
				t.Errorf("New: %v, want InvalidArgument", err)
			}
		})
	}
}
