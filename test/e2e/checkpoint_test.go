package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// counterScript counts in memory (the shell's variable), logging each
// number, after leaving a file in the writable layer and deleting one of
// the image's.
const counterScript = `echo migrated-file > /marker; rm -f /etc/issue-gone; i=0; while true; do i=$((i+1)); echo "n=$i"; sleep 0.1; done`

var countRe = regexp.MustCompile(`n=(\d+)`)

// logCounts returns the numbers a counter logged so far.
func logCounts(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []int
	for _, m := range countRe.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

func waitCounts(t *testing.T, path string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := logCounts(t, path)
		if len(c) >= n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d counts after 20s, want %d", path, len(c), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bridgeDaemon starts a berthd on a bridge network of its own, so its
// pods get addresses and two daemons' pods get different ones.
func bridgeDaemon(t *testing.T) (*testutil.Daemon, testutil.BridgeNet) {
	t.Helper()
	return bridgeDaemonWith(t, "")
}

// bridgeDaemonWith is bridgeDaemon with runtimeTOML added to the
// daemon's [runtime] table.
func bridgeDaemonWith(t *testing.T, runtimeTOML string) (*testutil.Daemon, testutil.BridgeNet) {
	t.Helper()
	n := testutil.NewBridgeNet(t)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host}, CNIConfList: n.ConfList(),
		RuntimeTOML: runtimeTOML,
	})
	t.Cleanup(func() {
		removeAllPods(t, d)
		testutil.AssertNothingLeft(t, d, n)
		if e, _ := os.ReadDir(filepath.Join(d.State, "checkpoints")); len(e) > 0 {
			t.Errorf("checkpoint work dirs left: %v", e)
		}
	})
	return d, n
}

func podIP(t *testing.T, d *testutil.Daemon, id string) string {
	t.Helper()
	st, err := d.Runtime.PodSandboxStatus(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	return st.GetStatus().GetNetwork().GetIp()
}

func execOut(t *testing.T, d *testutil.Daemon, id string, cmd ...string) string {
	t.Helper()
	out, errOut, err := d.Runtime.ExecSync(context.Background(), id, cmd, 10*time.Second)
	if err != nil {
		t.Fatalf("ExecSync(%v): %v (%s)", cmd, err, errOut)
	}
	return strings.TrimSpace(string(out))
}

// TestCheckpointLiveMigration: a counting container is checkpointed on one
// berthd (it keeps running there), the archive moves to a second berthd
// with its own root, socket and pod network, and the container restored
// there continues the count, with the file it wrote, in a pod with a
// different IP.
func TestCheckpointLiveMigration(t *testing.T) {
	testutil.RequiresRoot(t)
	requireCRIU(t)
	t.Parallel()
	ctx := context.Background()
	src, _ := bridgeDaemon(t)
	dst, _ := bridgeDaemon(t)

	if c := waitCheckpointCondition(t, src); !c.Status {
		t.Fatalf("checkpoint/restore unavailable: %s", c.Message)
	}

	srcPodCfg := podConfig(t, src, "mig-src")
	srcPod := runPod(t, src, srcPodCfg)
	ctrID := runCtr(t, src, srcPod, srcPodCfg, shConfig("counter", counterScript))
	srcLog := waitState(t, src, ctrID, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
	before := waitCounts(t, srcLog, 5)

	archive := filepath.Join(t.TempDir(), "counter.tar")
	if err := src.Runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{
		ContainerId: ctrID, Location: archive,
	}); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	afterCkpt := logCounts(t, srcLog)
	// The original keeps running and counting.
	waitCounts(t, srcLog, len(afterCkpt)+3)
	if s := ctrStatus(t, src, ctrID); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("checkpointed container is %s, want RUNNING", s.State)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v, %v", fi, err)
	}
	srcIP := podIP(t, src, srcPod)
	removePod(t, src, srcPod)

	// The second node pulls the base image, as kubelet would, and creates
	// the container with the archive as its image.
	ensureImage(t, dst, images.Busybox.Ref)
	dstPodCfg := podConfig(t, dst, "mig-dst")
	dstPod := runPod(t, dst, dstPodCfg)
	if dstIP := podIP(t, dst, dstPod); srcIP == "" || dstIP == "" || srcIP == dstIP {
		t.Errorf("pod IPs %q (checkpointed) and %q (restored): want two different addresses", srcIP, dstIP)
	}
	rcfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "counter"},
		Image:    &runtimeapi.ImageSpec{Image: archive},
		LogPath:  "counter.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions(false)},
		},
	}
	restored, err := dst.Runtime.CreateContainer(ctx, dstPod, rcfg, dstPodCfg)
	if err != nil {
		t.Fatalf("CreateContainer from checkpoint: %v", err)
	}
	if s := ctrStatus(t, dst, restored); s.State != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Fatalf("restored container is %s before start, want CREATED", s.State)
	}
	startCtr(t, dst, restored)
	dstLog := waitState(t, dst, restored, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
	after := waitCounts(t, dstLog, 3)
	lo, hi := before[len(before)-1], afterCkpt[len(afterCkpt)-1]+1
	if after[0] < lo || after[0] > hi {
		t.Errorf("restored counter starts at %d, want between %d and %d (continuing, not restarting)", after[0], lo, hi)
	}
	for i := 1; i < len(after); i++ {
		if after[i] != after[i-1]+1 {
			t.Errorf("restored counts not consecutive: %v", after)
			break
		}
	}
	if got := execOut(t, dst, restored, "cat", "/marker"); got != "migrated-file" {
		t.Errorf("/marker in restored container = %q, want the file written before the checkpoint", got)
	}
	removePod(t, dst, dstPod)
}

// TestCheckpointRefusals: what cannot be checkpointed or restored fails
// clearly and leaves nothing behind.
func TestCheckpointRefusals(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	ctx := context.Background()
	d, _ := bridgeDaemon(t)
	podCfg := podConfig(t, d, "ckpt-refuse")
	pod := runPod(t, d, podCfg)
	dir := t.TempDir()

	// Unknown container: NotFound.
	_, err := d.RuntimeClient.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{
		ContainerId: "nope", Location: filepath.Join(dir, "x.tar"),
	})
	wantCode(t, "checkpoint of unknown container", err, codes.NotFound)

	// Stopped container: FailedPrecondition.
	exited := runCtr(t, d, pod, podCfg, shConfig("quick", "true"))
	waitState(t, d, exited, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
	_, err = d.RuntimeClient.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{
		ContainerId: exited, Location: filepath.Join(dir, "exited.tar"),
	})
	wantCode(t, "checkpoint of exited container", err, codes.FailedPrecondition)

	// An established TCP connection is refused by CRIU (berth does not dump
	// with tcp-established: the connection could not follow the container
	// to another pod IP); the error says why and the container runs on.
	tcp := runCtr(t, d, pod, podCfg, shConfig("tcp",
		`sleep 1000 | nc -l -p 9000 >/dev/null & sleep 0.5; sleep 1000 | nc 127.0.0.1 9000`))
	time.Sleep(1500 * time.Millisecond)
	if out := execOut(t, d, tcp, "cat", "/proc/net/tcp", "/proc/net/tcp6"); !strings.Contains(out, ":2328 ") {
		t.Fatalf("no connection on port 9000:\n%s", out)
	}
	tcpArchive := filepath.Join(dir, "tcp.tar")
	_, err = d.RuntimeClient.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{
		ContainerId: tcp, Location: tcpArchive,
	})
	wantCode(t, "checkpoint with established TCP connection", err, codes.FailedPrecondition)
	if err != nil && !strings.Contains(strings.ToLower(err.Error()), "tcp") {
		t.Errorf("error does not name the TCP connection: %v", err)
	}
	if _, serr := os.Stat(tcpArchive); serr == nil {
		t.Errorf("failed checkpoint left an archive")
	}
	if s := ctrStatus(t, d, tcp); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("container is %s after refused checkpoint, want RUNNING", s.State)
	}

	// A truncated archive is refused at create, with nothing left behind.
	counter := runCtr(t, d, pod, podCfg, shConfig("counter", counterScript))
	waitCounts(t, waitState(t, d, counter, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath, 3)
	good := filepath.Join(dir, "good.tar")
	if err := d.Runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: counter, Location: good}); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "truncated.tar")
	if err := os.WriteFile(bad, data[:len(data)/3], 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := d.Runtime.ListContainers(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "restored"},
		Image:    &runtimeapi.ImageSpec{Image: bad},
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions(false)},
		},
	}
	_, err = d.RuntimeClient.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod, Config: rcfg, SandboxConfig: podCfg,
	})
	wantCode(t, "create from truncated archive", err, codes.InvalidArgument)
	after, err := d.Runtime.ListContainers(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("refused restore left a container: %d before, %d after", len(before), len(after))
	}
	if e, _ := os.ReadDir(filepath.Join(d.State, "checkpoints")); len(e) > 0 {
		t.Errorf("refused restore left unpacked files: %v", e)
	}

	// The good archive restores into the same pod, alongside the original.
	rcfg.Image.Image = good
	rcfg.LogPath = "restored.log"
	restored, err := d.Runtime.CreateContainer(ctx, pod, rcfg, podCfg)
	if err != nil {
		t.Fatalf("CreateContainer from checkpoint: %v", err)
	}
	startCtr(t, d, restored)
	counts := waitCounts(t, waitState(t, d, restored, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath, 2)
	if counts[0] < 3 {
		t.Errorf("restored counter starts at %d, want the checkpointed count (>= 3)", counts[0])
	}
	removePod(t, d, pod)
}
