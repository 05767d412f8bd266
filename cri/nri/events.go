package nri

import (
	"context"
	"fmt"

	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.opentelemetry.io/otel/attribute"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/tracing"
)

// The events below are raised where containerd raises them. A Host that
// is disabled answers each at once. Errors of events that may fail the
// CRI call name the plugin; the others (post-events, stop and remove
// notifications) are logged, as in containerd, since the change they
// report has happened.

// RunPodSandbox tells plugins of a pod whose namespaces and network are
// set up but which is not yet ready; an error fails RunPodSandbox.
func (h *Host) RunPodSandbox(ctx context.Context, sb store.Sandbox) (err error) {
	if h.a == nil {
		return nil
	}
	ctx, span := tracing.Start(ctx, "nri.RunPodSandbox", attribute.String("berth.sandbox_id", sb.ID))
	defer func() { tracing.End(span, err) }()
	return h.pluginError("RunPodSandbox", h.a.RunPodSandbox(ctx, &api.RunPodSandboxRequest{Pod: podSandbox(sb)}))
}

// StopPodSandbox tells plugins of a pod whose containers are stopped.
func (h *Host) StopPodSandbox(ctx context.Context, sb store.Sandbox) {
	if h.a == nil {
		return
	}
	h.logged(ctx, "StopPodSandbox", h.a.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: podSandbox(sb)}))
}

// RemovePodSandbox tells plugins of a pod being removed.
func (h *Host) RemovePodSandbox(ctx context.Context, sb store.Sandbox) {
	if h.a == nil {
		return
	}
	h.logged(ctx, "RemovePodSandbox", h.a.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: podSandbox(sb)}))
}

// UpdatePodSandbox tells plugins of the pod's new resources before they
// are applied (an error fails the call), and PostUpdatePodSandbox after.
func (h *Host) UpdatePodSandbox(ctx context.Context, sb store.Sandbox, res, overhead *runtime.LinuxContainerResources) error {
	if h.a == nil {
		return nil
	}
	_, err := h.a.UpdatePodSandbox(ctx, &api.UpdatePodSandboxRequest{
		Pod: podSandbox(sb), LinuxResources: criResources(res), OverheadLinuxResources: criResources(overhead),
	})
	return h.pluginError("UpdatePodSandbox", err)
}

// PostUpdatePodSandbox tells plugins the pod's resources were updated.
func (h *Host) PostUpdatePodSandbox(ctx context.Context, sb store.Sandbox) {
	if h.a == nil {
		return
	}
	h.logged(ctx, "PostUpdatePodSandbox", h.a.PostUpdatePodSandbox(ctx, &api.PostUpdatePodSandboxRequest{Pod: podSandbox(sb)}))
}

// CreateContainer asks plugins to adjust spec, the OCI spec of c about to
// be handed to the runtime, and applies what they ask in place; updates
// they ask for other containers are applied too. An adjustment refused
// by the adaptation (a conflict between plugins, a validator's veto) or
// one the spec cannot take fails the call, naming the plugin.
func (h *Host) CreateContainer(ctx context.Context, sb store.Sandbox, c store.Container, spec *specs.Spec) (err error) {
	if h.a == nil {
		return nil
	}
	ctx, span := tracing.Start(ctx, "nri.CreateContainer", attribute.String("berth.container_id", c.ID))
	defer func() { tracing.End(span, err) }()
	rpl, err := h.a.CreateContainer(ctx, &api.CreateContainerRequest{Pod: podSandbox(sb), Container: container(c, spec)})
	if err != nil {
		return h.pluginError("CreateContainer", err)
	}
	if adj := rpl.GetAdjust(); adj != nil {
		if err := adjustSpec(spec, adj, h.cdi); err != nil {
			return fmt.Errorf("apply NRI adjustment to container %q: %w", c.ID, err)
		}
		h.log.InfoContext(ctx, "NRI plugins adjusted container", "container_id", c.ID, "adjusted", describe(adj))
	}
	if _, err := h.apply(ctx, c.ID, rpl.GetUpdate()); err != nil {
		return fmt.Errorf("NRI CreateContainer of %q: %w", c.ID, err)
	}
	return nil
}

// PostCreateContainer tells plugins c was created.
func (h *Host) PostCreateContainer(ctx context.Context, sb store.Sandbox, c store.Container) {
	if h.a == nil {
		return
	}
	h.logged(ctx, "PostCreateContainer", h.a.PostCreateContainer(ctx, &api.PostCreateContainerRequest{Pod: podSandbox(sb), Container: container(c, readSpec(c))}))
}

// StartContainer tells plugins c is about to start; an error fails the
// start.
func (h *Host) StartContainer(ctx context.Context, sb store.Sandbox, c store.Container) error {
	if h.a == nil {
		return nil
	}
	return h.pluginError("StartContainer", h.a.StartContainer(ctx, &api.StartContainerRequest{Pod: podSandbox(sb), Container: container(c, readSpec(c))}))
}

// PostStartContainer tells plugins c started.
func (h *Host) PostStartContainer(ctx context.Context, sb store.Sandbox, c store.Container) {
	if h.a == nil {
		return
	}
	h.logged(ctx, "PostStartContainer", h.a.PostStartContainer(ctx, &api.PostStartContainerRequest{Pod: podSandbox(sb), Container: container(c, readSpec(c))}))
}

// UpdateContainer asks plugins about new resources res for c and returns
// the resources to apply: res as plugins adjusted it. Updates plugins ask
// for other containers are applied. An error fails the update.
func (h *Host) UpdateContainer(ctx context.Context, sb store.Sandbox, c store.Container, res *specs.LinuxResources) (_ *specs.LinuxResources, err error) {
	if h.a == nil {
		return res, nil
	}
	ctx, span := tracing.Start(ctx, "nri.UpdateContainer", attribute.String("berth.container_id", c.ID))
	defer func() { tracing.End(span, err) }()
	rpl, err := h.a.UpdateContainer(ctx, &api.UpdateContainerRequest{
		Pod: podSandbox(sb), Container: container(c, readSpec(c)), LinuxResources: api.FromOCILinuxResources(res, nil),
	})
	if err != nil {
		return nil, h.pluginError("UpdateContainer", err)
	}
	out := res
	for _, u := range rpl.GetUpdate() {
		if u.GetContainerId() == c.ID && u.GetLinux().GetResources() != nil {
			out = u.GetLinux().GetResources().ToOCI()
		}
	}
	if _, err := h.apply(ctx, c.ID, rpl.GetUpdate()); err != nil {
		return nil, fmt.Errorf("NRI UpdateContainer of %q: %w", c.ID, err)
	}
	return out, nil
}

// PostUpdateContainer tells plugins c's resources were updated.
func (h *Host) PostUpdateContainer(ctx context.Context, sb store.Sandbox, c store.Container) {
	if h.a == nil {
		return
	}
	h.logged(ctx, "PostUpdateContainer", h.a.PostUpdateContainer(ctx, &api.PostUpdateContainerRequest{Pod: podSandbox(sb), Container: container(c, readSpec(c))}))
}

// StopContainer tells plugins c stopped; updates they ask for other
// containers (resources c freed) are applied.
func (h *Host) StopContainer(ctx context.Context, sb store.Sandbox, c store.Container) {
	if h.a == nil {
		return
	}
	rpl, err := h.a.StopContainer(ctx, &api.StopContainerRequest{Pod: podSandbox(sb), Container: container(c, readSpec(c))})
	if err != nil {
		h.logged(ctx, "StopContainer", err)
		return
	}
	if _, err := h.apply(ctx, c.ID, rpl.GetUpdate()); err != nil {
		h.logged(ctx, "StopContainer", err)
	}
}

// RemoveContainer tells plugins c is being removed.
func (h *Host) RemoveContainer(ctx context.Context, sb store.Sandbox, c store.Container) {
	if h.a == nil {
		return
	}
	h.logged(ctx, "RemoveContainer", h.a.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: podSandbox(sb), Container: container(c, readSpec(c))}))
}

func (h *Host) logged(ctx context.Context, event string, err error) {
	if err != nil {
		h.log.WarnContext(ctx, "NRI event failed", "event", event, "error", h.pluginError(event, err))
	}
}
