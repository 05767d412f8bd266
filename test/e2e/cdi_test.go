package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestCDIDevices checks CDI devices (issue 6 item 2): a device named in
// cdi_devices and one named in a cdi.k8s.io/ annotation (as device plugins
// send them) are resolved from YAML and JSON specs in the configured
// cdi.spec_dirs and applied to the container: the device node (a char
// device the container can use), a mount, environment and a hook that runs
// on the host. An unknown device fails CreateContainer with NotFound, a
// name that is not vendor/class=name with InvalidArgument.
func TestCDIDevices(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	etc, err := os.MkdirTemp("/tmp", "bcdi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(etc) })
	run, share := filepath.Join(etc, "run"), filepath.Join(etc, "share")
	hooked := filepath.Join(etc, "hooked")
	yamlSpec := fmt.Sprintf(`cdiVersion: "0.6.0"
kind: berth.test/dev
devices:
- name: "null"
  containerEdits:
    env: ["BERTH_CDI=dev-null"]
    deviceNodes:
    - path: /dev/berth-null
      hostPath: /dev/null
    mounts:
    - hostPath: %s
      containerPath: /cdi-share
      type: bind
      options: [rbind, ro]
    hooks:
    - hookName: createRuntime
      path: /bin/busybox
      args: [busybox, touch, %s]
`, share, hooked)
	jsonSpec := `{"cdiVersion": "0.6.0", "kind": "berth.test/env",
 "devices": [{"name": "extra", "containerEdits": {"env": ["BERTH_CDI_ANN=from-annotation"]}}]}`
	for p, data := range map[string]string{
		filepath.Join(etc, "dev.yaml"):     yamlSpec,
		filepath.Join(run, "env.json"):     jsonSpec,
		filepath.Join(share, "marker.txt"): "shared-by-cdi\n",
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries:      bins,
		InsecureHosts: []string{reg.Host},
		ExtraTOML:     fmt.Sprintf("\n[cdi]\nspec_dirs = [%q, %q]\n", etc, run),
	})
	t.Cleanup(func() {
		removeAllPods(t, d)
		testutil.AssertNoLeaks(t, d)
	})
	pod := podConfig(t, d, "cdi")
	podID := runPod(t, d, pod)

	cfg := shConfig("cdi", `test -c /dev/berth-null && echo dev=char; echo x > /dev/berth-null && echo dev=writable
echo ---; echo "$BERTH_CDI $BERTH_CDI_ANN"; echo ---; cat /cdi-share/marker.txt; touch /cdi-share/x 2>/dev/null || echo share=ro`)
	cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "berth.test/dev=null"}}
	cfg.Annotations = map[string]string{"cdi.k8s.io/e2e-plugin_dev0": "berth.test/env=extra"}
	st, out, errOut := runToExit(t, d, podID, pod, cfg)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", st.ExitCode, out, errOut)
	}
	s := sections(out)
	if len(s) != 3 {
		t.Fatalf("output %q has %d sections, want 3 (stderr %q)", out, len(s), errOut)
	}
	if s[0] != "dev=char\ndev=writable" {
		t.Errorf("device node: %q, want a writable char device", s[0])
	}
	if s[1] != "dev-null from-annotation" {
		t.Errorf("environment: %q, want both CDI devices' variables", s[1])
	}
	if s[2] != "shared-by-cdi\nshare=ro" {
		t.Errorf("mount: %q, want the marker through a read-only mount", s[2])
	}
	if _, err := os.Stat(hooked); err != nil {
		t.Errorf("createRuntime hook of the CDI device did not run: %v", err)
	}

	ensureImage(t, d, images.Busybox.Ref)
	for _, tc := range []struct {
		name, device string
		want         codes.Code
	}{
		{"unknown", "berth.test/dev=missing", codes.NotFound},
		{"unknown-vendor", "other.vendor/gpu=0", codes.NotFound},
		{"unqualified", "gpu0", codes.InvalidArgument},
	} {
		bad := shConfig("cdi-"+tc.name, "true")
		bad.CDIDevices = []*runtimeapi.CDIDevice{{Name: tc.device}}
		_, err := d.RuntimeClient.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{
			PodSandboxId: podID, Config: bad, SandboxConfig: pod,
		})
		wantCode(t, "CreateContainer with CDI device "+tc.device, err, tc.want)
		if err != nil && !strings.Contains(err.Error(), tc.device) {
			t.Errorf("error %q does not name device %q", err, tc.device)
		}
	}
	removePod(t, d, podID)
}
