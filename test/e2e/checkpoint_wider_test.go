package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestCheckpointRestoreWiderThanSpec: CRIU restores a process's
// capabilities from the checkpoint, not from the new container's spec. A
// container checkpointed with CAP_SYS_ADMIN and restored by a request
// that does not grant it must not run: StartContainer fails with
// PermissionDenied naming the container and the capability, and the
// restored process is gone. The same archive restored with the
// capability granted runs.
func TestCheckpointRestoreWiderThanSpec(t *testing.T) {
	testutil.RequiresRoot(t)
	requireCRIU(t)
	t.Parallel()
	ctx := context.Background()
	d, _ := bridgeDaemon(t)
	if c := waitCheckpointCondition(t, d); !c.Status {
		t.Fatalf("checkpoint/restore unavailable: %s", c.Message)
	}
	withSysAdmin := func(cfg *runtimeapi.ContainerConfig) *runtimeapi.ContainerConfig {
		cfg.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"SYS_ADMIN"}}
		return cfg
	}
	podCfg := podConfig(t, d, "wide-src")
	pod := runPod(t, d, podCfg)
	ctr := runCtr(t, d, pod, podCfg, withSysAdmin(shConfig("counter", counterScript)))
	waitCounts(t, waitState(t, d, ctr, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath, 3)
	if eff := execOut(t, d, ctr, "grep", "CapEff", "/proc/1/status"); !strings.HasSuffix(eff, "a82425fb") {
		t.Fatalf("checkpointed container's %s, want CAP_SYS_ADMIN (0x200000) in it", eff)
	}
	archive := filepath.Join(t.TempDir(), "wide.tar")
	if err := d.Runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: ctr, Location: archive}); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	removePod(t, d, pod)

	restore := func(name string, cfg *runtimeapi.ContainerConfig) (string, string, error) {
		t.Helper()
		podCfg := podConfig(t, d, name)
		pod := runPod(t, d, podCfg)
		id, err := d.Runtime.CreateContainer(ctx, pod, cfg, podCfg)
		if err != nil {
			t.Fatalf("CreateContainer from checkpoint: %v", err)
		}
		_, err = d.RuntimeClient.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
		return pod, id, err
	}
	narrow := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "counter"},
		Image:    &runtimeapi.ImageSpec{Image: archive},
		LogPath:  "counter.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions(false)},
		},
	}
	pod, id, err := restore("wide-narrow", narrow)
	wantCodeNaming(t, "start of a restore wider than its spec", err, codes.PermissionDenied, id)
	if err != nil && !strings.Contains(err.Error(), "CAP_SYS_ADMIN") {
		t.Errorf("error does not name CAP_SYS_ADMIN: %v", err)
	}
	st := ctrStatus(t, d, id)
	if st.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("container restored wider than its spec is RUNNING")
	}
	// The restored counter, had it survived, would go on logging.
	n := len(logCounts(t, st.LogPath))
	time.Sleep(time.Second)
	if m := len(logCounts(t, st.LogPath)); m > n {
		t.Errorf("the process restored wider than its spec still runs: %d counts logged in a second", m-n)
	}
	removePod(t, d, pod)

	wide := withSysAdmin(narrow)
	pod, id, err = restore("wide-granted", wide)
	if err != nil {
		t.Fatalf("start of a restore its spec grants: %v", err)
	}
	waitCounts(t, waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath, 3)
	removePod(t, d, pod)
}
