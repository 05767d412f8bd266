package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/apparmor"
	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/events"
	"github.com/berth-runtime/berth/cri/specgen"
	"github.com/berth-runtime/berth/cri/stats"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/store/storetest"
	"github.com/berth-runtime/berth/cri/task"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/netplugin"
	"github.com/berth-runtime/berth/sandbox"
)

// The fakes below stand in for every collaborator of the server, so that
// handlers run in unit tests without root, runc, CNI or a daemon. Each
// records the calls it got; an error field set makes that call fail.

// calls is a goroutine-safe call log.
type calls struct {
	mu  sync.Mutex
	log []string
}

func (c *calls) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, fmt.Sprintf(format, args...))
}

func (c *calls) has(call string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.log, call)
}

func (c *calls) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.log)
}

// anyPrefix reports whether a call in log starts with prefix.
func anyPrefix(log []string, prefix string) bool {
	return slices.ContainsFunc(log, func(c string) bool { return strings.HasPrefix(c, prefix) })
}

type fakeSandboxes struct {
	calls
	createErr, stopErr, removeErr error
}

var _ Sandboxes = (*fakeSandboxes)(nil)

func (f *fakeSandboxes) Create(ctx context.Context, s sandbox.Spec) (sandbox.Pod, error) {
	f.add("create %s", s.ID)
	if f.createErr != nil {
		return sandbox.Pod{}, f.createErr
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return sandbox.Pod{}, err
	}
	p := sandbox.Pod{
		ID: s.ID, Dir: s.Dir, NoInfra: !s.SharePID,
		HostnamePath: filepath.Join(s.Dir, "hostname"), HostsPath: filepath.Join(s.Dir, "hosts"),
		ResolvPath: filepath.Join(s.Dir, "resolv.conf"), ShmPath: filepath.Join(s.Dir, "shm"),
		UTSNS: filepath.Join(s.Dir, "uts"),
	}
	if !s.HostNetwork {
		p.NetNS = filepath.Join(s.Dir, "net")
	}
	if !s.HostIPC {
		p.IPCNS = filepath.Join(s.Dir, "ipc")
	}
	return p, nil
}

func (f *fakeSandboxes) Stop(ctx context.Context, p sandbox.Pod) error {
	f.add("stop %s", p.ID)
	return f.stopErr
}

func (f *fakeSandboxes) Remove(ctx context.Context, p sandbox.Pod) error {
	f.add("remove %s", p.ID)
	return f.removeErr
}

func (f *fakeSandboxes) InfraAlive(p sandbox.Pod) bool  { return true }
func (f *fakeSandboxes) PidNSPath(p sandbox.Pod) string { return "/proc/1/ns/pid" }

type fakeImages struct {
	calls
	mu                     sync.Mutex
	images                 map[string]imagesvc.Image // by reference and ID
	prepareErr, removeErr  error
	mountErr, volumeDirErr error
}

var (
	_ Images       = (*fakeImages)(nil)
	_ VolumeImages = (*fakeImages)(nil)
)

// addImage makes ref a pulled image.
func (f *fakeImages) addImage(ref string) imagesvc.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	img := imagesvc.Image{ID: "sha256:" + fmt.Sprintf("%064x", len(f.images)+1), RepoTags: []string{ref}}
	img.Config.Config.Cmd = []string{"/bin/sh"}
	if f.images == nil {
		f.images = map[string]imagesvc.Image{}
	}
	f.images[ref], f.images[img.ID] = img, img
	return img
}

func (f *fakeImages) Pull(ctx context.Context, ref string, auth *imagesvc.Auth) (imagesvc.Image, error) {
	f.add("pull %s", ref)
	return f.addImage(ref), nil
}

func (f *fakeImages) Get(ctx context.Context, ref string) (imagesvc.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.images[ref]
	if !ok {
		return imagesvc.Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return img, nil
}

func (f *fakeImages) RepoTags(ctx context.Context, id string) ([]string, error) {
	img, err := f.Get(ctx, id)
	return img.RepoTags, err
}

func (f *fakeImages) List(ctx context.Context) ([]imagesvc.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []imagesvc.Image
	for k, img := range f.images {
		if k == img.ID {
			out = append(out, img)
		}
	}
	return out, nil
}

func (f *fakeImages) Remove(ctx context.Context, ref string) error {
	f.add("remove %s", ref)
	return nil
}

func (f *fakeImages) PrepareRootfs(ctx context.Context, id, imageID, target string) error {
	f.add("prepare %s", id)
	return f.prepareErr
}

func (f *fakeImages) RemoveRootfs(ctx context.Context, id, target string) error {
	f.add("remove rootfs %s", id)
	return f.removeErr
}

func (f *fakeImages) FsInfo(ctx context.Context) (imagesvc.FsUsage, error) {
	return imagesvc.FsUsage{Mountpoint: "/"}, nil
}

func (f *fakeImages) MountImage(ctx context.Context, key, ref, target string) (string, error) {
	f.add("mount image %s", key)
	return target, f.mountErr
}

func (f *fakeImages) VolumeDir(id, containerPath string) (string, error) {
	f.add("volume dir %s %s", id, containerPath)
	return "/nonexistent/volume", f.volumeDirErr
}

type fakeNetwork struct {
	calls
	statusErr, setupErr, teardownErr error
	// setupHook, when set before the calls, runs inside every Setup;
	// gcHook inside every GC.
	setupHook, gcHook func()
}

var _ Network = (*fakeNetwork)(nil)

func (f *fakeNetwork) Status() error { return f.statusErr }

func (f *fakeNetwork) Setup(ctx context.Context, p netplugin.PodNetwork) (netplugin.Result, error) {
	f.add("setup %s", p.ID)
	if f.setupHook != nil {
		f.setupHook()
	}
	if f.setupErr != nil {
		return netplugin.Result{}, f.setupErr
	}
	if err := ctx.Err(); err != nil {
		return netplugin.Result{}, err // as libcni's exec of a plugin
	}
	return netplugin.Result{IPs: []net.IP{net.ParseIP("10.88.0.2")}}, nil
}

func (f *fakeNetwork) Teardown(ctx context.Context, p netplugin.PodNetwork) error {
	f.add("teardown %s", p.ID)
	return f.teardownErr
}

func (f *fakeNetwork) GC(ctx context.Context, keep []string) error {
	keep = slices.Clone(keep)
	slices.Sort(keep)
	f.add("gc keep %s", strings.Join(keep, ","))
	if f.gcHook != nil {
		f.gcHook()
	}
	f.add("gc done")
	return nil
}

// fakeTasks is a task manager whose containers are fakeTasks: a process
// exits when it gets SIGKILL or a signal in exitOn, and its exit is
// recorded as the real manager records it.
type fakeTasks struct {
	calls
	store *store.Store

	mu       sync.Mutex
	tasks    map[string]*fakeTask // guarded by mu
	spawnErr error                // fails Create, as a shim that did not start
	// createErr fails the runtime's create; releaseErr fails Release.
	createErr, releaseErr error
	// newTask configures each task when it is created.
	newTask func(*fakeTask)
}

var _ Tasks = (*fakeTasks)(nil)

func (f *fakeTasks) Spawn(ctx context.Context, rec store.Container) task.Pending {
	f.add("spawn %s", rec.ID)
	return &fakePending{f: f, rec: rec}
}

func (f *fakeTasks) Get(id string) (task.Task, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tasks[id]
	if !ok {
		return nil, false
	}
	return t, true
}

func (f *fakeTasks) get(id string) *fakeTask {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tasks[id]
}

func (f *fakeTasks) Recover(ctx context.Context, c store.Container) error {
	f.add("recover %s", c.ID)
	return nil
}

func (f *fakeTasks) Reattach() {}

func (f *fakeTasks) Release(ctx context.Context, c store.Container) error {
	f.add("release %s", c.ID)
	return f.releaseErr
}

func (f *fakeTasks) Cleanup(ctx context.Context, c store.Container) { f.add("cleanup %s", c.ID) }

// exit ends t's process with status as the manager does: the exit is
// recorded, the task goes, Done closes.
func (f *fakeTasks) exit(t *fakeTask, status int32) {
	t.once.Do(func() {
		_, _ = f.store.UpdateContainerStatus(t.id, func(st store.ContainerStatus) (store.ContainerStatus, error) {
			st.State = store.ContainerExited
			st.ExitCode = status
			st.FinishedAt = time.Now().UnixNano()
			st.Pid = 0
			if st.Reason == "" {
				st.Reason = "Error"
			}
			return st, nil
		})
		f.mu.Lock()
		delete(f.tasks, t.id)
		f.mu.Unlock()
		close(t.done)
	})
}

type fakePending struct {
	f       *fakeTasks
	rec     store.Container
	created *fakeTask
}

func (p *fakePending) Create(ctx context.Context, o task.CreateOpts) (int, error) {
	p.f.add("create %s", p.rec.ID)
	if err := p.f.spawnErr; err != nil {
		return 0, err
	}
	if err := p.f.createErr; err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err // as the ttrpc call to the shim
	}
	p.created = &fakeTask{f: p.f, id: p.rec.ID, done: make(chan struct{}), opts: o}
	if p.f.newTask != nil {
		p.f.newTask(p.created)
	}
	return 4242, nil
}

func (p *fakePending) Shim() task.ShimProcess { return task.ShimProcess{Pid: 4343, Start: 77} }

func (p *fakePending) Discard(ctx context.Context) error {
	p.f.add("discard %s", p.rec.ID)
	return nil
}

func (p *fakePending) Destroy(ctx context.Context) error {
	if p.created != nil {
		p.f.add("destroy %s", p.rec.ID)
	}
	return nil
}

func (p *fakePending) Watch() {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	if p.f.tasks == nil {
		p.f.tasks = map[string]*fakeTask{}
	}
	p.f.tasks[p.rec.ID] = p.created
}

type fakeTask struct {
	calls
	f    *fakeTasks
	id   string
	opts task.CreateOpts
	done chan struct{}
	once sync.Once

	// exitOn are the signals besides SIGKILL that end the process.
	exitOn []syscall.Signal
	// errors of the calls of the same name
	startErr, killErr, pauseErr, updateErr, execErr, reopenErr error
	execExit                                                   int32
	execOut                                                    string
	// updated is what the last Update applied.
	updated *specs.LinuxResources
}

var _ task.Task = (*fakeTask)(nil)

func (t *fakeTask) Start(ctx context.Context) (int, error) {
	t.add("start")
	return 4242, t.startErr
}

func (t *fakeTask) Restore(ctx context.Context, timeout time.Duration) (int, error) {
	t.add("restore")
	return 4242, t.startErr
}

func (t *fakeTask) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	t.add("kill %d", sig)
	if t.killErr != nil {
		return t.killErr
	}
	if sig == syscall.SIGKILL || slices.Contains(t.exitOn, sig) {
		go t.f.exit(t, 128+int32(sig))
	}
	return nil
}

func (t *fakeTask) Pause(ctx context.Context) error {
	t.add("pause")
	return t.pauseErr
}

func (t *fakeTask) Resume(ctx context.Context) error {
	t.add("resume")
	return nil
}

func (t *fakeTask) Checkpoint(ctx context.Context, o task.CheckpointOpts) error {
	t.add("checkpoint")
	return nil
}

func (t *fakeTask) Update(ctx context.Context, res *specs.LinuxResources) error {
	t.add("update")
	t.updated = res
	return t.updateErr
}

func (t *fakeTask) ReopenLog(ctx context.Context) error {
	t.add("reopen log")
	return t.reopenErr
}

func (t *fakeTask) Exec(ctx context.Context, o task.ExecOpts) (task.Process, error) {
	t.add("exec %v", o.Args)
	if t.execErr != nil {
		return nil, t.execErr
	}
	if o.Stdout != nil {
		_, _ = o.Stdout.Write([]byte(t.execOut))
	}
	return &fakeProcess{exit: t.execExit}, nil
}

func (t *fakeTask) Attach(ctx context.Context, o task.AttachOpts) error {
	t.add("attach")
	return nil
}

func (t *fakeTask) ResizePty(ctx context.Context, w, h uint32) error { return nil }
func (t *fakeTask) Done() <-chan struct{}                            { return t.done }

type fakeProcess struct {
	exit   int32
	closed bool
}

func (p *fakeProcess) ID() string { return "exec1" }
func (p *fakeProcess) Wait(ctx context.Context) (task.Exit, error) {
	return task.Exit{Status: p.exit, ExitedAt: time.Now()}, nil
}
func (p *fakeProcess) Resize(ctx context.Context, w, h uint32) error { return nil }
func (p *fakeProcess) Close(ctx context.Context) error {
	p.closed = true
	return nil
}

type fakeStreams struct{}

func (fakeStreams) GetExec(r *runtime.ExecRequest) (*runtime.ExecResponse, error) {
	return &runtime.ExecResponse{Url: "http://127.0.0.1/exec/x"}, nil
}

func (fakeStreams) GetAttach(r *runtime.AttachRequest) (*runtime.AttachResponse, error) {
	return &runtime.AttachResponse{Url: "http://127.0.0.1/attach/x"}, nil
}

func (fakeStreams) GetPortForward(r *runtime.PortForwardRequest) (*runtime.PortForwardResponse, error) {
	return &runtime.PortForwardResponse{Url: "http://127.0.0.1/portforward/x"}, nil
}

// testServer is a Server over fakes, with the fakes at hand.
type testServer struct {
	*Server
	sandboxes *fakeSandboxes
	images    *fakeImages
	network   *fakeNetwork
	tasks     *fakeTasks
	plugins   *fakeNRI
}

// newTestServer returns a server whose collaborators are all fakes and
// whose state lives in a test dir (containerd's newTestCRIService).
func newTestServer(t *testing.T) *testServer {
	t.Helper()
	dir := t.TempDir()
	st := storetest.Open(t)
	cfg := config.Default()
	cfg.Root, cfg.State = filepath.Join(dir, "root"), filepath.Join(dir, "state")
	cfg.Runtime.RestrictOOMScoreAdj = new(bool)
	ts := &testServer{
		sandboxes: &fakeSandboxes{},
		images:    &fakeImages{},
		network:   &fakeNetwork{},
		tasks:     &fakeTasks{store: st},
		plugins:   &fakeNRI{},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cg := cgroups.New(filepath.Join(dir, "cgroup"))
	ts.Server = &Server{
		cfg:       cfg,
		store:     st,
		sandboxes: ts.sandboxes,
		images:    ts.images,
		network:   ts.network,
		tasks:     ts.tasks,
		log:       log,
		streams:   fakeStreams{},
		allCaps:   []string{"CAP_CHOWN", "CAP_KILL"},
		features:  map[string]task.Features{},
		cdi:       specgen.NewCDIRegistry(nil),
		apparmor:  &apparmor.Host{},
		cg:        cg,
		stats:     stats.New(stats.Options{Cgroups: cg, Root: cfg.Root, Logger: log}),
		events:    events.New[*runtime.ContainerEventResponse](0),
		nri:       ts.plugins,
	}
	ts.criu = noCRIU{}
	if err := ts.makeStateDirs(); err != nil {
		t.Fatal(err)
	}
	return ts
}

// noCRIU is a host without a working CRIU.
type noCRIU struct{}

func (noCRIU) Get(context.Context) (string, error) {
	return "", fmt.Errorf("no CRIU in unit tests: %w", errdefs.ErrFailedPrecondition)
}
func (n noCRIU) Ready() (bool, error) { _, err := n.Get(context.Background()); return false, err }
func (noCRIU) Stop()                  {}
