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
// FailedPrecondition.
//
// Under the systemd driver the pod's cgroup is its slice, a unit kubelet
// made. On cgroup v2 berthd writes the slice's unified files, as runc's
// systemd manager (kubelet's) does after setting the unit's properties
// over D-Bus; berthd sets no unit properties, so the unit keeps kubelet's
// values, which a `systemctl daemon-reload` puts back. containerd and
// CRI-O only record the values and leave the slice to kubelet; berthd
// resizes it too so that a node without kubelet (crictl, tests) sees the
// limits in force, as it does under cgroupfs. systemd on cgroup v1 is
// FailedPrecondition: there a slice has no directory in every controller.
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
	parent := sb.Config.GetLinux().GetCgroupParent()
	if parent == "" {
		return nil, fmt.Errorf("sandbox %q has no cgroup of its own (its config names no cgroup_parent): %w", id, errdefs.ErrFailedPrecondition)
	}
	path, err := podCgroup(s.cfg.CgroupDriver, s.cg.Unified(), parent)
	if err != nil {
		return nil, fmt.Errorf("sandbox %q: %w", id, err)
	}
	if !s.cg.Exists(path) {
		return nil, fmt.Errorf("cgroup %q of sandbox %q does not exist: %w", parent, id, errdefs.ErrFailedPrecondition)
	}
	if err := s.nri.UpdatePodSandbox(ctx, sb, r.GetResources(), r.GetOverhead()); err != nil {
		return nil, err
	}
	if err := s.cg.Update(path, limits); err != nil {
		return nil, fmt.Errorf("update cgroup of sandbox %q: %w", id, err)
	}
	if _, err := s.store.UpdateSandboxStatus(id, func(st store.SandboxStatus) (store.SandboxStatus, error) {
		if r.GetResources() != nil {
			st.Resources = store.ResourcesFromCRI(r.GetResources())
		}
		if r.GetOverhead() != nil {
			st.Overhead = store.ResourcesFromCRI(r.GetOverhead())
		}
		return st, nil
	}); err != nil {
		return nil, fmt.Errorf("record resources of sandbox %q: %w", id, err)
	}
	if cur, err := s.store.Sandbox(id); err == nil {
		s.nri.PostUpdatePodSandbox(ctx, cur)
	}
	interceptor.Logger(ctx).Info("pod sandbox resources updated", "sandbox_id", id, "cgroup", parent)
	return &runtime.UpdatePodSandboxResourcesResponse{}, nil
}

// podCgroup is the cgroup, below the hierarchy root, of a pod whose
// cgroup_parent is parent: the path itself under cgroupfs, the slice under
// systemd (cgroup v2 only).
func podCgroup(driver string, unified bool, parent string) (string, error) {
	if driver != cgroups.DriverSystemd {
		return cgroups.Path(parent), nil
	}
	if !unified {
		return "", fmt.Errorf("pod slice %q on cgroup v1 (cgroup_driver systemd) is not resized by berthd: %w", parent, errdefs.ErrFailedPrecondition)
	}
	path, err := cgroups.SystemdSlicePath(parent)
	if err != nil {
		return "", err
	}
	if path == "/" {
		return "", fmt.Errorf("cgroup parent %q is the root slice: %w", parent, errdefs.ErrFailedPrecondition)
	}
	return path, nil
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
