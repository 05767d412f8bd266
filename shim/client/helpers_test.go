package client

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-runtime/berth/shim/api"
)

const runcBinary = "/usr/sbin/runc"

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	if _, err := os.Stat(runcBinary); err != nil {
		t.Skip("requires runc")
	}
}

var (
	buildOnce sync.Once
	shimPath  string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	// Per-test cgroups are checked by each test; the shared parent goes here.
	if matches, _ := filepath.Glob("/sys/fs/cgroup/*/berth-test"); len(matches) > 0 {
		for _, d := range matches {
			_ = os.Remove(d)
		}
	}
	os.Exit(code)
}

// shimBinary builds cmd/berth-shim once per test run.
func shimBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "berth-shim-bin")
		if buildErr != nil {
			return
		}
		shimPath = filepath.Join(buildDir, "berth-shim")
		cmd := exec.Command("go", "build", "-o", shimPath, "github.com/berth-runtime/berth/cmd/berth-shim")
		var out []byte
		out, buildErr = cmd.CombinedOutput()
		if buildErr != nil {
			buildErr = fmt.Errorf("%w: %s", buildErr, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build berth-shim: %v", buildErr)
	}
	return shimPath
}

// env is one container's paths. The dir is short because the socket lives
// in it.
type env struct {
	id       string
	dir      string
	stateDir string
	socket   string
	root     string
	bundle   string
	logPath  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "bt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "state", "shim.log")); err == nil {
				t.Logf("shim.log:\n%s", b)
			}
		}
		_ = os.RemoveAll(dir)
	})
	e := &env{
		id:       "bt-" + filepath.Base(dir)[2:],
		dir:      dir,
		stateDir: filepath.Join(dir, "state"),
		socket:   filepath.Join(dir, "s.sock"),
		root:     filepath.Join(dir, "runc"),
		bundle:   filepath.Join(dir, "bundle"),
		logPath:  filepath.Join(dir, "c.log"),
	}
	return e
}

type bundleOpts struct {
	args     []string
	terminal bool
	// hostPID drops the pid namespace so the init is not a namespace's PID 1
	// (which ignores default-action signals) and orphans reach the shim.
	hostPID bool
}

// writeBundle builds rootfs from busybox-static and config.json from
// `runc spec`.
func (e *env) writeBundle(t *testing.T, o bundleOpts) {
	t.Helper()
	bin := filepath.Join(e.bundle, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"sh", "echo", "sleep", "true"} {
		if err := os.Symlink("busybox", filepath.Join(bin, l)); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(runcBinary, "spec", "--bundle", e.bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	path := filepath.Join(e.bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = o.terminal
	proc["args"] = o.args
	linux := spec["linux"].(map[string]any)
	linux["cgroupsPath"] = "/berth-test/" + e.id
	if o.hostPID {
		var keep []any
		for _, ns := range linux["namespaces"].([]any) {
			if ns.(map[string]any)["type"] != "pid" {
				keep = append(keep, ns)
			}
		}
		linux["namespaces"] = keep
	}
	raw, err = json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *env) createOpts(terminal bool) CreateOpts {
	return CreateOpts{
		Bundle:        e.bundle,
		RuntimeBinary: runcBinary,
		RuntimeRoot:   e.root,
		LogPath:       e.logPath,
		Terminal:      terminal,
	}
}

func (e *env) cleanupOpts(t *testing.T) CleanupOpts {
	return CleanupOpts{
		ID: e.id, ShimBinary: shimBinary(t), Socket: e.socket, StateDir: e.stateDir,
		RuntimeBinary: runcBinary, RuntimeRoot: e.root,
	}
}

// startShim starts a shim and registers the leak checks: whatever the test
// did, afterwards no shim, runtime state or cgroup of it may remain.
func (e *env) startShim(t *testing.T) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, StartOpts{ID: e.id, ShimBinary: shimBinary(t), Socket: e.socket, StateDir: e.stateDir})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Close()
		if ShimAlive(e.stateDir) {
			t.Errorf("shim still alive after test")
			_ = Cleanup(context.Background(), e.cleanupOpts(t))
		}
		e.assertNoLeaks(t)
	})
	return c
}

func (e *env) assertNoLeaks(t *testing.T) {
	t.Helper()
	out, err := exec.Command(runcBinary, "--root", e.root, "list", "-q").CombinedOutput()
	if err != nil {
		t.Errorf("runc list: %v: %s", err, out)
	} else if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("runc state left: %q", s)
		_ = exec.Command(runcBinary, "--root", e.root, "delete", "--force", e.id).Run()
	}
	if m, _ := filepath.Glob("/sys/fs/cgroup/*/berth-test/" + e.id); len(m) > 0 {
		t.Errorf("cgroups left: %v", m)
	}
	if _, err := os.Stat(e.socket); err == nil {
		t.Errorf("socket %s left", e.socket)
	}
}

func shimPid(t *testing.T, stateDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "shim.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// procStat returns the state letter and parent pid of pid; ok false when
// the process is gone.
func procStat(pid int) (state byte, ppid int, ok bool) {
	st, err := api.ReadProcStat(pid)
	return st.State, st.PPid, err == nil
}

// children lists pids whose parent is ppid, with their state letters.
func children(ppid int) map[int]byte {
	out := map[int]byte{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if st, pp, ok := procStat(pid); ok && pp == ppid {
			out[pid] = st
		}
	}
	return out
}

// alive reports a live (non-zombie) process. PID 1 on this machine does
// not reap orphans, so a dead shim may linger as a zombie.
func alive(pid int) bool {
	st, _, ok := procStat(pid)
	return ok && st != 'Z' && st != 'X'
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
