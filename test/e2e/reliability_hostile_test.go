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
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// alive fails t unless berthd still runs and answers.
func alive(t *testing.T, d *testutil.Daemon, rc runtimeapi.RuntimeServiceClient, after string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rc.Version(ctx, &runtimeapi.VersionRequest{}); err != nil || !d.Running() {
		t.Fatalf("berthd does not answer after %s: %v (exit %v)", after, err, d.ExitErr())
	}
}

// TestReliabilityHostileRequests sends what no kubelet would: messages over
// the 16 MiB limit, huge label maps, a 1 MiB command line, NUL bytes in
// names. Each must fail cleanly or work, berthd must stay up, and removal
// must leave nothing.
func TestReliabilityHostileRequests(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	ensureImage(t, d, images.Busybox.Ref)
	_, rc := dialCRI(t, d) // sends up to 64 MiB, so the server's limit is what is tested
	ctx := context.Background()

	t.Run("oversized message", func(t *testing.T) {
		pod := podConfig(t, d, "huge")
		pod.Annotations = map[string]string{"blob": strings.Repeat("x", 17<<20)}
		_, err := rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		wantCode(t, "RunPodSandbox of 17 MiB", err, codes.ResourceExhausted)
		alive(t, d, rc, "an oversized message")
	})

	t.Run("huge label map", func(t *testing.T) {
		pod := podConfig(t, d, "labels")
		for i := range 50000 {
			pod.Labels[strings.Repeat("k", 20)+itoa(i)] = strings.Repeat("v", 40)
		}
		resp, err := rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		alive(t, d, rc, "a huge label map")
		if err == nil {
			list, lerr := rc.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
			if lerr != nil {
				t.Errorf("ListPodSandbox with a huge pod: %v", lerr)
			} else if len(list.Items) == 0 {
				t.Errorf("the accepted pod is not listed")
			}
			removePod(t, d, resp.PodSandboxId)
		} else if c := code(err); c != codes.InvalidArgument && c != codes.ResourceExhausted {
			t.Errorf("RunPodSandbox with 50000 labels: %v; want success, InvalidArgument or ResourceExhausted", err)
		}
	})

	t.Run("1 MiB command line", func(t *testing.T) {
		pod := podConfig(t, d, "longcmd")
		podID := runPod(t, d, pod)
		defer removePod(t, d, podID)
		cfg := ctrConfig("long", images.Busybox.Ref, "echo", strings.Repeat("a", 1<<20))
		cr, err := rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if err == nil {
			_, err = rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId})
			// A single argument over the kernel's 128 KiB MAX_ARG_STRLEN
			// cannot be exec'd: the start must fail, not hang or crash.
			if err == nil {
				st := waitState(t, d, cr.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED, 15*time.Second)
				if st.ExitCode == 0 {
					t.Errorf("a 1 MiB argument ran and exited 0")
				}
			}
			if _, err := rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId}); err != nil {
				t.Errorf("RemoveContainer: %v", err)
			}
		}
		alive(t, d, rc, "a 1 MiB command line")
	})

	t.Run("NUL in names", func(t *testing.T) {
		pod := podConfig(t, d, "nul")
		pod.Metadata.Name = "a\x00b"
		_, err := rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		wantCode(t, "RunPodSandbox with NUL in the name", err, codes.InvalidArgument)
		pod = podConfig(t, d, "nul2")
		pod.Metadata.Namespace = "ns\x00"
		_, err = rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
		wantCode(t, "RunPodSandbox with NUL in the namespace", err, codes.InvalidArgument)
		pod = podConfig(t, d, "nul3")
		podID := runPod(t, d, pod)
		defer removePod(t, d, podID)
		cfg := ctrConfig("c\x00d", images.Busybox.Ref, "true")
		_, err = rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		wantCode(t, "CreateContainer with NUL in the name", err, codes.InvalidArgument)
		cfg = ctrConfig("nullog", images.Busybox.Ref, "true")
		cfg.LogPath = "x\x00.log"
		_, err = rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		wantCode(t, "CreateContainer with NUL in the log path", err, codes.InvalidArgument)
		alive(t, d, rc, "NUL bytes in names")
	})
	removeAllPods(t, d)
	testutil.AssertNothingLeft(t, d)
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestReliabilityHostileImages pulls images built to harm the node through
// the CRI: layers that escape the root through "..", absolute names and
// symlinks, symlink loops, a giant file; configs with a user that does not
// exist and absurd environments. Each pull fails cleanly or the image is
// contained; nothing is written outside berthd's dirs; berthd stays up.
func TestReliabilityHostileImages(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	_, rc := dialCRI(t, d)
	outside := t.TempDir()
	marker := filepath.Join(outside, "escaped")
	giant := strings.Repeat("\x00", 64<<20)
	bigEnv := "BIG=" + strings.Repeat("e", 1<<20)
	manyEnv := make([]string, 20000)
	for i := range manyEnv {
		manyEnv[i] = "E" + itoa(i) + "=" + strings.Repeat("v", 50)
	}
	tests := []struct {
		name  string
		files []testutil.File
		spec  testutil.ImageSpec
		// run: the image may pull; a container of it must then fail to
		// create or start, or run contained.
		run bool
	}{
		{name: "dotdot", files: []testutil.File{{Path: "/../../../../../../../.." + marker, Body: "x"}}},
		{name: "symlink escape", files: []testutil.File{{Path: "/esc", Symlink: outside}, {Path: "/esc/escaped", Body: "x"}}},
		{name: "absolute symlink chain", files: []testutil.File{{Path: "/r", Symlink: "/"}, {Path: "/r" + marker, Body: "x"}}},
		{name: "symlink loop", files: []testutil.File{{Path: "/l1", Symlink: "l2"}, {Path: "/l2", Symlink: "l1"}, {Path: "/l1/x", Body: "x"}}},
		{name: "hardlink escape", files: []testutil.File{{Path: "/h", Symlink: "../../../../.." + marker}}, run: true},
		{name: "giant file", files: []testutil.File{{Path: "/giant", Body: giant}}, run: true},
		{name: "bogus user", spec: testutil.ImageSpec{User: "nosuchuser"}, run: true},
		{name: "bogus uid:gid", spec: testutil.ImageSpec{User: "4294967295:4294967295"}, run: true},
		{name: "1 MiB env", spec: testutil.ImageSpec{Env: []string{bigEnv}}, run: true},
		{name: "20000 env", spec: testutil.ImageSpec{Env: manyEnv}, run: true},
	}
	ctx := context.Background()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			if tc.files != nil {
				l, err := testutil.NewLayer(tc.files)
				if err != nil {
					t.Fatal(err)
				}
				spec.Extra = []v1.Layer{l}
			}
			img, err := testutil.NewImage(spec)
			if err != nil {
				t.Fatal(err)
			}
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			pushed, err := reg.Push(pctx, "hostile/case"+itoa(i)+":"+randID(), img)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			_, perr := d.ImageClient.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: pushed.Ref}})
			alive(t, d, rc, "pulling "+tc.name)
			if perr != nil {
				if c := code(perr); c == codes.Unknown || c == codes.Internal {
					t.Errorf("pull failed without a clear class: %v", perr)
				}
			} else if tc.run {
				runHostile(t, d, rc, pushed.Ref)
			}
			if _, err := os.Lstat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was written outside the image", marker)
				_ = os.Remove(marker)
			}
			_, _ = d.ImageClient.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: pushed.Ref}})
		})
	}
	removeAllPods(t, d)
	testutil.AssertNothingLeft(t, d)
}

// runHostile runs the image's default command (or touches the escape
// marker through its links) and lets it end; any outcome but a crash, a
// hang or an escape is fine.
func runHostile(t *testing.T, d *testutil.Daemon, rc runtimeapi.RuntimeServiceClient, ref string) {
	t.Helper()
	ctx := context.Background()
	pod := podConfig(t, d, "hostile")
	podID := runPod(t, d, pod)
	defer removePod(t, d, podID)
	cfg := ctrConfig("h", ref, "sh", "-c", "echo x > /h 2>/dev/null; id; env | wc -c")
	cr, err := rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		if c := code(err); c == codes.Unknown || c == codes.Internal {
			t.Logf("CreateContainer failed without a clear class: %v", err)
		}
		return
	}
	if _, err := rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err == nil {
		waitState(t, d, cr.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	}
}
