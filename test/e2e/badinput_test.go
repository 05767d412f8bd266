package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

var badInputCases = []sharedCase{
	{"UnknownIDs", testUnknownIDs},
	{"DuplicateNames", testDuplicateNames},
	{"MissingFields", testMissingFields},
	{"LogPathEscape", testLogPathEscape},
}

const unknownID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func testUnknownIDs(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	rc := d.RuntimeClient
	_, err := rc.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: unknownID})
	wantCode(t, "PodSandboxStatus", err, codes.NotFound)
	_, err = rc.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: unknownID})
	wantCode(t, "ContainerStatus", err, codes.NotFound)
	_, err = rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: unknownID})
	wantCode(t, "StartContainer", err, codes.NotFound)
	// CRI: Stop and Remove of a missing pod or container must succeed.
	_, err = rc.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: unknownID, Timeout: 1})
	wantCode(t, "StopContainer", err, codes.OK)
	_, err = rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: unknownID})
	wantCode(t, "RemoveContainer", err, codes.OK)
	_, err = rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: unknownID})
	wantCode(t, "StopPodSandbox", err, codes.OK)
	_, err = rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: unknownID})
	wantCode(t, "RemovePodSandbox", err, codes.OK)
	pod := podConfig(t, d, "orphan")
	ensureImage(t, d, images.Busybox.Ref)
	_, err = rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: unknownID, Config: shConfig("orphan", "true"), SandboxConfig: pod,
	})
	wantCode(t, "CreateContainer in an unknown pod", err, codes.NotFound)
}

func testDuplicateNames(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	rc := d.RuntimeClient
	pod := podConfig(t, d, "dup")
	podID := runPod(t, d, pod)
	// kubelet's retry of a call it gave up on: the same config gets the pod.
	resp, err := rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil || resp.PodSandboxId != podID {
		t.Errorf("second RunPodSandbox with the same config: %v, %v; want the first pod %s", resp, err, podID)
	}
	other := proto.Clone(pod).(*runtimeapi.PodSandboxConfig)
	other.Hostname = "other"
	resp, err = rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: other})
	wantCode(t, "second RunPodSandbox with the same metadata and another config", err, codes.AlreadyExists)
	if err == nil && resp.PodSandboxId != podID {
		removePod(t, d, resp.PodSandboxId)
	}
	// Another attempt of the same pod is a different pod.
	next := podConfig(t, d, "dup")
	next.Metadata = &runtimeapi.PodSandboxMetadata{Name: pod.Metadata.Name, Uid: pod.Metadata.Uid, Namespace: pod.Metadata.Namespace, Attempt: 1}
	nextID := runPod(t, d, next)
	if nextID == podID {
		t.Errorf("attempt 1 of a pod got the id of attempt 0")
	}
	first := createCtr(t, d, podID, pod, shConfig("same", "true"))
	cresp, err := rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: shConfig("same", "true"), SandboxConfig: pod})
	if err != nil || cresp.ContainerId != first {
		t.Errorf("second CreateContainer with the same config: %v, %v; want the first container %s", cresp, err, first)
	}
	_, err = rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: shConfig("same", "false"), SandboxConfig: pod})
	wantCode(t, "second CreateContainer with the same name and another config", err, codes.AlreadyExists)
	// The same name in another pod is fine.
	createCtr(t, d, nextID, next, shConfig("same", "true"))
	removePod(t, d, podID)
	removePod(t, d, nextID)
}

// wantInvalid checks for InvalidArgument naming field.
func wantInvalid(t *testing.T, what string, err error, field string) {
	t.Helper()
	wantCode(t, what, err, codes.InvalidArgument)
	if st, _ := status.FromError(err); err != nil && !strings.Contains(strings.ToLower(st.Message()), field) {
		t.Errorf("%s: message %q does not name %q", what, st.Message(), field)
	}
}

func testMissingFields(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	rc := d.RuntimeClient
	_, err := rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{})
	wantInvalid(t, "RunPodSandbox without config", err, "config")
	noMeta := podConfig(t, d, "nometa")
	noMeta.Metadata = nil
	_, err = rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: noMeta})
	wantInvalid(t, "RunPodSandbox without metadata", err, "metadata")
	noName := podConfig(t, d, "noname")
	noName.Metadata.Name = ""
	_, err = rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: noName})
	wantInvalid(t, "RunPodSandbox without metadata.name", err, "name")

	pod := podConfig(t, d, "missing")
	podID := runPod(t, d, pod)
	ensureImage(t, d, images.Busybox.Ref)
	create := func(cfg *runtimeapi.ContainerConfig) error {
		_, err := rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		return err
	}
	cfg := shConfig("nometa", "true")
	cfg.Metadata = nil
	wantInvalid(t, "CreateContainer without metadata", create(cfg), "metadata")
	cfg = shConfig("noimage", "true")
	cfg.Image = nil
	wantInvalid(t, "CreateContainer without image", create(cfg), "image")
	wantInvalid(t, "CreateContainer without config", create(nil), "config")
	_, err = rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: shConfig("nosandboxcfg", "true")})
	if code(err) == codes.OK {
		t.Errorf("CreateContainer without sandbox_config succeeded")
	}
	removePod(t, d, podID)
}

// A log path that escapes the pod's log directory is refused, and nothing
// is written outside it.
func testLogPathEscape(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := podConfig(t, d, "escape")
	podID := runPod(t, d, pod)
	ensureImage(t, d, images.Busybox.Ref)
	for _, p := range []string{"../escape.log", "a/../../escape2.log", "../../../../../../tmp/escape3.log"} {
		cfg := shConfig("esc"+randID(), "echo hi")
		cfg.LogPath = p
		_, err := d.RuntimeClient.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		wantCode(t, "CreateContainer with log_path "+p, err, codes.InvalidArgument)
		if _, err := os.Stat(filepath.Join(pod.LogDirectory, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("log file %s created outside the log directory: %v", filepath.Join(pod.LogDirectory, p), err)
		}
	}
	removePod(t, d, podID)
}
