package nri

import (
	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/specgen"
	"github.com/berth-runtime/berth/cri/store"
)

// podSandbox describes sb to plugins as containerd does: identity,
// labels, annotations, cgroup parent, the pod's resources and overhead,
// its namespaces and IPs.
func podSandbox(sb store.Sandbox) *api.PodSandbox {
	p := &api.PodSandbox{
		Id:             sb.ID,
		Name:           sb.Metadata.Name,
		Uid:            sb.Metadata.UID,
		Namespace:      sb.Metadata.Namespace,
		Labels:         api.DupStringMap(sb.Labels),
		Annotations:    api.DupStringMap(sb.Annotations),
		RuntimeHandler: sb.RuntimeHandler,
		Pid:            uint32(max(sb.Status.Pod.InfraPID, 0)), //nolint:gosec // clamped to 0 and a pid fits
		Ips:            append([]string(nil), sb.Status.IPs...),
		Linux: &api.LinuxPodSandbox{
			CgroupParent: sb.CgroupParent,
			CgroupsPath:  sb.CgroupParent,
		},
	}
	for typ, path := range map[string]string{"network": sb.Status.Pod.NetNS, "ipc": sb.Status.Pod.IPCNS, "uts": sb.Status.Pod.UTSNS} {
		if path != "" {
			p.Linux.Namespaces = append(p.Linux.Namespaces, &api.LinuxNamespace{Type: typ, Path: path})
		}
	}
	if sb.Config != nil {
		// As kubelet last sized the pod (at creation or by an update).
		cur := sb.CurrentConfig()
		p.Linux.PodResources = criResources(cur.GetLinux().GetResources())
		p.Linux.PodOverhead = criResources(cur.GetLinux().GetOverhead())
	}
	return p
}

// criResources converts CRI resources through the OCI form berth would
// apply, so plugins see the same values the runtime gets.
func criResources(r *runtime.LinuxContainerResources) *api.LinuxResources {
	if r == nil {
		return nil
	}
	oci, err := specgen.Resources(r)
	if err != nil {
		return nil
	}
	return api.FromOCILinuxResources(oci, nil)
}

// containerState maps berth's state to NRI's.
func containerState(c store.Container) api.ContainerState {
	switch c.Status.State {
	case store.ContainerCreated:
		return api.ContainerState_CONTAINER_CREATED
	case store.ContainerRunning:
		return api.ContainerState_CONTAINER_RUNNING
	case store.ContainerExited:
		return api.ContainerState_CONTAINER_STOPPED
	default:
		return api.ContainerState_CONTAINER_UNKNOWN
	}
}

// container describes c and its OCI spec to plugins. spec may be nil (a
// bundle already gone): the record's fields are still described.
func container(c store.Container, spec *specs.Spec) *api.Container {
	ctr := &api.Container{
		Id:            c.ID,
		PodSandboxId:  c.SandboxID,
		Name:          c.Metadata.Name,
		State:         containerState(c),
		Labels:        api.DupStringMap(c.Labels),
		Annotations:   api.DupStringMap(c.Annotations),
		Pid:           uint32(max(c.Status.Pid, 0)), //nolint:gosec // clamped to 0 and a pid fits
		CreatedAt:     c.CreatedAt,
		StartedAt:     c.Status.StartedAt,
		FinishedAt:    c.Status.FinishedAt,
		ExitCode:      c.Status.ExitCode,
		StatusReason:  c.Status.Reason,
		StatusMessage: c.Status.Message,
	}
	if spec == nil {
		return ctr
	}
	if spec.Annotations != nil {
		// The spec's annotations are what the container really carries
		// (CRI's plus berth's and earlier plugins').
		ctr.Annotations = api.DupStringMap(spec.Annotations)
	}
	ctr.Mounts = api.FromOCIMounts(spec.Mounts)
	ctr.Hooks = api.FromOCIHooks(spec.Hooks)
	if p := spec.Process; p != nil {
		ctr.Args = api.DupStringSlice(p.Args)
		ctr.Env = api.DupStringSlice(p.Env)
		ctr.User = &api.User{Uid: p.User.UID, Gid: p.User.GID, AdditionalGids: append([]uint32(nil), p.User.AdditionalGids...)}
		for _, rl := range p.Rlimits {
			ctr.Rlimits = append(ctr.Rlimits, &api.POSIXRlimit{Type: rl.Type, Hard: rl.Hard, Soft: rl.Soft})
		}
	}
	if l := spec.Linux; l != nil {
		ctr.Linux = &api.LinuxContainer{
			Namespaces:  api.FromOCILinuxNamespaces(l.Namespaces),
			Devices:     api.FromOCILinuxDevices(l.Devices),
			Resources:   api.FromOCILinuxResources(l.Resources, spec.Annotations),
			CgroupsPath: l.CgroupsPath,
			Sysctl:      api.DupStringMap(l.Sysctl),
			NetDevices:  api.FromOCILinuxNetDevices(l.NetDevices),
		}
		if l.Seccomp != nil {
			ctr.Linux.SeccompPolicy = api.FromOCILinuxSeccomp(l.Seccomp)
		}
		if p := spec.Process; p != nil {
			if p.OOMScoreAdj != nil {
				ctr.Linux.OomScoreAdj = api.Int(*p.OOMScoreAdj)
			}
			ctr.Linux.IoPriority = api.FromOCILinuxIOPriority(p.IOPriority)
			ctr.Linux.Scheduler = api.FromOCILinuxScheduler(p.Scheduler)
		}
	}
	return ctr
}
