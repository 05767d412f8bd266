package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

var stopCases = []sharedCase{
	{"StopContainer", testStopContainer},
	{"StopImageStopSignal", testStopSignal},
}

// stubbornScript ignores SIGTERM; only SIGKILL ends it.
const stubbornScript = "trap '' TERM; while true; do sleep 1; done"

func testStopContainer(t *testing.T, d *testutil.Daemon) {
	pod := sharePID(podConfig(t, d, "stopc"))
	podID := runPod(t, d, pod)
	for _, tc := range []struct {
		name     string
		script   string
		timeout  int64
		min, max time.Duration
		exit     int32
	}{
		// In a shared PID namespace sleep is not PID 1, so SIGTERM's
		// default action kills it at once.
		{"sleep stops on SIGTERM", "exec sleep 1000", 30, 0, 5 * time.Second, 128 + 15},
		{"trap exits on SIGTERM", "trap 'exit 0' TERM; while true; do sleep 1; done", 30, 0, 5 * time.Second, 0},
		{"TERM ignored: killed after the timeout", stubbornScript, 2, 2 * time.Second, 8 * time.Second, 128 + 9},
		{"timeout 0 kills at once", stubbornScript, 0, 0, 2 * time.Second, 128 + 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := runCtr(t, d, podID, pod, shConfig("c"+randID(), tc.script))
			time.Sleep(300 * time.Millisecond) // let the shell install its traps
			start := time.Now()
			if err := d.Runtime.StopContainer(context.Background(), id, tc.timeout); err != nil {
				t.Fatalf("StopContainer(timeout %d): %v", tc.timeout, err)
			}
			took := time.Since(start)
			st := ctrStatus(t, d, id)
			if st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
				t.Fatalf("state %s after StopContainer returned, want EXITED", st.State)
			}
			if took < tc.min || took > tc.max {
				t.Errorf("StopContainer(timeout %d) took %s, want within [%s, %s]", tc.timeout, took, tc.min, tc.max)
			}
			if st.ExitCode != tc.exit {
				t.Errorf("exit code %d, want %d", st.ExitCode, tc.exit)
			}
			// Stopping an exited container is a no-op.
			if err := d.Runtime.StopContainer(context.Background(), id, 10); err != nil {
				t.Errorf("second StopContainer: %v", err)
			}
		})
	}
	removePod(t, d, podID)
}

// StopContainer sends the image's StopSignal first.
func testStopSignal(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "stopsig")
	podID := runPod(t, d, pod)
	cfg := ctrConfig("usr1", images.StopSignal.Ref, "sh", "-c",
		"trap 'echo got-usr1; exit 3' USR1; trap 'echo got-term; exit 4' TERM; echo ready; while true; do sleep 1; done")
	id := runCtr(t, d, podID, pod, cfg)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := d.Runtime.StopContainer(context.Background(), id, 10); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	st := ctrStatus(t, d, id)
	out, _ := readLogs(t, d, st.LogPath)
	if st.ExitCode != 3 || !strings.Contains(out, "got-usr1") {
		t.Errorf("after StopContainer (took %s): exit %d, log %q; want exit 3 after SIGUSR1", time.Since(start), st.ExitCode, out)
	}
	removePod(t, d, podID)
}
