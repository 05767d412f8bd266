package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// runtimeDaemon is one CRI runtime the bench starts, measures and removes.
type runtimeDaemon interface {
	// Name is the column name in the report ("berth", "containerd").
	Name() string
	// Start launches the daemon on its own dirs and socket; it returns the
	// CRI endpoint once the daemon listens.
	Start(ctx context.Context) (endpoint string, err error)
	// Pid is the daemon's process id (0 when not running).
	Pid() int
	// Procs are the runtime's own processes: daemon, shims, infra.
	Procs() []int
	// Kill SIGKILLs the daemon alone (its shims and pods live on) and
	// waits for it to exit; Start brings it back on the same state.
	Kill()
	// MetaDB is the daemon's metadata file (bbolt).
	MetaDB() string
	// Stop terminates the daemon and force-removes everything it left:
	// processes, runc containers, mounts, namespace pins, files.
	Stop()
}

// target is a started runtime with kubelet's CRI clients.
type target struct {
	name     string
	daemon   runtimeDaemon // nil for an external endpoint
	endpoint string
	rt       internalapi.RuntimeService
	img      internalapi.ImageManagerService
	version  string
	// cgroup is the cgroupfs parent of this target's pods.
	cgroup string
	// logDir holds the pods' log directories.
	logDir string
	// handler is the RuntimeClass handler pods ask for ("" = default).
	handler string
}

// connect builds kubelet's CRI clients for endpoint and checks Version.
// Building validates the connection with a Version call, which a daemon
// that listens before its CRI service is initialised (containerd, also
// after a restart) fails: it is retried for up to versionWait.
func connect(ctx context.Context, t *target, timeout time.Duration) error {
	deadline := time.Now().Add(versionWait)
	for {
		err := dial(ctx, t, timeout)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dial(ctx context.Context, t *target, timeout time.Duration) error {
	rt, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint(t.endpoint).WithConnectionTimeout(timeout).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		return fmt.Errorf("cri runtime client for %s: %w", t.endpoint, err)
	}
	img, err := remote.NewRemoteImageServiceBuilder().WithEndpoint(t.endpoint).WithConnectionTimeout(timeout).WithTracerProvider(nil).Build(ctx)
	if err != nil {
		_ = rt.Close(ctx)
		return fmt.Errorf("cri image client for %s: %w", t.endpoint, err)
	}
	t.rt, t.img = rt, img
	v, err := waitVersion(ctx, rt, versionWait)
	if err != nil {
		return fmt.Errorf("version of %s: %w", t.endpoint, err)
	}
	t.version = v.GetRuntimeName() + " " + v.GetRuntimeVersion()
	return nil
}

// listenWait bounds how long a started daemon may take to listen. A
// containerd 2.4 restarted with 110 pods on a machine at load 170 took more
// than 30 s (it restores its state before it serves); waitSocket returns as
// soon as the socket answers or the daemon exits, so a generous bound costs
// nothing when all is well.
const listenWait = 5 * time.Minute

// versionWait bounds how long a freshly started daemon may take to answer
// Version.
const versionWait = time.Minute

// waitVersion retries Version until it answers: containerd listens before
// its CRI plugin is initialised and answers "server is not initialized yet"
// meanwhile, more often so on a loaded machine.
func waitVersion(ctx context.Context, rt internalapi.RuntimeService, timeout time.Duration) (*runtimeapi.VersionResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		callCtx, callCancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := rt.Version(callCtx, "v1")
		callCancel()
		if err == nil {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no answer within %s: %w", timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// removeAllPods stops and removes every pod of the target (best effort),
// so a failed or interrupted run leaves the daemon empty before it stops.
func (t *target) removeAllPods(ctx context.Context, log *slog.Logger) {
	if t.rt == nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	pods, err := t.rt.ListPodSandbox(lctx, nil)
	cancel()
	if err != nil {
		log.Warn("list pods", "target", t.name, "err", err)
		return
	}
	// Pods left running load the machine for every runtime measured after
	// this one: a few at a time, and time in proportion to their number
	// (a failed 250-pod run at load 300 needed more than 2 minutes).
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute+time.Duration(len(pods))*2*time.Second)
	defer cancel()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, p := range pods {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := t.rt.StopPodSandbox(ctx, p.Id); err != nil {
				log.Warn("stop pod", "target", t.name, "sandbox_id", p.Id, "err", err)
			}
			if err := t.rt.RemovePodSandbox(ctx, p.Id); err != nil {
				log.Warn("remove pod", "target", t.name, "sandbox_id", p.Id, "err", err)
			}
		})
	}
	wg.Wait()
}

func (t *target) close() {
	ctx := context.Background()
	if t.rt != nil {
		_ = t.rt.Close(ctx)
	}
	if t.img != nil {
		_ = t.img.Close(ctx)
	}
}

// process is a daemon child process with its log file.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// startProcess starts bin with the bench's environment, env overriding it.
func startProcess(bin string, args []string, logPath string, env ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	// The daemon must not outlive a bench that crashed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec %s: %w", bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) pid() int {
	if p == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *process) kill() {
	if p == nil || p.pid() == 0 {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if p == nil || p.pid() == 0 {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitSocket waits until a unix socket accepts connections or the process
// exits.
func waitSocket(ctx context.Context, p *process, sock string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("daemon exited before listening: %v", p.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no listener on %s after %s: %w", sock, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// podConfig is a kubelet-like pod: pod network and IPC, a PID namespace per
// container, its own cgroup parent and log directory.
func (t *target) podConfig(name string) (*runtimeapi.PodSandboxConfig, error) {
	uid := randHex(8)
	logDir := filepath.Join(t.logDir, name+"_"+uid)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("make pod log dir: %w", err)
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: uid, Namespace: "bench"},
		Hostname:     name,
		LogDirectory: logDir,
		Labels:       map[string]string{"berth-bench": "1"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: t.cgroup + "/pod" + uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: nsOptions(),
			},
		},
	}, nil
}

func nsOptions() *runtimeapi.NamespaceOption {
	return &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_POD,
		Pid:     runtimeapi.NamespaceMode_CONTAINER,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
}

// workload stops at once on SIGTERM (a PID 1 without a handler would ignore
// it and every Stop would wait for its timeout); it logs "ready" once its
// handler is installed, so a stop is never sent before.
var workload = sleepLoop(1)

// idleWorkload is workload without its fork every second: the full-node
// scenario's default. 418 containers forking a sleep each second kept this
// machine's 2 cores at 100% (no idle tick, 240-320 tasks runnable), so
// every latency and restart it timed was mostly the run queue's; a node's
// pods mostly wait. TERM still ends it at once: ash's wait returns for a
// trapped signal, and the orphaned sleep dies with the container's PID
// namespace.
var idleWorkload = sleepLoop(3600)

// sleepLoop is a shell that forks a sleep of secs seconds and waits for it,
// forever, under workload's TERM trap.
func sleepLoop(secs int) []string {
	return []string{"sh", "-c", fmt.Sprintf("trap 'exit 0' TERM; echo ready; while :; do sleep %d & wait; done", secs)}
}

// nodeWorkloadNote says in the report what the full-node pods ran.
func nodeWorkloadNote(busy bool) string {
	if busy {
		return "fork a sleep every second (-node-busy)"
	}
	return "idle (sleep 3600)"
}

// containerConfig runs the workload, logging to logName in the pod's log dir.
func containerConfig(image, logName string, attempt int) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "work", Attempt: uint32(attempt)},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  workload,
		LogPath:  logName,
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions()},
		},
	}
}

// waitReady waits until the workload logged "ready" to path.
func waitReady(ctx context.Context, path string) error {
	deadline := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil {
		if data, err := os.ReadFile(path); err == nil && strings.Contains(string(data), "ready") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("workload did not log ready to %s in 10s", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ctx.Err()
}

// waitRunning polls ContainerStatus until the container runs, as kubelet's
// PLEG would see it.
func (t *target) waitRunning(ctx context.Context, id string) error {
	for i := 0; ; i++ {
		st, err := t.rt.ContainerStatus(ctx, id, false)
		if err != nil {
			return fmt.Errorf("status of container %q: %w", id, err)
		}
		switch st.GetStatus().GetState() {
		case runtimeapi.ContainerState_CONTAINER_RUNNING:
			return nil
		case runtimeapi.ContainerState_CONTAINER_EXITED:
			return fmt.Errorf("container %q exited: %s", id, st.GetStatus().GetMessage())
		}
		if i > 2000 {
			return errors.New("container not running after 10s")
		}
		if i > 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
}
