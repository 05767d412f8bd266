package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// Two containers share one volume: the writer leaves a file there and
// rewrites its count into it; the reader keeps a file in it open and
// appends to it, so CRIU must find that file, at its checkpointed size, on
// the restoring node.
const (
	writerScript = `echo shared-start > /data/shared; i=0; while true; do i=$((i+1)); echo "n=$i"; echo "$i" > /data/writer-count; sleep 0.1; done`
	readerScript = `exec 3>>/data/reader.log; i=1000; while true; do i=$((i+1)); echo "n=$i"; echo "r=$i" >&3; sleep 0.1; done`
)

var readerLineRe = regexp.MustCompile(`r=(\d+)`)

func withVolume(cfg *runtimeapi.ContainerConfig, hostPath string) *runtimeapi.ContainerConfig {
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: hostPath}}
	return cfg
}

func podCheckpointConfigs(vol string) []*runtimeapi.ContainerConfig {
	return []*runtimeapi.ContainerConfig{
		withVolume(shConfig("writer", writerScript), vol),
		withVolume(shConfig("reader", readerScript), vol),
	}
}

// continues checks that a restored counter's first counts pick up where
// the checkpoint left it: no earlier than the last count seen before the
// checkpoint, no later than one past the last count the original logged.
func continues(t *testing.T, name string, before, original, after []int) {
	t.Helper()
	lo, hi := before[len(before)-1], original[len(original)-1]+1
	if after[0] < lo || after[0] > hi {
		t.Errorf("%s: restored counter starts at %d, want between %d and %d (continuing, not restarting)", name, after[0], lo, hi)
	}
	for i := 1; i < len(after); i++ {
		if after[i] != after[i-1]+1 {
			t.Errorf("%s: restored counts not consecutive: %v", name, after)
			return
		}
	}
}

// TestCheckpointPodMigration: a pod of two containers sharing a volume is
// checkpointed as one on a first berthd (which stops it, as a migration
// source), the checkpoint directory moves to a second berthd, and
// RestorePod there gives a pod with another IP whose containers, once
// started, continue both counts, with the shared volume's files (one of
// them held open across the move) carried over.
func TestCheckpointPodMigration(t *testing.T) {
	testutil.RequiresRoot(t)
	requireCRIU(t)
	t.Parallel()
	ctx := context.Background()
	src, _ := bridgeDaemon(t)
	dst, _ := bridgeDaemon(t)

	srcVol := t.TempDir()
	srcPodCfg := podConfig(t, src, "podmig-src")
	srcPod := runPod(t, src, srcPodCfg)
	var ids []string
	logs := map[string]string{}
	for _, cfg := range podCheckpointConfigs(srcVol) {
		id := runCtr(t, src, srcPod, srcPodCfg, cfg)
		ids = append(ids, id)
		logs[cfg.GetMetadata().GetName()] = waitState(t, src, id, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
	}
	before := map[string][]int{}
	for name, l := range logs {
		before[name] = waitCounts(t, l, 5)
	}

	out := t.TempDir()
	if _, err := src.RuntimeClient.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{
		PodSandboxId: srcPod, OutputPath: out, ContainerIds: ids,
		Options: map[string]string{"leave-stopped": "true"},
	}); err != nil {
		t.Fatalf("CheckpointPod: %v", err)
	}
	for _, id := range ids {
		if s := ctrStatus(t, src, id); s.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			t.Errorf("container %s is %s after a leave-stopped checkpoint, want EXITED", id, s.State)
		}
	}
	original := map[string][]int{}
	for name, l := range logs {
		original[name] = logCounts(t, l)
	}
	srcReader := readerCounts(t, filepath.Join(srcVol, "reader.log"))
	srcIP := podIP(t, src, srcPod)
	removePod(t, src, srcPod)

	// The checkpoint moves: a copy in a directory of the other node's.
	moved := filepath.Join(t.TempDir(), "ckpt")
	copyTree(t, out, moved)
	ensureImage(t, dst, images.Busybox.Ref)
	dstVol := t.TempDir()
	dstPodCfg := podConfig(t, dst, "podmig-dst")
	cfgs := podCheckpointConfigs(dstVol)
	resp, err := dst.RuntimeClient.RestorePod(ctx, &runtimeapi.RestorePodRequest{
		CheckpointPath: moved, Config: dstPodCfg, ContainerConfigs: cfgs,
	})
	if err != nil {
		t.Fatalf("RestorePod: %v", err)
	}
	dstPod := resp.GetPodSandboxId()
	if got := len(resp.GetRestoredContainers()); got != 2 {
		t.Fatalf("RestorePod restored %d containers, want 2", got)
	}
	if ip := podIP(t, dst, dstPod); ip == "" || ip == srcIP {
		t.Errorf("restored pod IP %q, checkpointed %q: want a new address", ip, srcIP)
	}
	restored := map[string]string{}
	for _, rc := range resp.GetRestoredContainers() {
		if s := ctrStatus(t, dst, rc.GetContainerId()); s.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			t.Errorf("restored %s is %s before start, want CREATED", rc.GetName(), s.State)
		}
		restored[rc.GetName()] = rc.GetContainerId()
	}
	if b, err := os.ReadFile(filepath.Join(dstVol, "shared")); err != nil || string(b) != "shared-start\n" {
		t.Errorf("shared volume file on the new node = %q, %v", b, err)
	}
	for _, name := range []string{"writer", "reader"} {
		startCtr(t, dst, restored[name])
	}
	for _, name := range []string{"writer", "reader"} {
		l := waitState(t, dst, restored[name], runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
		after := waitCounts(t, l, 3)
		t.Logf("%s: last count seen before checkpoint %d, original's last %d, restored starts at %d",
			name, before[name][len(before[name])-1], original[name][len(original[name])-1], after[0])
		continues(t, name, before[name], original[name], after)
	}
	// The reader's open file was restored at its size and appended on.
	waitFor(t, "reader.log to grow on the new node", func() bool {
		return len(readerCounts(t, filepath.Join(dstVol, "reader.log"))) >= len(srcReader)+3
	})
	got := readerCounts(t, filepath.Join(dstVol, "reader.log"))
	if got[0] != 1001 {
		t.Errorf("reader.log on the new node starts at r=%d, want the whole file from r=1001", got[0])
	}
	t.Logf("reader.log: %d lines on the source at stop, %d on the new node, last %d", len(srcReader), len(got), got[len(got)-1])
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Errorf("reader.log not one continuous count after restore: ...%v", got[max(0, i-3):min(len(got), i+3)])
			break
		}
	}
	if g := execOut(t, dst, restored["reader"], "cat", "/data/shared"); g != "shared-start" {
		t.Errorf("/data/shared in the restored reader = %q", g)
	}
	removePod(t, dst, dstPod)
}

func readerCounts(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, m := range readerLineRe.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copyTree copies the regular files and directories below src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func listCount(t *testing.T, d *testutil.Daemon) (pods, ctrs int) {
	t.Helper()
	ps, err := d.Runtime.ListPodSandbox(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := d.Runtime.ListContainers(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(ps), len(cs)
}

func assertEmpty(t *testing.T, what, dir string) {
	t.Helper()
	if e, _ := os.ReadDir(dir); len(e) > 0 {
		t.Errorf("%s left files in the output directory: %v", what, e)
	}
}

// TestCheckpointPodRefusals: what CheckpointPod and RestorePod cannot do
// fails with a clear code, writes nothing into the output directory and
// leaves no pod or container behind; a checkpoint without leave-stopped
// resumes the pod.
func TestCheckpointPodRefusals(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	ctx := context.Background()
	d, _ := bridgeDaemon(t)
	podCfg := podConfig(t, d, "podckpt-refuse")
	pod := runPod(t, d, podCfg)
	vol := t.TempDir()
	cfgs := podCheckpointConfigs(vol)
	var ids []string
	for _, cfg := range cfgs {
		ids = append(ids, runCtr(t, d, pod, podCfg, proto.Clone(cfg).(*runtimeapi.ContainerConfig)))
	}
	exited := runCtr(t, d, pod, podCfg, shConfig("quick", "true"))
	waitState(t, d, exited, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
	otherCfg := podConfig(t, d, "podckpt-other")
	other := runPod(t, d, otherCfg)
	otherCtr := runCtr(t, d, other, otherCfg, shConfig("sleeper", "sleep 1000"))
	out := t.TempDir()

	checkpointPod := func(what string, req *runtimeapi.CheckpointPodRequest, want codes.Code) {
		t.Helper()
		if req.OutputPath == "" {
			req.OutputPath = out
		}
		_, err := d.RuntimeClient.CheckpointPod(ctx, req)
		wantCode(t, what, err, want)
		assertEmpty(t, what, out)
	}
	checkpointPod("unknown pod", &runtimeapi.CheckpointPodRequest{PodSandboxId: "nope", ContainerIds: ids}, codes.NotFound)
	checkpointPod("relative output path", &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, ContainerIds: ids, OutputPath: "rel"}, codes.InvalidArgument)
	checkpointPod("no containers", &runtimeapi.CheckpointPodRequest{PodSandboxId: pod}, codes.InvalidArgument)
	checkpointPod("container twice", &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, ContainerIds: []string{ids[0], ids[0]}}, codes.InvalidArgument)
	checkpointPod("unknown option", &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, ContainerIds: ids, Options: map[string]string{"tcp": "1"}}, codes.InvalidArgument)
	checkpointPod("container of another pod", &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, ContainerIds: append([]string{otherCtr}, ids...)}, codes.InvalidArgument)
	checkpointPod("exited container", &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, ContainerIds: append([]string{exited}, ids...)}, codes.FailedPrecondition)
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := d.RuntimeClient.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, ContainerIds: ids, OutputPath: full})
	wantCode(t, "non-empty output directory", err, codes.InvalidArgument)

	// A good checkpoint resumes the pod: both count on.
	logs := []string{ctrStatus(t, d, ids[0]).LogPath, ctrStatus(t, d, ids[1]).LogPath}
	waitCounts(t, logs[0], 3)
	waitCounts(t, logs[1], 3)
	if _, err := d.RuntimeClient.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, ContainerIds: ids, OutputPath: out}); err != nil {
		t.Fatalf("CheckpointPod: %v", err)
	}
	for i, id := range ids {
		if s := ctrStatus(t, d, id); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("container %s is %s after checkpoint, want RUNNING", id, s.State)
		}
		n := len(logCounts(t, logs[i]))
		waitCounts(t, logs[i], n+3)
	}
	for _, f := range []string{"pod.dump", "containers/0.tar", "containers/1.tar", "volumes/v0.tar"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("pod checkpoint lacks %s: %v", f, err)
		}
	}

	// RestorePod refusals leave nothing behind.
	pods0, ctrs0 := listCount(t, d)
	restore := func(what string, req *runtimeapi.RestorePodRequest, want codes.Code) {
		t.Helper()
		if req.CheckpointPath == "" {
			req.CheckpointPath = out
		}
		if req.Config == nil {
			req.Config = podConfig(t, d, "podckpt-restored")
		}
		_, err := d.RuntimeClient.RestorePod(ctx, req)
		wantCode(t, what, err, want)
		if p, c := listCount(t, d); p != pods0 || c != ctrs0 {
			t.Errorf("%s: %d pods, %d containers after; want %d, %d", what, p, c, pods0, ctrs0)
		}
	}
	restore("missing checkpoint", &runtimeapi.RestorePodRequest{CheckpointPath: filepath.Join(out, "none"), ContainerConfigs: cfgs}, codes.NotFound)
	restore("no container configs", &runtimeapi.RestorePodRequest{}, codes.InvalidArgument)
	restore("one container missing", &runtimeapi.RestorePodRequest{ContainerConfigs: cfgs[:1]}, codes.InvalidArgument)
	restore("unknown option", &runtimeapi.RestorePodRequest{ContainerConfigs: cfgs, Options: map[string]string{"x": "y"}}, codes.InvalidArgument)
	wrongCmd := podCheckpointConfigs(vol)
	wrongCmd[0].Command = []string{"sh", "-c", "echo other"}
	restore("command mismatch", &runtimeapi.RestorePodRequest{ContainerConfigs: wrongCmd}, codes.InvalidArgument)
	noVol := podCheckpointConfigs(vol)
	noVol[1].Mounts = nil
	restore("volume mount missing", &runtimeapi.RestorePodRequest{ContainerConfigs: noVol}, codes.InvalidArgument)
	// A corrupt container archive fails after the sandbox exists: the
	// sandbox and the first container go again.
	bad := filepath.Join(t.TempDir(), "bad")
	copyTree(t, out, bad)
	b, err := os.ReadFile(filepath.Join(bad, "containers", "1.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "containers", "1.tar"), b[:len(b)/3], 0o600); err != nil {
		t.Fatal(err)
	}
	restore("truncated container archive", &runtimeapi.RestorePodRequest{CheckpointPath: bad, ContainerConfigs: podCheckpointConfigs(t.TempDir())}, codes.InvalidArgument)

	// The good checkpoint restores on the same node too, beside the
	// original, into a pod with a volume of its own.
	sameVol := t.TempDir()
	resp, err := d.RuntimeClient.RestorePod(ctx, &runtimeapi.RestorePodRequest{
		CheckpointPath: out, Config: podConfig(t, d, "podckpt-same"), ContainerConfigs: podCheckpointConfigs(sameVol),
	})
	if err != nil {
		t.Fatalf("RestorePod on the same node: %v", err)
	}
	for _, rc := range resp.GetRestoredContainers() {
		startCtr(t, d, rc.GetContainerId())
		l := waitState(t, d, rc.GetContainerId(), runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
		first := map[string]int{"writer": 3, "reader": 1003}[rc.GetName()]
		if c := waitCounts(t, l, 2); c[0] < first {
			t.Errorf("%s restored on the same node starts at %d, want the checkpointed count (>= %d)", rc.GetName(), c[0], first)
		}
	}
	if b, err := os.ReadFile(filepath.Join(sameVol, "shared")); err != nil || string(b) != "shared-start\n" {
		t.Errorf("restored volume file = %q, %v", b, err)
	}
	removePod(t, d, resp.GetPodSandboxId())

	// CRIU cannot restore into a PID namespace the pod shares: refused
	// both ways, clearly.
	sharedCfg := sharePID(podConfig(t, d, "podckpt-sharedpid"))
	shared := runPod(t, d, sharedCfg)
	sharedCtr := runCtr(t, d, shared, sharedCfg, shConfig("sleeper", "sleep 1000"))
	sharedOut := t.TempDir()
	_, err = d.RuntimeClient.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: shared, ContainerIds: []string{sharedCtr}, OutputPath: sharedOut})
	wantCode(t, "checkpoint of a shared-PID pod", err, codes.Unimplemented)
	assertEmpty(t, "checkpoint of a shared-PID pod", sharedOut)
	if s := ctrStatus(t, d, sharedCtr); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("shared-PID container is %s after refused checkpoint, want RUNNING", s.State)
	}
	pods0, ctrs0 = listCount(t, d)
	sharedCfgs := podCheckpointConfigs(t.TempDir())
	for _, c := range sharedCfgs {
		c.Linux.SecurityContext.NamespaceOptions = nsOptions(true)
	}
	restore("restore into a shared PID namespace", &runtimeapi.RestorePodRequest{
		Config: sharePID(podConfig(t, d, "podckpt-sharedpid-r")), ContainerConfigs: sharedCfgs,
	}, codes.Unimplemented)
	removePod(t, d, shared)

	// Stopped pod: FailedPrecondition.
	if err := d.Runtime.StopPodSandbox(ctx, pod); err != nil {
		t.Fatal(err)
	}
	again := t.TempDir()
	_, err = d.RuntimeClient.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, ContainerIds: ids, OutputPath: again})
	wantCode(t, "checkpoint of stopped pod", err, codes.FailedPrecondition)
	assertEmpty(t, "checkpoint of stopped pod", again)
	removePod(t, d, pod)
	removePod(t, d, other)
}
