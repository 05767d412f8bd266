package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/checkpoint"
)

// restoreSource is a checkpoint a CreateContainer restores from, unpacked
// under the daemon's state dir until the container's bundle takes it.
type restoreSource struct {
	ckpt *checkpoint.Checkpoint
	// moved is set once the bundle took the unpacked checkpoint.
	moved bool
	// config is the CRI config the container is created with: the
	// request's, with the image, command and identity of the checkpoint.
	config *runtime.ContainerConfig
}

// restoreImagesIn is where the shim finds the CRIU images once the
// unpacked checkpoint moved into the bundle.
func restoreImagesIn(bundle string) string {
	return filepath.Join(bundle, "restore", checkpoint.CheckpointDirectory)
}

// openRestore returns the checkpoint a CreateContainer request restores
// from, or nil when its image is an ordinary image. An image that is a
// path on the node is a checkpoint archive, as CRI-O accepts it.
func (s *Server) openRestore(ctx context.Context, cfg *runtime.ContainerConfig) (*restoreSource, error) {
	img := cfg.GetImage().GetImage()
	if !filepath.IsAbs(img) {
		return nil, nil
	}
	if fi, err := os.Stat(img); err != nil || !fi.Mode().IsRegular() {
		return nil, nil
	}
	if _, err := s.criu.get(); err != nil {
		return nil, fmt.Errorf("restore from %q: %w", img, err)
	}
	if err := os.MkdirAll(s.checkpointsDir(), 0o700); err != nil {
		return nil, fmt.Errorf("restore from %q: %w", img, err)
	}
	dest := filepath.Join(s.checkpointsDir(), "restore-"+newID()[:16])
	ckpt, err := checkpoint.Extract(ctx, img, dest)
	if err != nil {
		return nil, fmt.Errorf("restore container: %w", err)
	}
	rcfg, err := restoreConfig(cfg, ckpt)
	if err != nil {
		_ = os.RemoveAll(dest)
		return nil, err
	}
	return &restoreSource{ckpt: ckpt, config: rcfg}, nil
}

// discard removes the unpacked checkpoint if the bundle did not take it.
func (r *restoreSource) discard() {
	if r != nil && !r.moved {
		_ = os.RemoveAll(r.ckpt.Dir)
	}
}

// prepare moves the unpacked checkpoint into the container's bundle,
// where it lives (and is removed) with the container, and replays the
// checkpointed writable layer onto the new rootfs. Nil does nothing.
func (r *restoreSource) prepare(bundle, rootfs string) error {
	if r == nil {
		return nil
	}
	dst := filepath.Dir(restoreImagesIn(bundle))
	if err := os.Rename(r.ckpt.Dir, dst); err != nil {
		return fmt.Errorf("move checkpoint into bundle: %w", err)
	}
	r.ckpt.Dir, r.moved = dst, true
	return r.ckpt.ApplyRootfsDiff(rootfs)
}

// imagesDir is the CRIU images' directory, "" for nil.
func (r *restoreSource) imagesDir() string {
	if r == nil {
		return ""
	}
	return r.ckpt.Images()
}

// criuPathFor is the CRIU a restoring shim must use; "" when not restoring.
func (s *Server) criuPathFor(restoreFrom string) string {
	if restoreFrom == "" {
		return ""
	}
	p, _ := s.criu.get()
	return p
}

// restoreConfig is the CRI config for a container restored from ckpt:
// what the process is (image, command, environment, working directory)
// comes from the checkpoint, since it is the checkpointed process that
// resumes; where it runs (mounts, resources, security, logging, stdio)
// from the request, as CRI-O does. Metadata, labels and annotations are
// the request's, else the checkpoint's.
func restoreConfig(req *runtime.ContainerConfig, ckpt *checkpoint.Checkpoint) (*runtime.ContainerConfig, error) {
	cfg := proto.Clone(req).(*runtime.ContainerConfig)
	image := ckpt.Config.RootfsImageName
	if image == "" {
		image = ckpt.Config.RootfsImageRef
	}
	if image == "" {
		return nil, fmt.Errorf("checkpoint names no image for its root file system: %w", errdefs.ErrInvalidArgument)
	}
	cfg.Image = &runtime.ImageSpec{Image: image}
	ann := ckpt.Spec.Annotations
	if cfg.GetMetadata().GetName() == "" {
		var m runtime.ContainerMetadata
		if err := json.Unmarshal([]byte(ann[checkpoint.AnnotationMetadata]), &m); err != nil || m.Name == "" {
			m.Name = ckpt.Config.Name
		}
		cfg.Metadata = &runtime.ContainerMetadata{Name: m.Name, Attempt: m.Attempt}
	}
	if len(cfg.Labels) == 0 {
		_ = json.Unmarshal([]byte(ann[checkpoint.AnnotationLabels]), &cfg.Labels)
	}
	if len(cfg.Annotations) == 0 {
		_ = json.Unmarshal([]byte(ann[checkpoint.AnnotationAnnotations]), &cfg.Annotations)
	}
	if p := ckpt.Spec.Process; p != nil {
		cfg.Command, cfg.Args = slices.Clone(p.Args), nil
		cfg.WorkingDir = p.Cwd
		cfg.Envs = nil
		for _, kv := range p.Env {
			k, v, _ := cutEnv(kv)
			cfg.Envs = append(cfg.Envs, &runtime.KeyValue{Key: k, Value: []byte(v)})
		}
	}
	if cfg.GetTty() {
		return nil, fmt.Errorf("restore with a terminal: %w", errdefs.ErrNotImplemented)
	}
	return cfg, nil
}

func cutEnv(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}
