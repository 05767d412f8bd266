package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// mountTmpfs mounts a tmpfs of size bytes at dir; the returned func (also
// run at cleanup) unmounts it, so the leak check can run after it.
func mountTmpfs(t *testing.T, dir string, size int) func() {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+itoa(size)); err != nil {
		t.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	unmount := func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}
	t.Cleanup(unmount)
	return unmount
}

// TestReliabilityFullLogFS fills the filesystem of a container's log: the
// container keeps running, the shim keeps answering, and stop and removal
// work as usual.
func TestReliabilityFullLogFS(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	ctx := context.Background()
	pod := podConfig(t, d, "fulllog")
	unmount := mountTmpfs(t, pod.LogDirectory, 256<<10)
	podID := runPod(t, d, pod)
	id := runCtr(t, d, podID, pod, shConfig("flood", "trap 'exit 0' TERM; while true; do echo flooding the log with a line of text; done"))
	// Long enough for the 256 KiB to fill many times over.
	time.Sleep(2 * time.Second)
	var st unix.Statfs_t
	if err := unix.Statfs(pod.LogDirectory, &st); err != nil || st.Bavail != 0 {
		t.Errorf("log filesystem not full (%d blocks free, %v): the test proves nothing", st.Bavail, err)
	}
	cs := ctrStatus(t, d, id)
	if cs.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container with a full log fs is %s (%s %s), want RUNNING", cs.State, cs.Reason, cs.Message)
	}
	// The shim is not wedged: it runs an exec and stops the container.
	if stdout, _, err := d.Runtime.ExecSync(ctx, id, []string{"echo", "alive"}, 10*time.Second); err != nil || strings.TrimSpace(string(stdout)) != "alive" {
		t.Errorf("ExecSync with a full log fs: %v", err)
	}
	start := time.Now()
	if err := d.Runtime.StopContainer(ctx, id, 5); err != nil {
		t.Fatalf("StopContainer with a full log fs: %v", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("stop took %s: the container did not get SIGTERM promptly", took)
	}
	if cs := ctrStatus(t, d, id); cs.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("after stop: %s", cs.State)
	}
	removePod(t, d, podID)
	unmount()
	testutil.AssertNothingLeft(t, d)
}

// TestReliabilityFullImageFS pulls an image bigger than berthd's root
// filesystem: the pull fails with a clear error, leaves no partial image
// or layer, and a small image pulls afterwards.
func TestReliabilityFullImageFS(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{Binaries: bins, InsecureHosts: []string{reg.Host}})
	unmount := mountTmpfs(t, d.Root, 24<<20)
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(32<<10))
	}
	t.Cleanup(func() { _ = d.Stop() }) // before the tmpfs goes
	ctx := context.Background()
	// Incompressible enough that the content store fills too.
	big := make([]byte, 32<<20)
	for i := range big {
		big[i] = byte(i*7 + i/251)
	}
	l, err := testutil.NewLayer([]testutil.File{{Path: "/big", Body: string(big)}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := testutil.NewImage(testutil.ImageSpec{Extra: []v1.Layer{l}})
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	pushed, err := reg.Push(pctx, "hostile/bigimage:"+randID(), img)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.ImageClient.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: pushed.Ref}})
	if err == nil {
		t.Fatalf("pull of a 32 MiB layer into a 24 MiB root succeeded")
	}
	if c := code(err); c == codes.OK || !strings.Contains(strings.ToLower(err.Error()), "space") {
		t.Errorf("pull into a full fs: %v; want an error that says the disk is full", err)
	}
	if st, err := d.Images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: pushed.Ref}, false); err != nil || st.GetImage() != nil {
		t.Errorf("image status after a failed pull: %v, %v; want no image", st.GetImage(), err)
	}
	// The space is given back: a normal image pulls now.
	if _, err := d.ImageClient.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: images.Busybox.Ref}}); err != nil {
		t.Errorf("pull of busybox after the failed pull: %v", err)
	}
	var sf unix.Statfs_t
	if err := unix.Statfs(d.Root, &sf); err == nil && sf.Bavail*uint64(sf.Bsize) < 8<<20 {
		t.Errorf("only %d bytes free after the failed pull: its data was not removed", sf.Bavail*uint64(sf.Bsize))
	}
	entries, _ := os.ReadDir(filepath.Join(d.Root, "content", "ingest"))
	for _, e := range entries {
		t.Errorf("partial download left: %s", e.Name())
	}
	if err := d.Stop(); err != nil {
		t.Errorf("stop berthd: %v", err)
	}
	unmount()
	testutil.AssertNothingLeft(t, d)
}
