package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/fault"
	"github.com/berth-runtime/berth/test/testutil"
)

// shimPid finds the berth-shim serving container id.
func shimPid(id string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !procAlive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
		for i, a := range args {
			if a == "--id" && i+1 < len(args) && args[i+1] == id && strings.HasSuffix(args[0], "berth-shim") && len(args) > 1 && args[1] == "serve" {
				return pid
			}
		}
	}
	return 0
}

// wantFailure checks that err is a failure whose message carries want.
func wantFailure(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded under an injected fault", what)
		return
	}
	if st, _ := status.FromError(err); !strings.Contains(st.Message(), want) {
		t.Errorf("%s: error %q does not carry the cause %q", what, st.Message(), want)
	}
}

func TestReliabilityShimKilled(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	ctx := context.Background()
	pod := podConfig(t, d, "shimkill")
	podID := runPod(t, d, pod)
	id := runCtr(t, d, podID, pod, ctrConfig("victim", images.Busybox.Ref, "sleep", "3600"))
	waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second)
	pid := shimPid(id)
	if pid == 0 {
		t.Fatalf("no shim process for container %s", id)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill shim: %v", err)
	}
	st := waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED, 15*time.Second)
	if st.Reason == "" || st.FinishedAt == 0 || st.ExitCode == 0 {
		t.Errorf("container whose shim was killed: reason %q message %q exit %d finished %d; want a reason, an exit code and a time", st.Reason, st.Message, st.ExitCode, st.FinishedAt)
	}
	// Its process must not outlive the shim: nothing may run unsupervised.
	kv, err := readKernelView(d)
	if err != nil {
		t.Fatal(err)
	}
	for p, leaf := range kv.cgroupProcs {
		if leaf == id {
			t.Errorf("process %d of the container runs on after its shim was killed", p)
		}
	}
	if err := d.Runtime.RemoveContainer(ctx, id); err != nil {
		t.Fatalf("RemoveContainer after the shim was killed: %v", err)
	}
	if _, err := d.Runtime.ContainerStatus(ctx, id, false); status.Code(err) != codes.NotFound {
		t.Errorf("ContainerStatus after removal: %v, want NotFound", err)
	}
	removePod(t, d, podID)
	testutil.AssertNothingLeft(t, d)
}

// faultRuntimeDaemon starts a berthd whose runc handler is the fault wrapper.
func faultRuntimeDaemon(t *testing.T) (*testutil.Daemon, fault.Dir) {
	t.Helper()
	fd, err := fault.InstallRuntime(t.TempDir(), "runc")
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host},
		ExtraTOML: fmt.Sprintf("\n[runtime.handlers.runc]\nbinary = %q\n", fd.Path(fault.RuntimeName)),
	})
	return d, fd
}

func TestReliabilityRuntimeFaults(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d, fd := faultRuntimeDaemon(t)
	ctx := context.Background()
	ensureImage(t, d, images.Busybox.Ref)
	pod := podConfig(t, d, "rtfault")
	podID := runPod(t, d, pod)
	clear := func() {
		t.Helper()
		if err := fd.Clear(); err != nil {
			t.Fatal(err)
		}
	}
	noContainers := func(what string) {
		t.Helper()
		list, err := d.Runtime.ListContainers(ctx, nil)
		if err != nil || len(list) != 0 {
			t.Errorf("%s: %d containers listed (%v), want none", what, len(list), err)
		}
		// The pod's own pins, shm and dir stay; nothing else may.
		for _, l := range append(testutil.StateLeaks(d), testutil.Leaks(d)...) {
			if !strings.Contains(l, podID) {
				t.Errorf("%s: left %s", what, l)
			}
		}
	}

	t.Run("plain lifecycle", func(t *testing.T) {
		// Started, stopped by its TERM handler, removed: the runtime runs
		// create, start and one delete. The shim signals a running init
		// itself (no runc kill), and RemoveContainer finds the shim gone
		// rather than cleaning up after it (no delete --force).
		before := len(fd.Calls())
		id := runCtr(t, d, podID, pod, shConfig("c0", "trap 'exit 0' TERM; touch /tmp/ready; while :; do sleep 1 & wait; done"))
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := d.RuntimeClient.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "test -f /tmp/ready"}, Timeout: 5})
			if err == nil && resp.ExitCode == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the workload never installed its TERM handler: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := d.Runtime.StopContainer(ctx, id, 30); err != nil {
			t.Fatalf("StopContainer: %v", err)
		}
		if st := ctrStatus(t, d, id); st.ExitCode != 0 {
			t.Errorf("exit code %d after TERM, want 0 (the handler's)", st.ExitCode)
		}
		if err := d.Runtime.RemoveContainer(ctx, id); err != nil {
			t.Fatalf("RemoveContainer: %v", err)
		}
		var got []string
		for _, c := range fd.Calls()[before:] {
			switch cmd, _, _ := strings.Cut(c, " "); cmd {
			case "create", "start", "kill", "delete":
				got = append(got, c)
			}
		}
		if len(got) != 3 || !strings.HasPrefix(got[0], "create ") || !strings.HasPrefix(got[1], "start ") ||
			!strings.HasPrefix(got[2], "delete ") || strings.Contains(got[2], "--force") {
			t.Errorf("runtime calls for one lifecycle %q, want create, start and one plain delete", got)
		}
	})

	t.Run("create", func(t *testing.T) {
		defer clear()
		if err := fd.Fail("create", "injected create failure 7f3a"); err != nil {
			t.Fatal(err)
		}
		_, err := d.RuntimeClient.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: podID, Config: ctrConfig("c1", images.Busybox.Ref, "true"), SandboxConfig: pod,
		})
		wantFailure(t, "CreateContainer", err, "injected create failure 7f3a")
		if fd.Count("create") == 0 {
			t.Fatalf("the wrapper never saw create: calls %q", fd.Calls())
		}
		noContainers("after a failed create")
	})

	t.Run("start", func(t *testing.T) {
		defer clear()
		id := createCtr(t, d, podID, pod, ctrConfig("c2", images.Busybox.Ref, "sleep", "3600"))
		if err := fd.Fail("start", "injected start failure 91bc"); err != nil {
			t.Fatal(err)
		}
		err := d.Runtime.StartContainer(ctx, id)
		wantFailure(t, "StartContainer", err, "injected start failure 91bc")
		if st := ctrStatus(t, d, id); st.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("container is RUNNING after its start failed")
		}
		clear()
		if err := d.Runtime.RemoveContainer(ctx, id); err != nil {
			t.Fatalf("RemoveContainer after a failed start: %v", err)
		}
		noContainers("after a failed start and removal")
	})

	t.Run("delete", func(t *testing.T) {
		defer clear()
		id := runCtr(t, d, podID, pod, ctrConfig("c3", images.Busybox.Ref, "sleep", "3600"))
		if err := fd.Fail("delete", "injected delete failure 5d20"); err != nil {
			t.Fatal(err)
		}
		if err := d.Runtime.StopContainer(ctx, id, 0); err != nil {
			t.Logf("StopContainer with delete failing: %v", err)
		}
		err := d.Runtime.RemoveContainer(ctx, id)
		if err == nil {
			// Accepted only if nothing of the container is left.
			if ids, _ := runcContainers(d); len(ids) > 0 {
				t.Errorf("RemoveContainer succeeded while runc delete failed, leaving runc containers %v", ids)
			}
		} else {
			wantFailure(t, "RemoveContainer", err, "injected delete failure 5d20")
			clear()
			// kubelet retries; the retry must clean up completely.
			if err := d.Runtime.RemoveContainer(ctx, id); err != nil {
				t.Fatalf("RemoveContainer retried after the fault cleared: %v", err)
			}
		}
		clear()
		noContainers("after removal with a failing delete")
	})
	removePod(t, d, podID)
	testutil.AssertNothingLeft(t, d)
}

// runcContainers lists what runc still knows under the daemon's root.
func runcContainers(d *testutil.Daemon) ([]string, error) {
	entries, err := os.ReadDir(d.RuncRoot)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(d.RuncRoot, e.Name(), "state.json")); err == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// cniProcesses finds plugin processes berthd started for this daemon's pods
// (their environment names the netns under its state dir).
func cniProcesses(d *testutil.Daemon) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !procAlive(pid) {
			continue
		}
		env, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
		if bytes.Contains(env, []byte("CNI_NETNS="+d.State)) {
			out = append(out, pid)
		}
	}
	return out
}

func TestReliabilityCNIFaults(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	fd, err := fault.InstallCNI(t.TempDir(), []string{"/usr/lib/cni", "/opt/cni/bin"})
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 2 * time.Second
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host},
		CNIConfList: `{"cniVersion": "1.0.0", "name": "berth-fault", "plugins": [{"type": "faultcni"}]}`,
		CNIBinDirs:  []string{string(fd), "/usr/lib/cni", "/opt/cni/bin"},
		// Appended to the [cni] table, which the generated config ends with.
		ExtraTOML: fmt.Sprintf("plugin_timeout = %q\n", timeout.String()),
	})
	ctx := context.Background()
	noPods := func(what string) {
		t.Helper()
		pods, err := d.Runtime.ListPodSandbox(ctx, nil)
		if err != nil || len(pods) != 0 {
			t.Errorf("%s: %d pods listed (%v), want none", what, len(pods), err)
		}
		if leaks := append(testutil.Leaks(d), testutil.StateLeaks(d)...); len(leaks) > 0 {
			t.Errorf("%s: left %v", what, leaks)
		}
		if ps := cniProcesses(d); len(ps) > 0 {
			t.Errorf("%s: CNI plugin processes %v still run", what, ps)
		}
	}
	for _, tc := range []struct {
		name string
		arm  func() error
		want string
	}{
		{"add fails", func() error { return fd.Fail("ADD", "injected ADD failure c41e") }, "injected ADD failure c41e"},
		{"add hangs", func() error { return fd.Hang("ADD") }, "deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() { _ = fd.Clear() }()
			if err := tc.arm(); err != nil {
				t.Fatal(err)
			}
			dels := fd.Count("DEL")
			start := time.Now()
			_, err := d.RuntimeClient.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(t, d, "cnifault")})
			took := time.Since(start)
			wantFailure(t, "RunPodSandbox", err, tc.want)
			if took > timeout+10*time.Second {
				t.Errorf("RunPodSandbox took %s with plugin_timeout %s", took, timeout)
			}
			if fd.Count("DEL") == dels {
				t.Errorf("no CNI DEL after the failed ADD: an ADD that half-ran is never released (calls %q)", fd.Calls())
			}
			noPods("after " + tc.name)
		})
	}
	t.Run("del hangs", func(t *testing.T) {
		defer func() { _ = fd.Clear() }()
		cfg := podConfig(t, d, "delhang")
		id := runPod(t, d, cfg)
		if err := fd.Hang("DEL"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := d.Runtime.StopPodSandbox(ctx, id)
		if took := time.Since(start); took > timeout+10*time.Second {
			t.Errorf("StopPodSandbox took %s with plugin_timeout %s", took, timeout)
		}
		if err == nil {
			t.Errorf("StopPodSandbox succeeded although CNI DEL hung")
		}
		_ = fd.Clear()
		// kubelet retries; the retry releases everything.
		removePod(t, d, id)
		noPods("after a hung DEL and a retry")
	})
	// With the faults gone the network works again.
	removePod(t, d, runPod(t, d, podConfig(t, d, "cniok")))
	testutil.AssertNothingLeft(t, d)
}
