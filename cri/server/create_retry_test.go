package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type runResult struct {
	id  string
	err error
}

// holdSetup makes the next RunPodSandbox stop inside network setup until
// release is closed; entered is closed once it got there.
func holdSetup(ts *testServer) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	ts.network.setupHook = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	return entered, release
}

func (ts *testServer) runPodAsync(ctx context.Context, cfg *runtime.PodSandboxConfig) <-chan runResult {
	out := make(chan runResult, 1)
	go func() {
		resp, err := ts.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: cfg})
		out <- runResult{resp.GetPodSandboxId(), err}
	}()
	return out
}

// kubelet's call timed out while the sandbox was being made, and it asks
// again: the first call goes on regardless, and the retry waits for it and
// gets its sandbox.
func TestRunPodSandboxRetryWaitsForFirst(t *testing.T) {
	ts := newTestServer(t)
	entered, release := holdSetup(ts)
	kubeletCtx, timeout := context.WithCancel(context.Background())
	first := ts.runPodAsync(kubeletCtx, podConfig("web"))
	<-entered
	timeout()
	retry := ts.runPodAsync(context.Background(), podConfig("web"))
	select {
	case r := <-retry:
		t.Fatalf("retry answered while the first call was running: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	a, b := <-first, <-retry
	if a.err != nil || b.err != nil || a.id == "" || a.id != b.id {
		t.Fatalf("first %+v, retry %+v: want one sandbox for both", a, b)
	}
	if n := len(ts.store.Sandboxes()); n != 1 {
		t.Errorf("%d sandboxes, want 1", n)
	}
}

// When the first call fails, its rollback frees the name and the retry
// makes the sandbox itself.
func TestRunPodSandboxRetryAfterFailedFirst(t *testing.T) {
	ts := newTestServer(t)
	entered, release := holdSetup(ts)
	first := ts.runPodAsync(context.Background(), podConfig("web"))
	<-entered
	retry := ts.runPodAsync(context.Background(), podConfig("web"))
	time.Sleep(20 * time.Millisecond)                   // let the retry find the name taken
	ts.network.setupErr = errors.New("cni: no IP left") // read by Setup after release
	close(release)
	if a := <-first; a.err == nil {
		t.Fatalf("first call succeeded: %+v", a)
	}
	b := <-retry
	// The retry either waited for the first call's rollback and ran with
	// the failing network as well, or ran after it: never AlreadyExists.
	if errdefs.IsAlreadyExists(b.err) {
		t.Fatalf("retry after a failed first call: %v", b.err)
	}
}

func TestCreateContainerRetried(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	sb := ts.runPod(t, podConfig("web"))
	id := ts.createContainer(t, sb, containerConfig("app"))
	if again := ts.createContainer(t, sb, containerConfig("app")); again != id {
		t.Errorf("retried CreateContainer made %q, want the existing %q", again, id)
	}
	if n := len(ts.store.ContainersOf(sb)); n != 1 {
		t.Errorf("%d containers after a retry, want 1", n)
	}
	other := containerConfig("app")
	other.Command = []string{"/bin/true"}
	_, err := ts.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: sb, Config: other})
	wantErr(t, err, errdefs.IsAlreadyExists, "AlreadyExists for another config under the name")
	if _, err := ts.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	// Started, it is no longer what a create returns.
	_, err = ts.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: sb, Config: containerConfig("app")})
	wantErr(t, err, errdefs.IsAlreadyExists, "AlreadyExists for a started container")
}

// kubelet gave up on the call before berthd got to the shim: the create
// goes on, and kubelet's retry gets the container.
func TestCreateContainerOutlivesKubeletDeadline(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("web"))
	ts.images.addImage(testImage)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	resp, err := ts.CreateContainer(gone, &runtime.CreateContainerRequest{PodSandboxId: sb, Config: containerConfig("app")})
	if err != nil {
		t.Fatalf("CreateContainer after kubelet's deadline: %v", err)
	}
	if again := ts.createContainer(t, sb, containerConfig("app")); again != resp.GetContainerId() {
		t.Errorf("retry made %q, want %q", again, resp.GetContainerId())
	}
}

// An image volume's image_ref is recorded by CreateContainer; the retried
// request, without it, is still the same request.
func TestCreateContainerRetriedWithImageVolume(t *testing.T) {
	ts := newTestServer(t)
	sb := ts.runPod(t, podConfig("web"))
	ts.images.addImage("registry.test/data:1")
	cfg := func() *runtime.ContainerConfig {
		c := containerConfig("app")
		c.Mounts = []*runtime.Mount{{ContainerPath: "/data", Readonly: true, Image: &runtime.ImageSpec{Image: "registry.test/data:1"}}}
		return c
	}
	id := ts.createContainer(t, sb, cfg())
	rec, err := ts.store.Container(id)
	if err != nil || rec.Config.GetMounts()[0].GetImage().GetImageRef() == "" {
		t.Fatalf("record %+v, %v: want the image volume's image_ref", rec.Config, err)
	}
	if again := ts.createContainer(t, sb, cfg()); again != id {
		t.Errorf("retried CreateContainer made %q, want the existing %q", again, id)
	}
}
