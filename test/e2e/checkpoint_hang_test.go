package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// realCRIU is where `make criu` installs a CRIU that passed its probe.
const realCRIU = "/usr/local/sbin/criu"

// requireCRIU skips a checkpoint test when setup could install no working
// CRIU here (it says so, and berthd then reports CheckpointRestoreReady
// false); everywhere else the test runs.
func requireCRIU(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(realCRIU); err != nil {
		t.Skipf("no working CRIU installed (make criu found none for this kernel): %v", err)
	}
}

// criuStandIn is a CRIU that hangs the way CRIU 4.1.1 hangs on kernel
// 6.18, as a sleep with a command line unique to the test, so that any
// copy left running is found.
type criuStandIn struct {
	path, modeFile, marker string
}

// Stand-in modes: "pass" runs the real CRIU for everything; "hang-runc"
// passes berthd's probe (criu dump/restore from the command line) but
// hangs in every call runc makes (criu swrk); "hang" hangs in everything.
func newCRIUStandIn(t *testing.T, mode string) *criuStandIn {
	t.Helper()
	dir := t.TempDir()
	c := &criuStandIn{
		path:     filepath.Join(dir, "criu"),
		modeFile: filepath.Join(dir, "mode"),
		marker:   fmt.Sprintf("%d.%03d", 3000+rand.IntN(500), rand.IntN(1000)),
	}
	script := fmt.Sprintf(`#!/bin/sh
case "$(cat %s):$1" in
pass:*) exec %s "$@" ;;
hang-runc:swrk) exec sleep %s ;;
hang-runc:*) exec %s "$@" ;;
*) exec sleep %s ;;
esac
`, c.modeFile, realCRIU, c.marker, realCRIU, c.marker)
	if err := os.WriteFile(c.path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c.setMode(t, mode)
	return c
}

func (c *criuStandIn) setMode(t *testing.T, mode string) {
	t.Helper()
	if err := os.WriteFile(c.modeFile, []byte(mode), 0o644); err != nil {
		t.Fatal(err)
	}
}

// running lists the pids of stand-ins still alive (zombies do not count:
// this machine's init reaps orphans late).
func (c *criuStandIn) running() []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmd, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || string(cmd) != "sleep\x00"+c.marker+"\x00" {
			continue
		}
		if st, err := os.ReadFile(filepath.Join(p, "stat")); err == nil {
			if f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		out = append(out, filepath.Base(p))
	}
	return out
}

func (c *criuStandIn) assertNoneLeft(t *testing.T) {
	t.Helper()
	if pids := c.running(); len(pids) > 0 {
		t.Errorf("CRIU stand-ins still running: %v", pids)
	}
}

func standInDaemon(t *testing.T, c *criuStandIn, timeout string) *testutil.Daemon {
	t.Helper()
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Binaries: bins, InsecureHosts: []string{reg.Host},
		RuntimeTOML: fmt.Sprintf("criu_path = %q\ncheckpoint_timeout = %q\n", c.path, timeout),
		RPCTimeout:  2 * time.Minute,
	})
	t.Cleanup(func() {
		removeAllPods(t, d)
		testutil.AssertNothingLeft(t, d)
		if e, _ := os.ReadDir(filepath.Join(d.State, "checkpoints")); len(e) > 0 {
			t.Errorf("checkpoint work dirs left: %v", e)
		}
		c.assertNoneLeft(t)
	})
	return d
}

// waitCheckpointCondition waits for berthd's CRIU probe to end and returns
// the condition it reports.
func waitCheckpointCondition(t *testing.T, d *testutil.Daemon) *runtimeapi.RuntimeCondition {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := d.Runtime.Status(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range st.GetStatus().GetConditions() {
			if c.Type == "CheckpointRestoreReady" && c.Reason != "CRIUProbing" {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("CRIU probe still running after 90s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantCode checks err's gRPC code and that its message names id.
func wantCodeNaming(t *testing.T, what string, err error, code codes.Code, id string) {
	t.Helper()
	if s, _ := status.FromError(err); s.Code() != code || !strings.Contains(s.Message(), id) {
		t.Errorf("%s: %v; want %s naming %q", what, err, code, id)
	}
}

// TestCheckpointHangingCRIU: a CRIU that hangs in every dump and restore
// runc asks of it bounds each call by runtime.checkpoint_timeout. Every
// call answers DeadlineExceeded naming the container, and leaves no CRIU
// running, no container frozen, no partial output.
func TestCheckpointHangingCRIU(t *testing.T) {
	testutil.RequiresRoot(t)
	requireCRIU(t)
	t.Parallel()
	ctx := context.Background()
	criu := newCRIUStandIn(t, "hang-runc")
	const bound = 4 * time.Second
	d := standInDaemon(t, criu, bound.String())
	if c := waitCheckpointCondition(t, d); !c.Status {
		t.Fatalf("the stand-in passes the probe through the real CRIU, yet: %s: %s", c.Reason, c.Message)
	}
	podCfg := podConfig(t, d, "criu-hang")
	pod := runPod(t, d, podCfg)
	ctr := runCtr(t, d, pod, podCfg, shConfig("counter", counterScript))
	log := waitState(t, d, ctr, runtimeapi.ContainerState_CONTAINER_RUNNING, 5*time.Second).LogPath
	waitCounts(t, log, 3)
	// keepsCounting fails t unless the container runs on, thawed.
	keepsCounting := func(what string) {
		t.Helper()
		waitCounts(t, log, len(logCounts(t, log))+3)
		if s := ctrStatus(t, d, ctr); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("after %s the container is %s, want RUNNING", what, s.State)
		}
		criu.assertNoneLeft(t)
	}
	// The call may take the bound, the stand-in's kill and the thaw, but
	// not the 5 minutes of the default bound, nor forever.
	timed := func(what string, call func() error) error {
		t.Helper()
		start := time.Now()
		err := call()
		if el := time.Since(start); el < bound || el > bound+30*time.Second {
			t.Errorf("%s returned after %s; want the %s bound", what, el.Round(time.Millisecond), bound)
		}
		return err
	}

	archive := filepath.Join(t.TempDir(), "ckpt.tar")
	err := timed("CheckpointContainer", func() error {
		_, err := d.RuntimeClient.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: ctr, Location: archive})
		return err
	})
	wantCodeNaming(t, "CheckpointContainer", err, codes.DeadlineExceeded, ctr)
	if _, err := os.Stat(archive); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("timed-out checkpoint left its archive: %v", err)
	}
	keepsCounting("CheckpointContainer")

	out := t.TempDir()
	err = timed("CheckpointPod", func() error {
		_, err := d.RuntimeClient.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, OutputPath: out, ContainerIds: []string{ctr}})
		return err
	})
	wantCodeNaming(t, "CheckpointPod", err, codes.DeadlineExceeded, ctr)
	if e, _ := os.ReadDir(out); len(e) > 0 {
		t.Errorf("timed-out pod checkpoint left %d entries in its output directory", len(e))
	}
	keepsCounting("CheckpointPod")

	// A restore hangs the same way: a real checkpoint first, then a
	// restore that CRIU never finishes.
	criu.setMode(t, "pass")
	if _, err := d.RuntimeClient.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: ctr, Location: archive}); err != nil {
		t.Fatalf("CheckpointContainer with the real CRIU: %v", err)
	}
	criu.setMode(t, "hang-runc")
	rcfg := shConfig("restored", "true")
	rcfg.Image = &runtimeapi.ImageSpec{Image: archive}
	restored, err := d.Runtime.CreateContainer(ctx, pod, rcfg, podCfg)
	if err != nil {
		t.Fatalf("CreateContainer from checkpoint: %v", err)
	}
	err = timed("StartContainer (restore)", func() error {
		_, err := d.RuntimeClient.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: restored})
		return err
	})
	wantCodeNaming(t, "StartContainer (restore)", err, codes.DeadlineExceeded, restored)
	waitState(t, d, restored, runtimeapi.ContainerState_CONTAINER_EXITED, 10*time.Second)
	criu.assertNoneLeft(t)
	if err := d.Runtime.RemoveContainer(ctx, restored); err != nil {
		t.Errorf("RemoveContainer of the unrestored container: %v", err)
	}
	keepsCounting("the restore")
}

// TestCheckpointCRIUProbeFails: a CRIU that hangs from the start fails
// berthd's probe within the bound; Status says why, and the checkpoint
// RPCs answer FailedPrecondition at once instead of hanging.
func TestCheckpointCRIUProbeFails(t *testing.T) {
	testutil.RequiresRoot(t)
	requireCRIU(t)
	t.Parallel()
	ctx := context.Background()
	criu := newCRIUStandIn(t, "hang")
	d := standInDaemon(t, criu, "3s")
	c := waitCheckpointCondition(t, d)
	if c.Status || c.Reason != "CRIUUnavailable" || !strings.Contains(c.Message, criu.path) {
		t.Errorf("CheckpointRestoreReady = %v %s %q; want false, CRIUUnavailable, naming %s", c.Status, c.Reason, c.Message, criu.path)
	}
	criu.assertNoneLeft(t)
	podCfg := podConfig(t, d, "criu-probe")
	pod := runPod(t, d, podCfg)
	ctr := runCtr(t, d, pod, podCfg, shConfig("sleeper", "sleep 600"))
	start := time.Now()
	_, err := d.RuntimeClient.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: ctr, Location: filepath.Join(t.TempDir(), "x.tar")})
	if s, _ := status.FromError(err); s.Code() != codes.FailedPrecondition || !strings.Contains(s.Message(), "CRIU") {
		t.Errorf("CheckpointContainer: %v; want FailedPrecondition saying why", err)
	}
	_, err = d.RuntimeClient.CheckpointPod(ctx, &runtimeapi.CheckpointPodRequest{PodSandboxId: pod, OutputPath: t.TempDir(), ContainerIds: []string{ctr}})
	if s, _ := status.FromError(err); s.Code() != codes.FailedPrecondition {
		t.Errorf("CheckpointPod: %v; want FailedPrecondition", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("refusals took %s; want them at once", el)
	}
	if s := ctrStatus(t, d, ctr); s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("container is %s after the refusals, want RUNNING", s.State)
	}
}
