package server

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	utilexec "k8s.io/utils/exec"

	"github.com/berth-runtime/berth/cri/store"
)

// runningAndCreated returns a pod with a running and a created container.
func (ts *testServer) runningAndCreated(t *testing.T) (sb, running, created string) {
	t.Helper()
	sb = ts.runPod(t, podConfig("web"))
	return sb, ts.startContainer(t, sb, containerConfig("run")), ts.createContainer(t, sb, containerConfig("new"))
}

func TestExecArguments(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	_, running, created := ts.runningAndCreated(t)
	for _, tc := range []struct {
		name string
		id   string
		cmd  []string
		is   func(error) bool
	}{
		{"no command", running, nil, errdefs.IsInvalidArgument},
		{"empty command", running, []string{""}, errdefs.IsInvalidArgument},
		{"unknown container", "nope", []string{"ls"}, errdefs.IsNotFound},
		{"not running", created, []string{"ls"}, errdefs.IsFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.Exec(ctx, &runtime.ExecRequest{ContainerId: tc.id, Cmd: tc.cmd, Stdout: true})
			wantErr(t, err, tc.is, "Exec")
			_, err = ts.ExecSync(ctx, &runtime.ExecSyncRequest{ContainerId: tc.id, Cmd: tc.cmd})
			wantErr(t, err, tc.is, "ExecSync")
			err = ts.StreamRuntime().Exec(ctx, tc.id, tc.cmd, nil, nil, nil, false, nil)
			wantErr(t, err, tc.is, "streamed exec")
		})
	}
	resp, err := ts.Exec(ctx, &runtime.ExecRequest{ContainerId: running, Cmd: []string{"ls"}, Stdout: true})
	if err != nil || resp.GetUrl() == "" {
		t.Fatalf("Exec = %v, %v", resp, err)
	}
	ts.streams = nil
	_, err = ts.Exec(ctx, &runtime.ExecRequest{ContainerId: running, Cmd: []string{"ls"}, Stdout: true})
	wantErr(t, err, errdefs.IsUnavailable, "Unavailable without a streaming server")
}

func TestExecSync(t *testing.T) {
	ts := newTestServer(t)
	ts.tasks.newTask = func(ft *fakeTask) { ft.execOut, ft.execExit = "hello\n", 3 }
	_, running, _ := ts.runningAndCreated(t)
	resp, err := ts.ExecSync(context.Background(), &runtime.ExecSyncRequest{ContainerId: running, Cmd: []string{"echo", "hello"}, Timeout: 5})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetStdout()) != "hello\n" || resp.GetExitCode() != 3 {
		t.Errorf("ExecSync = %q, %d", resp.GetStdout(), resp.GetExitCode())
	}
	ts.tasks.get(running).execErr = context.DeadlineExceeded
	_, err = ts.ExecSync(context.Background(), &runtime.ExecSyncRequest{ContainerId: running, Cmd: []string{"sleep", "9"}, Timeout: 1})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timed out exec: %v, want DeadlineExceeded", err)
	}
}

// A streamed exec's non-zero exit reaches the client as its exit code.
func TestStreamExecExitCode(t *testing.T) {
	ts := newTestServer(t)
	ts.tasks.newTask = func(ft *fakeTask) { ft.execExit = 7 }
	_, running, _ := ts.runningAndCreated(t)
	var out bytes.Buffer
	err := ts.StreamRuntime().Exec(context.Background(), running, []string{"false"}, nil, nopCloser{&out}, nil, false, nil)
	var code utilexec.CodeExitError
	if !errors.As(err, &code) || code.Code != 7 {
		t.Fatalf("streamed exec: %v, want exit code 7", err)
	}
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

func TestAttach(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	_, running, created := ts.runningAndCreated(t)
	_, err := ts.Attach(ctx, &runtime.AttachRequest{ContainerId: created, Stdout: true})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	_, err = ts.Attach(ctx, &runtime.AttachRequest{ContainerId: "nope", Stdout: true})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	if resp, err := ts.Attach(ctx, &runtime.AttachRequest{ContainerId: running, Stdout: true}); err != nil || resp.GetUrl() == "" {
		t.Fatalf("Attach = %v, %v", resp, err)
	}
	if err := ts.StreamRuntime().Attach(ctx, running, nil, nopCloser{&bytes.Buffer{}}, nil, false, nil); err != nil {
		t.Fatal(err)
	}
	if !ts.tasks.get(running).has("attach") {
		t.Error("streamed attach did not reach the task")
	}
}

func TestPortForward(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	sb := ts.runPod(t, podConfig("web"))
	if resp, err := ts.PortForward(ctx, &runtime.PortForwardRequest{PodSandboxId: sb, Port: []int32{80}}); err != nil || resp.GetUrl() == "" {
		t.Fatalf("PortForward = %v, %v", resp, err)
	}
	_, err := ts.PortForward(ctx, &runtime.PortForwardRequest{PodSandboxId: "nope"})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	if _, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: sb}); err != nil {
		t.Fatal(err)
	}
	_, err = ts.PortForward(ctx, &runtime.PortForwardRequest{PodSandboxId: sb, Port: []int32{80}})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
}

func TestUpdateContainerResources(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	_, running, _ := ts.runningAndCreated(t)
	if _, err := ts.UpdateContainerResources(ctx, &runtime.UpdateContainerResourcesRequest{ContainerId: running}); err != nil {
		t.Fatalf("update without resources: %v", err)
	}
	_, err := ts.UpdateContainerResources(ctx, &runtime.UpdateContainerResourcesRequest{ContainerId: running, Windows: &runtime.WindowsContainerResources{}})
	wantErr(t, err, errdefs.IsInvalidArgument, "InvalidArgument for Windows resources")
	res := &runtime.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: 64 << 20}
	_, err = ts.UpdateContainerResources(ctx, &runtime.UpdateContainerResourcesRequest{ContainerId: "nope", Linux: res})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	if _, err := ts.UpdateContainerResources(ctx, &runtime.UpdateContainerResourcesRequest{ContainerId: running, Linux: res}); err != nil {
		t.Fatal(err)
	}
	if !ts.tasks.get(running).has("update") {
		t.Error("update did not reach the task")
	}
	st, err := ts.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: running})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetStatus().GetResources().GetLinux(); got.GetCpuShares() != 512 || got.GetMemoryLimitInBytes() != 64<<20 {
		t.Errorf("status resources %v after update", got)
	}
	// A failed update is not recorded.
	ts.tasks.get(running).updateErr = errors.New("runc update failed")
	if _, err := ts.UpdateContainerResources(ctx, &runtime.UpdateContainerResourcesRequest{ContainerId: running,
		Linux: &runtime.LinuxContainerResources{CpuShares: 1024}}); err == nil {
		t.Fatal("failed update succeeded")
	}
	st, _ = ts.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: running})
	if got := st.GetStatus().GetResources().GetLinux().GetCpuShares(); got != 512 {
		t.Errorf("cpu shares %d recorded after a failed update", got)
	}
	ts.tasks.exit(ts.tasks.get(running), 0)
	_, err = ts.UpdateContainerResources(ctx, &runtime.UpdateContainerResourcesRequest{ContainerId: running, Linux: res})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition for an exited container")
}

func TestReopenContainerLog(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	_, running, created := ts.runningAndCreated(t)
	_, err := ts.ReopenContainerLog(ctx, &runtime.ReopenContainerLogRequest{ContainerId: created})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	_, err = ts.ReopenContainerLog(ctx, &runtime.ReopenContainerLogRequest{ContainerId: "nope"})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	// Without a log there is nothing to reopen.
	if _, err := ts.ReopenContainerLog(ctx, &runtime.ReopenContainerLogRequest{ContainerId: running}); err != nil {
		t.Fatal(err)
	}
	if ts.tasks.get(running).has("reopen log") {
		t.Error("reopened a log the container does not have")
	}
}

func TestCheckpointContainerArguments(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	_, running, created := ts.runningAndCreated(t)
	for _, tc := range []struct {
		name string
		r    *runtime.CheckpointContainerRequest
		is   func(error) bool
	}{
		{"no location", &runtime.CheckpointContainerRequest{ContainerId: running}, errdefs.IsInvalidArgument},
		{"relative location", &runtime.CheckpointContainerRequest{ContainerId: running, Location: "c.tar"}, errdefs.IsInvalidArgument},
		{"unknown container", &runtime.CheckpointContainerRequest{ContainerId: "nope", Location: "/tmp/c.tar"}, errdefs.IsNotFound},
		// No CRIU in unit tests: refused before anything is paused.
		{"no CRIU", &runtime.CheckpointContainerRequest{ContainerId: running, Location: "/tmp/c.tar"}, errdefs.IsFailedPrecondition},
		{"not running", &runtime.CheckpointContainerRequest{ContainerId: created, Location: "/tmp/c.tar"}, errdefs.IsFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.CheckpointContainer(ctx, tc.r)
			wantErr(t, err, tc.is, "checkpoint error")
		})
	}
	if ts.tasks.get(running).has("pause") {
		t.Error("a refused checkpoint paused the container")
	}
}

func TestRuntimeStatus(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	ts.network.statusErr = errors.New("no CNI config")
	resp, err := ts.Status(ctx, &runtime.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	conds := map[string]*runtime.RuntimeCondition{}
	for _, c := range resp.GetStatus().GetConditions() {
		conds[c.GetType()] = c
	}
	if !conds[runtime.RuntimeReady].GetStatus() || conds[runtime.NetworkReady].GetStatus() ||
		conds[runtime.NetworkReady].GetReason() != "NetworkPluginNotReady" {
		t.Errorf("conditions %v", resp.GetStatus().GetConditions())
	}
	if resp.GetInfo()["config"] == "" {
		t.Error("verbose status without config")
	}
	v, err := ts.Version(ctx, &runtime.VersionRequest{})
	if err != nil || v.GetRuntimeName() != "berth" || v.GetRuntimeApiVersion() != "v1" {
		t.Errorf("Version = %v, %v", v, err)
	}
}

func TestImageHandlers(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"pull":   func() error { _, err := ts.PullImage(ctx, &runtime.PullImageRequest{}); return err },
		"status": func() error { _, err := ts.ImageStatus(ctx, &runtime.ImageStatusRequest{}); return err },
		"remove": func() error { _, err := ts.RemoveImage(ctx, &runtime.RemoveImageRequest{}); return err },
	} {
		if err := call(); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s without an image: %v, want InvalidArgument", name, err)
		}
	}
	// CRI: a missing image is an empty status, not an error.
	st, err := ts.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "missing:1"}})
	if err != nil || st.GetImage() != nil {
		t.Errorf("status of a missing image = %v, %v", st, err)
	}
	pulled, err := ts.PullImage(ctx, &runtime.PullImageRequest{Image: &runtime.ImageSpec{Image: testImage}})
	if err != nil || pulled.GetImageRef() == "" {
		t.Fatalf("PullImage = %v, %v", pulled, err)
	}
	list, err := ts.ListImages(ctx, &runtime.ListImagesRequest{Filter: &runtime.ImageFilter{Image: &runtime.ImageSpec{Image: "missing:1"}}})
	if err != nil || len(list.GetImages()) != 0 {
		t.Errorf("list of a missing image = %v, %v", list, err)
	}
	list, err = ts.ListImages(ctx, &runtime.ListImagesRequest{})
	if err != nil || len(list.GetImages()) != 1 || list.GetImages()[0].GetId() != pulled.GetImageRef() {
		t.Errorf("ListImages = %v, %v", list, err)
	}
	if _, err := ts.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: &runtime.ImageSpec{Image: testImage}}); err != nil {
		t.Fatal(err)
	}
}

// Recovery removes what was being removed and hands every other
// container to the task manager, which reattaches or records its exit.
func TestRecover(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	sb, running, created := ts.runningAndCreated(t)
	if _, err := ts.store.UpdateContainerStatus(created, func(st store.ContainerStatus) (store.ContainerStatus, error) { st.Removing = true; return st, nil }); err != nil {
		t.Fatal(err)
	}
	gone := ts.runPod(t, podConfig("gone"))
	if err := ts.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if !ts.tasks.has("recover " + running) {
		t.Errorf("task calls %v, want the running container recovered", ts.tasks.all())
	}
	// The CNI GC keeps every recorded sandbox's attachments.
	if err := ts.awaitNetworkGC(ctx); err != nil {
		t.Fatal(err)
	}
	keep := []string{sb, gone}
	slices.Sort(keep)
	if !ts.network.has("gc keep " + strings.Join(keep, ",")) {
		t.Errorf("network calls %v, want one GC keeping %v", ts.network.all(), keep)
	}
	if _, err := ts.store.Container(created); !errdefs.IsNotFound(err) {
		t.Errorf("container caught removing: %v, want it removed", err)
	}
	for _, id := range []string{sb, gone} {
		// The fake's pins are not there: a pod whose namespaces are gone
		// is reported NOTREADY, so kubelet recreates it.
		if s, _ := ts.store.Sandbox(id); s.Status.State != store.SandboxNotReady {
			t.Errorf("sandbox %s is %v after recovery without its pins", id, s.Status.State)
		}
	}
}

// berthd serves before the CNI GC of a restart ends (it runs the plugins,
// which lists and statuses do not need), and no pod network is set up or
// torn down until it has: the GC's keep list names only the pods there
// were when it started.
func TestRecoverServesBeforeNetworkGC(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	old := ts.runPod(t, podConfig("old"))
	creates := func() (n int) {
		for _, c := range ts.sandboxes.all() {
			if strings.HasPrefix(c, "create ") {
				n++
			}
		}
		return n
	}
	release := make(chan struct{})
	ts.network.gcHook = func() { <-release }
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	recovered := make(chan error, 1)
	go func() { recovered <- ts.Recover(ctx) }()
	select {
	case err := <-recovered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Recover waits for the network GC")
	}
	if _, err := ts.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: old}); err != nil {
		t.Fatalf("PodSandboxStatus during the GC: %v", err)
	}
	started := ts.runPodAsync(ctx, podConfig("new"))
	stopped := make(chan error, 1)
	go func() {
		_, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: old})
		stopped <- err
	}()
	// Both calls get as far as the network and wait there.
	for deadline := time.Now().Add(10 * time.Second); creates() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the new pod's sandbox was not created: %v", ts.sandboxes.all())
		}
	}
	time.Sleep(100 * time.Millisecond)
	during := ts.network.all()
	gcStart := slices.Index(during, "gc keep "+old)
	if gcStart < 0 {
		t.Fatalf("network calls %v: no GC keeping %s", during, old)
	}
	for _, c := range during[gcStart:] {
		if strings.HasPrefix(c, "setup ") || strings.HasPrefix(c, "teardown ") {
			t.Fatalf("network calls %v: %q came while the GC ran", ts.network.all(), c)
		}
	}
	close(release)
	res := <-started
	if res.err != nil {
		t.Fatalf("RunPodSandbox after the GC: %v", res.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("StopPodSandbox after the GC: %v", err)
	}
	calls := ts.network.all()
	done := slices.Index(calls, "gc done")
	setup := slices.Index(calls, "setup "+res.id)
	teardown := slices.Index(calls, "teardown "+old)
	if done < 0 || setup < done || teardown < done {
		t.Errorf("network calls %v: want the setup of %s and the teardown of %s after the GC", calls, res.id, old)
	}
}
