package e2e

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// pauseOnce pushes the sandbox image containerd's pods need to the test
// registry: berth-pause in an image, since nothing may be pulled from off
// the machine.
var (
	pauseOnce sync.Once
	pauseRef  string
	pauseErr  error
)

func pauseImage(t *testing.T) string {
	t.Helper()
	pauseOnce.Do(func() {
		bin, err := os.ReadFile(bins.Pause)
		if err != nil {
			pauseErr = err
			return
		}
		layer, err := testutil.NewLayer([]testutil.File{{Path: "/pause", Body: string(bin), Mode: 0o755}})
		if err != nil {
			pauseErr = err
			return
		}
		img, err := testutil.NewImage(testutil.ImageSpec{Extra: []v1.Layer{layer}, Entrypoint: []string{"/pause"}, Cmd: []string{}})
		if err != nil {
			pauseErr = err
			return
		}
		p, err := reg.Push(context.Background(), "pause:3.10", img)
		pauseRef, pauseErr = p.Ref, err
	})
	if pauseErr != nil {
		t.Fatalf("push pause image: %v", pauseErr)
	}
	return pauseRef
}

// runcBinary is the runc berthd's default handler uses, for containerd too.
func runcBinary() string {
	if _, err := os.Stat("/usr/local/lib/berth/runc"); err == nil {
		return "/usr/local/lib/berth/runc"
	}
	return "runc"
}

// startContainerd runs containerd 2.x beside the test's berthds, on a
// bridge network of its own; cleanup removes its pods, then checks that
// neither it nor its network left anything behind.
func startContainerd(t *testing.T) *testutil.Containerd {
	t.Helper()
	binDir := testutil.ContainerdBinDir(t)
	n := testutil.NewBridgeNet(t)
	c := testutil.StartContainerd(t, testutil.ContainerdOptions{
		BinDir: binDir, Runc: runcBinary(), SandboxImage: pauseImage(t),
		PlainHTTPHosts: []string{reg.Host}, CNIConfList: n.ConfList(),
	})
	t.Cleanup(func() {
		ctx := context.Background()
		pods, err := c.Runtime.ListPodSandbox(ctx, nil)
		if err != nil {
			t.Errorf("containerd ListPodSandbox: %v", err)
		}
		for _, p := range pods {
			if err := c.Runtime.StopPodSandbox(ctx, p.Id); err != nil {
				t.Errorf("containerd StopPodSandbox: %v", err)
			}
			if err := c.Runtime.RemovePodSandbox(ctx, p.Id); err != nil {
				t.Errorf("containerd RemovePodSandbox: %v", err)
			}
		}
		for _, l := range n.Leaks() {
			t.Errorf("containerd network leak: %s", l)
		}
	})
	return c
}

// ctrdPod runs a pod on containerd, in the daemon's cgroup parent.
func ctrdPod(t *testing.T, c *testutil.Containerd, name string) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	uid := randID()
	logDir := filepath.Join(c.Dir, "logs", name+"_"+uid)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: "uid-" + uid, Namespace: "e2e"},
		Hostname:     name,
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    c.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: nsOptions(false)},
		},
	}
	id, err := c.Runtime.RunPodSandbox(context.Background(), cfg, "")
	if err != nil {
		t.Fatalf("containerd RunPodSandbox: %v\n%s", err, c.LogTail())
	}
	return id, cfg
}

func ctrdPodIP(t *testing.T, c *testutil.Containerd, id string) string {
	t.Helper()
	st, err := c.Runtime.PodSandboxStatus(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	return st.GetStatus().GetNetwork().GetIp()
}

// migrateScript is counterScript that also deletes a file of the image's
// layers, so that the writable layer carries a deletion across runtimes.
const migrateScript = `rm ` + testutil.BaseMarker + `; ` + counterScript

// ctrdCounter runs the counter from image on containerd, with hostDir
// mounted at /data when not empty, and returns its id and log.
func ctrdCounter(t *testing.T, c *testutil.Containerd, pod string, podCfg *runtimeapi.PodSandboxConfig, image, hostDir string) (string, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Images.PullImage(ctx, &runtimeapi.ImageSpec{Image: image}, nil, podCfg); err != nil {
		t.Fatalf("containerd PullImage: %v", err)
	}
	cfg := ctrConfig("counter", image, "sh", "-c", migrateScript)
	if hostDir != "" {
		cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: hostDir}}
	}
	id, err := c.Runtime.CreateContainer(ctx, pod, cfg, podCfg)
	if err != nil {
		t.Fatalf("containerd CreateContainer: %v", err)
	}
	if err := c.Runtime.StartContainer(ctx, id); err != nil {
		t.Fatalf("containerd StartContainer: %v", err)
	}
	return id, filepath.Join(podCfg.LogDirectory, "counter.log")
}

// pushBase pushes a busybox image under tag, told apart from others by
// env, and returns its reference.
func pushBase(t *testing.T, tag, env string) testutil.Pushed {
	t.Helper()
	img, err := testutil.NewImage(testutil.ImageSpec{Env: []string{"BASE=" + env}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := reg.Push(context.Background(), tag, img)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMigrateContainerdToBerth: a counter running on containerd 2.x is
// checkpointed there with the CRI (the archive kubelet's checkpoint API
// writes) and restored on berth from that archive: the count goes on, the
// file it wrote and the one it deleted are as containerd left them, and
// the pod has another address; and again from the archive made a
// checkpoint image and pulled. Before that, the same archive is refused,
// naming why and leaving nothing behind, while the node's image of the
// base image's name is another image (the tag moved since), and while
// the request lacks the volume the container had on containerd.
func TestMigrateContainerdToBerth(t *testing.T) {
	testutil.RequiresRoot(t)
	requireCRIU(t)
	t.Parallel()
	ctx := context.Background()
	c := startContainerd(t)
	dst, _ := bridgeDaemonWith(t, restoreFromRegistries(reg.Host))
	tag := "migrate/base-" + randID() + ":v1"
	base := pushBase(t, tag, "checkpointed")

	srcPod, srcPodCfg := ctrdPod(t, c, "ctd-src")
	ctr, srcLog := ctrdCounter(t, c, srcPod, srcPodCfg, base.Ref, t.TempDir())
	before := waitCounts(t, srcLog, 5)
	archive := filepath.Join(t.TempDir(), "counter.tar")
	if err := c.Runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: ctr, Location: archive}); err != nil {
		t.Fatalf("containerd CheckpointContainer: %v\n%s", err, c.LogTail())
	}
	original := logCounts(t, srcLog)
	srcIP := ctrdPodIP(t, c, srcPod)
	if err := c.Runtime.StopPodSandbox(ctx, srcPod); err != nil {
		t.Fatal(err)
	}

	dstPodCfg := podConfig(t, dst, "ctd-dst")
	dstPod := runPod(t, dst, dstPodCfg)
	if dstIP := podIP(t, dst, dstPod); srcIP == "" || dstIP == "" || srcIP == dstIP {
		t.Errorf("pod IPs %q (containerd) and %q (berth): want two different addresses", srcIP, dstIP)
	}
	withVolume := restoreConfigFrom(archive)
	withVolume.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: t.TempDir()}}

	moved := pushBase(t, tag, "moved")
	ensureImage(t, dst, moved.Ref)
	_, err := dst.RuntimeClient.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: dstPod, Config: withVolume, SandboxConfig: dstPodCfg})
	wantCodeNaming(t, "restore onto another image of the same name", err, codes.FailedPrecondition, base.ConfigDigest.String())
	pushBase(t, tag, "checkpointed")
	if _, err := dst.Images.PullImage(ctx, &runtimeapi.ImageSpec{Image: base.Ref}, nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err = dst.RuntimeClient.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: dstPod, Config: restoreConfigFrom(archive), SandboxConfig: dstPodCfg})
	wantCodeNaming(t, "restore without the volume", err, codes.FailedPrecondition, `"/data"`)
	if cs, err := dst.Runtime.ListContainers(ctx, nil); err != nil || len(cs) != 0 {
		t.Errorf("refused restores left containers: %v, %v", cs, err)
	}
	assertEmpty(t, "checkpoint work dir", filepath.Join(dst.State, "checkpoints"))

	restored, err := dst.Runtime.CreateContainer(ctx, dstPod, withVolume, dstPodCfg)
	if err != nil {
		t.Fatalf("CreateContainer from containerd's checkpoint: %v", err)
	}
	startCtr(t, dst, restored)
	dstLog := waitState(t, dst, restored, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
	continues(t, "counter", before, original, waitCounts(t, dstLog, 3))
	if got := execOut(t, dst, restored, "cat", "/marker"); got != "migrated-file" {
		t.Errorf("/marker on berth = %q, want the file written on containerd", got)
	}
	if out, _, err := dst.Runtime.ExecSync(ctx, restored, []string{"ls", testutil.BaseMarker}, 10*time.Second); err == nil {
		t.Errorf("%s exists after restore (%s); containerd's container deleted it", testutil.BaseMarker, out)
	}
	if st := ctrStatus(t, dst, restored); st.GetMetadata().GetName() != "counter" {
		t.Errorf("restored container's name = %q", st.GetMetadata().GetName())
	}
	removePod(t, dst, dstPod)

	// The same archive as a checkpoint image (its files in one layer,
	// marked with checkpointctl's annotation, as buildah makes them from
	// kubelet's archives), pulled from a registry: restored the same.
	ckptRef := pushArchiveImage(t, archive, "org.criu.checkpoint.container.name")
	ensureImage(t, dst, ckptRef)
	imgPodCfg := podConfig(t, dst, "ctd-img")
	imgPod := runPod(t, dst, imgPodCfg)
	fromImage := restoreConfigFrom(ckptRef)
	fromImage.Mounts = withVolume.Mounts
	restored, err = dst.Runtime.CreateContainer(ctx, imgPod, fromImage, imgPodCfg)
	if err != nil {
		t.Fatalf("CreateContainer from containerd's checkpoint as an image: %v", err)
	}
	startCtr(t, dst, restored)
	imgLog := waitState(t, dst, restored, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
	continues(t, "counter from the image", before, original, waitCounts(t, imgLog, 3))
	removePod(t, dst, imgPod)
}

// pushArchiveImage pushes a checkpoint archive as a checkpoint image: one
// layer holding the archive's files, the manifest marked with annotation.
func pushArchiveImage(t *testing.T, archive, annotation string) string {
	t.Helper()
	layer, err := tarball.LayerFromFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.Annotations(img, map[string]string{annotation: "counter"}).(v1.Image)
	pushed, err := reg.Push(context.Background(), "checkpoints/counter-"+randID()+":v1", img)
	if err != nil {
		t.Fatal(err)
	}
	return pushed.Ref
}

// restoreConfigFrom is the container config kubelet sends to restore from
// a checkpoint archive or image: the checkpoint as the image, the rest the
// pod spec's.
func restoreConfigFrom(image string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "counter"},
		Image:    &runtimeapi.ImageSpec{Image: image},
		LogPath:  "counter.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions(false)},
		},
	}
}
