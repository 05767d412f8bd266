package server

import (
	"context"
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
)

func podConfig(name string) *runtime.PodSandboxConfig {
	return &runtime.PodSandboxConfig{
		Metadata: &runtime.PodSandboxMetadata{Name: name, Namespace: "ns", Uid: name + "-uid"},
		Labels:   map[string]string{"app": name},
		Hostname: name,
	}
}

// usernsPod asks for a user namespace, which the test server's handlers
// do not support.
func usernsPod() *runtime.PodSandboxConfig {
	cfg := podConfig("userns")
	ids := []*runtime.IDMapping{{HostId: 100000, ContainerId: 0, Length: 65536}}
	cfg.Linux = &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtime.NamespaceOption{UsernsOptions: &runtime.UserNamespace{
			Mode: runtime.NamespaceMode_POD, Uids: ids, Gids: ids,
		}},
	}}
	return cfg
}

func (ts *testServer) runPod(t *testing.T, cfg *runtime.PodSandboxConfig) string {
	t.Helper()
	resp, err := ts.RunPodSandbox(context.Background(), &runtime.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	return resp.GetPodSandboxId()
}

func wantErr(t *testing.T, err error, is func(error) bool, what string) {
	t.Helper()
	if err == nil || !is(err) {
		t.Fatalf("error %v, want %s", err, what)
	}
}

func TestRunPodSandboxArguments(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	for name, r := range map[string]*runtime.RunPodSandboxRequest{
		"no config":                         {},
		"no metadata":                       {Config: &runtime.PodSandboxConfig{}},
		"no name":                           {Config: &runtime.PodSandboxConfig{Metadata: &runtime.PodSandboxMetadata{Namespace: "ns"}}},
		"unknown handler":                   {Config: podConfig("a"), RuntimeHandler: "kata"},
		"NUL in name":                       {Config: &runtime.PodSandboxConfig{Metadata: &runtime.PodSandboxMetadata{Name: "a\x00", Namespace: "ns"}}},
		"userns unsupported by the handler": {Config: usernsPod()},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ts.RunPodSandbox(ctx, r)
			wantErr(t, err, errdefs.IsInvalidArgument, "InvalidArgument")
		})
	}
	if got := ts.sandboxes.all(); len(got) != 0 {
		t.Errorf("refused requests reached the sandbox controller: %v", got)
	}
	if got := ts.store.Sandboxes(); len(got) != 0 {
		t.Errorf("refused requests left records: %v", got)
	}
}

func TestRunPodSandbox(t *testing.T) {
	ts := newTestServer(t)
	id := ts.runPod(t, podConfig("web"))
	sb, err := ts.store.Sandbox(id)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Status.State != store.SandboxReady || len(sb.Status.IPs) != 1 || sb.Status.IPs[0] != "10.88.0.2" {
		t.Errorf("sandbox status %+v, want READY with the network's IP", sb.Status)
	}
	if sb.RuntimeHandler != "runc" || sb.Status.Pod.NetNS == "" {
		t.Errorf("sandbox %+v: want the default handler and a netns", sb)
	}
	if !ts.network.has("setup " + id) {
		t.Errorf("network calls %v, want a setup", ts.network.all())
	}
	st, err := ts.PodSandboxStatus(context.Background(), &runtime.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetStatus().GetState() != runtime.PodSandboxState_SANDBOX_READY || st.GetStatus().GetNetwork().GetIp() != "10.88.0.2" {
		t.Errorf("status %v", st.GetStatus())
	}
}

func TestRunPodSandboxHostNetwork(t *testing.T) {
	ts := newTestServer(t)
	cfg := podConfig("host")
	cfg.Linux = &runtime.LinuxPodSandboxConfig{SecurityContext: &runtime.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE},
	}}
	id := ts.runPod(t, cfg)
	if got := ts.network.all(); len(got) != 0 {
		t.Errorf("host network pod called the network manager: %v", got)
	}
	if _, err := ts.StopPodSandbox(context.Background(), &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if got := ts.network.all(); len(got) != 0 {
		t.Errorf("host network pod's stop called the network manager: %v", got)
	}
}

// Kubelet identifies a pod attempt by name, namespace, uid and attempt;
// a second sandbox with the same four is refused while the first exists,
// unless it is a retry of the call that made the first: same config.
func TestRunPodSandboxNameReserved(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	id := ts.runPod(t, podConfig("web"))
	if again := ts.runPod(t, podConfig("web")); again != id {
		t.Errorf("retried RunPodSandbox made %q, want the existing %q", again, id)
	}
	if n := len(ts.store.Sandboxes()); n != 1 {
		t.Errorf("%d sandboxes after a retry, want 1", n)
	}
	other := podConfig("web")
	other.Hostname = "elsewhere"
	_, err := ts.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: other})
	wantErr(t, err, errdefs.IsAlreadyExists, "AlreadyExists for another config under the name")
	_, err = ts.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig("web"), RuntimeHandler: "crun"})
	wantErr(t, err, errdefs.IsAlreadyExists, "AlreadyExists for another runtime handler under the name")
	if _, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	// A stopped sandbox is not what RunPodSandbox promises: ready.
	_, err = ts.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podConfig("web")})
	wantErr(t, err, errdefs.IsAlreadyExists, "AlreadyExists for a stopped sandbox")
	next := podConfig("web")
	next.Metadata.Attempt = 1
	ts.runPod(t, next)
	if _, err := ts.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	ts.runPod(t, podConfig("web"))
}

func TestRunPodSandboxRollback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(*testServer)
		undo   []string // calls the rollback must have made, %s the ID
	}{
		{"sandbox create fails", func(ts *testServer) { ts.sandboxes.createErr = errors.New("pin failed") }, nil},
		{"network setup fails", func(ts *testServer) { ts.network.setupErr = errors.New("cni failed") }, []string{"remove"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			tc.inject(ts)
			_, err := ts.RunPodSandbox(context.Background(), &runtime.RunPodSandboxRequest{Config: podConfig("web")})
			if err == nil {
				t.Fatal("RunPodSandbox succeeded")
			}
			if got := ts.store.Sandboxes(); len(got) != 0 {
				t.Fatalf("failed run left records: %+v", got)
			}
			for _, u := range tc.undo {
				if !anyPrefix(ts.sandboxes.all(), u+" ") {
					t.Errorf("sandbox calls %v, want a %s", ts.sandboxes.all(), u)
				}
			}
			// The name is free again: kubelet's retry succeeds.
			ts.sandboxes.createErr, ts.network.setupErr = nil, nil
			ts.runPod(t, podConfig("web"))
		})
	}
}

func TestStopPodSandbox(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	// CRI: stopping a sandbox that does not exist succeeds.
	if _, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: "nope"}); err != nil {
		t.Fatalf("stop of a missing sandbox: %v", err)
	}
	id := ts.runPod(t, podConfig("web"))
	cid := ts.startContainer(t, id, containerConfig("app"))
	for i := range 2 {
		if _, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Fatalf("stop %d: %v", i, err)
		}
	}
	sb, _ := ts.store.Sandbox(id)
	if sb.Status.State != store.SandboxNotReady || !sb.Status.NetworkDown {
		t.Errorf("sandbox status %+v after stop", sb.Status)
	}
	c, _ := ts.store.Container(cid)
	if c.Status.State != store.ContainerExited {
		t.Errorf("container %s after pod stop", c.Status.State)
	}
	n := 0
	for _, c := range ts.network.all() {
		if c == "teardown "+id {
			n++
		}
	}
	if n != 1 {
		t.Errorf("network torn down %d times over two stops, want once", n)
	}
	// A stopped pod takes no new containers.
	_, err := ts.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: id, Config: containerConfig("late")})
	wantErr(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
}

// A failed teardown fails the stop and leaves the pod for kubelet's retry.
func TestStopPodSandboxTeardownFails(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	id := ts.runPod(t, podConfig("web"))
	ts.network.teardownErr = errors.New("cni del failed")
	if _, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err == nil {
		t.Fatal("stop succeeded over a failed teardown")
	}
	if sb, _ := ts.store.Sandbox(id); sb.Status.NetworkDown {
		t.Fatal("network recorded down after a failed teardown")
	}
	ts.network.teardownErr = nil
	if _, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
}

func TestRemovePodSandbox(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	if _, err := ts.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: "nope"}); err != nil {
		t.Fatalf("remove of a missing sandbox: %v", err)
	}
	id := ts.runPod(t, podConfig("web"))
	cid := ts.startContainer(t, id, containerConfig("app"))
	// Remove without a stop first: it stops what runs.
	if _, err := ts.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.Sandbox(id); !errdefs.IsNotFound(err) {
		t.Errorf("sandbox record after remove: %v", err)
	}
	if _, err := ts.store.Container(cid); !errdefs.IsNotFound(err) {
		t.Errorf("container record after pod remove: %v", err)
	}
	if !ts.sandboxes.has("remove "+id) || !ts.images.has("remove rootfs "+cid) {
		t.Errorf("calls %v %v, want the sandbox and the rootfs removed", ts.sandboxes.all(), ts.images.all())
	}
	_, err := ts.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: id})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
	if _, err := ts.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}

func TestRemovePodSandboxFailureKeepsRecord(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	id := ts.runPod(t, podConfig("web"))
	ts.sandboxes.removeErr = errors.New("umount busy")
	if _, err := ts.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err == nil {
		t.Fatal("remove succeeded over a failed sandbox removal")
	}
	if _, err := ts.store.Sandbox(id); err != nil {
		t.Fatalf("record gone after a failed remove: %v", err)
	}
	ts.sandboxes.removeErr = nil
	if _, err := ts.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
}

func TestPodSandboxStatusNotFound(t *testing.T) {
	ts := newTestServer(t)
	_, err := ts.PodSandboxStatus(context.Background(), &runtime.PodSandboxStatusRequest{PodSandboxId: "nope"})
	wantErr(t, err, errdefs.IsNotFound, "NotFound")
}

func TestListPodSandbox(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	a := ts.runPod(t, podConfig("a"))
	b := ts.runPod(t, podConfig("b"))
	if _, err := ts.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: b}); err != nil {
		t.Fatal(err)
	}
	ready := runtime.PodSandboxStateValue{State: runtime.PodSandboxState_SANDBOX_READY}
	for name, tc := range map[string]struct {
		f    *runtime.PodSandboxFilter
		want []string
	}{
		"all":          {nil, []string{a, b}},
		"by id":        {&runtime.PodSandboxFilter{Id: b}, []string{b}},
		"by id prefix": {&runtime.PodSandboxFilter{Id: a[:8]}, []string{a}},
		"by state":     {&runtime.PodSandboxFilter{State: &ready}, []string{a}},
		"by label":     {&runtime.PodSandboxFilter{LabelSelector: map[string]string{"app": "b"}}, []string{b}},
		"no match":     {&runtime.PodSandboxFilter{LabelSelector: map[string]string{"app": "c"}}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := ts.ListPodSandbox(ctx, &runtime.ListPodSandboxRequest{Filter: tc.f})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range resp.GetItems() {
				got = append(got, p.GetId())
			}
			if !sameIDs(got, tc.want) {
				t.Errorf("listed %v, want %v", got, tc.want)
			}
		})
	}
}

func sameIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestRunPodSandboxUserns(t *testing.T) {
	ts := newTestServer(t)
	ts.features["runc"] = task.Features{UserNamespaces: true}
	ts.runPod(t, usernsPod())
}
