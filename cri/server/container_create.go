package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/specgen"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/sandbox/rollback"
)

// containerKey is the name a container reserves: unique per pod by
// metadata name and attempt, as kubelet expects.
func containerKey(sandboxID string, m *runtime.ContainerMetadata) string {
	return strings.Join([]string{"ctr", sandboxID, m.GetName(), fmt.Sprint(m.GetAttempt())}, "_")
}

func validateContainerConfig(c *runtime.ContainerConfig) error {
	switch {
	case c == nil:
		return fmt.Errorf("container config is required: %w", errdefs.ErrInvalidArgument)
	case c.GetMetadata() == nil || c.GetMetadata().GetName() == "":
		return fmt.Errorf("container config metadata.name is required: %w", errdefs.ErrInvalidArgument)
	case c.GetImage() == nil || c.GetImage().GetImage() == "":
		return fmt.Errorf("container config image.image is required: %w", errdefs.ErrInvalidArgument)
	}
	if _, err := criStopSignal(c.GetStopSignal()); err != nil {
		return err
	}
	return noNUL(containerNames(c))
}

// logPath joins the pod's log directory and the container's relative log
// path, refusing a path that leaves the directory.
func logPath(dir, rel string) (string, error) {
	if rel == "" {
		return "", nil
	}
	if dir == "" {
		return "", fmt.Errorf("log_path %q given but the pod has no log_directory: %w", rel, errdefs.ErrInvalidArgument)
	}
	p := filepath.Join(dir, rel)
	if r, err := filepath.Rel(dir, p); err != nil || r == "." || r == ".." || strings.HasPrefix(r, "../") {
		return "", fmt.Errorf("log_path %q escapes the pod log directory %q: %w", rel, dir, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// containerPlan is what the steps of CreateContainer share: each reads
// what the earlier ones set, and records the undo of what it makes in cl.
type containerPlan struct {
	id      string
	name    string                   // the reserved name
	cfg     *runtime.ContainerConfig // the request's, or the checkpoint's when restoring
	sb      store.Sandbox
	img     imagesvc.Image
	logFile string
	restore *restoreSource // nil unless restoring from a checkpoint
	rec     store.Container
	shim    task.Pending
	volumes []specs.Mount
	cl      *rollback.Steps
}

// CreateContainer builds the container's rootfs, bundle and shim, and has
// the OCI runtime create it, so StartContainer only has to start it.
func (s *Server) CreateContainer(ctx context.Context, r *runtime.CreateContainerRequest) (_ *runtime.CreateContainerResponse, retErr error) {
	p := &containerPlan{cfg: r.GetConfig()}
	if err := validateContainerConfig(p.cfg); err != nil {
		return nil, err
	}
	ctx, cancel := detachCreate(ctx)
	defer cancel()
	// An image that is a checkpoint archive restores the container from it.
	restore, err := s.openRestore(ctx, p.cfg)
	if err != nil {
		return nil, err
	}
	defer restore.discard()
	if restore != nil {
		p.restore, p.cfg = restore, restore.config
	}
	sb, unlockPod, err := s.lockReadySandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	defer unlockPod()
	p.sb = sb
	if p.logFile, err = logPath(r.GetSandboxConfig().GetLogDirectory(), p.cfg.GetLogPath()); err != nil {
		return nil, err
	}
	if p.img, err = s.images.Get(ctx, p.cfg.GetImage().GetImage()); err != nil {
		return nil, fmt.Errorf("image %q: %w", p.cfg.GetImage().GetImage(), err)
	}

	// Unblocked last, once the container is visible: a plugin that
	// connects meanwhile is synchronised with it or gets its event.
	defer s.nri.BlockSync()()
	p.id = newID()
	defer s.creating.add(p.id)()
	ctx = interceptor.With(ctx, "container_id", p.id)
	log := interceptor.Logger(ctx)
	p.cl = rollback.New(log)
	defer p.cl.OnError(ctx, &retErr)
	p.name = containerKey(sb.ID, p.cfg.GetMetadata())
	// Creates in a pod hold its lock, so a holder of the name has ended.
	existing, err := s.reserveOrExisting(p.name, p.id, func(holder string) bool { return s.containerDone(holder, sb.ID, r.GetConfig()) })
	if err != nil {
		return nil, fmt.Errorf("reserve container name %q: %w", p.cfg.GetMetadata().GetName(), err)
	}
	if existing != "" {
		log.Info("container creation retried: returning the container made meanwhile", "existing_id", existing)
		return &runtime.CreateContainerResponse{ContainerId: existing}, nil
	}
	p.cl.Add("release name", func(context.Context) error { s.store.Release(p.name, p.id); return nil })
	unlock := s.locks.lock(p.id)
	defer unlock()

	for _, step := range []func(context.Context, *containerPlan) error{
		s.recordContainer, // first, so a daemon killed later finds what to clean up
		s.spawnShim,
		s.prepareRootfs,
		s.prepareContainerVolumes,
		s.writeContainerSpec,
		s.createTask,
	} {
		if err := step(ctx, p); err != nil {
			return nil, err
		}
	}
	if c, err := s.store.Container(p.id); err == nil {
		s.nri.PostCreateContainer(ctx, sb, c)
	}
	s.containerEvent(p.id, sb.ID, runtime.ContainerEventType_CONTAINER_CREATED_EVENT)
	log.Info("container created", "name", p.cfg.GetMetadata().GetName(), "image", p.rec.Image)
	return &runtime.CreateContainerResponse{ContainerId: p.id}, nil
}

// recordContainer persists the container's record, state CREATED, before
// anything of it exists, and makes its bundle dir.
func (s *Server) recordContainer(ctx context.Context, p *containerPlan) error {
	var err error
	if p.cfg, err = s.resolveImageMounts(ctx, p.cfg); err != nil {
		return err
	}
	bundle := s.bundleDir(p.id)
	p.rec = store.Container{
		ContainerMeta: store.ContainerMeta{
			ID:             p.id,
			SandboxID:      p.sb.ID,
			Name:           p.name,
			Metadata:       store.ContainerMetadata{Name: p.cfg.GetMetadata().GetName(), Attempt: p.cfg.GetMetadata().GetAttempt()},
			Labels:         p.cfg.GetLabels(),
			Annotations:    p.cfg.GetAnnotations(),
			Config:         p.cfg,
			Image:          p.cfg.GetImage().GetImage(),
			ImageID:        p.img.ID,
			ImageRef:       imageRef(p.img),
			RuntimeHandler: p.sb.RuntimeHandler,
			LogPath:        p.logFile,
			StopSignal:     p.img.Config.Config.StopSignal,
			Bundle:         bundle,
			Rootfs:         filepath.Join(bundle, "rootfs"),
			CreatedAt:      time.Now().UnixNano(),
			Restore:        p.restore != nil,
		},
		Status: store.ContainerStatus{
			State:     store.ContainerCreated,
			Resources: store.ResourcesFromCRI(p.cfg.GetLinux().GetResources()),
		},
	}
	// The config's stop signal wins over the image's; validated above.
	if sig, _ := criStopSignal(p.cfg.GetStopSignal()); sig != "" {
		p.rec.StopSignal = sig
	}
	if err := s.store.AddContainer(p.rec); err != nil {
		return err
	}
	p.cl.Add("delete record", func(context.Context) error {
		if err := s.store.DeleteContainer(p.id); err != nil {
			return err
		}
		s.stats.ForgetContainer(p.id)
		return nil
	})
	p.cl.Add("remove bundle", func(context.Context) error { return os.RemoveAll(bundle) })
	if err := os.MkdirAll(p.rec.Rootfs, 0o700); err != nil {
		return fmt.Errorf("create bundle of container %q: %w", p.id, err)
	}
	return nil
}

// spawnShim starts the shim while the rootfs and spec are made: its
// spawn, a fork/exec of a Go binary, is the largest cost of a create
// after the runtime's own, and needs nothing from those steps.
func (s *Server) spawnShim(ctx context.Context, p *containerPlan) error {
	p.shim = s.tasks.Spawn(ctx, p.rec)
	p.cl.Add("stop shim", p.shim.Discard)
	return nil
}

// prepareRootfs mounts the image's layers at the rootfs, applies a
// checkpoint's file changes and readies it for the pod's user namespace.
func (s *Server) prepareRootfs(ctx context.Context, p *containerPlan) error {
	if err := s.images.PrepareRootfs(ctx, p.id, p.img.ID, p.rec.Rootfs); err != nil {
		return fmt.Errorf("prepare rootfs of container %q: %w", p.id, err)
	}
	p.cl.Add("remove rootfs", func(ctx context.Context) error { return s.images.RemoveRootfs(ctx, p.id, p.rec.Rootfs) })
	if err := p.restore.prepare(p.rec.Bundle, p.rec.Rootfs); err != nil {
		return fmt.Errorf("restore rootfs of container %q: %w", p.id, err)
	}
	if err := prepareUsernsRootfs(p.sb.Config, p.rec.Bundle, p.rec.Rootfs); err != nil {
		return fmt.Errorf("prepare rootfs of container %q for its user namespace: %w", p.id, err)
	}
	return nil
}

func (s *Server) prepareContainerVolumes(ctx context.Context, p *containerPlan) error {
	var err error
	if p.volumes, err = s.prepareVolumes(ctx, p.rec, p.cfg, p.img.Config.Config.Volumes, p.cl); err != nil {
		return fmt.Errorf("prepare volumes of container %q: %w", p.id, err)
	}
	return nil
}

// writeContainerSpec writes the bundle's config.json and makes the log's
// dir.
func (s *Server) writeContainerSpec(ctx context.Context, p *containerPlan) error {
	adjust := func(spec *specs.Spec) error { return s.adjustContainerSpec(ctx, p, spec) }
	if err := s.writeSpec(p.rec, p.cfg, p.sb.Config, p.sb, p.img.Config.Config, p.volumes, adjust); err != nil {
		return err
	}
	if p.logFile != "" {
		if err := os.MkdirAll(filepath.Dir(p.logFile), 0o755); err != nil {
			return fmt.Errorf("create log dir of container %q: %w", p.id, err)
		}
	}
	return nil
}

// createTask has the shim create the container through the OCI runtime,
// records its pid and hands it to the task manager to watch.
func (s *Server) createTask(ctx context.Context, p *containerPlan) error {
	restoreFrom := p.restore.imagesDir()
	pid, err := p.shim.Create(ctx, task.CreateOpts{
		Stdin: p.cfg.GetStdin(), StdinOnce: p.cfg.GetStdinOnce(), Terminal: p.cfg.GetTty(),
		RestoreFrom: restoreFrom, CriuPath: s.criuPathFor(ctx, restoreFrom),
	})
	if err != nil {
		return err
	}
	p.cl.Add("destroy shim", p.shim.Destroy)
	if _, err := s.store.UpdateContainerStatus(p.id, func(st store.ContainerStatus) (store.ContainerStatus, error) {
		st.Pid = pid
		shim := p.shim.Shim()
		st.ShimPid, st.ShimStart = shim.Pid, shim.Start
		return st, nil
	}); err != nil {
		return err
	}
	p.shim.Watch()
	return nil
}

// writeSpec generates the container's spec, has adjust change it last,
// and writes it to the bundle.
func (s *Server) writeSpec(rec store.Container, cfg *runtime.ContainerConfig, podCfg *runtime.PodSandboxConfig, sb store.Sandbox, imgCfg imageConfig, volumes []specs.Mount, adjust func(*specs.Spec) error) error {
	ns := specgen.SandboxNamespaces{Net: sb.Status.Pod.NetNS, IPC: sb.Status.Pod.IPCNS, UTS: sb.Status.Pod.UTSNS}
	files := specgen.PodFiles{Hostname: sb.Status.Pod.HostnamePath, Hosts: sb.Status.Pod.HostsPath, Resolv: sb.Status.Pod.ResolvPath, Shm: sb.Status.Pod.ShmPath}
	if files.Shm == "" {
		// A host-IPC pod shares the host's /dev/shm.
		files.Shm = "/dev/shm"
	}
	switch cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() {
	case runtime.NamespaceMode_POD:
		ns.PID = s.sandboxes.PidNSPath(controllerPod(sb))
	case runtime.NamespaceMode_TARGET:
		target, err := s.store.Container(cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetTargetId())
		if err != nil {
			return fmt.Errorf("pid namespace target: %w", err)
		}
		if target.Status.State != store.ContainerRunning || target.Status.Pid == 0 {
			return fmt.Errorf("pid namespace target %q is not running: %w", target.ID, errdefs.ErrFailedPrecondition)
		}
		ns.PID = fmt.Sprintf("/proc/%d/ns/pid", target.Status.Pid)
	}
	if _, ok := specgen.PodUserns(podCfg); ok && sb.Status.Pod.InfraPID > 0 {
		ns.User = fmt.Sprintf("/proc/%d/ns/user", sb.Status.Pod.InfraPID)
	}
	spec, err := specgen.Generate(specgen.Input{
		ID:             rec.ID,
		Config:         cfg,
		Sandbox:        podCfg,
		Image:          imgCfg,
		RootfsPath:     rec.Rootfs,
		Users:          specgen.NewRootfsUsers(rec.Rootfs),
		Namespaces:     ns,
		PodFiles:       files,
		ExtraMounts:    volumes,
		CgroupParent:   sb.CgroupParent,
		SystemdCgroup:  s.cfg.CgroupDriver == cgroups.DriverSystemd,
		CDI:            s.cdi,
		OOMScoreAdjMin: s.oomScoreAdjMin,
		AllCaps:        s.allCaps,
		AppArmor:       s.apparmor,
		SELinux:        s.selinux,

		RecursiveReadOnly: s.handlerFeatures(rec.RuntimeHandler).RecursiveReadOnly,
	})
	if err != nil {
		return fmt.Errorf("generate spec of container %q: %w", rec.ID, err)
	}
	if err := adjust(spec); err != nil {
		return err
	}
	if spec.Linux != nil {
		s.dropUnsupported(spec.Linux.Resources)
	}
	if v := s.handlerFeatures(rec.RuntimeHandler).OCIVersion; v != "" {
		spec.Version = v // a runtime that refuses berth's own (runtime_features.go)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode spec of container %q: %w", rec.ID, err)
	}
	if err := os.WriteFile(filepath.Join(rec.Bundle, "config.json"), data, 0o600); err != nil {
		return fmt.Errorf("write spec of container %q: %w", rec.ID, err)
	}
	return nil
}

// lockReadySandbox locks the sandbox named by id (or a unique prefix) and
// returns its record as it is under the lock, refusing one that is not
// ready: containers may only join a pod that nothing is tearing down.
func (s *Server) lockReadySandbox(id string) (store.Sandbox, func(), error) {
	sb, err := s.store.Sandbox(id)
	if err != nil {
		return store.Sandbox{}, nil, err
	}
	if s.creating.has(sb.ID) {
		// Its RunPodSandbox (an NRI plugin, say) is still at work.
		return store.Sandbox{}, nil, fmt.Errorf("sandbox %q is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	unlock := s.locks.lock(sb.ID)
	if sb, err = s.store.Sandbox(sb.ID); err != nil {
		unlock()
		return store.Sandbox{}, nil, err
	}
	if sb.Status.State != store.SandboxReady {
		unlock()
		return store.Sandbox{}, nil, fmt.Errorf("sandbox %q is not ready: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	return sb, unlock, nil
}
