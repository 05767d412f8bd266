package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protojson"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/checkpoint"
	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
	"github.com/berth-runtime/berth/shim/api"
)

// Options CheckpointPod accepts (the CRI leaves their keys to the runtime
// and requires unknown ones to be refused).
const (
	// podOptLeaveStopped "true" stops the pod's checkpointed containers
	// after the dump (they are resumed first, never left frozen): the
	// source of a migration must not run on beside its copy.
	podOptLeaveStopped = "leave-stopped"
	// podOptVolumes "writable" (the default) saves the contents of each
	// writable directory mount into the checkpoint; "none" saves none,
	// for volumes the restoring node already has.
	podOptVolumes = "volumes"
)

type podCheckpointOpts struct {
	leaveStopped bool
	volumes      bool
}

func parsePodCheckpointOpts(m map[string]string) (podCheckpointOpts, error) {
	o := podCheckpointOpts{volumes: true}
	for k, v := range m {
		switch {
		case k == podOptLeaveStopped && (v == "true" || v == "false"):
			o.leaveStopped = v == "true"
		case k == podOptVolumes && (v == "writable" || v == "none"):
			o.volumes = v == "writable"
		case k == podOptLeaveStopped || k == podOptVolumes:
			return o, fmt.Errorf("checkpoint option %s=%q: invalid value: %w", k, v, errdefs.ErrInvalidArgument)
		default:
			return o, fmt.Errorf("checkpoint option %q is not supported (berth knows %s, %s): %w",
				k, podOptLeaveStopped, podOptVolumes, errdefs.ErrInvalidArgument)
		}
	}
	return o, nil
}

// emptyOutputDir checks that dir is an absolute path to an existing,
// empty directory, as CheckpointPod's output_path must be.
func emptyOutputDir(dir string) error {
	if dir == "" || !filepath.IsAbs(dir) {
		return fmt.Errorf("checkpoint output_path %q must be an absolute path: %w", dir, errdefs.ErrInvalidArgument)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("checkpoint output_path %q must be an existing directory: %w", dir, errdefs.ErrInvalidArgument)
	}
	if len(entries) > 0 {
		return fmt.Errorf("checkpoint output_path %q is not empty: %w", dir, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CheckpointPod checkpoints the selected running containers of a pod as one
// consistent cut: every container is paused before any is dumped and all
// stay paused until the last dump, writable layer and volume copy are
// done; then all are resumed, whatever happened (CRI: the runtime never
// returns a frozen pod). The output directory gets a pod checkpoint in
// cri/checkpoint's pod layout, or nothing on failure.
func (s *Server) CheckpointPod(ctx context.Context, r *runtime.CheckpointPodRequest) (_ *runtime.CheckpointPodResponse, retErr error) {
	opts, err := parsePodCheckpointOpts(r.GetOptions())
	if err != nil {
		return nil, err
	}
	out := r.GetOutputPath()
	if err := emptyOutputDir(out); err != nil {
		return nil, err
	}
	ids := slices.Clone(r.GetContainerIds())
	if len(ids) == 0 {
		return nil, fmt.Errorf("checkpoint of pod %q names no containers: %w", r.GetPodSandboxId(), errdefs.ErrInvalidArgument)
	}
	slices.Sort(ids) // one lock order for every caller
	if i := duplicate(ids); i >= 0 {
		return nil, fmt.Errorf("container %q named twice: %w", ids[i], errdefs.ErrInvalidArgument)
	}
	sb, unlockPod, err := s.lockReadySandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, fmt.Errorf("checkpoint pod: %w", err)
	}
	defer unlockPod()
	if _, err := s.criu.Get(ctx); err != nil {
		return nil, err
	}
	// One bound for the whole cut: every container's dump shares it.
	criuDeadline := time.Now().Add(s.criuBound(ctx))
	ctrs := make([]store.Container, 0, len(ids))
	for _, id := range ids {
		unlock := s.locks.lock(id)
		defer unlock()
		c, err := s.podContainer(sb.ID, id)
		if err != nil {
			return nil, err
		}
		ctrs = append(ctrs, c)
	}
	defer func() {
		if retErr != nil {
			removeContents(out)
		}
	}()
	if err := s.dumpPod(ctx, sb, ctrs, out, opts, criuDeadline); err != nil {
		return nil, err
	}
	if opts.leaveStopped {
		for _, c := range ctrs {
			if err := s.stopContainer(interceptor.With(ctx, "container_id", c.ID), c, 0); err != nil {
				return nil, fmt.Errorf("stop checkpointed container %q: %w", c.ID, err)
			}
		}
	}
	interceptor.Logger(ctx).Info("pod checkpointed", "sandbox_id", sb.ID, "containers", len(ctrs), "location", out)
	return &runtime.CheckpointPodResponse{}, nil
}

func duplicate(sorted []string) int {
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return i
		}
	}
	return -1
}

// podContainer is container id, checked to be a running container of pod
// sandboxID with a shim.
func (s *Server) podContainer(sandboxID, id string) (store.Container, error) {
	c, err := s.store.Container(id)
	if err != nil {
		return c, err
	}
	switch {
	case c.SandboxID != sandboxID:
		return c, fmt.Errorf("container %q is not in pod %q: %w", id, sandboxID, errdefs.ErrInvalidArgument)
	case c.Status.State != store.ContainerRunning:
		return c, fmt.Errorf("checkpoint container %q: it is %s, not running: %w", id, c.Status.State, errdefs.ErrFailedPrecondition)
	case s.task(id) == nil:
		return c, fmt.Errorf("checkpoint container %q: no shim: %w", id, errdefs.ErrFailedPrecondition)
	}
	if sharesPID(c.Config) {
		// A pod checkpoint exists to be restored; this one could not be.
		return c, fmt.Errorf("checkpoint container %q: %w", id, errSharedPIDRestore)
	}
	return c, nil
}

// removeContents empties dir, which the caller owns and which was empty.
func removeContents(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// dumpPod pauses ctrs, writes their archives, the volumes and pod.dump into
// out, and resumes every container it paused. CRIU must be done by
// criuDeadline.
func (s *Server) dumpPod(ctx context.Context, sb store.Sandbox, ctrs []store.Container, out string, opts podCheckpointOpts, criuDeadline time.Time) (retErr error) {
	var paused []task.Task
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, t := range paused {
			if err := t.Resume(rctx); err != nil {
				retErr = errors.Join(retErr, fmt.Errorf("resume container after pod checkpoint: %w", err))
			}
		}
	}()
	for _, c := range ctrs {
		t := s.task(c.ID)
		if t == nil {
			return fmt.Errorf("checkpoint container %q: no shim: %w", c.ID, errdefs.ErrFailedPrecondition)
		}
		if err := t.Pause(ctx); err != nil {
			return fmt.Errorf("pause container %q for pod checkpoint: %w", c.ID, err)
		}
		paused = append(paused, t)
	}
	for _, sub := range []string{checkpoint.PodContainersDir, checkpoint.PodVolumesDir} {
		if err := os.Mkdir(filepath.Join(out, sub), 0o700); err != nil {
			return fmt.Errorf("checkpoint pod %q: %w", sb.ID, err)
		}
	}
	dump := checkpoint.PodDump{SandboxID: sb.ID, RuntimeHandler: sb.RuntimeHandler, CheckpointedAt: time.Now().UTC()}
	var err error
	if dump.Config, err = protojson.Marshal(sb.CurrentConfig()); err != nil {
		return fmt.Errorf("encode config of sandbox %q: %w", sb.ID, err)
	}
	vols := volumeSet{opts: opts}
	for i, c := range ctrs {
		pc, err := s.dumpPodContainer(ctx, c, out, i, &vols, criuDeadline)
		if err != nil {
			return err
		}
		dump.Containers = append(dump.Containers, pc)
	}
	if err := vols.write(ctx, out); err != nil {
		return fmt.Errorf("checkpoint pod %q: %w", sb.ID, err)
	}
	dump.Volumes = vols.list
	return checkpoint.WritePodDump(out, dump)
}

// dumpPodContainer writes container c's archive (the i'th of the pod) and
// describes it, registering its volumes with vols.
func (s *Server) dumpPodContainer(ctx context.Context, c store.Container, out string, i int, vols *volumeSet, criuDeadline time.Time) (checkpoint.PodContainer, error) {
	rel := filepath.Join(checkpoint.PodContainersDir, fmt.Sprintf("%d.tar", i))
	pc := checkpoint.PodContainer{Name: c.Metadata.Name, ID: c.ID, Archive: rel, Image: c.Image, ImageID: c.ImageID, ImageRef: c.ImageRef}
	var err error
	if pc.Config, err = protojson.Marshal(c.CurrentConfig()); err != nil {
		return pc, fmt.Errorf("encode config of container %q: %w", c.ID, err)
	}
	spec, err := api.ReadSpec(c.Bundle)
	if err != nil {
		return pc, fmt.Errorf("checkpoint container %q: %w", c.ID, err)
	}
	if p := spec.Process; p != nil {
		pc.Args, pc.Env, pc.Cwd = p.Args, p.Env, p.Cwd
	}
	left := time.Until(criuDeadline)
	if left <= 0 {
		return pc, fmt.Errorf("checkpoint container %q: no time left of the pod's CRIU bound: %w", c.ID, context.DeadlineExceeded)
	}
	if err := s.checkpointToArchive(ctx, c.ID, filepath.Join(out, rel), false, left); err != nil {
		return pc, err
	}
	for _, m := range c.Config.GetMounts() {
		if name := vols.add(m); name != "" {
			pc.Mounts = append(pc.Mounts, checkpoint.VolumeMount{ContainerPath: m.GetContainerPath(), Volume: name})
		}
	}
	return pc, nil
}

// volumeSet collects the pod's writable directory mounts, one volume per
// host directory however many containers mount it.
type volumeSet struct {
	opts   podCheckpointOpts
	byPath map[string]string // resolved host path -> volume name
	list   []checkpoint.PodVolume
}

// add registers m and returns its volume's name, "" for a mount that is
// not a saved volume (read-only, not a directory, or volumes off).
func (v *volumeSet) add(m *runtime.Mount) string {
	if !v.opts.volumes || m.GetReadonly() || m.GetHostPath() == "" {
		return ""
	}
	p, err := filepath.EvalSymlinks(m.GetHostPath())
	if err != nil {
		return ""
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		return ""
	}
	if name, ok := v.byPath[p]; ok {
		return name
	}
	if v.byPath == nil {
		v.byPath = map[string]string{}
	}
	name := fmt.Sprintf("v%d", len(v.list))
	v.byPath[p] = name
	v.list = append(v.list, checkpoint.PodVolume{
		Name: name, Archive: filepath.Join(checkpoint.PodVolumesDir, name+".tar"), Source: p,
	})
	return name
}

// write copies every volume's contents into out, while the pod is frozen.
func (v *volumeSet) write(ctx context.Context, out string) error {
	for _, vol := range v.list {
		if err := checkpoint.WriteVolume(ctx, vol.Source, filepath.Join(out, vol.Archive)); err != nil {
			return err
		}
	}
	return nil
}
