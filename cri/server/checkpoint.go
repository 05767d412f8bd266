package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/checkpoint"
	"github.com/berth-runtime/berth/cri/interceptor"
	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/cri/task"
	"github.com/berth-runtime/berth/shim/api"
)

func (s *Server) checkpointsDir() string { return filepath.Join(s.cfg.State, "checkpoints") }

// upperDir is the container's overlay upper directory, where imagesvc
// keeps its writable layer (Root/containers/<id>/upper).
func (s *Server) upperDir(id string) string {
	return filepath.Join(s.cfg.Root, "containers", id, "upper")
}

// CheckpointContainer dumps a running container with CRIU into one
// archive at the request's location, in CRI-O's layout. The container
// keeps running (kubelet's forensic checkpoint expects that).
func (s *Server) CheckpointContainer(ctx context.Context, r *runtime.CheckpointContainerRequest) (*runtime.CheckpointContainerResponse, error) {
	loc := r.GetLocation()
	if loc == "" || !filepath.IsAbs(loc) {
		return nil, fmt.Errorf("checkpoint location %q must be an absolute path: %w", loc, errdefs.ErrInvalidArgument)
	}
	c, err := s.store.Container(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(c.ID)
	defer unlock()
	// CRI: the timeout bounds the whole checkpoint; 0 means the runtime's
	// default, checkpoint_timeout, which bounds CRIU alone.
	if r.GetTimeout() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(r.GetTimeout())*time.Second)
		defer cancel()
	}
	bound := s.criuBound(ctx)
	if err := s.checkpointToArchive(ctx, c.ID, loc, true, bound); err != nil {
		return nil, err
	}
	interceptor.Logger(ctx).Info("container checkpointed", "container_id", c.ID, "location", loc)
	return &runtime.CheckpointContainerResponse{}, nil
}

// checkpointToArchive dumps container id (its lock held) to archive path,
// CRIU bounded by bound. With pause the container is frozen around the
// dump and the writable layer's copy, so that memory and files are of one
// instant; CheckpointPod pauses the pod's containers itself and passes
// false.
func (s *Server) checkpointToArchive(ctx context.Context, id, archive string, pause bool, bound time.Duration) (retErr error) {
	criu, err := s.criu.Get(ctx)
	if err != nil {
		return err
	}
	c, err := s.store.Container(id)
	if err != nil {
		return err
	}
	if c.Status.State != store.ContainerRunning {
		return fmt.Errorf("checkpoint container %q: it is %s, not running: %w", c.ID, c.Status.State, errdefs.ErrFailedPrecondition)
	}
	if c.Config.GetTty() {
		return fmt.Errorf("checkpoint container %q: containers with a terminal cannot be checkpointed: %w", c.ID, errdefs.ErrNotImplemented)
	}
	t := s.task(c.ID)
	if t == nil {
		return fmt.Errorf("checkpoint container %q: no shim: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if err := os.MkdirAll(s.checkpointsDir(), 0o700); err != nil {
		return fmt.Errorf("checkpoint container %q: %w", c.ID, err)
	}
	dir, err := os.MkdirTemp(s.checkpointsDir(), "dump-")
	if err != nil {
		return fmt.Errorf("checkpoint container %q: %w", c.ID, err)
	}
	defer os.RemoveAll(dir)
	spec, err := s.writeDumpFiles(c, dir)
	if err != nil {
		return err
	}
	if pause {
		if err := t.Pause(ctx); err != nil {
			return fmt.Errorf("pause container %q for checkpoint: %w", c.ID, err)
		}
		defer func() {
			// The container must never be left frozen, whatever ctx says.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := t.Resume(rctx); err != nil && retErr == nil {
				retErr = fmt.Errorf("resume container %q after checkpoint: %w", c.ID, err)
			}
		}()
	}
	cctx, cancel := criuCallContext(ctx, bound)
	defer cancel()
	err = t.Checkpoint(cctx, task.CheckpointOpts{
		ImagePath:    filepath.Join(dir, checkpoint.CheckpointDirectory),
		WorkPath:     dir,
		LeaveRunning: true,
		// An established TCP connection cannot follow the container to
		// another pod IP; CRIU refuses it and the error says so.
		TCPEstablished: false,
		CriuPath:       criu,
		Timeout:        bound,
	})
	if err != nil {
		return fmt.Errorf("checkpoint container %q: %w", c.ID, err)
	}
	if err := checkpoint.WriteRootfsDiff(s.upperDir(c.ID), dir, mountDestinations(spec)); err != nil {
		return fmt.Errorf("checkpoint container %q: %w", c.ID, err)
	}
	if err := checkpoint.WriteArchive(ctx, dir, archive); err != nil {
		return fmt.Errorf("checkpoint container %q: %w", c.ID, err)
	}
	return nil
}

// writeDumpFiles writes spec.dump, config.dump and bind.mounts for c.
func (s *Server) writeDumpFiles(c store.Container, dir string) (*specs.Spec, error) {
	spec, err := api.ReadSpec(c.Bundle)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", c.ID, err)
	}
	sb, err := s.store.Sandbox(c.SandboxID)
	if err != nil {
		return nil, err
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	meta, _ := json.Marshal(runtime.ContainerMetadata{Name: c.Metadata.Name, Attempt: c.Metadata.Attempt})
	labels, _ := json.Marshal(nonNil(c.Labels))
	annotations, _ := json.Marshal(nonNil(c.Annotations))
	for k, v := range map[string]string{
		checkpoint.AnnotationMetadata:      string(meta),
		checkpoint.AnnotationLabels:        string(labels),
		checkpoint.AnnotationAnnotations:   string(annotations),
		checkpoint.AnnotationSandboxID:     c.SandboxID,
		checkpoint.AnnotationSandboxName:   sb.Name,
		checkpoint.AnnotationContainerName: c.Metadata.Name,
		checkpoint.AnnotationContainerType: "container",
		checkpoint.AnnotationImageName:     c.Image,
		checkpoint.AnnotationLogPath:       c.LogPath,
		checkpoint.AnnotationName:          c.Name,
		checkpoint.AnnotationNamespace:     sb.Metadata.Namespace,
	} {
		spec.Annotations[k] = v
	}
	if err := checkpoint.WriteJSON(dir, checkpoint.SpecDumpFile, spec); err != nil {
		return nil, err
	}
	cfg := checkpoint.ContainerConfig{
		ID:              c.ID,
		Name:            c.Metadata.Name,
		RootfsImageName: c.Image,
		RootfsImageRef:  c.ImageRef,
		RootfsImage:     c.Image,
		OCIRuntime:      c.RuntimeHandler,
		CreatedTime:     time.Unix(0, c.CreatedAt).UTC(),
		CheckpointedAt:  time.Now().UTC(),
	}
	if err := checkpoint.WriteJSON(dir, checkpoint.ConfigDumpFile, cfg); err != nil {
		return nil, err
	}
	var binds []checkpoint.BindMount
	for _, m := range spec.Mounts {
		if m.Type != "bind" {
			continue
		}
		fi, err := os.Stat(m.Source)
		if err != nil {
			continue
		}
		ft := "file"
		if fi.IsDir() {
			ft = "directory"
		}
		binds = append(binds, checkpoint.BindMount{Source: m.Source, Destination: m.Destination, FileType: ft, Permissions: uint32(fi.Mode().Perm())})
	}
	if len(binds) > 0 {
		if err := checkpoint.WriteJSON(dir, checkpoint.BindMountsFile, binds); err != nil {
			return nil, err
		}
	}
	return spec, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// mountDestinations are the paths inside the container that are mounts,
// whose content is not the writable layer's.
func mountDestinations(spec *specs.Spec) []string {
	out := make([]string, 0, len(spec.Mounts))
	for _, m := range spec.Mounts {
		out = append(out, m.Destination)
	}
	return out
}
