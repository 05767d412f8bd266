package server

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/nri"
	"github.com/berth-runtime/berth/cri/ocihooks"
	"github.com/berth-runtime/berth/cri/store"
)

// NRI is what the server needs of the NRI host (cri/nri): one call per
// lifecycle event, raised where containerd raises it. Calls that may
// refuse the change return an error naming the plugin; the others only
// notify.
type NRI interface {
	RunPodSandbox(ctx context.Context, sb store.Sandbox) error
	StopPodSandbox(ctx context.Context, sb store.Sandbox)
	RemovePodSandbox(ctx context.Context, sb store.Sandbox)
	UpdatePodSandbox(ctx context.Context, sb store.Sandbox, res, overhead *runtime.LinuxContainerResources) error
	PostUpdatePodSandbox(ctx context.Context, sb store.Sandbox)
	// CreateContainer has plugins adjust spec, c's OCI spec, in place.
	CreateContainer(ctx context.Context, sb store.Sandbox, c store.Container, spec *specs.Spec) error
	PostCreateContainer(ctx context.Context, sb store.Sandbox, c store.Container)
	StartContainer(ctx context.Context, sb store.Sandbox, c store.Container) error
	PostStartContainer(ctx context.Context, sb store.Sandbox, c store.Container)
	// UpdateContainer returns res as plugins adjusted it.
	UpdateContainer(ctx context.Context, sb store.Sandbox, c store.Container, res *specs.LinuxResources) (*specs.LinuxResources, error)
	PostUpdateContainer(ctx context.Context, sb store.Sandbox, c store.Container)
	StopContainer(ctx context.Context, sb store.Sandbox, c store.Container)
	RemoveContainer(ctx context.Context, sb store.Sandbox, c store.Container)
	// BlockSync holds off a connecting plugin's synchronisation until the
	// returned func is called.
	BlockSync() func()
}

var _ NRI = (*nri.Host)(nil)

// nriRuntime is the server as the NRI host's runtime.
type nriRuntime struct{ s *Server }

var _ nri.Runtime = nriRuntime{}

// NRIRuntime is what the NRI host asks of the server (nri.Host.Start).
func (s *Server) NRIRuntime() nri.Runtime { return nriRuntime{s} }

// inFlight is the set of sandboxes and containers whose RunPodSandbox or
// CreateContainer has not returned: they are recorded (so a crash leaves
// something to clean up) but, as in containerd, neither listed nor
// reported, nor handed to a plugin that synchronises, until they exist.
type inFlight struct {
	mu  sync.Mutex
	ids map[string]struct{}
	// gen counts the changes of ids, so that a list made while it was at
	// one count is known to hide the same objects while it still is.
	gen uint64
}

// add marks id in flight until the returned func is called.
func (f *inFlight) add(id string) func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids == nil {
		f.ids = map[string]struct{}{}
	}
	f.ids[id] = struct{}{}
	f.gen++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.ids, id)
		f.gen++
	}
}

// version returns the count of changes of the set.
func (f *inFlight) version() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen
}

func (f *inFlight) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.ids[id]
	return ok
}

// sandboxOf is c's sandbox record, or one with only its ID when it is
// gone (a plugin then still learns which pod the container was in).
func (s *Server) sandboxOf(c store.Container) store.Sandbox {
	sb, err := s.store.Sandbox(c.SandboxID)
	if err != nil {
		return store.Sandbox{SandboxMeta: store.SandboxMeta{ID: c.SandboxID}}
	}
	return sb
}

// State implements nri.Runtime: what exists, without what is in flight.
func (r nriRuntime) State(context.Context) ([]store.Sandbox, []store.Container) {
	s := r.s
	sbs := slices.DeleteFunc(s.store.Sandboxes(), func(sb store.Sandbox) bool { return s.creating.has(sb.ID) })
	ctrs := slices.DeleteFunc(s.store.Containers(), func(c store.Container) bool { return s.creating.has(c.ID) })
	return sbs, ctrs
}

// UpdateContainerResources implements nri.Runtime: a plugin's update of
// a container other than the one its event is about, applied as
// UpdateContainerResources applies kubelet's.
func (r nriRuntime) UpdateContainerResources(ctx context.Context, id string, res *specs.LinuxResources) error {
	s := r.s
	unlock := s.locks.lock(id)
	defer unlock()
	c, err := s.store.Container(id)
	if err != nil {
		return err
	}
	t := s.task(c.ID)
	if c.Status.State == store.ContainerExited || t == nil {
		return fmt.Errorf("container %q is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	s.dropUnsupported(res)
	if err := t.Update(ctx, res); err != nil {
		return fmt.Errorf("update resources of container %q: %w", c.ID, err)
	}
	if _, err := s.store.UpdateContainerStatus(c.ID, func(st store.ContainerStatus) (store.ContainerStatus, error) {
		st.Resources = mergeResources(st.Resources, criResources(res))
		return st, nil
	}); err != nil {
		return fmt.Errorf("record resources of container %q: %w", c.ID, err)
	}
	return nil
}

// criResources is the CRI form of OCI resources, for the record that
// ContainerStatus reports from.
func criResources(r *specs.LinuxResources) *runtime.LinuxContainerResources {
	out := &runtime.LinuxContainerResources{Unified: maps.Clone(r.Unified)}
	if c := r.CPU; c != nil {
		if c.Period != nil {
			out.CpuPeriod = int64(*c.Period) //nolint:gosec // periods are microseconds, far below 2^63
		}
		if c.Quota != nil {
			out.CpuQuota = *c.Quota
		}
		if c.Shares != nil {
			out.CpuShares = int64(*c.Shares) //nolint:gosec // shares are at most 262144
		}
		out.CpusetCpus, out.CpusetMems = c.Cpus, c.Mems
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			out.MemoryLimitInBytes = *m.Limit
		}
		if m.Swap != nil {
			out.MemorySwapLimitInBytes = *m.Swap
		}
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, &runtime.HugepageLimit{PageSize: h.Pagesize, Limit: h.Limit})
	}
	return out
}

// adjustContainerSpec is the last change to a new container's spec
// before it is written: the OCI hooks of runtime.hooks_dir that match,
// then what NRI plugins ask for (so plugins see those hooks, and may add
// their own). A plugin that refuses fails the create; plugins that
// accepted are told the container is removed if a later step fails.
func (s *Server) adjustContainerSpec(ctx context.Context, p *containerPlan, spec *specs.Spec) error {
	log := interceptor.Logger(ctx)
	applied, err := ocihooks.Apply(s.cfg.Runtime.HooksDir, spec)
	if err != nil {
		log.Warn("OCI hook files skipped", "error", err)
	}
	if len(applied) > 0 {
		log.Info("OCI hooks applied", "hooks", applied)
	}
	if err := s.nri.CreateContainer(ctx, p.sb, p.rec, spec); err != nil {
		return err
	}
	p.cl.Add("tell NRI plugins", func(ctx context.Context) error {
		s.nri.RemoveContainer(ctx, p.sb, p.rec)
		return nil
	})
	return nil
}

// nriRunPod tells plugins of the pod, set up but not yet ready; a plugin
// that refuses fails RunPodSandbox.
func (s *Server) nriRunPod(ctx context.Context, p *podPlan) error {
	rec := p.rec
	rec.Status.IPs = p.ips
	if err := s.nri.RunPodSandbox(ctx, rec); err != nil {
		return err
	}
	p.cl.Add("tell NRI plugins", func(ctx context.Context) error {
		s.nri.RemovePodSandbox(ctx, rec)
		return nil
	})
	return nil
}

// nriContainerStopped tells plugins c stopped, once per container while
// berthd runs: Stop is idempotent in the CRI and called again by
// StopPodSandbox and RemoveContainer, the plugins' event is not.
func (s *Server) nriContainerStopped(ctx context.Context, c store.Container) {
	if _, dup := s.nriStopped.LoadOrStore(c.ID, struct{}{}); dup {
		return
	}
	if cur, err := s.store.Container(c.ID); err == nil {
		c = cur
	}
	s.nri.StopContainer(ctx, s.sandboxOf(c), c)
}
