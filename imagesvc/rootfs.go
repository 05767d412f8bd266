package imagesvc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/attribute"

	"github.com/berth-runtime/berth/imagesvc/snapshot"
)

func validContainerID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/,:\x00") || len(id) > 128 {
		return fmt.Errorf("container id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *Service) containerDir(id string) string {
	return filepath.Join(s.root, "containers", id)
}

// PrepareRootfs mounts the writable root filesystem of container containerID
// at target (created if missing): an overlay of the image's layers, top layer
// first, with upper and work dirs in containers/<id>. The container's use of
// the layers is recorded so image removal keeps them. Everything is undone
// on failure. errdefs.ErrAlreadyExists if the container already has a rootfs.
func (s *Service) PrepareRootfs(ctx context.Context, containerID, imageID, target string) (err error) {
	defer s.ctrUsage.changed()
	ctx, span := startSpan(ctx, "image.rootfs", attribute.String("berth.container_id", containerID), attribute.String("image.id", imageID))
	defer func() { endSpan(span, err) }()
	if err := validContainerID(containerID); err != nil {
		return err
	}
	if !filepath.IsAbs(target) {
		return fmt.Errorf("rootfs target %q must be absolute: %w", target, errdefs.ErrInvalidArgument)
	}
	img, err := s.claimLayers(containerID, imageID)
	if err != nil {
		return fmt.Errorf("prepare rootfs for container %q: %w", containerID, err)
	}
	var undo []func()
	defer func() {
		if err != nil {
			for _, u := range slices.Backward(undo) {
				u()
			}
		}
	}()
	undo = append(undo, func() { s.dropRootfsRecord(ctx, containerID) })
	if err = s.mountRootfs(ctx, containerID, img, target, &undo); err != nil {
		return fmt.Errorf("prepare rootfs for container %q: %w", containerID, err)
	}
	s.log.DebugContext(ctx, "rootfs mounted", "container_id", containerID, "image_id", img.ID, "target", target)
	return nil
}

func (s *Service) mountRootfs(ctx context.Context, containerID string, img Image, target string, undo *[]func()) error {
	cdir := s.containerDir(containerID)
	// The upper dir is "/" of the container and must stay 0755; the
	// containers dir's 0700 (New) is what keeps other users out.
	if err := os.MkdirAll(filepath.Dir(cdir), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(cdir, 0o700); err != nil {
		return fmt.Errorf("create container dir: %w", err)
	}
	*undo = append(*undo, func() { _ = os.RemoveAll(cdir) })
	upper, work := filepath.Join(cdir, "upper"), filepath.Join(cdir, "work")
	var lowers []string
	for _, c := range slices.Backward(img.ChainIDs) {
		if !s.layers.Exists(c) {
			return fmt.Errorf("layer %q of image %q is missing: %w", c, img.ID, errdefs.ErrFailedPrecondition)
		}
		lowers = append(lowers, s.layers.Dir(c))
	}
	dirs := []string{upper, work}
	if len(lowers) == 0 { // config-only image: overlay needs one lower dir
		lowers = []string{filepath.Join(cdir, "lower")}
		dirs = append(dirs, lowers[0])
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("create overlay dir: %w", err)
		}
	}
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("create rootfs target: %w", err)
		}
		*undo = append(*undo, func() { _ = os.Remove(target) })
	}
	if err := snapshot.MountOverlay(lowers, upper, work, target); err != nil {
		return err
	}
	*undo = append(*undo, func() { _ = snapshot.Unmount(target) })
	return ctx.Err()
}

func (s *Service) dropRootfsRecord(ctx context.Context, containerID string) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRootfs).Delete([]byte(containerID))
	})
	if err != nil {
		s.log.WarnContext(ctx, "drop rootfs record", "container_id", containerID, "error", err)
	}
}

// RemoveRootfs unmounts target (lazily if busy), removes the container's
// overlay dirs and the (then empty) target dir, forgets the container's use
// of its layers and deletes layers nothing uses any more. Idempotent.
func (s *Service) RemoveRootfs(ctx context.Context, containerID, target string) error {
	defer s.ctrUsage.changed()
	if err := validContainerID(containerID); err != nil {
		return err
	}
	if target != "" {
		if err := snapshot.Unmount(target); err != nil {
			return fmt.Errorf("remove rootfs of container %q: %w", containerID, err)
		}
		if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.WarnContext(ctx, "rootfs target not removed", "container_id", containerID, "target", target, "error", err)
		}
	}
	if err := os.RemoveAll(s.containerDir(containerID)); err != nil {
		return fmt.Errorf("remove rootfs dirs of container %q: %w", containerID, err)
	}
	var rec rootfsRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if rec, _, err = getRootfs(tx, containerID); err != nil {
			return err
		}
		return tx.Bucket(bucketRootfs).Delete([]byte(containerID))
	})
	if err != nil {
		return fmt.Errorf("remove rootfs record of container %q: %w", containerID, err)
	}
	s.gcLayers(ctx, rec.ChainIDs)
	return nil
}

// FsInfo reports bytes (allocated blocks) and inodes used by layers and
// blobs, and the mount point of the filesystem holding Root: measured again
// only after the service changed them (or a minute passed).
func (s *Service) FsInfo(ctx context.Context) (FsUsage, error) {
	return s.imageUsage.get(ctx, func(ctx context.Context) (FsUsage, error) {
		return s.usage(ctx, s.layers.Root(), s.content.Root())
	})
}

// WarmUsage measures what FsInfo and ContainersFsInfo report unless
// figures the last process kept are young enough, so that the first
// ImageFsInfo, which kubelet's CRI client makes when it connects, finds
// them instead of walking every container's layer in the call (a 250-pod
// node's restart, full-node bench). A call that comes during the walk
// waits for it instead of walking again.
func (s *Service) WarmUsage(ctx context.Context) {
	if _, err := s.FsInfo(ctx); err != nil {
		s.log.Warn("measure image filesystem usage", "error", err)
	}
	if _, err := s.ContainersFsInfo(ctx); err != nil {
		s.log.Warn("measure container filesystem usage", "error", err)
	}
}

// ContainersFsInfo reports what the containers' writable layers (overlay
// upper and work dirs under Root/containers) use, for kubelet's
// container_filesystems: measured again after a rootfs or volume was set
// up or removed, else handed out from the last walk and refreshed in the
// background once 10 s old (usageCache).
func (s *Service) ContainersFsInfo(ctx context.Context) (FsUsage, error) {
	return s.ctrUsage.get(ctx, func(ctx context.Context) (FsUsage, error) {
		return s.usage(ctx, filepath.Join(s.root, "containers"))
	})
}

func (s *Service) usage(ctx context.Context, dirs ...string) (FsUsage, error) {
	var du DiskUsage
	for _, dir := range dirs {
		if err := du.Add(ctx, dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return FsUsage{}, err
		}
	}
	return FsUsage{Mountpoint: s.mountpoint(), UsedBytes: du.Bytes, InodesUsed: du.Inodes}, nil
}

// Mountpoint returns the mount point of the filesystem holding dir, the
// identifier kubelet matches the image and container filesystems by (dir
// itself when it cannot be told).
func Mountpoint(dir string) string {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return dir
	}
	mounts, err := mountinfo.GetMounts(mountinfo.ParentsFilter(root))
	if err != nil || len(mounts) == 0 {
		return dir
	}
	best := mounts[0].Mountpoint
	for _, m := range mounts[1:] {
		if len(m.Mountpoint) > len(best) {
			best = m.Mountpoint
		}
	}
	return best
}

// claimLayers records that key (a container's rootfs or an image volume)
// uses the layers of the image ref names, so GC keeps them while it does.
func (s *Service) claimLayers(key, ref string) (Image, error) {
	var img Image
	err := s.db.Update(func(tx *bolt.Tx) error {
		if _, ok, err := getRootfs(tx, key); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("layers already claimed by %q: %w", key, errdefs.ErrAlreadyExists)
		}
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		if img, err = getImage(tx, id); err != nil {
			return err
		}
		return putRootfs(tx, key, rootfsRecord{ImageID: id, ChainIDs: img.ChainIDs})
	})
	return img, err
}
