package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-runtime/berth/shim/api"
)

func TestSharePIDInfra(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, buildPause(t))
	ctx := context.Background()
	p, err := e.c.Create(ctx, Spec{ID: "pod1", Dir: filepath.Join(e.root, "pods", "pod1"), SharePID: true})
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(p.InfraPID)
	if p.InfraPID <= 0 || p.InfraStartTime == 0 {
		t.Fatalf("no infra recorded: %+v", p)
	}
	if !e.c.InfraAlive(p) {
		t.Fatal("infra not alive after create")
	}
	if got, want := e.c.PidNSPath(p), "/proc/"+pid+"/ns/pid"; got != want {
		t.Errorf("PidNSPath = %q, want %q", got, want)
	}
	nspid := strings.Fields(statusField(t, pid, "NSpid"))
	if len(nspid) != 2 || nspid[1] != "1" {
		t.Errorf("NSpid = %v, want [%s 1]", nspid, pid)
	}
	if exe, _ := os.Readlink("/proc/" + pid + "/exe"); exe != buildPause(t) {
		t.Errorf("infra exe = %q", exe)
	}
	for _, ns := range []struct{ pin, name string }{{p.NetNS, "net"}, {p.IPCNS, "ipc"}, {p.UTSNS, "uts"}} {
		if nsInode(t, ns.pin) != nsInode(t, "/proc/"+pid+"/ns/"+ns.name) {
			t.Errorf("infra is not in the pod's %s namespace", ns.name)
		}
	}

	// A record with another start time is a reused pid: never killed.
	wrong := p
	wrong.InfraStartTime++
	if e.c.InfraAlive(wrong) {
		t.Error("InfraAlive true for wrong start time")
	}
	if err := e.c.Stop(ctx, wrong); err != nil || !e.c.InfraAlive(p) {
		t.Fatalf("stop with wrong start time: err %v, alive %v", err, e.c.InfraAlive(p))
	}

	for i := 0; i < 2; i++ {
		if err := e.c.Stop(ctx, p); err != nil {
			t.Fatalf("stop #%d: %v", i, err)
		}
	}
	if e.c.InfraAlive(p) {
		t.Error("infra alive after stop")
	}
	// Stop returns after the reaper waited: no zombie, no process.
	if _, err := os.Stat("/proc/" + pid); err == nil {
		t.Errorf("infra pid %s still exists (state %q)", pid, statusField(t, pid, "State"))
	}
	if err := e.c.Remove(ctx, p); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, e)
}

// After a daemon restart the infra process is not the new Controller's
// child: Stop must still find and kill it by pid and start time.
func TestStopInfraFromAnotherController(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, buildPause(t))
	ctx := context.Background()
	p, err := e.c.Create(ctx, Spec{ID: "pod1", Dir: filepath.Join(e.root, "pods", "pod1"), SharePID: true, HostNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := New(Options{NetNSDir: e.c.netNSDir, PausePath: buildPause(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !c2.InfraAlive(p) {
		t.Fatal("new controller does not see infra alive")
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c2.Remove(sctx, p); err != nil {
		t.Fatal(err)
	}
	if c2.InfraAlive(p) || e.c.InfraAlive(p) {
		t.Error("infra alive after remove")
	}
	assertNothingLeft(t, e)
}

func TestStopLeavesUnrelatedProcess(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, "")
	cmd := exec.Command("/bin/busybox", "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("busybox: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	st, err := api.ReadProcStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := Pod{ID: "x", InfraPID: cmd.Process.Pid, InfraStartTime: st.StartTime + 1}
	if err := e.c.Stop(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if got, _ := api.ReadProcStat(cmd.Process.Pid); got.Gone() || got.StartTime != st.StartTime {
		t.Errorf("unrelated process was killed: %+v", got)
	}
}
