package nri

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/store"
)

// fakeRuntime is the server side of the host in these tests.
type fakeRuntime struct {
	mu      sync.Mutex
	pods    []store.Sandbox
	ctrs    []store.Container
	updated map[string]*specs.LinuxResources
	states  int // State calls
}

func (f *fakeRuntime) State(context.Context) ([]store.Sandbox, []store.Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states++
	return slices.Clone(f.pods), slices.Clone(f.ctrs)
}

func (f *fakeRuntime) UpdateContainerResources(_ context.Context, id string, res *specs.LinuxResources) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.updated == nil {
		f.updated = map[string]*specs.LinuxResources{}
	}
	f.updated[id] = res
	return nil
}

// testPlugin is an external plugin answering CreateContainer with adjust
// and failing RunPodSandbox with runErr; synced records what it was
// synchronised with.
type testPlugin struct {
	adjust func(*api.Container) *api.ContainerAdjustment
	update []*api.ContainerUpdate
	runErr error
	block  chan struct{}

	mu     sync.Mutex
	synced []string
}

func (p *testPlugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pod := range pods {
		p.synced = append(p.synced, "pod:"+pod.GetId())
	}
	for _, c := range ctrs {
		p.synced = append(p.synced, "ctr:"+c.GetId()+":"+c.GetName())
	}
	return nil, nil
}

func (p *testPlugin) RunPodSandbox(context.Context, *api.PodSandbox) error {
	if p.block != nil {
		<-p.block
	}
	return p.runErr
}

func (p *testPlugin) CreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	if p.adjust == nil {
		return nil, p.update, nil
	}
	return p.adjust(c), p.update, nil
}

func startHost(t *testing.T, rt Runtime, timeout string) (*Host, string) {
	t.Helper()
	return startHostIn(t, t.TempDir(), rt, timeout)
}

func startHostIn(t *testing.T, dir string, rt Runtime, timeout string) (*Host, string) {
	t.Helper()
	cfg := config.Default().NRI
	cfg.SocketPath = filepath.Join(dir, "nri.sock")
	cfg.PluginPath = filepath.Join(dir, "plugins")
	cfg.PluginConfigPath = filepath.Join(dir, "conf.d")
	cfg.PluginRequestTimeout = timeout
	h, err := New(Options{Config: cfg, Name: "berth", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(rt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h, cfg.SocketPath
}

// connect starts an external plugin and waits until the host has
// synchronised it.
func connect(t *testing.T, h *Host, socket, name, idx string, p any) stub.Stub {
	t.Helper()
	before := h.metrics.Plugins()
	s, err := stub.New(p, stub.WithPluginName(name), stub.WithPluginIdx(idx), stub.WithSocketPath(socket))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("start plugin %s: %v", name, err)
	}
	t.Cleanup(s.Stop)
	waitPlugins(t, h, before+1)
	return s
}

// waitPlugins waits until the host counts n plugins.
func waitPlugins(t *testing.T, h *Host, n int) {
	t.Helper()
	for range 200 {
		if h.metrics.Plugins() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("plugins never reached %d", n)
}

func testSpec() *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}},
		Root:    &specs.Root{Path: "rootfs"},
		Linux:   &specs.Linux{Resources: &specs.LinuxResources{}},
	}
}

func TestCreateContainerAppliesAdjustment(t *testing.T) {
	rt := &fakeRuntime{}
	h, sock := startHost(t, rt, "2s")
	connect(t, h, sock, "adjuster", "10", &testPlugin{
		adjust: func(c *api.Container) *api.ContainerAdjustment {
			a := &api.ContainerAdjustment{}
			a.AddEnv("FROM_NRI", c.GetName())
			a.AddRlimit("RLIMIT_NOFILE", 1024, 512)
			a.AddMount(&api.Mount{Source: "/tmp", Destination: "/nri", Type: "bind", Options: []string{"rbind", "ro"}})
			a.AddAnnotation("nri.test/adjusted", "yes")
			a.AddDevice(&api.LinuxDevice{Path: "/dev/nri-null", Type: "c", Major: 1, Minor: 3})
			a.SetLinuxMemoryLimit(64 << 20)
			return a
		},
		update: []*api.ContainerUpdate{{ContainerId: "other", Linux: &api.LinuxContainerUpdate{Resources: &api.LinuxResources{Cpu: &api.LinuxCPU{Shares: api.UInt64(512)}}}}},
	})
	spec := testSpec()
	c := store.Container{ContainerMeta: store.ContainerMeta{ID: "c1", SandboxID: "p1", Metadata: store.ContainerMetadata{Name: "app"}}}
	if err := h.CreateContainer(context.Background(), pod("p1"), c, spec); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(spec.Process.Env, "FROM_NRI=app") {
		t.Errorf("env %v lacks FROM_NRI=app (the plugin sees the container's name)", spec.Process.Env)
	}
	if len(spec.Process.Rlimits) != 1 || spec.Process.Rlimits[0].Hard != 1024 {
		t.Errorf("rlimits = %+v", spec.Process.Rlimits)
	}
	if !slices.ContainsFunc(spec.Mounts, func(m specs.Mount) bool { return m.Destination == "/nri" }) {
		t.Errorf("mounts %+v lack /nri", spec.Mounts)
	}
	if spec.Annotations["nri.test/adjusted"] != "yes" {
		t.Errorf("annotations = %v", spec.Annotations)
	}
	if !slices.ContainsFunc(spec.Linux.Devices, func(d specs.LinuxDevice) bool { return d.Path == "/dev/nri-null" }) {
		t.Errorf("devices = %+v", spec.Linux.Devices)
	}
	if l := spec.Linux.Resources.Memory; l == nil || l.Limit == nil || *l.Limit != 64<<20 {
		t.Errorf("memory = %+v", spec.Linux.Resources.Memory)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if r := rt.updated["other"]; r == nil || r.CPU == nil || *r.CPU.Shares != 512 {
		t.Errorf("update of another container not applied: %+v", rt.updated)
	}
}

func TestConflictingPluginsFailNamingThem(t *testing.T) {
	h, sock := startHost(t, &fakeRuntime{}, "2s")
	env := func(v string) func(*api.Container) *api.ContainerAdjustment {
		return func(*api.Container) *api.ContainerAdjustment {
			a := &api.ContainerAdjustment{}
			a.AddEnv("SAME", v)
			return a
		}
	}
	connect(t, h, sock, "first", "10", &testPlugin{adjust: env("1")})
	connect(t, h, sock, "second", "20", &testPlugin{adjust: env("2")})
	err := h.CreateContainer(context.Background(), pod("p"), store.Container{ContainerMeta: store.ContainerMeta{ID: "c"}}, testSpec())
	if err == nil || !strings.Contains(err.Error(), "first") || !strings.Contains(err.Error(), "second") {
		t.Fatalf("conflict error %v does not name both plugins", err)
	}
}

func TestPluginErrorNamesPlugin(t *testing.T) {
	h, sock := startHost(t, &fakeRuntime{}, "2s")
	connect(t, h, sock, "refuser", "10", &testPlugin{runErr: errors.New("no pods today")})
	err := h.RunPodSandbox(context.Background(), pod("p"))
	if err == nil || !strings.Contains(err.Error(), `"10-refuser"`) || !strings.Contains(err.Error(), "no pods today") {
		t.Fatalf("error %v does not name the plugin and its reason", err)
	}
}

func TestStuckPluginIsBoundedAndDropped(t *testing.T) {
	h, sock := startHost(t, &fakeRuntime{}, "300ms")
	block := make(chan struct{})
	defer close(block)
	connect(t, h, sock, "stuck", "10", &testPlugin{block: block})
	start := time.Now()
	if err := h.RunPodSandbox(context.Background(), pod("p")); err != nil {
		t.Fatalf("a timed-out plugin failed the call: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("RunPodSandbox waited %s on a stuck plugin", d)
	}
	waitPlugins(t, h, 0)
}

func TestSyncSeesExistingState(t *testing.T) {
	dir := t.TempDir()
	bundle := filepath.Join(dir, "b")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.0.0","process":{"args":["sleep","1"],"cwd":"/","user":{"uid":0,"gid":0}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	rt := &fakeRuntime{
		pods: []store.Sandbox{pod("p1")},
		ctrs: []store.Container{{ContainerMeta: store.ContainerMeta{ID: "c1", SandboxID: "p1", Bundle: bundle, Metadata: store.ContainerMetadata{Name: "app"}}, Status: store.ContainerStatus{State: store.ContainerRunning}}},
	}
	h, sock := startHost(t, rt, "2s")
	p := &testPlugin{}
	connect(t, h, sock, "late", "10", p)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Equal(p.synced, []string{"pod:p1", "ctr:c1:app"}) {
		t.Fatalf("synchronised with %v", p.synced)
	}
}

// With no pre-installed plugin, Start's synchronisation tells no one and
// reads no state; with a file in the plugin dir it reads it all, and an
// external plugin connecting later gets it all either way
// (TestSyncSeesExistingState).
func TestStartSyncReadsStateOnlyForPreinstalledPlugins(t *testing.T) {
	for _, preinstalled := range []bool{false, true} {
		dir := t.TempDir()
		if preinstalled {
			// Not executable: the adaptation skips it, berth cannot tell.
			if err := os.MkdirAll(filepath.Join(dir, "plugins"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "plugins", "10-notes"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		rt := &fakeRuntime{pods: []store.Sandbox{pod("p1")}}
		startHostIn(t, dir, rt, "2s")
		if want := map[bool]int{false: 0, true: 1}[preinstalled]; rt.states != want {
			t.Errorf("pre-installed plugin file %v: %d State calls at start, want %d", preinstalled, rt.states, want)
		}
	}
}

func TestDisabledHostChangesNothing(t *testing.T) {
	h := Disabled()
	spec := testSpec()
	if err := h.CreateContainer(context.Background(), store.Sandbox{}, store.Container{}, spec); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(&fakeRuntime{}); err != nil {
		t.Fatal(err)
	}
	h.BlockSync()()
	if len(spec.Process.Env) != 1 {
		t.Fatalf("spec changed: %v", spec.Process.Env)
	}
}

func TestDescribeNamesOnlyWhatIsSet(t *testing.T) {
	a := &api.ContainerAdjustment{Linux: &api.LinuxContainerAdjustment{Resources: &api.LinuxResources{}, Rdt: &api.LinuxRdt{}}, Hooks: &api.Hooks{}}
	a.AddRlimit("RLIMIT_NOFILE", 2, 1)
	a.AddDevice(&api.LinuxDevice{Path: "/dev/x", Type: "c"})
	if got := describe(a); !slices.Equal(got, []string{"devices", "rlimits"}) {
		t.Fatalf("describe = %v", got)
	}
}

// A refusal shows in the trace of the CRI call as a failed nri span.
func TestRefusalIsTraced(t *testing.T) {
	h, sock := startHost(t, &fakeRuntime{}, "2s")
	connect(t, h, sock, "refuser", "10", &testPlugin{runErr: errors.New("no pods today")})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "RunPodSandbox")
	if err := h.RunPodSandbox(ctx, pod("p")); err == nil {
		t.Fatal("refusal lost")
	}
	parent.End()
	var found bool
	for _, s := range rec.Ended() {
		if s.Name() == "nri.RunPodSandbox" {
			found = s.Status().Code == otelcodes.Error && s.Parent().SpanID() == parent.SpanContext().SpanID()
		}
	}
	if !found {
		t.Fatal("no failed nri.RunPodSandbox span under the call's")
	}
}

func pod(id string) store.Sandbox { return store.Sandbox{SandboxMeta: store.SandboxMeta{ID: id}} }
