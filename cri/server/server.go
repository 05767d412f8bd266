// Package server implements the CRI RuntimeService and ImageService: each
// RPC validates a CRI request, turns it into calls on the sandbox
// controller, the image service, the network manager and the task manager
// (cri/task: the shims and the OCI runtime), records the outcome in the
// store, and turns it back into a CRI response; stats come from
// cri/stats. Every collaborator is a narrow interface declared here, so
// the handlers are unit-tested over fakes (fakes_test.go). RPCs berth does
// not implement yet answer Unimplemented through the embedded defaults.
package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/apparmor"
	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/events"
	"github.com/berth-runtime/berth/cri/nri"
	"github.com/berth-runtime/berth/cri/specgen"
	"github.com/berth-runtime/berth/cri/stats"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/netplugin"
	"github.com/berth-runtime/berth/sandbox"
)

// Sandboxes is what the server needs of the sandbox controller.
type Sandboxes interface {
	Create(ctx context.Context, s sandbox.Spec) (sandbox.Pod, error)
	Stop(ctx context.Context, p sandbox.Pod) error
	Remove(ctx context.Context, p sandbox.Pod) error
	InfraAlive(p sandbox.Pod) bool
	PidNSPath(p sandbox.Pod) string
}

var _ Sandboxes = (*sandbox.Controller)(nil)

// Images is what the server needs of the image service.
type Images interface {
	Pull(ctx context.Context, ref string, auth *imagesvc.Auth) (imagesvc.Image, error)
	Get(ctx context.Context, refOrID string) (imagesvc.Image, error)
	// RepoTags is Get(ctx, id).RepoTags for an image ID, cheap enough for
	// every container status.
	RepoTags(ctx context.Context, id string) ([]string, error)
	List(ctx context.Context) ([]imagesvc.Image, error)
	Remove(ctx context.Context, refOrID string) error
	PrepareRootfs(ctx context.Context, containerID, imageID, target string) error
	RemoveRootfs(ctx context.Context, containerID, target string) error
	FsInfo(ctx context.Context) (imagesvc.FsUsage, error)
}

var _ Images = (*imagesvc.Service)(nil)

// Network is what the server needs of the pod network manager.
type Network interface {
	Status() error
	Setup(ctx context.Context, p netplugin.PodNetwork) (netplugin.Result, error)
	Teardown(ctx context.Context, p netplugin.PodNetwork) error
	GC(ctx context.Context, keepIDs []string) error
}

var _ Network = (*netplugin.Manager)(nil)

// Tasks is what the server needs of the task manager: the containers'
// shims, from spawn to release.
type Tasks interface {
	// Spawn starts the shim of rec, a container under creation.
	Spawn(ctx context.Context, rec store.Container) task.Pending
	// Get returns the task of a container that has not finished.
	Get(id string) (task.Task, bool)
	// Recover settles c's state after a restart: its exit recorded when
	// it ended, a task when it runs, whose calls wait for Reattach.
	Recover(ctx context.Context, c store.Container) error
	// Reattach connects the shims of the running containers Recover
	// found, and returns once it is done.
	Reattach()
	// Release makes sure no shim or runtime state holds c any more.
	Release(ctx context.Context, c store.Container) error
	// Cleanup releases what is left of a container with no record.
	Cleanup(ctx context.Context, c store.Container)
}

var _ Tasks = (*task.Manager)(nil)

// Stats is what the server needs of the stats collector: samples of
// containers and pods, and the OOM kill counts of containers' cgroups.
type Stats interface {
	Container(ctx context.Context, rec store.Container) (*runtime.ContainerStats, *cgroups.Stats)
	Pod(ctx context.Context, sb store.Sandbox, ctrs []store.Container) *runtime.LinuxPodSandboxStats
	PodMetrics(ctx context.Context, sb store.Sandbox, ctrs []store.Container, fs *unix.Statfs_t) *runtime.PodSandboxMetrics
	RootFs() *unix.Statfs_t
	// Forget drops what is cached about objects not in keep.
	Forget(keep map[string]bool)
	// ForgetContainer and ForgetPod drop what is cached about one removed
	// object.
	ForgetContainer(id string)
	ForgetPod(id string)
	User(rec store.Container) *runtime.ContainerUser
	WatchOOM(rec store.Container) uint64
	OOMKilled(rec store.Container, base uint64) bool
}

var _ Stats = (*stats.Collector)(nil)

// CRIU is the CRIU checkpoint and restore use (task.CRIUProbe).
type CRIU interface {
	// Get returns the path of a working CRIU, waiting for the probe while
	// ctx allows; FailedPrecondition when there is none.
	Get(ctx context.Context) (string, error)
	// Ready reports the probe's result without waiting.
	Ready() (probing bool, err error)
	// Stop ends a probe still running and waits for it.
	Stop()
}

var _ CRIU = (*task.CRIUProbe)(nil)

// Options wires the server's collaborators; every field is required.
type Options struct {
	Config    config.Config
	Store     *store.Store
	Sandboxes Sandboxes
	Images    Images
	Network   Network
	ShimPath  string // resolved berth-shim binary
	Logger    *slog.Logger
	// Streaming hands out exec/attach/port-forward URLs; nil makes those
	// RPCs Unavailable (ExecSync works without it).
	Streaming StreamServer
	// NRI hosts NRI plugins; nil hosts none.
	NRI NRI
}

// Server serves the CRI.
type Server struct {
	runtime.UnimplementedRuntimeServiceServer
	runtime.UnimplementedImageServiceServer

	cfg       config.Config
	store     *store.Store
	sandboxes Sandboxes
	images    Images
	network   Network
	// networkGC is closed when the network garbage collection Recover
	// starts has ended; until then setups and teardowns wait, so that no
	// pod is attached that the GC's keep list does not name and none is
	// detached under the GC's plugins. Nil before Recover.
	networkGC chan struct{}
	log       *slog.Logger
	// streams is the streaming server; nil when there is none.
	streams StreamServer

	// oomScoreAdjMin is berthd's own oom_score_adj when the restriction is on.
	oomScoreAdjMin *int
	// hugetlb is whether hugepage limits can be applied on this host.
	hugetlb bool
	// allCaps is what "all capabilities" means for a privileged container:
	// berthd's bounding set, since runc cannot grant more than it holds.
	allCaps []string
	// criu is the CRIU checkpoint and restore use, probed in the
	// background from New on.
	criu CRIU
	// features is what each runtime handler supports, probed in the
	// background from New; read it through handlerFeatures.
	features     map[string]task.Features
	featuresDone chan struct{}
	// cdi resolves CDI devices from the config's cdi.spec_dirs.
	cdi *specgen.CDIRegistry
	// apparmor is the host's AppArmor, probed (and berth-default loaded) in New.
	apparmor *apparmor.Host
	// selinux is whether the host has SELinux enabled, probed in New.
	selinux bool

	// tasks are the live links to the containers' shims.
	tasks Tasks

	locks keyedMutex // serialises lifecycle calls per sandbox and per container

	// stats reads container and pod cgroups for the stats RPCs and OOM
	// reporting; events fans lifecycle events out to GetContainerEvents.
	stats  Stats
	events *events.Broadcaster[*runtime.ContainerEventResponse]
	// cg writes pod cgroups (UpdatePodSandboxResources).
	cg *cgroups.Manager

	// nri raises NRI events; creating hides what is being made from
	// List, Status and NRI synchronisation; nriStopped holds the
	// containers whose stop plugins were told of.
	nri        NRI
	creating   inFlight
	nriStopped sync.Map

	items listItems
}

// New validates o and returns a server; call Recover before serving.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Sandboxes == nil || o.Images == nil || o.Network == nil || o.ShimPath == "" {
		return nil, fmt.Errorf("server options incomplete: %w", errdefs.ErrInvalidArgument)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := o.Config.CheckHost(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       o.Config,
		store:     o.Store,
		sandboxes: o.Sandboxes,
		images:    o.Images,
		network:   o.Network,
		log:       o.Logger,
		streams:   o.Streaming,
		cg:        cgroups.New(""),
		events:    events.New[*runtime.ContainerEventResponse](0),
		cdi:       specgen.NewCDIRegistry(o.Config.CDI.SpecDirs),
		nri:       o.NRI,
	}
	if s.nri == nil {
		s.nri = nri.Disabled()
	}
	if o.Config.Runtime.RestrictOOM() {
		v, err := ownOOMScoreAdj()
		if err != nil {
			return nil, err
		}
		s.oomScoreAdjMin = &v
	}
	// oom keeps the OOM kill counts of running containers' cgroups (v2).
	oom, err := s.cg.NewOOMWatcher()
	if err != nil {
		return nil, err
	}
	s.stats = stats.New(stats.Options{Cgroups: s.cg, Root: o.Config.Root, Logger: o.Logger, OOM: oom})
	s.hugetlb = hugetlbUsable("/sys/fs/cgroup")
	caps, err := specgen.CurrentCapabilities()
	if err != nil {
		return nil, fmt.Errorf("read own capabilities: %w", err)
	}
	s.allCaps = caps
	// The probes fork and exec (tens of ms, far more on a loaded node) and
	// nothing in recovery needs them: they run beside it, and what asks
	// for features waits for them.
	s.featuresDone = make(chan struct{})
	go func() {
		defer close(s.featuresDone)
		s.features = probeHandlers(s.containersDir(), o.Config.Root, o.Config.Runtime.Handlers, s.log)
	}()
	s.apparmor = apparmor.New(s.log)
	if s.apparmor.Enabled() {
		// A failure is logged by the loader; containers asking for the
		// profile retry the load, and are refused while it fails.
		_ = s.apparmor.LoadDefault()
	} else {
		s.log.Info("AppArmor is not enabled on this host: RuntimeDefault applies no AppArmor profile, Localhost profiles are refused")
	}
	if s.selinux = specgen.SELinuxEnabled(); s.selinux {
		s.log.Info("SELinux is enabled on this host: containers that ask for SELinux labels are refused")
	}
	if err := s.makeStateDirs(); err != nil {
		return nil, err
	}
	tasks, err := task.New(task.Options{
		Config: o.Config, Store: o.Store, ShimPath: o.ShimPath, SocketsDir: s.socketsDir(),
		Logger: o.Logger, Hooks: s.taskHooks(),
	})
	if err != nil {
		return nil, err
	}
	s.tasks = tasks
	criu := task.CRIUCandidates
	if o.Config.Runtime.CriuPath != "" {
		criu = []string{o.Config.Runtime.CriuPath}
	}
	s.criu = task.ProbeCRIU(criu, s.checkpointsDir(), filepath.Join(o.Config.State, "criu-proof.json"), o.Config.Runtime.CheckpointTimeoutDuration(), s.log)
	return s, nil
}

// Close stops what New started in the background (the CRIU probe) and
// waits for it and for Recover's network garbage collection, which ends
// with Recover's context or its plugins' timeouts; call it once the server
// no longer serves, before the network manager is closed.
func (s *Server) Close() {
	s.criu.Stop()
	_ = s.awaitNetworkGC(context.Background())
}

// awaitNetworkGC waits for Recover's network garbage collection to end.
func (s *Server) awaitNetworkGC(ctx context.Context) error {
	if s.networkGC == nil {
		return nil
	}
	select {
	case <-s.networkGC:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the network garbage collection after the restart: %w", context.Cause(ctx))
	}
}

// makeStateDirs creates the state dirs with their modes and closes what an
// older berth left open, so an upgraded node is protected too.
func (s *Server) makeStateDirs() error {
	// The bundles' dir stays 0711: runc resolves a user namespace
	// container's rootfs as the mapped root. Each bundle is 0700 (or open
	// to the mapped root's group only), so that opens no container to
	// other users.
	for _, d := range []string{s.containersDir(), s.socketsDir()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
	}
	// Pod dirs hold the pods' hosts, resolv.conf and /dev/shm.
	if err := os.MkdirAll(s.sandboxesDir(), 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.Chmod(s.sandboxesDir(), 0o700); err != nil {
		return fmt.Errorf("close sandboxes dir to other users: %w", err)
	}
	// Older berths made a user namespace container's bundle 0711. runc
	// passes through it as the mapped root only while it sets the rootfs
	// up (runc create), so closing it under a live container is safe.
	bundles, err := os.ReadDir(s.containersDir())
	if err != nil {
		return fmt.Errorf("read bundles: %w", err)
	}
	for _, b := range bundles {
		fi, err := b.Info()
		if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o007 == 0 {
			continue
		}
		p := filepath.Join(s.containersDir(), b.Name())
		if err := os.Chmod(p, fi.Mode().Perm()&^0o007); err != nil {
			return fmt.Errorf("close bundle %q to other users: %w", p, err)
		}
	}
	return nil
}

func ownOOMScoreAdj() (int, error) {
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, fmt.Errorf("read own oom_score_adj: %w", err)
	}
	var v int
	if _, err := fmt.Sscanf(string(data), "%d", &v); err != nil {
		return 0, fmt.Errorf("parse own oom_score_adj %q: %w", data, err)
	}
	return v, nil
}

func (s *Server) sandboxesDir() string       { return filepath.Join(s.cfg.State, "sandboxes") }
func (s *Server) containersDir() string      { return filepath.Join(s.cfg.State, "containers") }
func (s *Server) socketsDir() string         { return filepath.Join(s.cfg.State, "s") }
func (s *Server) bundleDir(id string) string { return filepath.Join(s.containersDir(), id) }

// Version reports the runtime's name and versions.
func (s *Server) Version(ctx context.Context, r *runtime.VersionRequest) (*runtime.VersionResponse, error) {
	return &runtime.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       "berth",
		RuntimeVersion:    Version,
		RuntimeApiVersion: "v1",
	}, nil
}

// Version is berthd's version, set at link time.
var Version = "0.1.0-dev"

// Status reports RuntimeReady and NetworkReady.
func (s *Server) Status(ctx context.Context, r *runtime.StatusRequest) (*runtime.StatusResponse, error) {
	runtimeCond := &runtime.RuntimeCondition{Type: runtime.RuntimeReady, Status: true}
	netCond := &runtime.RuntimeCondition{Type: runtime.NetworkReady, Status: true}
	if err := s.network.Status(); err != nil {
		netCond.Status = false
		netCond.Reason = "NetworkPluginNotReady"
		netCond.Message = err.Error()
	}
	resp := &runtime.StatusResponse{
		Status: &runtime.RuntimeStatus{Conditions: []*runtime.RuntimeCondition{runtimeCond, netCond, s.checkpointCondition()}},
	}
	resp.RuntimeHandlers = s.runtimeHandlers()
	resp.Features = runtimeFeatures()
	if r.GetVerbose() {
		cfg, err := json.Marshal(s.cfg)
		if err != nil {
			return nil, fmt.Errorf("encode config: %w", err)
		}
		aa, err := json.Marshal(s.apparmorInfo())
		if err != nil {
			return nil, fmt.Errorf("encode apparmor status: %w", err)
		}
		resp.Info = map[string]string{"config": string(cfg), "apparmor": string(aa)}
	}
	return resp, nil
}

// apparmorInfo is the AppArmor part of verbose Status: whether it is
// enforced and which profile RuntimeDefault applies.
func (s *Server) apparmorInfo() map[string]any {
	info := map[string]any{"enabled": s.apparmor.Enabled()}
	if s.apparmor.Enabled() {
		info["default_profile"] = apparmor.DefaultProfileName
	}
	return info
}

// RuntimeConfig reports the cgroup driver kubelet must match (config's
// cgroup_driver).
func (s *Server) RuntimeConfig(ctx context.Context, r *runtime.RuntimeConfigRequest) (*runtime.RuntimeConfigResponse, error) {
	driver := runtime.CgroupDriver_CGROUPFS
	if s.cfg.CgroupDriver == cgroups.DriverSystemd {
		driver = runtime.CgroupDriver_SYSTEMD
	}
	return &runtime.RuntimeConfigResponse{
		Linux: &runtime.LinuxRuntimeConfiguration{CgroupDriver: driver},
	}, nil
}

// UpdateRuntimeConfig accepts the pod CIDR kubelet sends; berth's network
// comes from the CNI config, so there is nothing to change.
func (s *Server) UpdateRuntimeConfig(ctx context.Context, r *runtime.UpdateRuntimeConfigRequest) (*runtime.UpdateRuntimeConfigResponse, error) {
	return &runtime.UpdateRuntimeConfigResponse{}, nil
}

// probeHandlers asks the kernel what root's filesystem supports and each
// handler's binary what it does.
func probeHandlers(containersDir, root string, handlers map[string]config.Handler, log *slog.Logger) map[string]task.Features {
	idmapErr := idmapSupported(root)
	if idmapErr == nil {
		idmapErr = traversable(containersDir)
	}
	if idmapErr != nil {
		log.Info("idmapped mounts unavailable: user namespaces off", "error", idmapErr)
	}
	rroErr := rroSupported(root)
	if rroErr != nil {
		log.Info("recursive read-only mounts unavailable", "error", rroErr)
	}
	kernel := task.Kernel{IDMap: idmapErr == nil, RecursiveReadOnly: rroErr == nil}
	return task.ProbeFeatures(context.Background(), handlers, kernel, log)
}

// handlerFeatures is what handler supports, once New's probe is done.
func (s *Server) handlerFeatures(handler string) task.Features {
	if s.featuresDone != nil {
		<-s.featuresDone
	}
	return s.features[handler]
}
