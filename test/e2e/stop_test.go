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

// StopContainer sends the container config's stop signal first, else the
// image's StopSignal, and ContainerStatus names the one it will send.
func testStopSignal(t *testing.T, d *testutil.Daemon) {
	pod := podConfig(t, d, "stopsig")
	podID := runPod(t, d, pod)
	// busybox sh traps real-time signals by number: SIGRTMIN+3 is 37, as
	// glibc, runc and docker count.
	const script = "trap 'echo got-usr1; exit 3' USR1; trap 'echo got-rtmin3; exit 5' 37; " +
		"trap 'echo got-term; exit 4' TERM; echo ready; while true; do sleep 1; done"
	for _, tc := range []struct {
		name   string
		config runtimeapi.Signal
		want   runtimeapi.Signal
		exit   int32
		log    string
	}{
		{"image", runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT, runtimeapi.Signal_SIGNAL_SIGUSR1, 3, "got-usr1"},
		{"config over image", runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3, runtimeapi.Signal_SIGNAL_SIGRTMINPLUS3, 5, "got-rtmin3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ctrConfig("sig"+randID(), images.StopSignal.Ref, "sh", "-c", script)
			cfg.StopSignal = tc.config
			id := runCtr(t, d, podID, pod, cfg)
			if got := ctrStatus(t, d, id).GetStopSignal(); got != tc.want {
				t.Errorf("ContainerStatus stop_signal %s, want %s", got, tc.want)
			}
			time.Sleep(300 * time.Millisecond) // let the shell install its traps
			start := time.Now()
			if err := d.Runtime.StopContainer(context.Background(), id, 10); err != nil {
				t.Fatalf("StopContainer: %v", err)
			}
			st := ctrStatus(t, d, id)
			out, _ := readLogs(t, d, st.LogPath)
			if st.ExitCode != tc.exit || !strings.Contains(out, tc.log) {
				t.Errorf("after StopContainer (took %s): exit %d, log %q; want exit %d after %s", time.Since(start), st.ExitCode, out, tc.exit, tc.want)
			}
		})
	}
	removePod(t, d, podID)
}
