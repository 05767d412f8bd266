package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// fileCounterScript counts into /count.log, its stdout: a container
// restored through containerd's own API has no log for stdout to reach.
const fileCounterScript = `exec > /count.log; rm ` + testutil.BaseMarker + `; echo migrated-file > /marker; i=0; while true; do i=$((i+1)); echo "n=$i"; sleep 0.1; done`

// ctrdPodNetNS is the network namespace pin of a containerd pod, from its
// verbose status (the sandbox's runtime spec).
func ctrdPodNetNS(t *testing.T, c *testutil.Containerd, pod string) string {
	t.Helper()
	st, err := c.Runtime.PodSandboxStatus(context.Background(), pod, true)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string } `json:"namespaces"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil {
		t.Fatalf("containerd pod info: %v", err)
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path
		}
	}
	t.Fatalf("containerd pod %s has no network namespace path in %s", pod, st.GetInfo()["info"])
	return ""
}

// TestMigrateBerthToContainerd: a counter checkpointed on berth is exported
// as containerd's checkpoint image and pushed to a registry (berthd
// checkpoint export-containerd --push), and restored by containerd 2.x
// through its own client API (ctr containers restore --live --rw, which
// pulls it; containerd's CRI restores no checkpoint): the
// count goes on in the network namespace of a containerd pod with another
// address, with the writable layer berth saw.
func TestMigrateBerthToContainerd(t *testing.T) {
	testutil.RequiresRoot(t)
	requireCRIU(t)
	t.Parallel()
	ctx := context.Background()
	src, _ := bridgeDaemon(t)
	c := startContainerd(t)

	podCfg := podConfig(t, src, "to-ctd-src")
	pod := runPod(t, src, podCfg)
	ctr := runCtr(t, src, pod, podCfg, shConfig("counter", fileCounterScript))
	waitState(t, src, ctr, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second)
	srcRootfs := filepath.Join(src.State, "containers", ctr, "rootfs")
	before := waitCounts(t, filepath.Join(srcRootfs, "count.log"), 5)
	archive := filepath.Join(t.TempDir(), "counter.tar")
	if err := src.Runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: ctr, Location: archive}); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	original := logCounts(t, filepath.Join(srcRootfs, "count.log"))
	srcIP := podIP(t, src, pod)
	removePod(t, src, pod)

	// The containerd node: a pod for the network, its files for the
	// container's, and the base image, pulled as kubelet would.
	dstPod, dstPodCfg := ctrdPod(t, c, "to-ctd-dst")
	if dstIP := ctrdPodIP(t, c, dstPod); srcIP == "" || dstIP == "" || srcIP == dstIP {
		t.Errorf("pod IPs %q (berth) and %q (containerd): want two different addresses", srcIP, dstIP)
	}
	if _, err := c.Images.PullImage(ctx, &runtimeapi.ImageSpec{Image: images.Busybox.Ref}, nil, dstPodCfg); err != nil {
		t.Fatal(err)
	}
	podRoot := filepath.Join(c.Dir, "root", "io.containerd.grpc.v1.cri", "sandboxes", dstPod)
	podState := filepath.Join(c.Dir, "state", "io.containerd.grpc.v1.cri", "sandboxes", dstPod)
	layout := filepath.Join(t.TempDir(), "layout")
	ref := reg.Ref("checkpoints/to-containerd-" + randID() + ":v1")
	netns := ctrdPodNetNS(t, c, dstPod)
	out, err := exec.Command(bins.Berthd, "checkpoint", "export-containerd",
		"--netns", netns,
		"--bind", "/etc/hosts="+filepath.Join(podRoot, "hosts"),
		"--bind", "/etc/hostname="+filepath.Join(podRoot, "hostname"),
		"--bind", "/etc/resolv.conf="+filepath.Join(podRoot, "resolv.conf"),
		"--bind", "/dev/shm="+filepath.Join(podState, "shm"),
		"--cgroups-path", c.CgroupParent+"/migrated",
		"--push", ref, "--plain-http",
		archive, layout).CombinedOutput()
	if err != nil {
		t.Fatalf("berthd checkpoint export-containerd: %v\n%s", err, out)
	}

	id := "migrated-" + randID()
	if out, err := c.Ctr(ctx, "containers", "restore", "--live", "--rw", id, ref); err != nil {
		t.Fatalf("containerd restore: %v\n%s\n%s", err, out, c.LogTail())
	}
	t.Cleanup(func() {
		_, _ = c.Ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
		time.Sleep(200 * time.Millisecond)
		if out, err := c.Ctr(ctx, "tasks", "delete", "--force", id); err != nil && !strings.Contains(out, "not found") {
			t.Errorf("delete restored task: %v", err)
		}
		if _, err := c.Ctr(ctx, "containers", "delete", id); err != nil {
			t.Errorf("delete restored container: %v", err)
		}
	})
	dstRootfs := filepath.Join(c.Dir, "state", "io.containerd.runtime.v2.task", "k8s.io", id, "rootfs")
	// The restored process goes on writing where the file (the writable
	// layer's, carried over) ended; one that started afresh would have
	// truncated it and counted from 1.
	carried := logCounts(t, filepath.Join(dstRootfs, "count.log"))
	if len(carried) < len(before) {
		t.Fatalf("count.log on containerd has %d counts, fewer than the %d seen before the checkpoint: the process restarted", len(carried), len(before))
	}
	after := waitCounts(t, filepath.Join(dstRootfs, "count.log"), len(carried)+5)
	for i, n := range after {
		if n != i+1 {
			t.Fatalf("counts on containerd are not 1, 2, 3, ... continuing across the move: %v", after)
		}
	}
	if last := after[len(after)-1]; last > original[len(original)-1]+100 {
		t.Errorf("restored count %d runs far past berth's %d", last, original[len(original)-1])
	}
	if b, err := os.ReadFile(filepath.Join(dstRootfs, "marker")); err != nil || strings.TrimSpace(string(b)) != "migrated-file" {
		t.Errorf("/marker on containerd = %q, %v; want the file written on berth", b, err)
	}
	if got, want := taskNetNS(t, c, id), nsInode(t, netns); got != want {
		t.Errorf("restored process is in network namespace %s, want the containerd pod's %s", got, want)
	}
	if _, err := os.Lstat(filepath.Join(dstRootfs, testutil.BaseMarker)); err == nil {
		t.Errorf("%s exists on containerd; berth's container deleted it", testutil.BaseMarker)
	}
}

// taskNetNS is the network namespace (as /proc names it) of the process of
// containerd task id.
func taskNetNS(t *testing.T, c *testutil.Containerd, id string) string {
	t.Helper()
	out, err := c.Ctr(context.Background(), "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id {
			ns, err := os.Readlink("/proc/" + f[1] + "/ns/net")
			if err != nil {
				t.Fatal(err)
			}
			return ns
		}
	}
	t.Fatalf("no task %s in:\n%s", id, out)
	return ""
}

// nsInode names the namespace pinned at path as /proc does: net:[inode].
func nsInode(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}
