package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/specgen"
	"github.com/berth-runtime/berth/cri/store"
)

// UpdateContainerResources applies new cgroup limits to a created or
// running container through its runtime (`update --resources`), then
// records them so ContainerStatus.resources reports what is in force.
// Zero fields leave the current value alone, as in CreateContainer.
func (s *Server) UpdateContainerResources(ctx context.Context, r *runtime.UpdateContainerResourcesRequest) (*runtime.UpdateContainerResourcesResponse, error) {
	if r.GetLinux() == nil {
		if r.GetWindows() != nil {
			return nil, fmt.Errorf("windows resources on a linux runtime: %w", errdefs.ErrInvalidArgument)
		}
		return &runtime.UpdateContainerResourcesResponse{}, nil
	}
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(c.ID)
	defer unlock()
	if c, err = s.store.Container(c.ID); err != nil {
		return nil, err
	}
	res, err := specgen.Resources(r.GetLinux())
	if err != nil {
		return nil, fmt.Errorf("resources of container %q: %w", c.ID, err)
	}
	s.dropUnsupported(res)
	t := s.task(c.ID)
	if c.Status.State == store.ContainerExited || t == nil {
		return nil, fmt.Errorf("container %q is not running: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	sb := s.sandboxOf(c)
	if res, err = s.nri.UpdateContainer(ctx, sb, c, res); err != nil {
		return nil, err
	}
	s.dropUnsupported(res)
	if err := t.Update(ctx, res); err != nil {
		return nil, fmt.Errorf("update resources of container %q: %w", c.ID, err)
	}
	if _, err := s.store.UpdateContainerStatus(c.ID, func(st store.ContainerStatus) (store.ContainerStatus, error) {
		st.Resources = mergeResources(st.Resources, r.GetLinux())
		return st, nil
	}); err != nil {
		return nil, fmt.Errorf("record resources of container %q: %w", c.ID, err)
	}
	if cur, err := s.store.Container(c.ID); err == nil {
		s.nri.PostUpdateContainer(ctx, sb, cur)
	}
	interceptor.Logger(ctx).Info("container resources updated", "container_id", c.ID)
	return &runtime.UpdateContainerResourcesResponse{}, nil
}

// mergeResources returns cur with the fields set in upd replacing the
// recorded ones.
func mergeResources(cur store.Resources, upd *runtime.LinuxContainerResources) store.Resources {
	merged := store.ResourcesFromCRI(upd)
	// oom_score_adj cannot change after start; keep what the process has.
	merged.OOMScoreAdj = cur.OOMScoreAdj
	keep := func(dst *int64, old int64) {
		if *dst == 0 {
			*dst = old
		}
	}
	keep(&merged.CPUPeriod, cur.CPUPeriod)
	keep(&merged.CPUQuota, cur.CPUQuota)
	keep(&merged.CPUShares, cur.CPUShares)
	keep(&merged.MemoryLimitInBytes, cur.MemoryLimitInBytes)
	keep(&merged.MemorySwapLimitInBytes, cur.MemorySwapLimitInBytes)
	if merged.CpusetCPUs == "" {
		merged.CpusetCPUs = cur.CpusetCPUs
	}
	if merged.CpusetMems == "" {
		merged.CpusetMems = cur.CpusetMems
	}
	if len(merged.HugepageLimits) == 0 {
		merged.HugepageLimits = cur.HugepageLimits
	}
	if len(merged.Unified) == 0 {
		merged.Unified = cur.Unified
	}
	return merged
}
