package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

var containerCases = []sharedCase{
	{"CommandArgsMerge", testCommandArgs},
	{"EnvAndWorkingDir", testEnvWorkDir},
	{"User", testUser},
	{"Mounts", testMounts},
	{"MultiLayerWhiteout", testWhiteout},
	{"WritableRootfs", testWritableRootfs},
	{"ContainerStatus", testContainerStatus},
	{"ListContainers", testListContainers},
	{"RemoveRunningContainer", testRemoveRunning},
}

// Command and args merge with the image's Entrypoint and Cmd as kubelet
// expects: command replaces Entrypoint (and drops Cmd), args replace Cmd.
func testCommandArgs(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "cmd")
	podID := runPod(t, d, pod)
	for i, tc := range []struct {
		image         string
		command, args []string
		want          string
	}{
		{images.Entrypoint.Ref, nil, nil, "entry default"},
		{images.Entrypoint.Ref, nil, []string{"a1", "a2"}, "entry a1 a2"},
		{images.Entrypoint.Ref, []string{"echo", "cmd"}, nil, "cmd"},
		{images.Entrypoint.Ref, []string{"echo", "cmd"}, []string{"a3"}, "cmd a3"},
		{images.Busybox.Ref, nil, []string{"echo", "only-args"}, "only-args"},
		{images.Busybox.Ref, []string{"echo"}, []string{"x", "y"}, "x y"},
	} {
		cfg := ctrConfig("c"+string(rune('0'+i)), tc.image, tc.command...)
		cfg.Args = tc.args
		st, out, errOut := runToExit(t, d, podID, pod, cfg)
		if st.ExitCode != 0 || strings.TrimSpace(out) != tc.want {
			t.Errorf("image %s command %q args %q: exit %d, output %q (stderr %q), want %q",
				tc.image, tc.command, tc.args, st.ExitCode, out, errOut, tc.want)
		}
	}
	removePod(t, d, podID)
}

func testEnvWorkDir(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "env")
	podID := runPod(t, d, pod)
	cfg := ctrConfig("env", images.Entrypoint.Ref, "sh", "-c", "env; echo ---; pwd")
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "FOO", Value: []byte("bar baz")}, {Key: "OVERRIDE", Value: []byte("container")}}
	st, out, _ := runToExit(t, d, podID, pod, cfg)
	s := sections(out)
	if st.ExitCode != 0 || len(s) != 2 {
		t.Fatalf("exit %d output %q", st.ExitCode, out)
	}
	env := strings.Split(s[0], "\n")
	for _, want := range []string{"FOO=bar baz", "OVERRIDE=container", "IMG_VAR=fromimage", testutil.DefaultPath} {
		if !slices.Contains(env, want) {
			t.Errorf("environment lacks %q: %q", want, env)
		}
	}
	if slices.Contains(env, "OVERRIDE=image") {
		t.Errorf("the image's OVERRIDE was not replaced by the container's: %q", env)
	}
	if s[1] != "/tmp" {
		t.Errorf("working dir %q, want the image's /tmp", s[1])
	}
	cfg = ctrConfig("wd", images.Entrypoint.Ref, "pwd")
	cfg.WorkingDir = "/home/berth"
	if st, out, _ := runToExit(t, d, podID, pod, cfg); st.ExitCode != 0 || strings.TrimSpace(out) != "/home/berth" {
		t.Errorf("working dir from the container config: exit %d, pwd %q, want /home/berth", st.ExitCode, out)
	}
	removePod(t, d, podID)
}

func testUser(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "user")
	podID := runPod(t, d, pod)
	const script = "id -u; id -g; pwd"
	for _, tc := range []struct {
		name, image string
		runAs       int64 // -1: not set
		want        string
	}{
		{"named image user", images.User.Ref, -1, "1000\n1000\n/home/berth"},
		{"numeric image user", images.UID.Ref, -1, "1000\n1000\n/"},
		{"root image", images.Busybox.Ref, -1, "0\n0\n/"},
		{"run_as_user overrides the image", images.User.Ref, 65534, "65534\n65534\n/home/berth"},
	} {
		cfg := ctrConfig("u"+randID(), tc.image, "sh", "-c", script)
		if tc.runAs >= 0 {
			cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: tc.runAs}
		}
		st, out, errOut := runToExit(t, d, podID, pod, cfg)
		if st.ExitCode != 0 || strings.TrimSpace(out) != tc.want {
			t.Errorf("%s: exit %d, uid/gid/cwd %q (stderr %q), want %q", tc.name, st.ExitCode, out, errOut, tc.want)
		}
	}
	removePod(t, d, podID)
}

func testMounts(t *testing.T, d *testutil.Daemon) {
	host := filepath.Join(d.Dir, "hostdata-"+randID())
	rw, ro := filepath.Join(host, "rw"), filepath.Join(host, "ro")
	for _, p := range []string{rw, ro} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defer os.RemoveAll(host)
	if err := os.WriteFile(filepath.Join(ro, "in.txt"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := podConfig(t, d, "mounts")
	podID := runPod(t, d, pod)
	cfg := shConfig("mounts", `cat /data-ro/in.txt; echo written > /data-rw/out.txt && echo rw-ok; touch /data-ro/x 2>/dev/null && echo ro-writable || echo ro-denied`)
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/data-rw", HostPath: rw},
		{ContainerPath: "/data-ro", HostPath: ro, Readonly: true},
	}
	st, out, errOut := runToExit(t, d, podID, pod, cfg)
	if want := "from host\nrw-ok\nro-denied\n"; out != want {
		t.Errorf("output %q (stderr %q), want %q", out, errOut, want)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "out.txt")); err != nil || string(b) != "written\n" {
		t.Errorf("host file written through the rw mount: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file appeared through the read-only mount: %v", err)
	}
	got := map[string]*runtimeapi.Mount{}
	for _, m := range st.Mounts {
		got[m.ContainerPath] = m
	}
	for _, want := range cfg.Mounts {
		m := got[want.ContainerPath]
		if m == nil || m.HostPath != want.HostPath || m.Readonly != want.Readonly {
			t.Errorf("ContainerStatus mount %s = %v, want host %s readonly %v", want.ContainerPath, m, want.HostPath, want.Readonly)
		}
	}
	removePod(t, d, podID)
}

func testWhiteout(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "layers")
	podID := runPod(t, d, pod)
	cfg := ctrConfig("multi", images.Multi.Ref, "sh", "-c", "cat /app/hello.txt; test -e "+testutil.BaseMarker+" && echo marker-present || echo marker-gone")
	st, out, _ := runToExit(t, d, podID, pod, cfg)
	if want := testutil.AppHello + "\nmarker-gone\n"; st.ExitCode != 0 || out != want {
		t.Errorf("multi-layer image: exit %d output %q, want %q", st.ExitCode, out, want)
	}
	// The shared base layer is untouched for the single-layer image.
	st, out, _ = runToExit(t, d, podID, pod, shConfig("base", "cat "+testutil.BaseMarker))
	if st.ExitCode != 0 || out != "base\n" {
		t.Errorf("base image: exit %d, %s = %q, want base", st.ExitCode, testutil.BaseMarker, out)
	}
	removePod(t, d, podID)
}

// Each container writes to its own upper layer; the image stays clean.
func testWritableRootfs(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "rootfs")
	podID := runPod(t, d, pod)
	st, _, errOut := runToExit(t, d, podID, pod, shConfig("writer", "echo mine > /etc/written && rm /bin/yes && echo ok > /tmp/t"))
	if st.ExitCode != 0 {
		t.Fatalf("writing the root file system: exit %d, %q", st.ExitCode, errOut)
	}
	st, out, _ := runToExit(t, d, podID, pod, shConfig("reader", "test -e /etc/written && echo leaked; test -e /bin/yes && echo yes-present"))
	if st.ExitCode != 0 || out != "yes-present\n" {
		t.Errorf("second container sees %q (exit %d), want only yes-present", out, st.ExitCode)
	}
	removePod(t, d, podID)
}

func testContainerStatus(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := podConfig(t, d, "cstatus")
	podID := runPod(t, d, pod)
	for _, tc := range []struct {
		exit   int32
		reason string
	}{{0, "Completed"}, {3, "Error"}} {
		name := fmt.Sprintf("exit%d", tc.exit)
		cfg := shConfig(name, fmt.Sprintf("sleep 0.5; exit %d", tc.exit))
		cfg.Labels = map[string]string{"app": "cstatus", "exit": name}
		cfg.Annotations = map[string]string{"note": "x", "io.kubernetes.container.hash": "abc"}
		cfg.Metadata.Attempt = 2
		before := time.Now().UnixNano()
		id := createCtr(t, d, podID, pod, cfg)
		st := ctrStatus(t, d, id)
		if st.State != runtimeapi.ContainerState_CONTAINER_CREATED || st.CreatedAt < before || st.CreatedAt > time.Now().UnixNano() || st.StartedAt != 0 || st.FinishedAt != 0 {
			t.Errorf("after create: state %s created %d started %d finished %d (create began %d)", st.State, st.CreatedAt, st.StartedAt, st.FinishedAt, before)
		}
		startCtr(t, d, id)
		st = ctrStatus(t, d, id)
		if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt < st.CreatedAt || st.FinishedAt != 0 {
			t.Errorf("after start: state %s created %d started %d finished %d", st.State, st.CreatedAt, st.StartedAt, st.FinishedAt)
		}
		st = waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
		if st.ExitCode != tc.exit || st.Reason != tc.reason {
			t.Errorf("exit code %d reason %q, want %d %q", st.ExitCode, st.Reason, tc.exit, tc.reason)
		}
		if ran := time.Duration(st.FinishedAt - st.StartedAt); ran < 400*time.Millisecond || ran > 5*time.Second {
			t.Errorf("finished_at - started_at = %s for a 0.5s container", ran)
		}
		if m := st.GetMetadata(); m.GetName() != name || m.GetAttempt() != 2 || st.Id != id {
			t.Errorf("id %s metadata %v, want %s %s attempt 2", st.Id, m, id, name)
		}
		if st.GetImage().GetImage() != images.Busybox.Ref {
			t.Errorf("image %q, want %q", st.GetImage().GetImage(), images.Busybox.Ref)
		}
		if st.ImageRef == "" || (!isID(st.ImageRef, images.Busybox.ConfigDigest) && !strings.HasPrefix(st.ImageRef, images.Busybox.Repo+"@sha256:")) {
			t.Errorf("image_ref %q, want the image id or a repo digest of %s", st.ImageRef, images.Busybox.Ref)
		}
		if want := filepath.Join(pod.LogDirectory, cfg.LogPath); st.LogPath != want {
			t.Errorf("log_path %q, want %q", st.LogPath, want)
		}
		if !mapsEqual(st.Labels, cfg.Labels) || !mapsEqual(st.Annotations, cfg.Annotations) {
			t.Errorf("labels %v annotations %v, want %v %v", st.Labels, st.Annotations, cfg.Labels, cfg.Annotations)
		}
	}
	_, err := d.Runtime.ContainerStatus(ctx, "0123456789abcdef", false)
	wantCode(t, "ContainerStatus of an unknown id", err, codes.NotFound)
	removePod(t, d, podID)
}

// listCtrs runs the filter through ListContainers and StreamContainers and
// checks both agree.
func listCtrs(t *testing.T, d *testutil.Daemon, f *runtimeapi.ContainerFilter) map[string]bool {
	t.Helper()
	ctx := context.Background()
	list, err := d.Runtime.ListContainers(ctx, f)
	if err != nil {
		t.Fatalf("ListContainers(%v): %v", f, err)
	}
	unary := containerIDs(list)
	stream, err := d.RuntimeClient.StreamContainers(ctx, &runtimeapi.StreamContainersRequest{Filter: f})
	if err != nil {
		t.Fatalf("StreamContainers(%v): %v", f, err)
	}
	streamed := streamedIDs(t, fmt.Sprintf("StreamContainers(%v)", f), stream.Recv,
		func(r *runtimeapi.StreamContainersResponse) map[string]bool { return containerIDs(r.GetContainers()) })
	if !maps.Equal(unary, streamed) {
		t.Errorf("filter %v: ListContainers %v, StreamContainers %v", f, unary, streamed)
	}
	return unary
}

func testListContainers(t *testing.T, d *testutil.Daemon) {
	pa, pb := podConfig(t, d, "lc-a"), podConfig(t, d, "lc-b")
	a, b := runPod(t, d, pa), runPod(t, d, pb)
	withLabels := func(cfg *runtimeapi.ContainerConfig, kv ...string) *runtimeapi.ContainerConfig {
		cfg.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			cfg.Labels[kv[i]] = kv[i+1]
		}
		return cfg
	}
	running := runCtr(t, d, a, pa, withLabels(shConfig("running", "exec sleep 1000"), "role", "r", "team", "x"))
	created := createCtr(t, d, a, pa, withLabels(shConfig("created", "true"), "role", "c", "team", "x"))
	exited := runCtr(t, d, b, pb, withLabels(shConfig("exited", "true"), "role", "e", "team", "x"))
	waitState(t, d, exited, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
	state := func(s runtimeapi.ContainerState) *runtimeapi.ContainerStateValue {
		return &runtimeapi.ContainerStateValue{State: s}
	}
	for _, tc := range []struct {
		name   string
		filter *runtimeapi.ContainerFilter
		want   []string
	}{
		{"none", nil, []string{running, created, exited}},
		{"id", &runtimeapi.ContainerFilter{Id: created}, []string{created}},
		{"unknown id", &runtimeapi.ContainerFilter{Id: "0123456789abcdef"}, nil},
		{"running", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_RUNNING)}, []string{running}},
		{"created", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_CREATED)}, []string{created}},
		{"exited", &runtimeapi.ContainerFilter{State: state(runtimeapi.ContainerState_CONTAINER_EXITED)}, []string{exited}},
		{"pod a", &runtimeapi.ContainerFilter{PodSandboxId: a}, []string{running, created}},
		{"pod b", &runtimeapi.ContainerFilter{PodSandboxId: b}, []string{exited}},
		{"label", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"role": "c"}}, []string{created}},
		{"shared label", &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"team": "x"}}, []string{running, created, exited}},
		{"pod and state", &runtimeapi.ContainerFilter{PodSandboxId: a, State: state(runtimeapi.ContainerState_CONTAINER_EXITED)}, nil},
		{"id and pod", &runtimeapi.ContainerFilter{Id: running, PodSandboxId: a}, []string{running}},
	} {
		got := listCtrs(t, d, tc.filter)
		want := map[string]bool{}
		for _, id := range tc.want {
			want[id] = true
		}
		if !maps.Equal(got, want) {
			t.Errorf("filter %s: got %v, want %v", tc.name, got, want)
		}
	}
	list, err := d.Runtime.ListContainers(context.Background(), &runtimeapi.ContainerFilter{Id: running})
	if err != nil || len(list) != 1 {
		t.Fatalf("ListContainers(id): %v %v", list, err)
	}
	if c := list[0]; c.PodSandboxId != a || c.GetMetadata().GetName() != "running" || c.Labels["role"] != "r" ||
		c.State != runtimeapi.ContainerState_CONTAINER_RUNNING || c.CreatedAt == 0 || c.GetImage().GetImage() == "" || c.ImageRef == "" {
		t.Errorf("listed container %v: want pod id, metadata, labels, state, created_at, image and image_ref", c)
	}
	removePod(t, d, a)
	removePod(t, d, b)
}

// RemoveContainer of a running container kills it first.
func testRemoveRunning(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	pod := podConfig(t, d, "rmc")
	podID := runPod(t, d, pod)
	id := runCtr(t, d, podID, pod, shConfig("stubborn", "trap '' TERM; while true; do sleep 1; done"))
	if err := d.Runtime.RemoveContainer(ctx, id); err != nil {
		t.Fatalf("RemoveContainer of a running container: %v", err)
	}
	_, err := d.Runtime.ContainerStatus(ctx, id, false)
	wantCode(t, "ContainerStatus of a removed container", err, codes.NotFound)
	if err := d.Runtime.RemoveContainer(ctx, id); err != nil {
		t.Errorf("second RemoveContainer: %v", err)
	}
	if n := procsBelow(t, d.CgroupParent); n != 0 {
		t.Errorf("%d processes still in the container cgroups after RemoveContainer", n)
	}
	removePod(t, d, podID)
}
