package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
	shimapi "github.com/berth-runtime/berth/shim/api"
)

// fakeNRI records the events the server raises, in order, and runs the
// test's hooks for those that may refuse or adjust.
type fakeNRI struct {
	mu     sync.Mutex
	events []string

	onRunPod func(store.Sandbox) error
	onCreate func(store.Container, *specs.Spec) error
	onUpdate func(*specs.LinuxResources) (*specs.LinuxResources, error)
}

func (f *fakeNRI) add(event, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, event+" "+id)
}

func (f *fakeNRI) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

func (f *fakeNRI) RunPodSandbox(_ context.Context, sb store.Sandbox) error {
	f.add("RunPodSandbox", sb.ID)
	if f.onRunPod != nil {
		return f.onRunPod(sb)
	}
	return nil
}
func (f *fakeNRI) StopPodSandbox(_ context.Context, sb store.Sandbox) { f.add("StopPodSandbox", sb.ID) }
func (f *fakeNRI) RemovePodSandbox(_ context.Context, sb store.Sandbox) {
	f.add("RemovePodSandbox", sb.ID)
}
func (f *fakeNRI) UpdatePodSandbox(_ context.Context, sb store.Sandbox, _, _ *runtime.LinuxContainerResources) error {
	f.add("UpdatePodSandbox", sb.ID)
	return nil
}
func (f *fakeNRI) PostUpdatePodSandbox(_ context.Context, sb store.Sandbox) {
	f.add("PostUpdatePodSandbox", sb.ID)
}
func (f *fakeNRI) CreateContainer(_ context.Context, _ store.Sandbox, c store.Container, spec *specs.Spec) error {
	f.add("CreateContainer", c.Metadata.Name)
	if f.onCreate != nil {
		return f.onCreate(c, spec)
	}
	return nil
}
func (f *fakeNRI) PostCreateContainer(_ context.Context, _ store.Sandbox, c store.Container) {
	f.add("PostCreateContainer", c.Metadata.Name)
}
func (f *fakeNRI) StartContainer(_ context.Context, _ store.Sandbox, c store.Container) error {
	f.add("StartContainer", c.Metadata.Name)
	return nil
}
func (f *fakeNRI) PostStartContainer(_ context.Context, _ store.Sandbox, c store.Container) {
	f.add("PostStartContainer", c.Metadata.Name)
}
func (f *fakeNRI) UpdateContainer(_ context.Context, _ store.Sandbox, c store.Container, res *specs.LinuxResources) (*specs.LinuxResources, error) {
	f.add("UpdateContainer", c.Metadata.Name)
	if f.onUpdate != nil {
		return f.onUpdate(res)
	}
	return res, nil
}
func (f *fakeNRI) PostUpdateContainer(_ context.Context, _ store.Sandbox, c store.Container) {
	f.add("PostUpdateContainer", c.Metadata.Name)
}
func (f *fakeNRI) StopContainer(_ context.Context, _ store.Sandbox, c store.Container) {
	f.add("StopContainer", c.Metadata.Name)
}
func (f *fakeNRI) RemoveContainer(_ context.Context, _ store.Sandbox, c store.Container) {
	f.add("RemoveContainer", c.Metadata.Name)
}
func (f *fakeNRI) BlockSync() func() { return func() {} }

func TestNRILifecycleEvents(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pod := ts.runPod(t, podConfig("web"))
	id := ts.startContainer(t, pod, containerConfig("app"))
	if _, err := ts.UpdateContainerResources(ctx, &runtime.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtime.LinuxContainerResources{CpuShares: 512}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	// Stop is idempotent; plugins hear of a stop once.
	for range 2 {
		if _, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"RunPodSandbox " + pod,
		"CreateContainer app", "PostCreateContainer app",
		"StartContainer app", "PostStartContainer app",
		"UpdateContainer app", "PostUpdateContainer app",
		"StopContainer app",
		"StopPodSandbox " + pod,
		"RemoveContainer app",
		"RemovePodSandbox " + pod,
	}
	if got := ts.plugins.all(); !slices.Equal(got, want) {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}
}

// While a plugin handles RunPodSandbox, the pod is neither listed, nor
// reported, nor open to containers; a plugin's refusal fails the call and
// leaves nothing.
func TestNRIRunPodSandboxHidesAndRefuses(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	ts.images.addImage(testImage)
	var checked bool
	ts.plugins.onRunPod = func(sb store.Sandbox) error {
		checked = true
		if l, _ := ts.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{}); len(l.GetItems()) != 0 {
			t.Errorf("pod listed during its RunPodSandbox hook: %v", l.GetItems())
		}
		if _, err := ts.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: sb.ID}); !errdefs.IsNotFound(err) {
			t.Errorf("status during the hook: %v, want NotFound", err)
		}
		_, err := ts.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: sb.ID, Config: containerConfig("early")})
		if !errdefs.IsFailedPrecondition(err) {
			t.Errorf("CreateContainer during the hook: %v, want FailedPrecondition", err)
		}
		return errors.New(`NRI plugin "10-no" refused`)
	}
	_, err := ts.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig("web")})
	if err == nil || !strings.Contains(err.Error(), "10-no") {
		t.Fatalf("RunPodSandbox: %v, want the plugin's refusal", err)
	}
	if !checked {
		t.Fatal("hook never ran")
	}
	if got := ts.store.Sandboxes(); len(got) != 0 {
		t.Errorf("refused pod left records: %v", got)
	}
	if !anyPrefix(ts.network.all(), "setup ") || !anyPrefix(ts.network.all(), "teardown ") {
		t.Errorf("network calls %v, want set up before the hook and torn down after the refusal", ts.network.all())
	}
	ts.plugins.onRunPod = nil
	ts.runPod(t, podConfig("web")) // the name is free again
}

// A plugin's adjustment lands in the bundle's spec; a refusal fails
// CreateContainer and leaves no container.
func TestNRICreateContainerAdjustsAndRefuses(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pod := ts.runPod(t, podConfig("web"))
	ts.plugins.onCreate = func(c store.Container, spec *specs.Spec) error {
		if l, _ := ts.ListContainers(ctx, &runtime.ListContainersRequest{}); len(l.GetContainers()) != 0 {
			t.Errorf("container listed during its CreateContainer hook")
		}
		if _, err := ts.ContainerStatus(ctx, &runtime.ContainerStatusRequest{ContainerId: c.ID}); !errdefs.IsNotFound(err) {
			t.Errorf("status during the hook: %v, want NotFound", err)
		}
		spec.Process.Env = append(spec.Process.Env, "NRI=1")
		return nil
	}
	id := ts.createContainer(t, pod, containerConfig("app"))
	c, err := ts.store.Container(id)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := shimapi.ReadSpec(c.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(spec.Process.Env, "NRI=1") {
		t.Errorf("adjustment not in the written spec: %v", spec.Process.Env)
	}
	ts.plugins.onCreate = func(store.Container, *specs.Spec) error { return errors.New(`NRI plugin "20-veto" refused`) }
	_, err = ts.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: pod, Config: containerConfig("refused")})
	if err == nil || !strings.Contains(err.Error(), "20-veto") {
		t.Fatalf("CreateContainer: %v, want the plugin's refusal", err)
	}
	if got := ts.store.ContainersOf(pod); len(got) != 1 {
		t.Errorf("refused container left a record: %v", got)
	}
}

// OCI hooks of runtime.hooks_dir reach the spec before plugins see it.
func TestOCIHooksApplied(t *testing.T) {
	ts := newTestServer(t)
	dir := t.TempDir()
	ts.cfg.Runtime.HooksDir = []string{dir}
	hook := `{"version":"1.0.0","hook":{"path":"/bin/true","args":["true","hooked"]},"when":{"commands":["^/bin/sleep$"]},"stages":["createRuntime"]}`
	if err := os.WriteFile(filepath.Join(dir, "a.json"), []byte(hook), 0o644); err != nil {
		t.Fatal(err)
	}
	var seen bool
	ts.plugins.onCreate = func(_ store.Container, spec *specs.Spec) error {
		seen = spec.Hooks != nil && len(spec.Hooks.CreateRuntime) == 1
		return nil
	}
	pod := ts.runPod(t, podConfig("web"))
	id := ts.createContainer(t, pod, containerConfig("app"))
	c, _ := ts.store.Container(id)
	spec, err := shimapi.ReadSpec(c.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Hooks == nil || len(spec.Hooks.CreateRuntime) != 1 || spec.Hooks.CreateRuntime[0].Args[1] != "hooked" {
		t.Fatalf("hooks = %+v", spec.Hooks)
	}
	if !seen {
		t.Error("plugins did not see the OCI hooks")
	}
}

// A plugin may change the resources of an update.
func TestNRIUpdateContainerAdjusts(t *testing.T) {
	ts := newTestServer(t)
	pod := ts.runPod(t, podConfig("web"))
	id := ts.startContainer(t, pod, containerConfig("app"))
	shares := uint64(2048)
	ts.plugins.onUpdate = func(res *specs.LinuxResources) (*specs.LinuxResources, error) {
		res.CPU.Shares = &shares
		return res, nil
	}
	if _, err := ts.UpdateContainerResources(context.Background(), &runtime.UpdateContainerResourcesRequest{ContainerId: id, Linux: &runtime.LinuxContainerResources{CpuShares: 512}}); err != nil {
		t.Fatal(err)
	}
	if got := ts.tasks.get(id).updated; got == nil || got.CPU == nil || *got.CPU.Shares != 2048 {
		t.Fatalf("runtime got %+v, want the plugin's shares", got)
	}
}

// A container that ends on its own is a stop plugins hear of at once, and
// only once when kubelet then stops and removes it.
func TestNRISelfExitIsOneStop(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pod := ts.runPod(t, podConfig("web"))
	id := ts.startContainer(t, pod, containerConfig("app"))
	ts.tasks.exit(ts.tasks.get(id), 1)
	rec, err := ts.store.Container(id)
	if err != nil {
		t.Fatal(err)
	}
	ts.taskHooks().Exited(rec, task.Exit{Status: 1})
	if got := ts.plugins.all(); got[len(got)-1] != "StopContainer app" {
		t.Fatalf("events %v, want StopContainer when the container exited", got)
	}
	if _, err := ts.StopContainer(ctx, &runtime.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.RemoveContainer(ctx, &runtime.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	stops := 0
	for _, e := range ts.plugins.all() {
		if e == "StopContainer app" {
			stops++
		}
	}
	if stops != 1 {
		t.Fatalf("plugins heard of %d stops: %v", stops, ts.plugins.all())
	}
}
