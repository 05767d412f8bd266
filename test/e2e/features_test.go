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

// PullImage for a pod's RuntimeClass (ImageSpec.runtime_handler with the
// pod's config, as kubelet sends them): an unknown handler is refused
// before anything is fetched; an image pulled for crun is one of the
// store's, run by the default handler's pods too, and listed without a
// handler as containers are, so kubelet's GC keys match.
func testPullForRuntimeHandler(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	ref := images.Entrypoint.Ref
	if img := imageStatus(t, d, ref); img != nil {
		if err := d.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: ref}); err != nil {
			t.Fatalf("RemoveImage: %v", err)
		}
	}
	pod := podConfig(t, d, "pullfor")
	_, err := d.Images.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref, RuntimeHandler: "nope"}, nil, pod)
	wantCode(t, "PullImage for an unknown handler", err, codes.InvalidArgument)
	if img := imageStatus(t, d, ref); img != nil {
		t.Fatalf("a pull for an unknown handler stored %s", img.Id)
	}
	id, err := d.Images.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref, RuntimeHandler: "crun"}, nil, pod)
	if err != nil {
		t.Fatalf("PullImage for crun: %v", err)
	}
	for _, h := range []string{"crun", ""} {
		st, err := d.Images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref, RuntimeHandler: h}, false)
		if err != nil || st.GetImage().GetId() != id {
			t.Errorf("ImageStatus for handler %q = %v, %v; want %s", h, st.GetImage(), err, id)
		}
	}
	list, err := d.Images.ListImages(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, img := range list {
		if img.GetId() == id {
			found = true
			if h := img.GetSpec().GetRuntimeHandler(); h != "" {
				t.Errorf("image listed with handler %q, want none (containers name none)", h)
			}
		}
	}
	if !found {
		t.Errorf("ListImages lacks %s", id)
	}
	if log := d.LogTail(1 << 16); !strings.Contains(log, "runtime_handler=crun") || !strings.Contains(log, "pod="+pod.Metadata.Namespace+"/pullfor") {
		t.Errorf("berthd logged no pull naming the handler and pod")
	}
	podID := runPod(t, d, pod)
	st, out, _ := runToExit(t, d, podID, pod, ctrConfig("e", ref))
	if st.ExitCode != 0 || !strings.Contains(out, "entry default") {
		t.Errorf("the default handler's container of the image pulled for crun: exit %d, output %q", st.ExitCode, out)
	}
	removePod(t, d, podID)
}
