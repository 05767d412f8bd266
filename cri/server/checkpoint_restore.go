package server

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/checkpoint"
	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/imagesvc/reference"
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

// layerDirs is what restoring from a checkpoint image needs of the image
// service beyond Images: the unpacked directory of a layer.
type layerDirs interface {
	LayerDir(chainID digest.Digest) (string, error)
}

var _ layerDirs = (*imagesvc.Service)(nil)

// openRestore returns the checkpoint a CreateContainer request restores
// from, or nil when its image is an ordinary image. As CRI-O accepts them,
// the image may be a checkpoint archive (a path on the node) or an OCI
// image holding one: a single layer with the archive's files, marked with
// one of the checkpoint-name annotations (checkpoint.ImageAnnotations).
func (s *Server) openRestore(ctx context.Context, cfg *runtime.ContainerConfig) (*restoreSource, error) {
	img := cfg.GetImage().GetImage()
	var layer string
	if !filepath.IsAbs(img) {
		var err error
		if layer, err = s.checkpointImageLayer(ctx, img); err != nil || layer == "" {
			return nil, err
		}
	} else if fi, err := os.Stat(img); err != nil || !fi.Mode().IsRegular() {
		return nil, nil
	}
	if _, err := s.criu.Get(ctx); err != nil {
		return nil, fmt.Errorf("restore from %q: %w", img, err)
	}
	if err := os.MkdirAll(s.checkpointsDir(), 0o700); err != nil {
		return nil, fmt.Errorf("restore from %q: %w", img, err)
	}
	dest := filepath.Join(s.checkpointsDir(), "restore-"+newID()[:16])
	var ckpt *checkpoint.Checkpoint
	var err error
	if layer != "" {
		ckpt, err = checkpoint.CopyFromLayer(ctx, layer, dest)
	} else {
		ckpt, err = checkpoint.Extract(ctx, img, dest)
	}
	if err != nil {
		return nil, fmt.Errorf("restore container from %q: %w", img, err)
	}
	rcfg, err := restoreConfig(cfg, ckpt)
	var base imagesvc.Image
	if err == nil {
		base, err = s.checkBaseImage(ctx, rcfg.GetImage().GetImage(), ckpt.Container.ImageID, layer != "")
	}
	if err == nil {
		err = checkCheckpointSpec(rcfg, ckpt, base.Config.Config.Volumes)
	}
	if err != nil {
		_ = os.RemoveAll(dest)
		return nil, err
	}
	return &restoreSource{ckpt: ckpt, config: rcfg}, nil
}

// checkpointImageLayer is the unpacked layer of ref when ref names a
// checkpoint image in the store, "" for any other image (an unknown one
// included: CreateContainer reports that).
func (s *Server) checkpointImageLayer(ctx context.Context, ref string) (string, error) {
	img, err := s.images.Get(ctx, ref)
	if err != nil {
		return "", nil
	}
	if !checkpoint.IsImage(img.Annotations) {
		return "", nil
	}
	if err := checkRestoreImage(s.cfg.Runtime, ref, img); err != nil {
		return "", err
	}
	if len(img.ChainIDs) != 1 {
		return "", fmt.Errorf("checkpoint image %q has %d layers, want 1: %w", ref, len(img.ChainIDs), errdefs.ErrInvalidArgument)
	}
	ld, ok := s.images.(layerDirs)
	if !ok {
		return "", fmt.Errorf("restore from checkpoint image %q: image store cannot read layers: %w", ref, errdefs.ErrNotImplemented)
	}
	dir, err := ld.LayerDir(img.ChainIDs[0])
	if err != nil {
		return "", fmt.Errorf("checkpoint image %q: %w", ref, err)
	}
	return dir, nil
}

// checkRestoreImage decides whether the checkpoint image img (named ref
// in the request) may be restored on this node: only when the operator
// turned restoring from images on, and only when the image came from a
// registry the operator named. A checkpoint is a process's whole state
// (memory, open files, credentials), chosen by whoever published it.
func checkRestoreImage(rt config.Runtime, ref string, img imagesvc.Image) error {
	if !rt.RestoreFromImages {
		return fmt.Errorf("image %q is a checkpoint image and restoring from checkpoint images is off on this node (config key runtime.restore_from_images): %w", ref, errdefs.ErrFailedPrecondition)
	}
	if !fromRegistries(img, rt.RestoreImageRegistries) {
		return fmt.Errorf("checkpoint image %q (known as %q) comes from no registry in runtime.restore_image_registries %q: %w",
			ref, slices.Concat(img.RepoTags, img.RepoDigests), rt.RestoreImageRegistries, errdefs.ErrPermissionDenied)
	}
	return nil
}

// checkBaseImage checks the image a checkpoint names for its root file
// system (config.dump's, the checkpoint author's word) and returns it.
// berth never pulls it for a restore: it must already be on the node,
// pulled through PullImage with that caller's credentials. When the
// checkpoint records the image's ID (wantID), the node's image of that
// name must be that very image: the writable layer is a diff against it,
// and replayed onto other content it would make a root file system that
// neither node ever had. The checkpoint of an image (fromImage) must also
// name one from the registries allowed for checkpoint images, so that it
// cannot pick any private image some other pod pulled onto the node. See
// docs/security.md for what is left.
func (s *Server) checkBaseImage(ctx context.Context, ref, wantID string, fromImage bool) (imagesvc.Image, error) {
	img, err := s.images.Get(ctx, ref)
	if errdefs.IsNotFound(err) {
		return img, fmt.Errorf("the checkpoint's base image %q is not on this node, and a restore never pulls it: pull it first: %w", ref, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return img, fmt.Errorf("the checkpoint's base image %q: %w", ref, err)
	}
	if wantID != "" && img.ID != wantID {
		return img, fmt.Errorf("the checkpoint was taken on base image %q with ID %s, but this node's %q is %s: pull the same image (by digest) first: %w",
			ref, wantID, ref, img.ID, errdefs.ErrFailedPrecondition)
	}
	if fromImage && !fromRegistries(img, s.cfg.Runtime.RestoreImageRegistries) {
		return img, fmt.Errorf("the checkpoint's base image %q (known as %q) comes from no registry in runtime.restore_image_registries %q: %w",
			ref, slices.Concat(img.RepoTags, img.RepoDigests), s.cfg.Runtime.RestoreImageRegistries, errdefs.ErrPermissionDenied)
	}
	return img, nil
}

// fromRegistries reports whether img was pulled from (is named in) one of
// the registry hosts allowed. An image is the same content whatever name
// it is asked for by, so any of its names counts.
func fromRegistries(img imagesvc.Image, allowed []string) bool {
	for _, n := range slices.Concat(img.RepoTags, img.RepoDigests) {
		r, err := reference.Parse(n)
		if err != nil {
			continue
		}
		for _, h := range allowed {
			if strings.EqualFold(r.Domain, h) {
				return true
			}
		}
	}
	return false
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
func (s *Server) criuPathFor(ctx context.Context, restoreFrom string) string {
	if restoreFrom == "" {
		return ""
	}
	// openRestore already waited for the probe and found it good.
	p, _ := s.criu.Get(ctx)
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
	id := ckpt.Container
	if cfg.GetMetadata().GetName() == "" {
		cfg.Metadata = &runtime.ContainerMetadata{Name: id.Name, Attempt: id.Attempt}
	}
	if len(cfg.Labels) == 0 {
		cfg.Labels = maps.Clone(id.Labels)
	}
	if len(cfg.Annotations) == 0 {
		cfg.Annotations = maps.Clone(id.Annotations)
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
	if sharesPID(cfg) {
		return nil, errSharedPIDRestore
	}
	return cfg, nil
}

// ownMounts are the bind mounts berth gives containers itself, whatever
// the request: the pod's files, and /sys in a user namespace.
var ownMounts = []string{"/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm", "/sys"}

// checkCheckpointSpec refuses a checkpoint whose spec.dump records what
// the container restored by cfg would not have, and CRIU would fail on
// mid-restore with a message naming none of it: a terminal, a PID
// namespace the container shared (its path, in the spec of containerd or
// CRI-O), a bind mount (CRIU restores each one only onto a mount of the
// same destination) or a device the request does not give. A
// checkpoint's other fields are the old node's choices (cgroup paths,
// the pod's namespace paths, resources) and are the new request's.
// imageVolumes are the base image's declared volumes, which berth mounts
// for the restored container as it did for the checkpointed one.
func checkCheckpointSpec(cfg *runtime.ContainerConfig, ckpt *checkpoint.Checkpoint, imageVolumes map[string]struct{}) error {
	spec := ckpt.Spec
	if spec.Process != nil && spec.Process.Terminal {
		return fmt.Errorf("checkpoint of a container with a terminal cannot be restored: %w", errdefs.ErrNotImplemented)
	}
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == specs.PIDNamespace && ns.Path != "" {
				return fmt.Errorf("checkpoint of a container that joined PID namespace %q: %w", ns.Path, errSharedPIDRestore)
			}
		}
	}
	have := map[string]bool{}
	for _, d := range ownMounts {
		have[d] = true
	}
	for d := range imageVolumes {
		have[path.Clean("/"+d)] = true
	}
	for _, m := range cfg.GetMounts() {
		have[path.Clean(m.GetContainerPath())] = true
	}
	for _, m := range spec.Mounts {
		if m.Type == "bind" && !have[path.Clean(m.Destination)] {
			return fmt.Errorf("checkpoint has a bind mount at %q that the container config does not mount (CRIU restores open files and mounts only onto the same destination): add the volume or restore elsewhere: %w", m.Destination, errdefs.ErrFailedPrecondition)
		}
	}
	devs := map[string]bool{}
	for _, d := range cfg.GetDevices() {
		devs[path.Clean(d.GetContainerPath())] = true
	}
	if spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			if !devs[path.Clean(d.Path)] {
				return fmt.Errorf("checkpoint has device %q that the container config does not give: %w", d.Path, errdefs.ErrFailedPrecondition)
			}
		}
	}
	return nil
}

// errSharedPIDRestore: CRIU restores a process tree with its own PIDs, in
// a PID namespace of its own; it cannot put them into a namespace that
// the pod's other processes already populate.
var errSharedPIDRestore = fmt.Errorf("restore into a PID namespace shared with the pod or another container is not supported (CRIU needs the container's own PID namespace): %w", errdefs.ErrNotImplemented)

// sharesPID reports whether a container joins the pod's or another
// container's PID namespace.
func sharesPID(cfg *runtime.ContainerConfig) bool {
	switch cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() {
	case runtime.NamespaceMode_POD, runtime.NamespaceMode_TARGET:
		return true
	}
	return false
}

func cutEnv(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}
