package imagesvc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/imagesvc/snapshot"
)

// MountImage mounts the root filesystem of image imageRef read-only at
// target (created if missing): an image volume. key names this use of the
// image's layers (e.g. "<container id>.iv0"; the rules of container IDs
// apply) so they are kept while it lasts; RemoveRootfs(key, target) ends it.
// It returns the image ID. Everything is undone on failure.
func (s *Service) MountImage(ctx context.Context, key, imageRef, target string) (_ string, err error) {
	defer s.ctrUsage.changed()
	if err := validContainerID(key); err != nil {
		return "", err
	}
	if !filepath.IsAbs(target) {
		return "", fmt.Errorf("image mount target %q must be absolute: %w", target, errdefs.ErrInvalidArgument)
	}
	img, err := s.claimLayers(key, imageRef)
	if err != nil {
		return "", fmt.Errorf("mount image %q: %w", imageRef, err)
	}
	var undo []func()
	defer func() {
		if err != nil {
			for _, u := range slices.Backward(undo) {
				u()
			}
		}
	}()
	undo = append(undo, func() { s.dropRootfsRecord(ctx, key) })
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return "", fmt.Errorf("create image mount target: %w", err)
		}
		undo = append(undo, func() { _ = os.Remove(target) })
	}
	if err := s.mountReadOnly(img, key, target); err != nil {
		return "", fmt.Errorf("mount image %q: %w", imageRef, err)
	}
	s.log.DebugContext(ctx, "image mounted", "key", key, "image_id", img.ID, "target", target)
	return img.ID, nil
}

// mountReadOnly stacks the image's layers at target with no upper dir.
// overlayfs wants two lower dirs without an upper one, so a one-layer image
// is a read-only bind mount of its layer, and a layerless one of an empty dir.
func (s *Service) mountReadOnly(img Image, key, target string) error {
	var lowers []string
	for _, c := range slices.Backward(img.ChainIDs) {
		if !s.layers.Exists(c) {
			return fmt.Errorf("layer %q of image %q is missing: %w", c, img.ID, errdefs.ErrFailedPrecondition)
		}
		lowers = append(lowers, s.layers.Dir(c))
	}
	if len(lowers) >= 2 {
		data, err := snapshot.OverlayData(lowers, "", "")
		if err != nil {
			return err
		}
		if err := unix.Mount("overlay", target, "overlay", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, data); err != nil {
			return fmt.Errorf("mount overlay at %q: %w", target, err)
		}
		return nil
	}
	var src string
	if len(lowers) == 1 {
		src = lowers[0]
	} else {
		src = filepath.Join(s.containerDir(key), "empty")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %q at %q: %w", src, target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		_ = snapshot.Unmount(target)
		return fmt.Errorf("make %q read-only: %w", target, err)
	}
	return nil
}

// VolumeDir creates a fresh writable directory for the image-declared
// volume at containerPath of container containerID. It lives with the
// container's writable layer, so RemoveRootfs removes it; calling it again
// for the same volume returns the same directory.
func (s *Service) VolumeDir(containerID, containerPath string) (string, error) {
	// The caller fills the dir after this returns: the figure may miss
	// that for up to containerUsageMaxAge, like any container write.
	defer s.ctrUsage.changed()
	if err := validContainerID(containerID); err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(filepath.Clean(containerPath)))
	dir := filepath.Join(s.containerDir(containerID), "volumes", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create volume dir for %q of container %q: %w", containerPath, containerID, err)
	}
	return dir, nil
}
