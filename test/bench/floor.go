package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Floor metric names: the same work done by runc and the CNI plugins alone.
const (
	mFloorAdd    = "floor: CNI ADD"
	mFloorDel    = "floor: CNI DEL"
	mFloorCreate = "floor: runc create"
	mFloorStart  = "floor: runc start"
	mFloorExec   = "floor: runc exec -d true until exited"
	mFloorStop   = "floor: runc kill TERM until exited"
	mFloorDelete = "floor: runc delete"
	floorName    = "floor"
)

// floor runs n iterations of what a pod start and teardown cost without any
// CRI runtime: CNI ADD into a fresh netns, runc create+start of a busybox
// bundle in it, runc exec true, runc delete -f, CNI DEL. It also records the
// sums as the "floor" column of the matching scenario rows.
type floor struct {
	e      *env
	dir    string
	root   string // runc --root
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	bundle string

	// iters and failures count the pod iterations done so far; execs the
	// execs, in execID's container once it runs; execFailed stops them.
	iters, failures, execs int
	execID                 string
	execFailed             bool
}

func newFloor(e *env) (*floor, error) {
	f := &floor{e: e, dir: filepath.Join(e.Dir, "floor")}
	f.root = filepath.Join(f.dir, "runc")
	f.bundle = filepath.Join(f.dir, "bundle")
	if err := f.makeRootfs(); err != nil {
		return nil, err
	}
	if out, err := exec.Command(e.Runc, "spec", "--bundle", f.bundle).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %w: %s", err, out)
	}
	list, err := libcni.ConfListFromFile(filepath.Join(e.ConfDir, "10-bench.conflist"))
	if err != nil {
		return nil, fmt.Errorf("load cni config: %w", err)
	}
	f.list = list
	f.cni = libcni.NewCNIConfigWithCacheDir(e.CNIBins, filepath.Join(f.dir, "cni-cache"), nil)
	return f, nil
}

func (f *floor) makeRootfs() error {
	rootfs := filepath.Join(f.bundle, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return fmt.Errorf("make rootfs: %w", err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		return fmt.Errorf("write busybox: %w", err)
	}
	for _, a := range []string{"sh", "sleep", "true"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			return fmt.Errorf("link %s: %w", a, err)
		}
	}
	return nil
}

// writeSpec points the bundle's config at netns and a per-container cgroup.
func (f *floor) writeSpec(id, netns string) error {
	p := filepath.Join(f.bundle, "config.json")
	data, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("decode spec: %w", err)
	}
	s.Process.Terminal = false
	s.Process.Args = workload
	s.Hostname = id
	s.Linux.CgroupsPath = f.e.Cgroup + "/floor/" + id
	for i, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			s.Linux.Namespaces[i].Path = netns
		}
	}
	out, err := json.Marshal(&s)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	return os.WriteFile(p, out, 0o644)
}

func (f *floor) runc(args ...string) error {
	cmd := exec.Command(f.e.Runc, append([]string{"--root", f.root}, args...)...)
	// No pipes: the container's init inherits runc's stdio, and a pipe
	// would keep Wait blocked for the container's lifetime.
	var errOut strings.Builder
	if args[0] != "create" && args[0] != "run" {
		cmd.Stderr = &errOut
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runc %s: %w: %s", args[0], err, errOut.String())
	}
	return nil
}

// next runs one pod iteration (CNI ADD, runc create, start, kill, delete,
// CNI DEL). The bench calls it after every round of the pod and container
// scenarios, so the floor sees the same drift as the runtimes it is
// subtracted from; a failed iteration is skipped, and after three failures
// the floor stops.
func (f *floor) next(ctx context.Context, b *bench) {
	if f.failures >= 3 || ctx.Err() != nil {
		return
	}
	i := f.iters
	f.iters++
	// A failed iteration is skipped, not fatal: on a loaded host a
	// workload has (rarely) been seen to outlive its TERM by 10 s.
	if err := f.once(ctx, b, i); err != nil {
		f.failures++
		b.log.Warn("floor iteration failed", "iteration", i, "err", err)
		b.res.fail(mFloorCreate, "ms", "", floorName, fmt.Errorf("%d failed iteration(s), last %d: %w", f.failures, i, err))
	}
}

// execNext times one detached exec of true, as shims run them: runc
// returns once the process runs, and its exit is waited for here. The first
// call starts the container, a container of its own: the exec'd processes
// are reparented to the workload's shell, which then no longer reacts to
// TERM at once. An error stops the exec floor.
func (f *floor) execNext(ctx context.Context, b *bench) {
	if f.execFailed || ctx.Err() != nil {
		return
	}
	if err := f.execOnce(ctx, b); err != nil {
		b.res.fail(mFloorExec, "ms", "", floorName, err)
		f.stopExec()
		f.execFailed = true
	}
}

func (f *floor) execOnce(ctx context.Context, b *bench) error {
	if f.execID == "" {
		id := fmt.Sprintf("bbf-%s-exec", f.e.ID)
		if err := f.writeSpec(id, ""); err != nil {
			return err
		}
		if err := f.runc("run", "--detach", "--bundle", f.bundle, id); err != nil {
			return err
		}
		f.execID = id
	}
	pidFile := filepath.Join(f.dir, "exec.pid")
	start := time.Now()
	if err := f.runc("exec", "--detach", "--pid-file", pidFile, f.execID, "true"); err != nil {
		return err
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("exec pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("exec pid file: %w", err)
	}
	if err := waitExited(ctx, pid); err != nil {
		return err
	}
	d := time.Since(start)
	f.execs++
	b.res.add(mFloorExec, "ms", "", floorName, ms(d))
	b.res.add(mExec, "ms", "<= 0.5", floorName, ms(d))
	return nil
}

// stopExec removes the exec container, if it runs.
func (f *floor) stopExec() {
	if f.execID != "" {
		_ = f.runc("delete", "-f", f.execID)
		f.execID = ""
	}
}

// topUp does what the scenarios left of n pod iterations and n execs (all
// of it when the floor runs alone), then removes the exec container.
func (f *floor) topUp(ctx context.Context, b *bench, n int) {
	for f.iters < n && f.failures < 3 && ctx.Err() == nil {
		f.next(ctx, b)
	}
	for f.execs < n && !f.execFailed && ctx.Err() == nil {
		f.execNext(ctx, b)
	}
	f.stopExec()
}

func (f *floor) once(ctx context.Context, b *bench, i int) (err error) {
	id := fmt.Sprintf("bbf-%s-%d", f.e.ID, i)
	if out, err := exec.Command("ip", "netns", "add", id).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %w: %s", err, out)
	}
	netns := "/var/run/netns/" + id
	defer func() { _ = exec.Command("ip", "netns", "del", id).Run() }()
	if err := f.writeSpec(id, netns); err != nil {
		return err
	}
	rc := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: "eth0"}
	timed := func(name string, fn func() error) (time.Duration, error) {
		start := time.Now()
		if err := fn(); err != nil {
			return 0, err
		}
		d := time.Since(start)
		b.res.add(name, "ms", "", floorName, ms(d))
		return d, nil
	}
	add, err := timed(mFloorAdd, func() error { _, err := f.cni.AddNetworkList(ctx, f.list, rc); return err })
	if err != nil {
		return fmt.Errorf("cni add: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.cni.DelNetworkList(context.WithoutCancel(ctx), f.list, rc)
		}
	}()
	create, err := timed(mFloorCreate, func() error { return f.runc("create", "--bundle", f.bundle, id) })
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.runc("delete", "-f", id)
		}
	}()
	start, err := timed(mFloorStart, func() error { return f.runc("start", id) })
	if err != nil {
		return err
	}
	pid, err := f.initPid(id)
	if err != nil {
		return err
	}
	// Untimed, as in the CRI scenario: the workload's TERM handler must be
	// installed before it is asked to stop.
	if err := waitSigCaught(ctx, pid, 15); err != nil {
		return err
	}
	stop, err := timed(mFloorStop, func() error {
		if err := f.runc("kill", id, "TERM"); err != nil {
			return err
		}
		return waitExited(ctx, pid)
	})
	if err != nil {
		return err
	}
	del, err := timed(mFloorDelete, func() error { return f.runc("delete", id) })
	if err != nil {
		return err
	}
	cniDel, err := timed(mFloorDel, func() error { return f.cni.DelNetworkList(ctx, f.list, rc) })
	if err != nil {
		return fmt.Errorf("cni del: %w", err)
	}
	b.res.add(mSandbox, "ms", "<= 0.5", floorName, ms(add+cniDel))
	b.res.add(mContainer, "ms", "<= 0.5", floorName, ms(create+start+stop+del))
	b.res.add(mColdStart, "ms", "<= 0.5", floorName, ms(add+create+start))
	return nil
}

// initPid reads the container's init pid from runc state.
func (f *floor) initPid(id string) (int, error) {
	out, err := exec.Command(f.e.Runc, "--root", f.root, "state", id).Output()
	if err != nil {
		return 0, fmt.Errorf("runc state %s: %w", id, err)
	}
	var st struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal(out, &st); err != nil || st.Pid <= 0 {
		return 0, fmt.Errorf("runc state %s: no pid (%v)", id, err)
	}
	return st.Pid, nil
}

// waitSigCaught waits until pid has a handler for sig (SigCgt in status).
func waitSigCaught(ctx context.Context, pid, sig int) error {
	deadline := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return fmt.Errorf("workload %d: %w", pid, err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
				mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err == nil && mask&(1<<(sig-1)) != 0 {
					return nil
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("workload %d installed no handler for signal %d", pid, sig)
}

// waitExited waits until pid exits, through a pidfd: the processes are not
// our children, and polling /proc would be fooled by a reused pid on a
// busy host (pid_max is 32768 here).
func waitExited(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll pidfd of %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
	}
	return fmt.Errorf("process %d did not exit", pid)
}

// cleanup removes what a failed floor iteration left.
func (f *floor) cleanup() {
	runcDeleteAll(f.e.Runc, f.root, f.e.log)
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 0 && strings.HasPrefix(fields[0], "bbf-"+f.e.ID+"-") {
			_ = exec.Command("ip", "netns", "del", fields[0]).Run()
		}
	}
}
