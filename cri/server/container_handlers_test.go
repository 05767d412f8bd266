package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
)

const testImage = "registry.test/busybox:1"

func containerConfig(name string) *runtime.ContainerConfig {
	return &runtime.ContainerConfig{
		Metadata: &runtime.ContainerMetadata{Name: name},
		Image:    &runtime.ImageSpec{Image: testImage},
		Command:  []string{"/bin/sleep", "60"},
		Labels:   map[string]string{"ctr": name},
	}
}

func (ts *testServer) createContainer(t *testing.T, sandboxID string, cfg *runtime.ContainerConfig) string {
	t.Helper()
	if _, err := ts.images.Get(context.Background(), cfg.GetImage().GetImage()); err != nil {
		ts.images.addImage(cfg.GetImage().GetImage())
	}
	resp, err := ts.CreateContainer(context.Background(), &runtime.CreateContainerRequest{PodSandboxId: sandboxID, Config: cfg})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	return resp.GetContainerId()
}

func (ts *testServer) startContainer(t *testing.T, sandboxID string, cfg *runtime.ContainerConfig) string {
	t.Helper()
	id := ts.createContainer(t, sandboxID, cfg)
	if _, err := ts.StartContainer(context.Background(), &runtime.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	return id
}

func (ts *testServer) containerState(t *testing.T, id string) store.ContainerState {
	t.Helper()
	c, err := ts.store.Container(id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Status.State
}

func TestCreateContainerArguments(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	sb := ts.runPod(t, podConfig("web"))
	ts.images.addImage(testImage)
	noImage := containerConfig("a")
	noImage.Image = nil
	noName := containerConfig("")
	escape := containerConfig("a")
	escape.LogPath = "../../etc/x.log"
	for _, tc := range []struct {
		name string
		r    *runtime.CreateContainerRequest
		is   func(error) bool
	}{
		{"no config", &runtime.CreateContainerRequest{PodSandboxId: sb}, errdefs.IsInvalidArgument},
		{"no name", &runtime.CreateContainerRequest{PodSandboxId: sb, Config: noName}, errdefs.IsInvalidArgument},
		{"no image", &runtime.CreateContainerRequest{PodSandboxId: sb, Config: noImage}, errdefs.IsInvalidArgument},
		{"unknown sandbox", &runtime.CreateContainerRequest{PodSandboxId: "nope", Config: containerConfig("a")}, errdefs.IsNotFound},
		{"log path escapes", &runtime.CreateContainerRequest{PodSandboxId: sb, Config: escape,
			SandboxConfig: &runtime.PodSandboxConfig{LogDirectory: "/var/log/pods/x"}}, errdefs.IsInvalidArgument},
		{"image not pulled", &runtime.CreateContainerRequest{PodSandboxId: sb, Config: &runtime.ContainerConfig{
			Metadata: &runtime.ContainerMetadata{Name: "a"}, Image: &runtime.ImageSpec{Image: "missing:1"}}}, errdefs.IsNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.CreateContainer(ctx, tc.r)
			if err == nil || !tc.is(err) {
				t.Fatalf("error %v", err)
			}
		})
	}
	if got := ts.tasks.all(); len(got) != 0 {
		t.Errorf("refused requests spawned shims: %v", got)
	}
	if got := ts.store.Containers(); len(got) != 0 {
		t.Errorf("refused requests left records: %v", got)
	}
}

func TestCreateContainer(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("web"))
	cfg := containerConfig("app")
	cfg.Tty, cfg.Stdin = true, true
	id := ts.createContainer(t, sb, cfg)
	c, err := ts.store.Container(id)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.State != store.ContainerCreated || c.Status.Pid != 4242 || c.Status.ShimPid != 4343 || c.Status.ShimStart != 77 ||
		c.SandboxID != sb || c.RuntimeHandler != "runc" {
		t.Errorf("record %+v", c)
	}
	if _, err := os.Stat(filepath.Join(c.Bundle, "config.json")); err != nil {
		t.Errorf("no spec written: %v", err)
	}
	ft := ts.tasks.get(id)
	if ft == nil {
		t.Fatal("created container is not watched")
	}
	if !ft.opts.Terminal || !ft.opts.Stdin || ft.opts.RestoreFrom != "" {
		t.Errorf("create options %+v", ft.opts)
	}
	st, err := ts.ContainerStatus(context.Background(), &runtime.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetStatus().GetState() != runtime.ContainerState_CONTAINER_CREATED || st.GetStatus().GetImage().GetImage() != testImage {
		t.Errorf("status %v", st.GetStatus())
	}
}

// kubelet creates containers from the image's ID; the status names the
// image by a tag, preferring the one the user asked for (the node e2e
// suite's image update specs compare it with the pod spec's image).
func TestContainerStatusImageName(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("web"))
	img := ts.images.addImage("registry.test/tools:2")
	ts.images.mu.Lock()
	img.RepoTags = append(img.RepoTags, "registry.test/busybox:latest")
	ts.images.images[img.ID] = img
	ts.images.mu.Unlock()

	// The fake store finds an image by the names it is filed under.
	ts.images.mu.Lock()
	ts.images.images["registry.test/busybox:latest"] = img
	ts.images.mu.Unlock()

	for i, tc := range []struct{ from, user, want string }{
		{img.ID, "registry.test/busybox:latest", "registry.test/busybox:latest"},
		{img.ID, "registry.test/busybox", "registry.test/busybox:latest"}, // normalised
		{img.ID, "registry.test/tools:2", "registry.test/tools:2"},
		{img.ID, "registry.test/gone:1", "registry.test/tools:2"}, // retagged since: the first tag
		{img.ID, "", "registry.test/tools:2"},
		// crictl creates from a name and sets no user image: that name.
		{"registry.test/busybox:latest", "", "registry.test/busybox:latest"},
	} {
		cfg := containerConfig("c" + strconv.Itoa(i))
		cfg.Image = &runtime.ImageSpec{Image: tc.from, UserSpecifiedImage: tc.user}
		id := ts.createContainer(t, sb, cfg)
		st, err := ts.ContainerStatus(context.Background(), &runtime.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			t.Fatal(err)
		}
		if got := st.GetStatus().GetImage().GetImage(); got != tc.want || st.GetStatus().GetImageId() != img.ID {
			t.Errorf("from %q, user image %q: status image %q (id %q), want %q", tc.from, tc.user, got, st.GetStatus().GetImageId(), tc.want)
		}
	}
}

// kubelet may not create two containers of one name and attempt in a pod
// (a retry of the same request is TestCreateContainerRetried).
func TestCreateContainerNameReserved(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("web"))
	ts.createContainer(t, sb, containerConfig("app"))
	other := containerConfig("app")
	other.Labels = map[string]string{"ctr": "other"}
	_, err := ts.CreateContainer(context.Background(), &runtime.CreateContainerRequest{PodSandboxId: sb, Config: other})
	wantErr(t, err, errdefs.IsAlreadyExists, "AlreadyExists")
	next := containerConfig("app")
	next.Metadata.Attempt = 1
	ts.createContainer(t, sb, next)
}

func TestCreateContainerRollback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(*testServer)
		undo   []string // calls the rollback must make
	}{
		{"rootfs fails", func(ts *testServer) { ts.images.prepareErr = errors.New("overlay failed") }, []string{"discard"}},
		{"shim fails", func(ts *testServer) { ts.tasks.spawnErr = errors.New("shim died") }, []string{"discard", "remove rootfs"}},
		{"runtime create fails", func(ts *testServer) { ts.tasks.createErr = errors.New("runc create failed") }, []string{"discard", "remove rootfs"}},
		{"volume dir fails", func(ts *testServer) {
			ts.images.volumeDirErr = errors.New("no space")
			img := ts.images.addImage(testImage)
			img.Config.Config.Volumes = map[string]struct{}{"/data": {}}
			ts.images.images[testImage], ts.images.images[img.ID] = img, img
		}, []string{"discard", "remove rootfs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			sb := ts.runPod(t, podConfig("web"))
			ts.images.addImage(testImage)
			tc.inject(ts)
			_, err := ts.CreateContainer(context.Background(), &runtime.CreateContainerRequest{PodSandboxId: sb, Config: containerConfig("app")})
			if err == nil {
				t.Fatal("CreateContainer succeeded")
			}
			if got := ts.store.Containers(); len(got) != 0 {
				t.Fatalf("failed create left records: %+v", got)
			}
			all := append(ts.tasks.all(), ts.images.all()...)
			for _, u := range tc.undo {
				if !anyPrefix(all, u+" ") {
					t.Errorf("calls %v, want a %s", all, u)
				}
			}
			entries, _ := os.ReadDir(ts.containersDir())
			if len(entries) != 0 {
				t.Errorf("failed create left bundles: %v", entries)
			}
			// The name is free again.
			ts.images.prepareErr, ts.images.volumeDirErr, ts.tasks.spawnErr, ts.tasks.createErr = nil, nil, nil, nil
			ts.createContainer(t, sb, containerConfig("app"))
		})
	}
}

func TestStartContainer(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	_, err := ts.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: "nope"})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	sb := ts.runPod(t, podConfig("web"))
	id := ts.startContainer(t, sb, containerConfig("app"))
	c, _ := ts.store.Container(id)
	if c.Status.State != store.ContainerRunning || c.Status.StartedAt == 0 {
		t.Errorf("status %+v after start", c.Status)
	}
	_, err = ts.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: id})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition for a second start")
}

// A container that fails to start is killed and reports why.
func TestStartContainerFails(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("web"))
	ts.tasks.newTask = func(ft *fakeTask) { ft.startErr = errors.New("exec format error") }
	id := ts.createContainer(t, sb, containerConfig("app"))
	ft := ts.tasks.get(id)
	if _, err := ts.StartContainer(context.Background(), &runtime.StartContainerRequest{ContainerId: id}); err == nil {
		t.Fatal("start succeeded")
	}
	if !ft.has("kill 9") {
		t.Errorf("task calls %v, want a SIGKILL", ft.all())
	}
	<-ft.Done()
	c, _ := ts.store.Container(id)
	if c.Status.State != store.ContainerExited || c.Status.Reason != "StartError" || !strings.Contains(c.Status.Message, "exec format error") {
		t.Errorf("status %+v after a failed start", c.Status)
	}
}

func TestStartContainerPodNotReady(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("web"))
	id := ts.createContainer(t, sb, containerConfig("app"))
	if _, err := ts.store.UpdateSandboxStatus(sb, func(st store.SandboxStatus) (store.SandboxStatus, error) {
		st.State = store.SandboxNotReady
		return st, nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err := ts.StartContainer(context.Background(), &runtime.StartContainerRequest{ContainerId: id})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
}

func TestStopContainer(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	// CRI: stopping a container that does not exist succeeds.
	if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: "nope"}); err != nil {
		t.Fatal(err)
	}
	sb := ts.runPod(t, podConfig("web"))

	t.Run("stop signal ends it", func(t *testing.T) {
		ts.tasks.newTask = func(ft *fakeTask) { ft.exitOn = []syscall.Signal{syscall.SIGTERM} }
		id := ts.startContainer(t, sb, containerConfig("polite"))
		ft := ts.tasks.get(id)
		if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
			t.Fatal(err)
		}
		if got := ft.all(); len(got) != 2 || got[1] != "kill 15" {
			t.Errorf("task calls %v, want start and SIGTERM only", got)
		}
		if st := ts.containerState(t, id); st != store.ContainerExited {
			t.Errorf("state %s after stop", st)
		}
		// Stopping again succeeds.
		if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("image stop signal", func(t *testing.T) {
		ts.tasks.newTask = func(ft *fakeTask) { ft.exitOn = []syscall.Signal{syscall.SIGUSR1} }
		cfg := containerConfig("usr1")
		cfg.StopSignal = runtime.Signal_SIGNAL_SIGUSR1
		id := ts.startContainer(t, sb, cfg)
		ft := ts.tasks.get(id)
		if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
			t.Fatal(err)
		}
		if !ft.has("kill 10") {
			t.Errorf("task calls %v, want SIGUSR1", ft.all())
		}
	})
	t.Run("timeout kills", func(t *testing.T) {
		ts.tasks.newTask = nil
		id := ts.startContainer(t, sb, containerConfig("stubborn"))
		ft := ts.tasks.get(id)
		begin := time.Now()
		if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d < time.Second {
			t.Errorf("killed after %s, before the timeout", d)
		}
		if got := ft.all(); len(got) != 3 || got[1] != "kill 15" || got[2] != "kill 9" {
			t.Errorf("task calls %v, want SIGTERM then SIGKILL", got)
		}
	})
	t.Run("zero timeout kills at once", func(t *testing.T) {
		id := ts.startContainer(t, sb, containerConfig("now"))
		ft := ts.tasks.get(id)
		if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
		if got := ft.all(); len(got) != 2 || got[1] != "kill 9" {
			t.Errorf("task calls %v, want SIGKILL only", got)
		}
	})
	t.Run("signal fails as the process exits", func(t *testing.T) {
		// The shim is torn down under the signal, which fails with
		// "connection closed": a stop that succeeded.
		ts.tasks.newTask = func(ft *fakeTask) { ft.killErr = errors.New("ttrpc: closed") }
		id := ts.startContainer(t, sb, containerConfig("exiting"))
		ft := ts.tasks.get(id)
		go func() {
			time.Sleep(50 * time.Millisecond)
			ts.tasks.exit(ft, 0)
		}()
		if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 10}); err != nil {
			t.Fatalf("stop: %v", err)
		}
	})
	// A lost shim means the exit is on its way, however slowly the watcher
	// records it on a loaded node; other signal errors get a short wait.
	defer func(w time.Duration) { signalFailWait = w }(signalFailWait)
	signalFailWait = 50 * time.Millisecond
	// Right after a restart the shim may also have deleted an exited
	// container before the daemon's watcher has recorded the exit.
	for _, tc := range []struct {
		name, ctr string
		killErr   error
	}{
		{"lost shim", "slow-exit", fmt.Errorf("shim kill: connection lost: %w", errdefs.ErrUnavailable)},
		{"deleted container", "deleted", fmt.Errorf("shim kill: cannot kill a deleted container: %w", errdefs.ErrNotFound)},
	} {
		t.Run(tc.name+" waits for the exit past the short wait", func(t *testing.T) {
			ts.tasks.newTask = func(ft *fakeTask) { ft.killErr = tc.killErr }
			id := ts.startContainer(t, sb, containerConfig(tc.ctr))
			ft := ts.tasks.get(id)
			go func() {
				time.Sleep(500 * time.Millisecond)
				ts.tasks.exit(ft, 0)
			}()
			if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 10}); err != nil {
				t.Fatalf("stop: %v", err)
			}
		})
	}
	t.Run("other signal error is reported after the short wait", func(t *testing.T) {
		ts.tasks.newTask = func(ft *fakeTask) { ft.killErr = fmt.Errorf("shim kill: %w", errdefs.ErrFailedPrecondition) }
		id := ts.startContainer(t, sb, containerConfig("refuses"))
		begin := time.Now()
		_, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id, Timeout: 10})
		if !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("stop = %v, want the signal's FailedPrecondition", err)
		}
		if d := time.Since(begin); d > 5*time.Second {
			t.Errorf("reported after %s", d)
		}
		ts.tasks.exit(ts.tasks.get(id), 0)
	})
}

func TestRemoveContainer(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	if _, err := ts.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: "nope"}); err != nil {
		t.Fatal(err)
	}
	sb := ts.runPod(t, podConfig("web"))
	ts.tasks.newTask = nil
	id := ts.startContainer(t, sb, containerConfig("app"))
	c, _ := ts.store.Container(id)
	// A running container is killed first.
	if _, err := ts.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.Container(id); !errdefs.IsNotFound(err) {
		t.Errorf("record after remove: %v", err)
	}
	if !ts.tasks.has("release "+id) || !ts.images.has("remove rootfs "+id) {
		t.Errorf("calls %v %v, want the runtime released and the rootfs removed", ts.tasks.all(), ts.images.all())
	}
	if _, err := os.Stat(c.Bundle); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle after remove: %v", err)
	}
	if _, err := ts.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	_, err := ts.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: id})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
}

// A runtime that still holds the container fails the removal, which
// kubelet retries; the record stays, marked removing, for recovery.
func TestRemoveContainerReleaseFails(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	sb := ts.runPod(t, podConfig("web"))
	id := ts.createContainer(t, sb, containerConfig("app"))
	ts.tasks.releaseErr = errors.New("runc delete failed")
	if _, err := ts.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err == nil {
		t.Fatal("remove succeeded")
	}
	c, err := ts.store.Container(id)
	if err != nil || !c.Status.Removing {
		t.Fatalf("record %+v, %v: want it kept, marked removing", c.Status, err)
	}
	if ts.images.has("remove rootfs " + id) {
		t.Error("rootfs removed under a runtime that still holds the container")
	}
	ts.tasks.releaseErr = nil
	if err := ts.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.Container(id); !errdefs.IsNotFound(err) {
		t.Errorf("recovery left the removing container: %v", err)
	}
}

func TestListContainers(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	a := ts.runPod(t, podConfig("a"))
	b := ts.runPod(t, podConfig("b"))
	ca := ts.startContainer(t, a, containerConfig("one"))
	cb := ts.createContainer(t, b, containerConfig("two"))
	running := runtime.ContainerStateValue{State: runtime.ContainerState_CONTAINER_RUNNING}
	for name, tc := range map[string]struct {
		f    *runtime.ContainerFilter
		want []string
	}{
		"all":      {nil, []string{ca, cb}},
		"by pod":   {&runtime.ContainerFilter{PodSandboxId: b}, []string{cb}},
		"by id":    {&runtime.ContainerFilter{Id: ca[:10]}, []string{ca}},
		"by state": {&runtime.ContainerFilter{State: &running}, []string{ca}},
		"by label": {&runtime.ContainerFilter{LabelSelector: map[string]string{"ctr": "two"}}, []string{cb}},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := ts.ListContainers(ctx, &runtime.ListContainersRequest{Filter: tc.f})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range resp.GetContainers() {
				got = append(got, c.GetId())
			}
			if !sameIDs(got, tc.want) {
				t.Errorf("listed %v, want %v", got, tc.want)
			}
		})
	}
}

func TestContainerStatusExited(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("web"))
	id := ts.startContainer(t, sb, containerConfig("app"))
	ts.tasks.exit(ts.tasks.get(id), 3)
	st, err := ts.ContainerStatus(context.Background(), &runtime.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	s := st.GetStatus()
	if s.GetState() != runtime.ContainerState_CONTAINER_EXITED || s.GetExitCode() != 3 || s.GetFinishedAt() == 0 || s.GetReason() != "Error" {
		t.Errorf("status %v", s)
	}
	if st.GetInfo()["info"] == "" {
		t.Error("verbose status without info")
	}
}
