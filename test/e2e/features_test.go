package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// runtimeFeatures is what Status says the runtime (not a handler) does.
func runtimeFeatures(t *testing.T, d *testutil.Daemon) *runtimeapi.RuntimeFeatures {
	t.Helper()
	st, err := d.Runtime.Status(context.Background(), false)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return st.GetFeatures()
}

// Status's mount_options (kubelet's MountOptions node feature) is kept
// true by what this checks: a volume's noexec, nosuid and nodev are
// applied, and an option that is not a per-mount flag is refused.
func testMountOptions(t *testing.T, d *testutil.Daemon) {
	if !runtimeFeatures(t, d).GetMountOptions() {
		t.Errorf("Status features say mount_options is unsupported")
	}
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pod := podConfig(t, d, "mntopts")
	podID := runPod(t, d, pod)
	probe := func(name string, opts ...string) string {
		cfg := shConfig(name, "/mnt/run.sh 2>&1; grep ' /mnt ' /proc/self/mountinfo")
		cfg.Mounts = []*runtimeapi.Mount{{HostPath: host, ContainerPath: "/mnt", MountOptions: opts}}
		_, out, _ := runToExit(t, d, podID, pod, cfg)
		return out
	}
	if out := probe("plain"); !strings.Contains(out, "ran") {
		t.Fatalf("without options the volume's script does not run: %q", out)
	}
	out := probe("opts", "noexec", "nosuid", "nodev")
	if strings.Contains(out, "ran") || !strings.Contains(out, "Permission denied") {
		t.Errorf("noexec: the volume's script ran or failed otherwise: %q", out)
	}
	line := strings.SplitN(out, "\n", 2)[len(strings.SplitN(out, "\n", 2))-1]
	for _, f := range []string{"noexec", "nosuid", "nodev"} {
		if !strings.Contains(line, f) {
			t.Errorf("mountinfo of /mnt lacks %s: %q", f, line)
		}
	}
	cfg := shConfig("bad", "true")
	cfg.Mounts = []*runtimeapi.Mount{{HostPath: host, ContainerPath: "/mnt", MountOptions: []string{"remount"}}}
	_, err := d.Runtime.CreateContainer(context.Background(), podID, cfg, pod)
	wantCode(t, "mount option remount", err, codes.InvalidArgument)
	removePod(t, d, podID)
}
