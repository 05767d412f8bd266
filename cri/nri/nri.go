// Package nri hosts Node Resource Interface plugins through the NRI
// project's own adaptation library (github.com/containerd/nri,
// pkg/adaptation), as containerd and CRI-O do: pre-registered plugins
// started from a plugin directory, and plugins that connect to a socket.
// The CRI server raises each event at the point in a pod's or container's
// lifecycle where containerd raises it; this package translates berth's
// records and OCI specs to NRI's types and applies what plugins ask for.
package nri

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/store"
	shimapi "github.com/berth-runtime/berth/shim/api"
)

// Runtime is what the host needs of the CRI server: the state a plugin
// that connects is synchronised with, and the changes plugins ask for on
// their own (updates of containers other than the one an event is about).
type Runtime interface {
	// State returns the pods and containers that exist, leaving out those
	// whose RunPodSandbox or CreateContainer has not finished: those reach
	// a plugin through their own event.
	State(ctx context.Context) ([]store.Sandbox, []store.Container)
	// UpdateContainerResources applies res to the running container id.
	UpdateContainerResources(ctx context.Context, id string, res *specs.LinuxResources) error
}

// Options configures a Host.
type Options struct {
	Config  config.NRI
	Name    string // the runtime's name, told to plugins
	Version string
	Logger  *slog.Logger
	// InjectCDI resolves CDI devices a plugin asks for into the spec.
	InjectCDI func(*specs.Spec, []string) error
}

// Host is berthd's NRI: nil-safe in the sense that a disabled Host (see
// Disabled) answers every event at once with no change.
type Host struct {
	a          *adaptation.Adaptation
	log        *slog.Logger
	metrics    *Metrics
	cdi        func(*specs.Spec, []string) error
	rt         Runtime
	pluginPath string
	// noPreinstalled is set while Start synchronises the pre-installed
	// plugins and there are none: the adaptation calls back all the same,
	// and reading every container's spec for no one cost 100 ms of a
	// 250-pod restart.
	noPreinstalled atomic.Bool
}

// setLogger guards the adaptation's logger, a package variable it reads
// without a lock.
var setLogger sync.Once

// Disabled returns a host that hosts no plugins.
func Disabled() *Host { return &Host{log: slog.Default(), metrics: NewMetrics()} }

// New prepares the NRI host; plugins run from Start on. A disabled config
// gives a Disabled host.
func New(o Options) (*Host, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &Host{log: o.Logger, metrics: NewMetrics(), cdi: o.InjectCDI, pluginPath: o.Config.PluginPath}
	if !o.Config.Enable {
		return h, nil
	}
	// The adaptation keeps its logger and timeouts as package state
	// (the timeouts behind a lock); berthd runs one host, and the logger
	// is set once since the adaptation reads it unlocked.
	setLogger.Do(func() { nrilog.Set(slogAdapter{o.Logger.With("component", "nri")}) })
	adaptation.SetPluginRegistrationTimeout(o.Config.RegistrationTimeout())
	adaptation.SetPluginRequestTimeout(o.Config.RequestTimeout())
	opts := []adaptation.Option{
		adaptation.WithPluginPath(o.Config.PluginPath),
		adaptation.WithPluginConfigPath(o.Config.PluginConfigPath),
		adaptation.WithSocketPath(o.Config.SocketPath),
		adaptation.WithMetrics(h.metrics),
	}
	if o.Config.DisableConnections {
		opts = append(opts, adaptation.WithDisabledExternalConnections())
	} else if err := os.MkdirAll(filepath.Dir(o.Config.SocketPath), 0o700); err != nil {
		return nil, fmt.Errorf("create NRI socket dir: %w", err)
	}
	a, err := adaptation.New(o.Name, o.Version, h.synchronize, h.updateContainers, opts...)
	if err != nil {
		return nil, fmt.Errorf("create NRI host: %w", err)
	}
	h.a = a
	return h, nil
}

// Enabled reports whether plugins are hosted at all.
func (h *Host) Enabled() bool { return h.a != nil }

// Metrics returns the host's Prometheus collectors.
func (h *Host) Metrics() *Metrics { return h.metrics }

// Start starts the pre-registered plugins and accepts external ones; rt
// answers their synchronisation and update requests. Call it once the
// server has recovered, so the first synchronisation sees every pod.
func (h *Host) Start(rt Runtime) error {
	if h.a == nil {
		return nil
	}
	h.rt = rt
	// External plugins connect only once Start returns (the adaptation
	// opens its socket after the pre-installed plugins' sync), so the
	// only synchronisation this can affect is that one.
	h.noPreinstalled.Store(!hasFiles(h.pluginPath))
	err := h.a.Start()
	h.noPreinstalled.Store(false)
	if err != nil {
		return fmt.Errorf("start NRI: %w", err)
	}
	h.log.Info("NRI started")
	return nil
}

// Stop disconnects every plugin and stops the pre-registered ones.
func (h *Host) Stop() {
	if h.a != nil {
		h.a.Stop()
	}
}

// BlockSync holds off the synchronisation of a plugin that connects
// until the returned func is called: a pod or container being made is
// then either in the synchronised state or reaches the plugin as its own
// event, never neither.
func (h *Host) BlockSync() func() {
	if h.a == nil {
		return func() {}
	}
	b := h.a.BlockPluginSync()
	return b.Unblock
}

// synchronize is the adaptation's SyncFn: the state berth has, to a
// plugin that just connected, and the updates it asks for applied.
func (h *Host) synchronize(ctx context.Context, cb adaptation.SyncCB) error {
	if h.noPreinstalled.Load() {
		_, err := cb(ctx, nil, nil)
		return err
	}
	sbs, ctrs := h.rt.State(ctx)
	pods := make([]*api.PodSandbox, 0, len(sbs))
	for _, sb := range sbs {
		pods = append(pods, podSandbox(sb))
	}
	cs := make([]*api.Container, 0, len(ctrs))
	for _, c := range ctrs {
		cs = append(cs, container(c, readSpec(c)))
	}
	updates, err := cb(ctx, pods, cs)
	if err != nil {
		return fmt.Errorf("synchronize NRI plugin: %w", err)
	}
	_, err = h.apply(ctx, "", updates)
	return err
}

// updateContainers is the adaptation's UpdateFn: updates a plugin asks
// for on its own. It returns those that failed.
func (h *Host) updateContainers(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	return h.apply(ctx, "", updates)
}

// apply has the server update the resources of each container in
// updates but skip (it is being created or updated by the caller, which
// applies its own part); an update that fails and may not fail is an
// error, the others are returned as failed.
func (h *Host) apply(ctx context.Context, skip string, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	var failed []*api.ContainerUpdate
	var errs []error
	for _, u := range updates {
		id := u.GetContainerId()
		if id == skip {
			continue
		}
		res := u.GetLinux().GetResources()
		if res == nil {
			continue
		}
		err := h.rt.UpdateContainerResources(ctx, id, res.ToOCI())
		if err == nil {
			h.log.InfoContext(ctx, "NRI plugin updated container resources", "container_id", id)
			continue
		}
		failed = append(failed, u)
		if u.GetIgnoreFailure() {
			h.log.WarnContext(ctx, "NRI container update failed (ignored)", "container_id", id, "error", err)
			continue
		}
		errs = append(errs, fmt.Errorf("NRI update of container %q: %w", id, err))
	}
	return failed, errors.Join(errs...)
}

// readSpec is the container's OCI spec as written in its bundle, or nil
// when the bundle is gone.
func readSpec(c store.Container) *specs.Spec {
	if c.Bundle == "" {
		return nil
	}
	spec, err := shimapi.ReadSpec(c.Bundle)
	if err != nil {
		return nil
	}
	return spec
}

// hasFiles reports whether dir may hold a plugin the adaptation would
// start: any entry but a directory (it skips those), or an unreadable
// dir, counts.
func hasFiles(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return !errors.Is(err, fs.ErrNotExist)
	}
	return slices.ContainsFunc(entries, func(e os.DirEntry) bool { return !e.IsDir() })
}

// pluginError wraps err, from a plugin or from the adaptation's merging
// of plugins' answers, naming the plugin and event.
func (h *Host) pluginError(event string, err error) error {
	if err == nil {
		return nil
	}
	if name := h.metrics.failedPlugin(err); name != "" {
		return fmt.Errorf("NRI plugin %q failed %s: %w: %w", name, event, err, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("NRI %s: %w: %w", event, err, errdefs.ErrFailedPrecondition)
}
