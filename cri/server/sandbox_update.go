package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/specgen"
	"github.com/berth-runtime/berth/cri/store"
)

// UpdatePodSandboxResources writes the pod's new limits (resources plus
// overhead, as kubelet sizes the pod cgroup) to the pod's own cgroup, the
// cgroup_parent kubelet gave it, and records them in the pod's config.
// kubelet calls it after resizing that cgroup itself (CRI: "called after
// the Kubelet reconfigures the pod-level cgroups", best effort), so on a
// kubelet node this confirms what is in force; without kubelet it is what
// resizes the pod.
//
// A pod whose config names no cgroup_parent shares config's default parent
// with every such pod and has no cgroup of its own to resize: that is
// FailedPrecondition, as is the systemd driver, where the pod's slice
// belongs to systemd and limits go through its D-Bus API, which berthd
// does not speak (kubelet does).
func (s *Server) UpdatePodSandboxResources(ctx context.Context, r *runtime.UpdatePodSandboxResourcesRequest) (*runtime.UpdatePodSandboxResourcesResponse, error) {
	id := r.GetPodSandboxId()
	if _, err := s.store.Sandbox(id); err != nil {
		return nil, err
	}
	limits, err := specgen.Resources(podResources(r.GetResources(), r.GetOverhead()))
	if err != nil {
		return nil, fmt.Errorf("resources of sandbox %q: %w", id, err)
	}
	s.dropUnsupported(limits)
	unlock := s.locks.lock(id)
	defer unlock()
	sb, err := s.store.Sandbox(id)
	if err != nil {
		return nil, err
	}
	var cfg runtime.PodSandboxConfig
	if err := proto.Unmarshal(sb.Config, &cfg); err != nil {
		return nil, fmt.Errorf("decode config of sandbox %q: %w", id, err)
	}
	parent := cfg.GetLinux().GetCgroupParent()
	switch {
	case parent == "":
		return nil, fmt.Errorf("sandbox %q has no cgroup of its own (its config names no cgroup_parent): %w", id, errdefs.ErrFailedPrecondition)
	case s.cfg.CgroupDriver == cgroups.DriverSystemd:
		return nil, fmt.Errorf("sandbox %q: pod slice %q is systemd's (cgroup_driver systemd); berthd does not resize it: %w", id, parent, errdefs.ErrFailedPrecondition)
	}
	path := cgroups.Path(parent)
	if !s.cg.Exists(path) {
		return nil, fmt.Errorf("cgroup %q of sandbox %q does not exist: %w", parent, id, errdefs.ErrFailedPrecondition)
	}
	if err := s.nri.UpdatePodSandbox(ctx, sb, r.GetResources(), r.GetOverhead()); err != nil {
		return nil, err
	}
	if err := s.cg.Update(path, limits); err != nil {
		return nil, fmt.Errorf("update cgroup of sandbox %q: %w", id, err)
	}
	if _, err := s.store.UpdateSandbox(id, func(rec *store.Sandbox) error {
		raw, err := recordPodResources(rec.Config, r.GetResources(), r.GetOverhead())
		if err != nil {
			return err
		}
		rec.Config = raw
		return nil
	}); err != nil {
		return nil, fmt.Errorf("record resources of sandbox %q: %w", id, err)
	}
	if cur, err := s.store.Sandbox(id); err == nil {
		s.nri.PostUpdatePodSandbox(ctx, cur)
	}
	interceptor.Logger(ctx).Info("pod sandbox resources updated", "sandbox_id", id, "cgroup", parent)
	return &runtime.UpdatePodSandboxResourcesResponse{}, nil
}

// podResources is the pod cgroup's size: the containers' sum plus the
// pod's overhead, added where both bound a resource (an unbounded one
// stays unbounded), as kubelet sizes pod cgroups. A quota of the overhead
// is scaled to the resources' period.
func podResources(res, overhead *runtime.LinuxContainerResources) *runtime.LinuxContainerResources {
	if res == nil {
		return &runtime.LinuxContainerResources{}
	}
	out := proto.Clone(res).(*runtime.LinuxContainerResources)
	if overhead == nil {
		return out
	}
	if out.CpuShares > 0 && overhead.GetCpuShares() > 0 {
		out.CpuShares += overhead.GetCpuShares()
	}
	if out.MemoryLimitInBytes > 0 && overhead.GetMemoryLimitInBytes() > 0 {
		out.MemoryLimitInBytes += overhead.GetMemoryLimitInBytes()
	}
	if out.CpuQuota > 0 && overhead.GetCpuQuota() > 0 {
		period, oPeriod := out.GetCpuPeriod(), overhead.GetCpuPeriod()
		if period <= 0 {
			period = 100000
		}
		if oPeriod <= 0 {
			oPeriod = 100000
		}
		out.CpuQuota += overhead.GetCpuQuota() * period / oPeriod
	}
	return out
}

// recordPodResources returns the encoded pod config with linux.resources
// and linux.overhead replaced (a new slice: records share the old one).
func recordPodResources(raw []byte, res, overhead *runtime.LinuxContainerResources) ([]byte, error) {
	var cfg runtime.PodSandboxConfig
	if err := proto.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("decode pod config: %w", err)
	}
	if cfg.Linux == nil {
		cfg.Linux = &runtime.LinuxPodSandboxConfig{}
	}
	if res != nil {
		cfg.Linux.Resources = res
	}
	if overhead != nil {
		cfg.Linux.Overhead = overhead
	}
	return proto.Marshal(&cfg)
}
