package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/cgroups"
	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/specgen"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/shim/client"
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

// CreateContainer builds the container's rootfs, bundle and shim, and has
// the OCI runtime create it, so StartContainer only has to start it.
func (s *Server) CreateContainer(ctx context.Context, r *runtime.CreateContainerRequest) (_ *runtime.CreateContainerResponse, retErr error) {
	cfg := r.GetConfig()
	if err := validateContainerConfig(cfg); err != nil {
		return nil, err
	}
	// An image that is a checkpoint archive restores the container from it.
	restore, err := s.openRestore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer restore.discard()
	if restore != nil {
		cfg = restore.config
	}
	sb, unlockPod, err := s.lockReadySandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	defer unlockPod()
	logFile, err := logPath(r.GetSandboxConfig().GetLogDirectory(), cfg.GetLogPath())
	if err != nil {
		return nil, err
	}
	img, err := s.images.Get(ctx, cfg.GetImage().GetImage())
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", cfg.GetImage().GetImage(), err)
	}

	id := newID()
	ctx = interceptor.With(ctx, "container_id", id)
	log := interceptor.Logger(ctx)
	name := containerKey(sb.ID, cfg.GetMetadata())
	if _, err := s.store.Reserve(name, id); err != nil {
		return nil, fmt.Errorf("reserve container name %q: %w", cfg.GetMetadata().GetName(), err)
	}
	cl := &cleaner{log: log}
	defer cl.run(&retErr)
	cl.add("release name", func(context.Context) error { s.store.Release(name, id); return nil })
	unlock := s.locks.lock(id)
	defer unlock()

	var podCfg runtime.PodSandboxConfig
	if err := proto.Unmarshal(sb.Config, &podCfg); err != nil {
		return nil, fmt.Errorf("decode config of sandbox %q: %w", sb.ID, err)
	}
	if cfg, err = s.resolveImageMounts(ctx, cfg); err != nil {
		return nil, err
	}
	rawCfg, err := proto.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode container config: %w", err)
	}
	bundle := s.bundleDir(id)
	rec := store.Container{
		ID:             id,
		SandboxID:      sb.ID,
		Name:           name,
		Metadata:       store.ContainerMetadata{Name: cfg.GetMetadata().GetName(), Attempt: cfg.GetMetadata().GetAttempt()},
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		Config:         rawCfg,
		Image:          cfg.GetImage().GetImage(),
		ImageID:        img.ID,
		ImageRef:       imageRef(img),
		RuntimeHandler: sb.RuntimeHandler,
		LogPath:        logFile,
		StopSignal:     img.Config.Config.StopSignal,
		Bundle:         bundle,
		Rootfs:         filepath.Join(bundle, "rootfs"),
		CreatedAt:      time.Now().UnixNano(),
		Restore:        restore != nil,
		Status:         store.ContainerStatus{State: store.ContainerCreated},
	}
	if sig := cfg.GetStopSignal(); sig != runtime.Signal_SIGNAL_RUNTIME_DEFAULT {
		rec.StopSignal = strings.TrimPrefix(sig.String(), "SIGNAL_")
	}
	// Persisted first so a daemon killed from here on finds the record and
	// cleans up whatever the following steps made.
	if err := s.store.AddContainer(rec); err != nil {
		return nil, err
	}
	cl.add("delete record", func(context.Context) error { return s.store.DeleteContainer(id) })
	cl.add("remove bundle", func(context.Context) error { return os.RemoveAll(bundle) })
	if err := os.MkdirAll(rec.Rootfs, 0o700); err != nil {
		return nil, fmt.Errorf("create bundle of container %q: %w", id, err)
	}
	// The shim starts while the rootfs and spec are made: its spawn, a
	// fork/exec of a Go binary, is the largest cost here after the
	// runtime's own create, and needs nothing from those steps.
	shim := s.spawnShim(ctx, rec)
	cl.add("stop shim", shim.discard)
	if err := s.images.PrepareRootfs(ctx, id, img.ID, rec.Rootfs); err != nil {
		return nil, fmt.Errorf("prepare rootfs of container %q: %w", id, err)
	}
	cl.add("remove rootfs", func(ctx context.Context) error { return s.images.RemoveRootfs(ctx, id, rec.Rootfs) })
	if err := restore.prepare(rec.Bundle, rec.Rootfs); err != nil {
		return nil, fmt.Errorf("restore rootfs of container %q: %w", id, err)
	}
	if err := prepareUsernsRootfs(&podCfg, bundle, rec.Rootfs); err != nil {
		return nil, fmt.Errorf("prepare rootfs of container %q for its user namespace: %w", id, err)
	}
	volumes, err := s.prepareVolumes(ctx, rec, cfg, img.Config.Config.Volumes, cl)
	if err != nil {
		return nil, fmt.Errorf("prepare volumes of container %q: %w", id, err)
	}

	if err := s.writeSpec(rec, cfg, &podCfg, sb, img.Config.Config, volumes); err != nil {
		return nil, err
	}
	if logFile != "" {
		if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
			return nil, fmt.Errorf("create log dir of container %q: %w", id, err)
		}
	}
	t, pid, err := s.createInShim(ctx, shim, rec, cfg, restore.imagesDir())
	if err != nil {
		return nil, err
	}
	cl.add("destroy shim", func(ctx context.Context) error { return s.destroyTask(ctx, rec, t) })
	if _, err := s.store.UpdateContainer(id, func(c *store.Container) error { c.Status.Pid = pid; return nil }); err != nil {
		return nil, err
	}
	s.watch(rec, t)
	s.containerEvent(id, sb.ID, runtime.ContainerEventType_CONTAINER_CREATED_EVENT)
	log.Info("container created", "name", cfg.GetMetadata().GetName(), "image", rec.Image)
	return &runtime.CreateContainerResponse{ContainerId: id}, nil
}

func (s *Server) writeSpec(rec store.Container, cfg *runtime.ContainerConfig, podCfg *runtime.PodSandboxConfig, sb store.Sandbox, imgCfg imageConfig, volumes []specs.Mount) error {
	ns := specgen.SandboxNamespaces{Net: sb.Pod.NetNS, IPC: sb.Pod.IPCNS, UTS: sb.Pod.UTSNS}
	files := specgen.PodFiles{Hostname: sb.Pod.HostnamePath, Hosts: sb.Pod.HostsPath, Resolv: sb.Pod.ResolvPath, Shm: sb.Pod.ShmPath}
	if files.Shm == "" {
		// A host-IPC pod shares the host's /dev/shm.
		files.Shm = "/dev/shm"
	}
	switch cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() {
	case runtime.NamespaceMode_POD:
		ns.PID = s.sandboxes.PidNSPath(sb.Pod)
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
	if _, ok := specgen.PodUserns(podCfg); ok && sb.Pod.InfraPID > 0 {
		ns.User = fmt.Sprintf("/proc/%d/ns/user", sb.Pod.InfraPID)
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

		RecursiveReadOnly: s.features[rec.RuntimeHandler].RecursiveReadOnly,
	})
	if err != nil {
		return fmt.Errorf("generate spec of container %q: %w", rec.ID, err)
	}
	if spec.Linux != nil {
		s.dropUnsupported(spec.Linux.Resources)
	}
	if v := s.features[rec.RuntimeHandler].OCIVersion; v != "" {
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

// runtimeBinary resolves a handler's binary once per call: PATH may differ
// between the daemon and the shim's environment, so the shim gets a path.
func (s *Server) runtimeBinary(handler string) (string, error) {
	h, ok := s.cfg.Runtime.Handlers[handler]
	if !ok {
		return "", fmt.Errorf("runtime handler %q is not configured: %w", handler, errdefs.ErrFailedPrecondition)
	}
	p, err := exec.LookPath(h.Binary)
	if err != nil {
		return "", fmt.Errorf("runtime handler %q binary %q: %w", handler, h.Binary, errdefs.ErrFailedPrecondition)
	}
	return p, nil
}

// pendingShim is a shim being spawned for a container under creation.
type pendingShim struct {
	done chan struct{}
	cli  *client.Client
	err  error
	// taken is set once a task owns the client, so discard leaves it be.
	taken bool
}

func (s *Server) spawnShim(ctx context.Context, rec store.Container) *pendingShim {
	p := &pendingShim{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.cli, p.err = client.Start(ctx, client.StartOpts{
			ID: rec.ID, ShimBinary: s.shimPath, Socket: s.shimSocket(rec.ID), StateDir: rec.Bundle,
		})
		if p.err != nil {
			s.cleanupShim(context.WithoutCancel(ctx), rec)
			p.err = fmt.Errorf("start shim of container %q: %w", rec.ID, p.err)
		}
	}()
	return p
}

func (p *pendingShim) wait() (*client.Client, error) {
	<-p.done
	return p.cli, p.err
}

// discard stops a shim no task took over; it holds no container yet.
func (p *pendingShim) discard(ctx context.Context) error {
	cli, err := p.wait()
	if err != nil || p.taken {
		return nil
	}
	defer cli.Close()
	if err := cli.Shutdown(ctx); err != nil {
		return err
	}
	return cli.WaitGone(ctx)
}

// createInShim has the spawned shim create the container.
func (s *Server) createInShim(ctx context.Context, shim *pendingShim, rec store.Container, cfg *runtime.ContainerConfig, restoreFrom string) (*task, int, error) {
	bin, err := s.runtimeBinary(rec.RuntimeHandler)
	if err != nil {
		return nil, 0, err
	}
	cli, err := shim.wait()
	if err != nil {
		return nil, 0, err
	}
	shim.taken = true
	t := &task{client: cli, done: make(chan struct{})}
	pid, err := cli.Create(ctx, client.CreateOpts{
		Bundle:        rec.Bundle,
		RuntimeBinary: bin,
		RuntimeRoot:   s.cfg.HandlerRoot(rec.RuntimeHandler),
		LogPath:       rec.LogPath,
		Stdin:         cfg.GetStdin(),
		StdinOnce:     cfg.GetStdinOnce(),
		Terminal:      cfg.GetTty(),
		RestoreFrom:   restoreFrom,
		CriuPath:      s.criuPathFor(ctx, restoreFrom),
	})
	if err != nil {
		_ = cli.Shutdown(ctx)
		_ = cli.Close()
		s.cleanupShim(ctx, rec)
		return nil, 0, fmt.Errorf("create container %q: %w", rec.ID, err)
	}
	return t, pid, nil
}

// lockReadySandbox locks the sandbox named by id (or a unique prefix) and
// returns its record as it is under the lock, refusing one that is not
// ready: containers may only join a pod that nothing is tearing down.
func (s *Server) lockReadySandbox(id string) (store.Sandbox, func(), error) {
	sb, err := s.store.Sandbox(id)
	if err != nil {
		return store.Sandbox{}, nil, err
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
