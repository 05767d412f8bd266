package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// checkpointImageAnnotation marks an OCI image holding a checkpoint, as
// CRI-O, Podman and checkpointctl build them.
const checkpointImageAnnotation = "io.kubernetes.cri-o.annotations.checkpoint.name"

// TestCheckpointImageRestore: a checkpoint archive packed as an OCI image
// (its single layer the archive's files, the checkpoint-name annotation on
// its manifest) and pushed to a registry is pulled by a second berthd and
// restored through CreateContainer with the image's name, as CRI-O accepts
// it; the counter continues and the writable layer comes along.
func TestCheckpointImageRestore(t *testing.T) {
	testutil.RequiresRoot(t)
	requireCRIU(t)
	t.Parallel()
	ctx := context.Background()
	src, _ := bridgeDaemon(t)
	// Restoring from checkpoint images is off by default
	// (TestCheckpointImageRestoreRefused); this node takes them from the
	// test registry.
	dst, _ := bridgeDaemonWith(t, restoreFromRegistries(reg.Host))

	podCfg := podConfig(t, src, "ckimg-src")
	pod := runPod(t, src, podCfg)
	ctr := runCtr(t, src, pod, podCfg, shConfig("counter", counterScript))
	srcLog := waitState(t, src, ctr, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
	before := waitCounts(t, srcLog, 5)
	archive := filepath.Join(t.TempDir(), "counter.tar")
	if err := src.Runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: ctr, Location: archive}); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	original := logCounts(t, srcLog)
	removePod(t, src, pod)

	ckptRef := pushArchiveImage(t, archive, checkpointImageAnnotation)

	// kubelet pulls the image of the pod spec, then creates the container.
	ensureImage(t, dst, ckptRef)
	dstPodCfg := podConfig(t, dst, "ckimg-dst")
	dstPod := runPod(t, dst, dstPodCfg)
	rcfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "counter"},
		Image:    &runtimeapi.ImageSpec{Image: ckptRef},
		LogPath:  "counter.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions(false)},
		},
	}
	// The checkpoint's base image is never pulled implicitly: until it
	// is on the node (pulled through PullImage, with its caller's
	// credentials), the restore is refused and says which image it needs.
	_, err := dst.RuntimeClient.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: dstPod, Config: rcfg, SandboxConfig: dstPodCfg,
	})
	wantCodeNaming(t, "restore before the base image is pulled", err, codes.FailedPrecondition, images.Busybox.Ref)
	ensureImage(t, dst, images.Busybox.Ref)
	restored, err := dst.Runtime.CreateContainer(ctx, dstPod, rcfg, dstPodCfg)
	if err != nil {
		t.Fatalf("CreateContainer from checkpoint image: %v", err)
	}
	st := ctrStatus(t, dst, restored)
	if st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Fatalf("restored container is %s before start, want CREATED", st.State)
	}
	startCtr(t, dst, restored)
	dstLog := waitState(t, dst, restored, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
	continues(t, "counter", before, original, waitCounts(t, dstLog, 3))
	if got := execOut(t, dst, restored, "cat", "/marker"); got != "migrated-file" {
		t.Errorf("/marker in restored container = %q, want the file written before the checkpoint", got)
	}
	removePod(t, dst, dstPod)
}

// restoreFromRegistries is the [runtime] config that turns restoring from
// checkpoint images on for the registry hosts given.
func restoreFromRegistries(hosts ...string) string {
	return fmt.Sprintf("restore_from_images = true\nrestore_image_registries = [%s]", quoteTOML(hosts))
}

func quoteTOML(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// TestCheckpointImageRestoreRefused: a checkpoint image is not restored
// unless the node's config turns restoring from images on, and then only
// from the registries it names. The refusal comes before anything of the
// image is read, so the image needs no real checkpoint in it.
func TestCheckpointImageRestoreRefused(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	ctx := context.Background()
	layer, err := random.Layer(512, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.Annotations(img, map[string]string{checkpointImageAnnotation: "refused"}).(v1.Image)
	pushed, err := reg.Push(ctx, "checkpoints/refused-"+randID()+":v1", img)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, runtimeTOML string
		code              codes.Code
		names             string
	}{
		{"default config", "", codes.FailedPrecondition, "runtime.restore_from_images"},
		{"registries listed, restore off", fmt.Sprintf("restore_image_registries = [%q]", reg.Host), codes.FailedPrecondition, "runtime.restore_from_images"},
		{"restore on, no registry", "restore_from_images = true", codes.PermissionDenied, "runtime.restore_image_registries"},
		{"restore on, another registry", restoreFromRegistries("registry.example:5000"), codes.PermissionDenied, "runtime.restore_image_registries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testutil.StartDaemon(t, testutil.DaemonOptions{
				Binaries: bins, InsecureHosts: []string{reg.Host}, RuntimeTOML: tc.runtimeTOML,
			})
			t.Cleanup(func() {
				removeAllPods(t, d)
				testutil.AssertNothingLeft(t, d)
			})
			ensureImage(t, d, pushed.Ref)
			podCfg := podConfig(t, d, "ckimg-refused")
			pod := runPod(t, d, podCfg)
			_, err := d.RuntimeClient.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
				PodSandboxId: pod, SandboxConfig: podCfg, Config: &runtimeapi.ContainerConfig{
					Metadata: &runtimeapi.ContainerMetadata{Name: "restored"},
					Image:    &runtimeapi.ImageSpec{Image: pushed.Ref},
					Linux: &runtimeapi.LinuxContainerConfig{
						SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions(false)},
					},
				},
			})
			wantCodeNaming(t, "restore from checkpoint image", err, tc.code, tc.names)
			// (berthd's CRIU probe works there too, in dirs of its own.)
			if left, _ := filepath.Glob(filepath.Join(d.State, "checkpoints", "restore-*")); len(left) > 0 {
				t.Errorf("refused restore left checkpoint work dirs: %v", left)
			}
		})
	}
}
