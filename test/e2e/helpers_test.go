package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-client/pkg/logs"

	"github.com/berth-runtime/berth/test/testutil"
)

func randID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// nsOptions are the namespace options kubelet sends: pod network and IPC,
// and a PID namespace per container unless the pod shares one.
func nsOptions(sharePID bool) *runtimeapi.NamespaceOption {
	pid := runtimeapi.NamespaceMode_CONTAINER
	if sharePID {
		pid = runtimeapi.NamespaceMode_POD
	}
	return &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_POD,
		Pid:     pid,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
}

// podConfig is a kubelet-like pod config with a unique UID and its own log dir.
func podConfig(t *testing.T, d *testutil.Daemon, name string) *runtimeapi.PodSandboxConfig {
	t.Helper()
	uid := randID()
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{
			Name: name, Uid: "uid-" + uid, Namespace: "e2e", Attempt: 0,
		},
		Hostname:     name,
		LogDirectory: d.PodLogDir(t, name+"_"+uid),
		Labels:       map[string]string{"e2e-pod": name},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: nsOptions(false)},
		},
	}
}

// sharePID makes cfg a pod whose containers share one PID namespace.
func sharePID(cfg *runtimeapi.PodSandboxConfig) *runtimeapi.PodSandboxConfig {
	cfg.Linux.SecurityContext.NamespaceOptions = nsOptions(true)
	return cfg
}

func runPod(t *testing.T, d *testutil.Daemon, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	id, err := d.Runtime.RunPodSandbox(context.Background(), cfg, "")
	if err != nil {
		t.Fatalf("RunPodSandbox(%s): %v", cfg.GetMetadata().GetName(), err)
	}
	if id == "" {
		t.Fatalf("RunPodSandbox(%s) returned an empty id", cfg.GetMetadata().GetName())
	}
	return id
}

// removePod stops and removes a pod, failing t on any error.
func removePod(t *testing.T, d *testutil.Daemon, id string) {
	t.Helper()
	ctx := context.Background()
	if err := d.Runtime.StopPodSandbox(ctx, id); err != nil {
		t.Errorf("StopPodSandbox(%s): %v", id, err)
	}
	if err := d.Runtime.RemovePodSandbox(ctx, id); err != nil {
		t.Errorf("RemovePodSandbox(%s): %v", id, err)
	}
}

// removeAllPods is the safety net run after each test, even one that died
// half-way, so the leak check sees what removal leaves, not what a test
// abandoned.
func removeAllPods(t *testing.T, d *testutil.Daemon) {
	t.Helper()
	if d.Runtime == nil {
		return
	}
	pods, err := d.Runtime.ListPodSandbox(context.Background(), nil)
	if err != nil {
		t.Errorf("ListPodSandbox: %v", err)
		return
	}
	for _, p := range pods {
		removePod(t, d, p.Id)
	}
}

// ctrConfig is a container config running command in image, logging to
// <name>.log in the pod's log directory.
func ctrConfig(name, image string, command ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  command,
		LogPath:  name + ".log",
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions(false)},
		},
	}
}

// shConfig runs script with sh -c in the busybox image.
func shConfig(name, script string) *runtimeapi.ContainerConfig {
	return ctrConfig(name, images.Busybox.Ref, "sh", "-c", script)
}

// ensureImage pulls ref unless berthd already has it.
func ensureImage(t *testing.T, d *testutil.Daemon, ref string) {
	t.Helper()
	ctx := context.Background()
	st, err := d.Images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false)
	if err == nil && st.GetImage() != nil {
		return
	}
	if _, err := d.Images.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil); err != nil {
		t.Fatalf("PullImage(%s): %v", ref, err)
	}
}

func createCtr(t *testing.T, d *testutil.Daemon, podID string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	ensureImage(t, d, cfg.GetImage().GetImage())
	if podCfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() == runtimeapi.NamespaceMode_POD {
		cfg.Linux.SecurityContext.NamespaceOptions = nsOptions(true)
	}
	id, err := d.Runtime.CreateContainer(context.Background(), podID, cfg, podCfg)
	if err != nil {
		t.Fatalf("CreateContainer(%s): %v", cfg.GetMetadata().GetName(), err)
	}
	return id
}

func startCtr(t *testing.T, d *testutil.Daemon, id string) {
	t.Helper()
	if err := d.Runtime.StartContainer(context.Background(), id); err != nil {
		t.Fatalf("StartContainer(%s): %v", id, err)
	}
}

// runCtr creates and starts a container.
func runCtr(t *testing.T, d *testutil.Daemon, podID string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	id := createCtr(t, d, podID, podCfg, cfg)
	startCtr(t, d, id)
	return id
}

func ctrStatus(t *testing.T, d *testutil.Daemon, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := d.Runtime.ContainerStatus(context.Background(), id, false)
	if err != nil {
		t.Fatalf("ContainerStatus(%s): %v", id, err)
	}
	if resp.GetStatus() == nil {
		t.Fatalf("ContainerStatus(%s): no status", id)
	}
	return resp.GetStatus()
}

// waitState polls ContainerStatus until the container reaches state.
func waitState(t *testing.T, d *testutil.Daemon, id string, state runtimeapi.ContainerState, timeout time.Duration) *runtimeapi.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := ctrStatus(t, d, id)
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s (%s) is %s after %s, want %s", st.GetMetadata().GetName(), id, st.State, timeout, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readLogs parses a container's CRI log file with kubelet's own reader.
func readLogs(t *testing.T, d *testutil.Daemon, path string) (stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	if err := logs.ReadLogs(context.Background(), path, "", &logs.LogOptions{}, d.Runtime, &o, &e); err != nil {
		t.Fatalf("ReadLogs(%s): %v", path, err)
	}
	return o.String(), e.String()
}

// runToExit runs cfg in the pod, waits for it to exit and returns its status
// and log.
func runToExit(t *testing.T, d *testutil.Daemon, podID string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) (st *runtimeapi.ContainerStatus, stdout, stderr string) {
	t.Helper()
	id := runCtr(t, d, podID, podCfg, cfg)
	st = waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED, 15*time.Second)
	stdout, stderr = readLogs(t, d, st.LogPath)
	return st, stdout, stderr
}

// sections splits output on lines of "---".
func sections(out string) []string {
	parts := strings.Split(out, "---\n")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

func code(err error) codes.Code { return status.Code(err) }

// wantCode fails t unless err carries the gRPC code want.
func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := code(err); got != want {
		t.Errorf("%s: code %s (%v), want %s", what, got, err, want)
	}
}

func containerIDs(cs []*runtimeapi.Container) map[string]bool {
	m := map[string]bool{}
	for _, c := range cs {
		m[c.Id] = true
	}
	return m
}

func podIDs(ps []*runtimeapi.PodSandbox) map[string]bool {
	m := map[string]bool{}
	for _, p := range ps {
		m[p.Id] = true
	}
	return m
}

// streamedIDs drains a Stream* listing and returns the IDs ids finds in
// its responses; what names the call in a failure.
func streamedIDs[R any](t *testing.T, what string, recv func() (R, error), ids func(R) map[string]bool) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for {
		resp, err := recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		maps.Copy(out, ids(resp))
	}
}
