package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/store"
	"github.com/berth-runtime/berth/imagesvc"
	"github.com/berth-runtime/berth/sandbox/rollback"
)

// VolumeImages is what volume preparation needs of the image service
// beyond Images.
type VolumeImages interface {
	MountImage(ctx context.Context, key, imageRef, target string) (string, error)
	VolumeDir(containerID, containerPath string) (string, error)
	RemoveRootfs(ctx context.Context, containerID, target string) error
}

var _ VolumeImages = (*imagesvc.Service)(nil)

// imageVolumeKey names the use of an image volume's layers: the i-th CRI
// mount of the container.
func imageVolumeKey(containerID string, i int) string {
	return containerID + ".iv" + strconv.Itoa(i)
}

// imageVolumePaths are where the i-th image volume is mounted in the
// bundle: the image's root (mnt) and, with image_sub_path, the bind mount
// of that sub path (sub).
func imageVolumePaths(bundle string, i int) (mnt, sub string) {
	dir := filepath.Join(bundle, "imagevols")
	return filepath.Join(dir, strconv.Itoa(i)), filepath.Join(dir, strconv.Itoa(i)+".sub")
}

// prepareVolumes mounts the image volumes cfg asks for (CRI Mount with
// image set: the image's root filesystem, read-only) and makes a fresh
// writable dir for each volume the image declares that no CRI mount covers,
// as containerd does by default. It returns the mounts for the spec; undo
// steps go to cl. Call it after the rootfs is prepared.
func (s *Server) prepareVolumes(ctx context.Context, rec store.Container, cfg *runtime.ContainerConfig, declared map[string]struct{}, cl *rollback.Steps) ([]specs.Mount, error) {
	vols, ok := s.images.(VolumeImages)
	if !ok {
		return nil, fmt.Errorf("image service cannot mount volumes: %w", errdefs.ErrNotImplemented)
	}
	var out []specs.Mount
	for i, m := range cfg.GetMounts() {
		if m.GetImage().GetImage() == "" || m.GetHostPath() != "" {
			continue
		}
		src, err := s.mountImageVolume(ctx, vols, rec, i, m, cl)
		if err != nil {
			return nil, fmt.Errorf("image volume at %q: %w", m.GetContainerPath(), err)
		}
		out = append(out, specs.Mount{
			Destination: path.Clean(m.GetContainerPath()), Type: "bind", Source: src,
			Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev"},
		})
	}
	for _, dst := range slices.Sorted(func(yield func(string) bool) {
		for d := range declared {
			if !yield(d) {
				return
			}
		}
	}) {
		dst = path.Clean("/" + dst)
		if dst == "/" || slices.ContainsFunc(cfg.GetMounts(), func(m *runtime.Mount) bool { return path.Clean(m.GetContainerPath()) == dst }) {
			continue
		}
		dir, err := vols.VolumeDir(rec.ID, dst)
		if err != nil {
			return nil, err
		}
		out = append(out, specs.Mount{Destination: dst, Type: "bind", Source: dir, Options: []string{"rbind", "rprivate", "rw"}})
	}
	return out, nil
}

func (s *Server) mountImageVolume(ctx context.Context, vols VolumeImages, rec store.Container, i int, m *runtime.Mount, cl *rollback.Steps) (string, error) {
	key := imageVolumeKey(rec.ID, i)
	mnt, sub := imageVolumePaths(rec.Bundle, i)
	if _, err := vols.MountImage(ctx, key, m.GetImage().GetImage(), mnt); err != nil {
		if errdefs.IsNotFound(err) {
			// kubelet pulls image volumes first; missing means not pulled.
			return "", fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
		}
		return "", err
	}
	cl.Add("unmount image volume", func(ctx context.Context) error { return vols.RemoveRootfs(ctx, key, mnt) })
	if m.GetImageSubPath() == "" {
		return mnt, nil
	}
	if err := bindSubPath(mnt, m.GetImageSubPath(), sub); err != nil {
		return "", err
	}
	cl.Add("unmount image sub path", func(context.Context) error { return unmountRemove(sub) })
	return sub, nil
}

// bindSubPath binds root/subPath read-only at target. The sub path is
// resolved inside root (RESOLVE_IN_ROOT): symlinks in the image cannot
// lead the mount to host files.
func bindSubPath(root, subPath, target string) error {
	rel := path.Clean("/" + subPath)
	fd, err := unix.Openat2(unix.AT_FDCWD, root, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_DIRECTORY})
	if err != nil {
		return fmt.Errorf("open image root: %w", err)
	}
	defer unix.Close(fd)
	sfd, err := unix.Openat2(fd, "."+rel, &unix.OpenHow{
		Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("image_sub_path %q does not exist in the image: %w", subPath, errdefs.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("open image_sub_path %q: %w", subPath, err)
	}
	defer unix.Close(sfd)
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return fmt.Errorf("stat image_sub_path %q: %w", subPath, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		err = os.Mkdir(target, 0o755)
	} else {
		err = os.WriteFile(target, nil, 0o644)
	}
	if err != nil {
		return fmt.Errorf("create image sub path mount point: %w", err)
	}
	src := "/proc/self/fd/" + strconv.Itoa(sfd)
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(target)
		return fmt.Errorf("bind image_sub_path %q: %w", subPath, err)
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		_ = unmountRemove(target)
		return fmt.Errorf("make image_sub_path %q read-only: %w", subPath, err)
	}
	return nil
}

// unmountRemove unmounts target (lazily if busy) and removes the mount point.
func unmountRemove(target string) error {
	for {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break
		}
		if err != nil {
			return fmt.Errorf("unmount %q: %w", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %q: %w", target, err)
	}
	return nil
}

// removeVolumes unmounts the image volumes of c and releases their layers;
// declared volumes go with the rootfs. Idempotent.
func (s *Server) removeVolumes(ctx context.Context, c store.Container) error {
	vols, ok := s.images.(VolumeImages)
	if !ok {
		return nil
	}
	for i, m := range c.Config.GetMounts() {
		if m.GetImage().GetImage() == "" || m.GetHostPath() != "" {
			continue
		}
		mnt, sub := imageVolumePaths(c.Bundle, i)
		if err := unmountRemove(sub); err != nil {
			return err
		}
		if err := vols.RemoveRootfs(ctx, imageVolumeKey(c.ID, i), mnt); err != nil {
			return fmt.Errorf("remove image volume of container %q: %w", c.ID, err)
		}
	}
	return nil
}

// resolveImageMounts checks the request's image volumes and records the ID
// of the image each one names in its image_ref, which ContainerStatus
// reports back (KEP-5365). Image volumes are read-only by definition: a
// request for a writable one is refused rather than silently made
// read-only. It returns cfg itself when it has no image volume.
func (s *Server) resolveImageMounts(ctx context.Context, cfg *runtime.ContainerConfig) (*runtime.ContainerConfig, error) {
	var out *runtime.ContainerConfig
	for i, m := range cfg.GetMounts() {
		if m.GetImage().GetImage() == "" {
			continue
		}
		if !m.GetReadonly() {
			return nil, fmt.Errorf("image volume at %q must be read-only: %w", m.GetContainerPath(), errdefs.ErrInvalidArgument)
		}
		img, err := s.images.Get(ctx, m.GetImage().GetImage())
		if err != nil {
			if errdefs.IsNotFound(err) {
				// kubelet pulls image volumes first; missing means not pulled.
				return nil, fmt.Errorf("image volume %q: %w: %w", m.GetImage().GetImage(), err, errdefs.ErrFailedPrecondition)
			}
			return nil, fmt.Errorf("image volume %q: %w", m.GetImage().GetImage(), err)
		}
		if out == nil {
			out = proto.Clone(cfg).(*runtime.ContainerConfig)
		}
		out.Mounts[i].Image.ImageRef = img.ID
	}
	if out == nil {
		return cfg, nil
	}
	return out, nil
}
