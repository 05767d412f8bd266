package specgen

import (
	"fmt"
	"maps"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// applyResources copies LinuxContainerResources; zero means "not
// specified" for every field (CRI), so zero values are left unset.
func applyResources(s *specs.Spec, in Input, _ nsModes) error {
	r := in.Config.GetLinux().GetResources()
	if r == nil {
		return nil
	}
	res, err := Resources(r)
	if err != nil {
		return err
	}
	res.Devices = s.Linux.Resources.Devices
	s.Linux.Resources = res
	adj := int(r.GetOomScoreAdj())
	if in.OOMScoreAdjMin != nil && adj < *in.OOMScoreAdjMin {
		adj = *in.OOMScoreAdjMin
	}
	s.Process.OOMScoreAdj = &adj
	return nil
}

// Resources converts CRI container resources to their OCI form, for
// CreateContainer and UpdateContainerResources alike. oom_score_adj is a
// process attribute, not a cgroup one, and is not part of the result.
func Resources(r *runtime.LinuxContainerResources) (*specs.LinuxResources, error) {
	res := &specs.LinuxResources{}
	cpu := &specs.LinuxCPU{Cpus: r.GetCpusetCpus(), Mems: r.GetCpusetMems()}
	if v := r.GetCpuShares(); v > 0 {
		u := uint64(v)
		cpu.Shares = &u
	}
	if v := r.GetCpuQuota(); v != 0 {
		cpu.Quota = &v
	}
	if v := r.GetCpuPeriod(); v > 0 {
		u := uint64(v)
		cpu.Period = &u
	}
	if *cpu != (specs.LinuxCPU{}) {
		res.CPU = cpu
	}
	if r.GetMemoryLimitInBytes() < 0 || r.GetMemorySwapLimitInBytes() < 0 {
		return nil, fmt.Errorf("negative memory limit: %w", errdefs.ErrInvalidArgument)
	}
	if v := r.GetMemoryLimitInBytes(); v > 0 {
		res.Memory = &specs.LinuxMemory{Limit: &v}
		// Swap only when asked: the runtime otherwise leaves the
		// cgroup's swap limit alone.
		if sw := r.GetMemorySwapLimitInBytes(); sw > 0 {
			if sw < v {
				return nil, fmt.Errorf("memory_swap_limit_in_bytes %d below memory_limit_in_bytes %d: %w", sw, v, errdefs.ErrInvalidArgument)
			}
			res.Memory.Swap = &sw
		}
	}
	for _, h := range r.GetHugepageLimits() {
		if h.GetPageSize() == "" {
			return nil, fmt.Errorf("hugepage limit without page_size: %w", errdefs.ErrInvalidArgument)
		}
		res.HugepageLimits = append(res.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	if len(r.GetUnified()) > 0 {
		// cgroup v2 only: runc refuses it on v1 hosts, and kubelet sends it
		// only to nodes that run v2.
		res.Unified = maps.Clone(r.GetUnified())
	}
	return res, nil
}

// applySysctls accepts only namespaced sysctls: anything else would change
// the node for every pod. Kernel IPC keys need the pod's own IPC
// namespace, net.* its own network namespace.
func applySysctls(s *specs.Spec, in Input, m nsModes) error {
	sysctls := in.Sandbox.GetLinux().GetSysctls()
	if len(sysctls) == 0 {
		return nil
	}
	s.Linux.Sysctl = make(map[string]string, len(sysctls))
	for k, v := range sysctls {
		// Accept the slash form kubelet also allows (net/ipv4/ip_forward).
		key := strings.ReplaceAll(k, "/", ".")
		ns := sysctlNamespace(key)
		switch {
		case ns == "":
			return fmt.Errorf("sysctl %q is not namespaced: %w", k, errdefs.ErrInvalidArgument)
		case ns == "ipc" && m.hostIPC:
			return fmt.Errorf("sysctl %q needs the pod's own IPC namespace: %w", k, errdefs.ErrInvalidArgument)
		case ns == "net" && m.hostNetwork:
			return fmt.Errorf("sysctl %q needs the pod's own network namespace: %w", k, errdefs.ErrInvalidArgument)
		}
		s.Linux.Sysctl[key] = v
	}
	return nil
}

// sysctlNamespace returns "ipc", "net" or "" (not namespaced), following
// Kubernetes' list of namespaced sysctls.
func sysctlNamespace(key string) string {
	switch {
	case key == "kernel.sem", strings.HasPrefix(key, "kernel.shm"),
		strings.HasPrefix(key, "kernel.msg"), strings.HasPrefix(key, "fs.mqueue."):
		return "ipc"
	case strings.HasPrefix(key, "net."):
		return "net"
	}
	return ""
}
