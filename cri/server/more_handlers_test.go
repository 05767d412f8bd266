package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCheckpointPodArguments(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	sb, running, _ := ts.runningAndCreated(t)
	empty := t.TempDir()
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    *runtime.CheckpointPodRequest
		is   func(error) bool
	}{
		{"unknown option", &runtime.CheckpointPodRequest{PodSandboxId: sb, OutputPath: empty, ContainerIds: []string{running},
			Options: map[string]string{"tcp": "yes"}}, errdefs.IsInvalidArgument},
		{"bad option value", &runtime.CheckpointPodRequest{PodSandboxId: sb, OutputPath: empty, ContainerIds: []string{running},
			Options: map[string]string{"volumes": "all"}}, errdefs.IsInvalidArgument},
		{"relative output", &runtime.CheckpointPodRequest{PodSandboxId: sb, OutputPath: "out", ContainerIds: []string{running}}, errdefs.IsInvalidArgument},
		{"output not empty", &runtime.CheckpointPodRequest{PodSandboxId: sb, OutputPath: full, ContainerIds: []string{running}}, errdefs.IsInvalidArgument},
		{"no containers", &runtime.CheckpointPodRequest{PodSandboxId: sb, OutputPath: empty}, errdefs.IsInvalidArgument},
		{"container twice", &runtime.CheckpointPodRequest{PodSandboxId: sb, OutputPath: empty, ContainerIds: []string{running, running}}, errdefs.IsInvalidArgument},
		{"unknown pod", &runtime.CheckpointPodRequest{PodSandboxId: "nope", OutputPath: empty, ContainerIds: []string{running}}, errdefs.IsNotFound},
		{"no CRIU", &runtime.CheckpointPodRequest{PodSandboxId: sb, OutputPath: empty, ContainerIds: []string{running}}, errdefs.IsFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.CheckpointPod(ctx, tc.r)
			wantErr(t, err, tc.is, "checkpoint error")
		})
	}
	if ts.tasks.get(running).has("pause") {
		t.Error("a refused checkpoint paused a container")
	}
}

func TestRestorePodArguments(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		r    *runtime.RestorePodRequest
	}{
		{"option", &runtime.RestorePodRequest{CheckpointPath: t.TempDir(), Options: map[string]string{"x": "y"}}},
		{"no path", &runtime.RestorePodRequest{}},
		{"relative path", &runtime.RestorePodRequest{CheckpointPath: "ckpt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.RestorePod(ctx, tc.r)
			wantErr(t, err, errdefs.IsInvalidArgument, "InvalidArgument")
		})
	}
	if got := ts.store.Sandboxes(); len(got) != 0 {
		t.Errorf("refused restores made sandboxes: %v", got)
	}
}

func TestUpdatePodSandboxResources(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	res := &runtime.LinuxContainerResources{CpuShares: 512}
	_, err := ts.UpdatePodSandboxResources(ctx, &runtime.UpdatePodSandboxResourcesRequest{PodSandboxId: "nope", Resources: res})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	// A pod without a cgroup_parent of its own has no cgroup to resize.
	sb := ts.runPod(t, podConfig("web"))
	_, err = ts.UpdatePodSandboxResources(ctx, &runtime.UpdatePodSandboxResourcesRequest{PodSandboxId: sb, Resources: res})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	cfg := podConfig("own")
	cfg.Linux = &runtime.LinuxPodSandboxConfig{CgroupParent: "/kubepods/podown"}
	own := ts.runPod(t, cfg)
	_, err = ts.UpdatePodSandboxResources(ctx, &runtime.UpdatePodSandboxResourcesRequest{PodSandboxId: own, Resources: res})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition for a cgroup that does not exist")
}

func TestStatsHandlers(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	_, err := ts.ContainerStats(ctx, &runtime.ContainerStatsRequest{ContainerId: "nope"})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	_, err = ts.PodSandboxStats(ctx, &runtime.PodSandboxStatsRequest{PodSandboxId: "nope"})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	sb, running, created := ts.runningAndCreated(t)
	st, err := ts.ContainerStats(ctx, &runtime.ContainerStatsRequest{ContainerId: created})
	if err != nil || st.GetStats().GetAttributes().GetId() != created {
		t.Fatalf("ContainerStats = %v, %v", st, err)
	}
	list, err := ts.ListContainerStats(ctx, &runtime.ListContainerStatsRequest{Filter: &runtime.ContainerStatsFilter{Id: running}})
	if err != nil || len(list.GetStats()) != 1 {
		t.Fatalf("ListContainerStats = %v, %v", list, err)
	}
	ps, err := ts.PodSandboxStats(ctx, &runtime.PodSandboxStatsRequest{PodSandboxId: sb})
	if err != nil || ps.GetStats().GetAttributes().GetId() != sb || len(ps.GetStats().GetLinux().GetContainers()) != 2 {
		t.Fatalf("PodSandboxStats = %v, %v", ps, err)
	}
	d, err := ts.ListMetricDescriptors(ctx, &runtime.ListMetricDescriptorsRequest{})
	if err != nil || len(d.GetDescriptors()) == 0 {
		t.Fatalf("ListMetricDescriptors = %v, %v", d, err)
	}
}

// eventStream is a GetContainerEvents stream that hands events to a
// channel.
type eventStream struct {
	grpc.ServerStream
	ctx context.Context
	ch  chan *runtime.ContainerEventResponse
}

func (e *eventStream) Context() context.Context { return e.ctx }
func (e *eventStream) Send(ev *runtime.ContainerEventResponse) error {
	e.ch <- ev
	return nil
}

// Lifecycle events carry the pod's and its containers' statuses, as
// kubelet's evented PLEG caches them.
func TestContainerEvents(t *testing.T) {
	ts := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	stream := &eventStream{ctx: ctx, ch: make(chan *runtime.ContainerEventResponse, 64)}
	done := make(chan error, 1)
	go func() { done <- ts.GetContainerEvents(&runtime.GetEventsRequest{}, stream) }()
	deadline := time.Now().Add(5 * time.Second)
	for ts.events.Subscribers() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no subscriber")
		}
		time.Sleep(time.Millisecond)
	}
	sb := ts.runPod(t, podConfig("web"))
	id := ts.startContainer(t, sb, containerConfig("app"))
	want := []struct {
		id  string
		typ runtime.ContainerEventType
	}{
		{sb, runtime.ContainerEventType_CONTAINER_CREATED_EVENT},
		{sb, runtime.ContainerEventType_CONTAINER_STARTED_EVENT},
		{id, runtime.ContainerEventType_CONTAINER_CREATED_EVENT},
		{id, runtime.ContainerEventType_CONTAINER_STARTED_EVENT},
	}
	for _, w := range want {
		select {
		case ev := <-stream.ch:
			if ev.GetContainerId() != w.id || ev.GetContainerEventType() != w.typ || ev.GetPodSandboxStatus().GetId() != sb {
				t.Errorf("event %v %v (pod %q), want %v %v", ev.GetContainerId(), ev.GetContainerEventType(), ev.GetPodSandboxStatus().GetId(), w.id, w.typ)
			}
			if w.id == id && len(ev.GetContainersStatuses()) != 1 {
				t.Errorf("container event with %d container statuses", len(ev.GetContainersStatuses()))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %v event for %s", w.typ, w.id)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("stream ended with %v", err)
	}
}

func TestReopenContainerLogWithLog(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	sb := ts.runPod(t, podConfig("web"))
	cfg := containerConfig("logged")
	cfg.LogPath = "logged/0.log"
	ts.images.addImage(testImage)
	resp, err := ts.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: sb, Config: cfg,
		SandboxConfig: &runtime.PodSandboxConfig{LogDirectory: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetContainerId()
	if _, err := ts.StartContainer(ctx, &runtime.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.ReopenContainerLog(ctx, &runtime.ReopenContainerLogRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if !ts.tasks.get(id).has("reopen log") {
		t.Error("the shim was not asked to reopen the log")
	}
}

func TestRuntimeConfigAndFsInfo(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	rc, err := ts.RuntimeConfig(ctx, &runtime.RuntimeConfigRequest{})
	if err != nil || rc.GetLinux().GetCgroupDriver() != runtime.CgroupDriver_CGROUPFS {
		t.Errorf("RuntimeConfig = %v, %v", rc, err)
	}
	fs, err := ts.ImageFsInfo(ctx, &runtime.ImageFsInfoRequest{})
	if err != nil || len(fs.GetImageFilesystems()) != 1 || fs.GetImageFilesystems()[0].GetFsId().GetMountpoint() != "/" {
		t.Errorf("ImageFsInfo = %v, %v", fs, err)
	}
}
