package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

func logSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat log: %v", err)
	}
	return st.Size()
}

// TestRestart kills berthd with -9 while a container runs, another has
// exited and a third exits while berthd is down; after a restart all are
// known with their true state, and the running one keeps running and logging.
func TestRestart(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	t.Cleanup(func() {
		if d.Running() {
			removeAllPods(t, d)
			testutil.AssertNoLeaks(t, d)
		}
	})
	ctx := context.Background()
	pod := podConfig(t, d, "restart")
	podID := runPod(t, d, pod)
	ticker := runCtr(t, d, podID, pod, shConfig("ticker", "trap 'exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"))
	exited := runCtr(t, d, podID, pod, shConfig("exited", "echo done; exit 5"))
	before := waitState(t, d, exited, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
	tickerBefore := ctrStatus(t, d, ticker)
	late := runCtr(t, d, podID, pod, shConfig("late", "sleep 2; exit 7"))

	killed := time.Now()
	d.Kill9(t)
	size := logSize(t, tickerBefore.LogPath)
	time.Sleep(3 * time.Second) // late exits meanwhile
	if grown := logSize(t, tickerBefore.LogPath); grown <= size {
		t.Errorf("the running container stopped logging while berthd was down (%d -> %d bytes)", size, grown)
	}
	d.Restart(t)
	// The first call: berthd serves before the shim is reattached, and a
	// call that needs the shim waits for it.
	if stdout, _, err := d.Runtime.ExecSync(ctx, ticker, []string{"echo", "exec-after-restart"}, 10*time.Second); err != nil || string(stdout) != "exec-after-restart\n" {
		t.Errorf("ExecSync right after restart: %q, %v", stdout, err)
	}

	list, err := d.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: podID})
	if err != nil || len(list) != 3 {
		t.Fatalf("ListContainers after restart: %d containers, %v; want 3", len(list), err)
	}
	if ps, err := d.Runtime.PodSandboxStatus(ctx, podID, false); err != nil || ps.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod after restart: %v, %v; want READY", ps.GetStatus(), err)
	}
	st := ctrStatus(t, d, ticker)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt != tickerBefore.StartedAt {
		t.Errorf("running container after restart: %s started %d (before %d), want RUNNING, same start", st.State, st.StartedAt, tickerBefore.StartedAt)
	}
	size = logSize(t, st.LogPath)
	time.Sleep(500 * time.Millisecond)
	if grown := logSize(t, st.LogPath); grown <= size {
		t.Errorf("the running container stopped logging after the restart (%d -> %d bytes)", size, grown)
	}
	st = ctrStatus(t, d, exited)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 5 || st.FinishedAt != before.FinishedAt || st.Reason != "Error" {
		t.Errorf("exited container after restart: %s exit %d finished %d reason %q, want EXITED 5 %d Error", st.State, st.ExitCode, st.FinishedAt, st.Reason, before.FinishedAt)
	}
	// Known before berthd serves: no client may see it RUNNING.
	st = ctrStatus(t, d, late)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 7 || st.FinishedAt <= killed.UnixNano() || st.FinishedAt > time.Now().UnixNano() {
		t.Errorf("container that exited while berthd was down: %s exit %d finished %d; want EXITED 7, after the kill at %d", st.State, st.ExitCode, st.FinishedAt, killed.UnixNano())
	}

	// The daemon drives the survivors as before.
	start := time.Now()
	if err := d.Runtime.StopContainer(ctx, ticker, 10); err != nil {
		t.Fatalf("StopContainer after restart: %v", err)
	}
	st = ctrStatus(t, d, ticker)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("StopContainer after restart: %s exit %d after %s, want EXITED 0 quickly", st.State, st.ExitCode, time.Since(start))
	}
	out, _ := readLogs(t, d, st.LogPath)
	if !strings.HasPrefix(out, "tick 0\ntick 1\n") {
		t.Errorf("ticker log starts %.40q", out)
	}
	if st, out, _ := runToExit(t, d, podID, pod, shConfig("after", "echo after-restart")); st.ExitCode != 0 || out != "after-restart\n" {
		t.Errorf("new container after restart: exit %d output %q", st.ExitCode, out)
	}

	// A clean restart (SIGTERM) loses nothing either.
	d.Restart(t)
	list, err = d.Runtime.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: podID})
	if err != nil || len(list) != 4 {
		t.Errorf("ListContainers after a clean restart: %d containers, %v; want 4", len(list), err)
	}
	removePod(t, d, podID)
	testutil.AssertNoLeaks(t, d)
}
