package server

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/checkpoint"
	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/sandbox/rollback"
)

// RestorePod creates a new pod sandbox from a pod checkpoint (made by
// CheckpointPod, here or on another node) and in it one CREATED container
// per checkpointed container, each restoring its process when started.
// The sandbox is the request's config (kubelet's, with the new UID, cgroup
// parent and log directory), or the checkpointed one when the request has
// none. Saved volume contents are copied into the host paths the request's
// mounts give for the same container paths before any container exists.
// On error, the sandbox and containers made so far are removed (CRI).
func (s *Server) RestorePod(ctx context.Context, r *runtime.RestorePodRequest) (_ *runtime.RestorePodResponse, retErr error) {
	if keys := slices.Sorted(maps.Keys(r.GetOptions())); len(keys) > 0 {
		return nil, fmt.Errorf("restore option %q is not supported (berth has none): %w", keys[0], errdefs.ErrInvalidArgument)
	}
	path := r.GetCheckpointPath()
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("checkpoint_path %q must be an absolute path: %w", path, errdefs.ErrInvalidArgument)
	}
	dump, err := checkpoint.ReadPodDump(path)
	if err != nil {
		return nil, err
	}
	cfgs := r.GetContainerConfigs()
	byName, err := matchRestoreContainers(dump, cfgs)
	if err != nil {
		return nil, err
	}
	podCfg := r.GetConfig()
	if podCfg == nil {
		podCfg = &runtime.PodSandboxConfig{}
		if err := protojson.Unmarshal(dump.Config, podCfg); err != nil {
			return nil, fmt.Errorf("pod checkpoint %q: pod config: %v: %w", path, err, errdefs.ErrInvalidArgument)
		}
	}
	if _, err := s.criu.Get(ctx); err != nil {
		return nil, err
	}
	for _, cfg := range cfgs {
		if sharesPID(cfg) {
			return nil, fmt.Errorf("restore container %q: %w", cfg.GetMetadata().GetName(), errSharedPIDRestore)
		}
		if err := s.checkRestoreProcess(ctx, cfg, byName[cfg.GetMetadata().GetName()]); err != nil {
			return nil, err
		}
	}
	targets, err := volumeTargets(byName, cfgs)
	if err != nil {
		return nil, err
	}
	sbResp, err := s.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: r.GetRuntimeHandler()})
	if err != nil {
		return nil, fmt.Errorf("restore pod: %w", err)
	}
	id := sbResp.GetPodSandboxId()
	cl := rollback.New(interceptor.Logger(ctx))
	defer cl.OnError(ctx, &retErr)
	cl.Add("remove pod", func(ctx context.Context) error {
		_, err := s.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: id})
		return err
	})
	for _, vol := range dump.Volumes {
		for _, dst := range targets[vol.Name] {
			if err := checkpoint.ApplyVolume(ctx, filepath.Join(path, vol.Archive), dst); err != nil {
				return nil, fmt.Errorf("restore pod %q: %w", id, err)
			}
		}
	}
	resp := &runtime.RestorePodResponse{PodSandboxId: id}
	for _, cfg := range cfgs {
		pc := byName[cfg.GetMetadata().GetName()]
		c := proto.Clone(cfg).(*runtime.ContainerConfig)
		c.Image = &runtime.ImageSpec{Image: filepath.Join(path, pc.Archive)}
		cr, err := s.CreateContainer(ctx, &runtime.CreateContainerRequest{PodSandboxId: id, Config: c, SandboxConfig: podCfg})
		if err != nil {
			return nil, fmt.Errorf("restore container %q of pod %q: %w", pc.Name, id, err)
		}
		resp.RestoredContainers = append(resp.RestoredContainers, &runtime.RestoredContainer{Name: pc.Name, ContainerId: cr.GetContainerId()})
	}
	interceptor.Logger(ctx).Info("pod restored", "sandbox_id", id, "from", path, "checkpointed_sandbox", dump.SandboxID)
	return resp, nil
}

// matchRestoreContainers pairs each requested config with the checkpoint's
// container of the same metadata name; the names must be exactly the
// checkpoint's, each once.
func matchRestoreContainers(dump *checkpoint.PodDump, cfgs []*runtime.ContainerConfig) (map[string]*checkpoint.PodContainer, error) {
	if len(cfgs) == 0 {
		return nil, fmt.Errorf("restore pod: container_configs is empty: %w", errdefs.ErrInvalidArgument)
	}
	byName := map[string]*checkpoint.PodContainer{}
	for i := range dump.Containers {
		byName[dump.Containers[i].Name] = &dump.Containers[i]
	}
	seen := map[string]bool{}
	for _, c := range cfgs {
		name := c.GetMetadata().GetName()
		switch {
		case name == "":
			return nil, fmt.Errorf("restore pod: a container config has no metadata.name: %w", errdefs.ErrInvalidArgument)
		case seen[name]:
			return nil, fmt.Errorf("restore pod: container %q configured twice: %w", name, errdefs.ErrInvalidArgument)
		case byName[name] == nil:
			return nil, fmt.Errorf("restore pod: the checkpoint has no container %q: %w", name, errdefs.ErrInvalidArgument)
		}
		seen[name] = true
	}
	for name := range byName {
		if !seen[name] {
			return nil, fmt.Errorf("restore pod: no config for checkpointed container %q: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return byName, nil
}

// checkRestoreProcess refuses a config whose description of the process
// (image, command, args, working directory, environment) contradicts the
// checkpoint: the checkpointed process resumes, so these cannot change it,
// and a mismatch means the wrong checkpoint or the wrong pod spec.
func (s *Server) checkRestoreProcess(ctx context.Context, cfg *runtime.ContainerConfig, pc *checkpoint.PodContainer) error {
	name := pc.Name
	mismatch := func(what string, got, want any) error {
		return fmt.Errorf("restore container %q: %s %v does not match the checkpoint's %v: %w", name, what, got, want, errdefs.ErrInvalidArgument)
	}
	if ref := cfg.GetImage().GetImage(); ref != "" && ref != pc.Image {
		img, err := s.images.Get(ctx, ref)
		if err != nil {
			return fmt.Errorf("restore container %q: image %q: %w", name, ref, err)
		}
		if img.ID != pc.ImageID && imageRef(img) != pc.ImageRef {
			return mismatch("image", ref, pc.Image)
		}
	}
	switch args := append(slices.Clone(cfg.GetCommand()), cfg.GetArgs()...); {
	case len(cfg.GetCommand()) > 0 && !slices.Equal(args, pc.Args):
		return mismatch("command", args, pc.Args)
	case len(cfg.GetCommand()) == 0 && len(args) > 0 &&
		(len(args) > len(pc.Args) || !slices.Equal(args, pc.Args[len(pc.Args)-len(args):])):
		return mismatch("args", args, pc.Args)
	}
	if wd := cfg.GetWorkingDir(); wd != "" && wd != pc.Cwd {
		return mismatch("working directory", wd, pc.Cwd)
	}
	for _, kv := range cfg.GetEnvs() {
		if e := kv.GetKey() + "=" + string(kv.GetValue()); !slices.Contains(pc.Env, e) {
			return mismatch("environment", e, "environment")
		}
	}
	return nil
}

// volumeTargets maps each saved volume to the host paths the restore
// configs mount at the container paths the checkpoint had it at; a
// checkpointed volume mount missing from the request is refused, as the
// restored processes may hold files open in it.
func volumeTargets(byName map[string]*checkpoint.PodContainer, cfgs []*runtime.ContainerConfig) (map[string][]string, error) {
	out := map[string][]string{}
	for _, cfg := range cfgs {
		pc := byName[cfg.GetMetadata().GetName()]
		for _, vm := range pc.Mounts {
			i := slices.IndexFunc(cfg.GetMounts(), func(m *runtime.Mount) bool {
				return filepath.Clean(m.GetContainerPath()) == filepath.Clean(vm.ContainerPath)
			})
			if i < 0 || cfg.GetMounts()[i].GetHostPath() == "" || !filepath.IsAbs(cfg.GetMounts()[i].GetHostPath()) {
				return nil, fmt.Errorf("restore container %q: its config lacks the volume mount at %q that the checkpoint has: %w",
					pc.Name, vm.ContainerPath, errdefs.ErrInvalidArgument)
			}
			hp := filepath.Clean(cfg.GetMounts()[i].GetHostPath())
			if !slices.Contains(out[vm.Volume], hp) {
				out[vm.Volume] = append(out[vm.Volume], hp)
			}
		}
	}
	return out, nil
}
