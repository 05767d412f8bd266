package task

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/store/storetest"
	shimapi "github.com/berth-runtime/berth/shim/api"
)

// newTestManager returns a manager over a fresh store whose shim binary
// is false(1): no shim ever answers, so what is tested is how the manager
// copes with shims that are gone.
func newTestManager(t *testing.T) (*Manager, *store.Store, config.Config) {
	t.Helper()
	dir := t.TempDir()
	st := storetest.Open(t)
	cfg := config.Default()
	cfg.Root, cfg.State = filepath.Join(dir, "root"), filepath.Join(dir, "state")
	cfg.Runtime.Handlers = map[string]config.Handler{"runc": {Binary: "true"}}
	m, err := New(Options{
		Config: cfg, Store: st, ShimPath: "/bin/false", SocketsDir: filepath.Join(dir, "s"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, st, cfg
}

func addContainer(t *testing.T, st *store.Store, cfg config.Config, id string, status store.ContainerStatus) store.Container {
	t.Helper()
	bundle := filepath.Join(cfg.State, "containers", id)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	rec := store.Container{ContainerMeta: store.ContainerMeta{ID: id, SandboxID: "sb", Name: "ctr_" + id, Bundle: bundle, RuntimeHandler: "runc"}, Status: status}
	if err := st.AddContainer(rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("New with no options: %v", err)
	}
}

// A container whose shim is gone and left no exit file ended with an
// error; one caught inside CreateContainer says so.
func TestRecoverLostShim(t *testing.T) {
	m, st, cfg := newTestManager(t)
	ctx := context.Background()
	running := addContainer(t, st, cfg, "running", store.ContainerStatus{State: store.ContainerRunning, Pid: 99999})
	creating := addContainer(t, st, cfg, "creating", store.ContainerStatus{State: store.ContainerCreated})
	for _, c := range []store.Container{running, creating} {
		if err := m.Recover(ctx, c); err != nil {
			t.Fatalf("recover %s: %v", c.ID, err)
		}
		if _, ok := m.Get(c.ID); ok {
			t.Errorf("%s has a task without a shim", c.ID)
		}
	}
	got, _ := st.Container("running")
	if got.Status.State != store.ContainerExited || got.Status.ExitCode != 255 || got.Status.Reason != "Error" || got.Status.Pid != 0 {
		t.Errorf("lost running container: %+v", got.Status)
	}
	got, _ = st.Container("creating")
	if got.Status.State != store.ContainerExited || got.Status.Message == "" {
		t.Errorf("container caught creating: %+v", got.Status)
	}
}

func TestRecoverExitedIsLeftAlone(t *testing.T) {
	m, st, cfg := newTestManager(t)
	c := addContainer(t, st, cfg, "done", store.ContainerStatus{State: store.ContainerExited, ExitCode: 3, Reason: "Error"})
	if err := m.Recover(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Container("done"); !reflect.DeepEqual(got.Status, c.Status) {
		t.Errorf("status %+v, want %+v", got.Status, c.Status)
	}
}

func TestRecordExit(t *testing.T) {
	m, st, cfg := newTestManager(t)
	addContainer(t, st, cfg, "a", store.ContainerStatus{State: store.ContainerRunning, Pid: 10, Reason: "OOMKilled"})
	at := time.Unix(1000, 0)
	if err := m.recordExit("a", Exit{Status: 137, ExitedAt: at}); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Container("a")
	if got.Status.State != store.ContainerExited || got.Status.ExitCode != 137 || got.Status.FinishedAt != at.UnixNano() ||
		got.Status.Reason != "OOMKilled" || got.Status.Pid != 0 {
		t.Errorf("status %+v", got.Status)
	}
	// The first exit recorded stands.
	if err := m.recordExit("a", Exit{Status: 0, ExitedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if again, _ := st.Container("a"); !reflect.DeepEqual(again.Status, got.Status) {
		t.Errorf("second exit changed the status to %+v", again.Status)
	}
	// A container removed meanwhile is no error.
	if err := m.recordExit("gone", Exit{}); err != nil {
		t.Errorf("exit of a removed container: %v", err)
	}
}

// Release succeeds at once when neither a shim nor the runtime holds the
// container, and fails while the runtime keeps its state.
func TestRelease(t *testing.T) {
	m, st, cfg := newTestManager(t)
	ctx := context.Background()
	c := addContainer(t, st, cfg, "a", store.ContainerStatus{State: store.ContainerExited})
	if err := m.Release(ctx, c); err != nil {
		t.Fatalf("release of a container nothing holds: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.HandlerRoot("runc"), c.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, c); err == nil {
		t.Fatal("release succeeded while the runtime keeps the container's state")
	}
}

func TestSpawnFailure(t *testing.T) {
	m, st, cfg := newTestManager(t)
	ctx := context.Background()
	c := addContainer(t, st, cfg, "a", store.ContainerStatus{State: store.ContainerCreated})
	p := m.Spawn(ctx, c)
	if _, err := p.Create(ctx, CreateOpts{}); err == nil {
		t.Fatal("create through a shim that never started succeeded")
	}
	if err := p.Discard(ctx); err != nil {
		t.Errorf("discard: %v", err)
	}
	if err := p.Destroy(ctx); err != nil {
		t.Errorf("destroy of nothing created: %v", err)
	}
	p.Watch()
	if _, ok := m.Get(c.ID); ok {
		t.Error("a failed create is watched")
	}
}

func TestCreateUnknownHandler(t *testing.T) {
	m, st, cfg := newTestManager(t)
	ctx := context.Background()
	c := addContainer(t, st, cfg, "a", store.ContainerStatus{State: store.ContainerCreated})
	c.RuntimeHandler = "kata"
	p := m.Spawn(ctx, c)
	_, err := p.Create(ctx, CreateOpts{})
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("create with an unknown handler: %v", err)
	}
	if err := p.Discard(ctx); err != nil {
		t.Errorf("discard: %v", err)
	}
}

// A container whose shim runs is served at once: it stays RUNNING with a
// task, the first call that needs the shim connects it, and a shim that
// then does not answer is handled as lost.
func TestRecoverReattachesOnDemand(t *testing.T) {
	m, st, cfg := newTestManager(t)
	c := addContainer(t, st, cfg, "a", store.ContainerStatus{State: store.ContainerRunning, Pid: 99999})
	// A live process stands in for the shim; it has no socket.
	shim := exec.Command("sleep", "60")
	if err := shim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shim.Process.Kill(); _ = shim.Wait() })
	if err := shimapi.WriteShimPid(c.Bundle, shim.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// b, left to Reattach, names its shim in the record (no pid files);
	// gone's record names a process that is not its shim (another start
	// time), so it is settled as lost before Recover returns.
	start, err := shimapi.ProcessStartTime(shim.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	b := addContainer(t, st, cfg, "b", store.ContainerStatus{State: store.ContainerRunning, Pid: 99998, ShimPid: shim.Process.Pid, ShimStart: start})
	gone := addContainer(t, st, cfg, "gone", store.ContainerStatus{State: store.ContainerRunning, Pid: 99997, ShimPid: shim.Process.Pid, ShimStart: start + 1})
	for _, r := range []store.Container{c, b, gone} {
		if err := m.Recover(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := m.Get(gone.ID); ok {
		t.Error("a task for a container whose recorded shim is not running")
	}
	if got, _ := st.Container(gone.ID); got.Status.State != store.ContainerExited || got.Status.ShimPid != 0 {
		t.Errorf("container whose shim is gone after Recover: %+v", got.Status)
	}
	task, ok := m.Get(c.ID)
	if !ok {
		t.Fatal("no task for a container whose shim runs")
	}
	if got, _ := st.Container(c.ID); got.Status.State != store.ContainerRunning {
		t.Fatalf("state %v before the shim was reattached, want running", got.Status.State)
	}
	// Before Reattach came to it.
	if err := task.Kill(context.Background(), syscall.SIGTERM, false); !errdefs.IsUnavailable(err) {
		t.Errorf("kill of a container whose shim does not answer: %v, want Unavailable", err)
	}
	select {
	case <-task.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("task not done after its shim was lost")
	}
	if got, _ := st.Container(b.ID); got.Status.State != store.ContainerRunning {
		t.Fatalf("b before Reattach: %v, want running", got.Status.State)
	}
	m.Reattach()
	for _, id := range []string{c.ID, b.ID} {
		if _, ok := m.Get(id); ok {
			t.Errorf("%s: lost shim's task still held", id)
		}
		if got, _ := st.Container(id); got.Status.State != store.ContainerExited || got.Status.ExitCode != 255 {
			t.Errorf("%s: lost shim's container: %+v", id, got.Status)
		}
	}
}
