package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/shim/api"
	"github.com/berth-runtime/berth/test/testutil"
)

// dialCRI opens a raw CRI client of its own on d's socket. Unlike d's
// clients it survives berthd restarts: gRPC reconnects to the same path,
// with a short backoff so a restart is noticed quickly.
func dialCRI(t *testing.T, d *testutil.Daemon) (*grpc.ClientConn, runtimeapi.RuntimeServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+d.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, runtimeapi.NewRuntimeServiceClient(conn)
}

// waitReady waits until conn is connected again after a restart.
func waitReady(conn *grpc.ClientConn, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return true
		}
		if !conn.WaitForStateChange(ctx, s) {
			return false
		}
	}
}

// podInfo and ctrInfo are the parts of the verbose status infos the
// consistency check needs.
type podInfo struct {
	Pod struct {
		NetNS, IPCNS, UTSNS string
		InfraPID            int
	} `json:"pod"`
}

type ctrInfo struct {
	SandboxID string `json:"sandboxID"`
	Pid       int    `json:"pid"`
	Bundle    string `json:"bundle"`
}

// kernelView is what the kernel says exists for one daemon.
type kernelView struct {
	nsMounts     map[string]bool // nsfs mountpoints under the daemon's dir
	rootfsMounts map[string]bool // container IDs with a mounted rootfs
	shims        map[string]int  // container ID -> pid of a live shim
	cgroupProcs  map[int]string  // pid -> cgroup leaf, below the cgroup parent
	infras       map[int]string  // pid -> pod dir of a live berth-pause
}

func readKernelView(d *testutil.Daemon) (kernelView, error) {
	kv := kernelView{nsMounts: map[string]bool{}, rootfsMounts: map[string]bool{}, shims: map[string]int{}, cgroupProcs: map[int]string{}, infras: map[int]string{}}
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (bool, bool) {
		return !strings.HasPrefix(m.Mountpoint, d.Dir+"/"), false
	})
	if err != nil {
		return kv, err
	}
	ctrDir := filepath.Join(d.State, "containers") + "/"
	for _, m := range mounts {
		if m.FSType == "nsfs" {
			kv.nsMounts[m.Mountpoint] = true
		}
		if rest, ok := strings.CutPrefix(m.Mountpoint, ctrDir); ok && strings.HasSuffix(rest, "/rootfs") {
			kv.rootfsMounts[strings.TrimSuffix(rest, "/rootfs")] = true
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !procAlive(pid) {
			continue
		}
		base := "/proc/" + e.Name()
		comm, _ := os.ReadFile(base + "/comm")
		if strings.TrimSpace(string(comm)) == "berth-shim" {
			cmdline, _ := os.ReadFile(base + "/cmdline")
			args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
			if bytes.Contains(cmdline, []byte(d.Dir)) && len(args) > 1 && args[1] == "serve" {
				for i, a := range args {
					if a == "--id" && i+1 < len(args) {
						kv.shims[args[i+1]] = pid
					}
				}
			}
		}
		if strings.TrimSpace(string(comm)) == "berth-pause" {
			if cwd, err := os.Readlink(base + "/cwd"); err == nil && strings.HasPrefix(cwd, d.Dir+"/") {
				kv.infras[pid] = cwd
			}
		}
		cg, _ := os.ReadFile(base + "/cgroup")
		for _, line := range strings.Split(string(cg), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && strings.HasPrefix(parts[2], d.CgroupParent+"/") {
				kv.cgroupProcs[pid] = filepath.Base(parts[2])
				break
			}
		}
	}
	return kv, nil
}

// procAlive is false for missing and zombie processes.
func procAlive(pid int) bool {
	st, err := api.ReadProcStat(pid)
	return err == nil && !st.Gone()
}

// checkConsistency compares what berthd reports with the kernel, both
// ways: every READY pod has its namespace pins and infra process, every
// RUNNING container its process and shim, every EXITED one a reason; and
// every pin, rootfs mount, shim and container process belongs to an object
// berthd reports. It returns the mismatches. Nothing may change meanwhile.
func checkConsistency(ctx context.Context, d *testutil.Daemon, rc runtimeapi.RuntimeServiceClient) ([]string, error) {
	pods, err := rc.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("ListPodSandbox: %w", err)
	}
	ctrs, err := rc.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return nil, fmt.Errorf("ListContainers: %w", err)
	}
	kv, err := readKernelView(d)
	if err != nil {
		return nil, err
	}
	var bad []string
	pins := map[string]bool{}
	infra := map[int]bool{}
	podState := map[string]runtimeapi.PodSandboxState{}
	for _, p := range pods.Items {
		podState[p.Id] = p.State
		st, err := rc.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.Id, Verbose: true})
		if err != nil {
			return nil, fmt.Errorf("PodSandboxStatus(%s): %w", p.Id, err)
		}
		var info podInfo
		if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
			return nil, fmt.Errorf("pod %s info: %w", p.Id, err)
		}
		for _, pin := range []string{info.Pod.NetNS, info.Pod.IPCNS, info.Pod.UTSNS} {
			if pin == "" {
				continue
			}
			pins[pin] = true
			if p.State == runtimeapi.PodSandboxState_SANDBOX_READY && !kv.nsMounts[pin] {
				bad = append(bad, fmt.Sprintf("pod %s is READY but its namespace pin %s is not mounted", p.Id, pin))
			}
		}
		if info.Pod.InfraPID != 0 {
			infra[info.Pod.InfraPID] = true
			if p.State == runtimeapi.PodSandboxState_SANDBOX_READY && !procAlive(info.Pod.InfraPID) {
				bad = append(bad, fmt.Sprintf("pod %s is READY but its infra process %d is gone", p.Id, info.Pod.InfraPID))
			}
		}
	}
	known := map[string]runtimeapi.ContainerState{}
	ctrPids := map[int]bool{}
	for _, c := range ctrs.Containers {
		known[c.Id] = c.State
		if _, ok := podState[c.PodSandboxId]; !ok {
			bad = append(bad, fmt.Sprintf("container %s belongs to unknown pod %s", c.Id, c.PodSandboxId))
		}
		st, err := rc.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id, Verbose: true})
		if err != nil {
			return nil, fmt.Errorf("ContainerStatus(%s): %w", c.Id, err)
		}
		var info ctrInfo
		if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
			return nil, fmt.Errorf("container %s info: %w", c.Id, err)
		}
		ctrPids[info.Pid] = true
		switch st.Status.State {
		case runtimeapi.ContainerState_CONTAINER_RUNNING:
			if info.Pid == 0 || kv.cgroupProcs[info.Pid] != c.Id {
				bad = append(bad, fmt.Sprintf("container %s is RUNNING but its process %d is not alive in its cgroup", c.Id, info.Pid))
			}
			if kv.shims[c.Id] == 0 {
				bad = append(bad, fmt.Sprintf("container %s is RUNNING but has no shim", c.Id))
			}
			if !kv.rootfsMounts[c.Id] {
				bad = append(bad, fmt.Sprintf("container %s is RUNNING but its rootfs is not mounted", c.Id))
			}
		case runtimeapi.ContainerState_CONTAINER_EXITED:
			if info.Pid != 0 && kv.cgroupProcs[info.Pid] == c.Id {
				bad = append(bad, fmt.Sprintf("container %s is EXITED but its process %d still runs", c.Id, info.Pid))
			}
			if st.Status.Reason == "" || st.Status.FinishedAt == 0 {
				bad = append(bad, fmt.Sprintf("container %s is EXITED without a reason or finish time (%q, %d)", c.Id, st.Status.Reason, st.Status.FinishedAt))
			}
		case runtimeapi.ContainerState_CONTAINER_UNKNOWN:
			bad = append(bad, fmt.Sprintf("container %s is UNKNOWN after recovery", c.Id))
		}
	}
	for m := range kv.nsMounts {
		if strings.HasPrefix(m, d.State+"/") && !pins[m] {
			bad = append(bad, "namespace pin "+m+" belongs to no pod")
		}
	}
	for id := range kv.rootfsMounts {
		if _, ok := known[id]; !ok {
			bad = append(bad, "rootfs of unknown container "+id+" is mounted")
		}
	}
	for id, pid := range kv.shims {
		if _, ok := known[id]; !ok {
			bad = append(bad, fmt.Sprintf("shim %d serves unknown container %s", pid, id))
		}
	}
	for pid, dir := range kv.infras {
		if !infra[pid] {
			bad = append(bad, fmt.Sprintf("infra process %d (in %s) belongs to no pod", pid, dir))
		}
	}
	for pid, leaf := range kv.cgroupProcs {
		if infra[pid] {
			continue
		}
		if st, ok := known[leaf]; !ok || (st != runtimeapi.ContainerState_CONTAINER_RUNNING && st != runtimeapi.ContainerState_CONTAINER_CREATED) {
			if ok && ctrPids[pid] && st == runtimeapi.ContainerState_CONTAINER_EXITED {
				continue // reported above
			}
			bad = append(bad, fmt.Sprintf("process %d in cgroup %s belongs to no live container (state %v)", pid, leaf, st))
		}
	}
	return bad, nil
}
