// Package snapshot owns the layer store (one read-only directory per chain
// ID, committed by rename so a crash never leaves a half layer that looks
// complete) and the overlayfs mounts that stack those layers into a rootfs.
package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

const (
	// nameLen hex chars of the chain ID name a layer dir: short names keep
	// overlay's mount data (one page) able to hold many layers.
	nameLen   = 20
	tmpPrefix = ".tmp-"
	delPrefix = ".del-"
	// maxMountData is the kernel's limit on mount(2) data: one page, NUL included.
	maxMountData = 4095
)

// Layers is the store of unpacked layers under one directory.
type Layers struct {
	root string
}

// NewLayers opens (creating) the layer store at root and removes leftovers of
// interrupted unpacks and removals.
func NewLayers(root string) (*Layers, error) {
	// 0700: layers hold every image's setuid binaries and device nodes,
	// which must not be any local user's to run or open (the class of
	// CVE-2021-41091 and CVE-2021-41103). Layer dirs inside stay 0755, the
	// mode "/" shows in a container. Chmod closes a store an older berth
	// made 0711.
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create layer store: %w", err)
	}
	if err := os.Chmod(root, 0o700); err != nil {
		return nil, fmt.Errorf("close layer store to other users: %w", err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("read layer store: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) || strings.HasPrefix(e.Name(), delPrefix) {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				return nil, fmt.Errorf("remove stale layer dir: %w", err)
			}
		}
	}
	return &Layers{root: root}, nil
}

// Root is the store's directory.
func (l *Layers) Root() string { return l.root }

// Dir is the directory of the layer with chainID (whether or not it exists).
func (l *Layers) Dir(chainID digest.Digest) string {
	enc := chainID.Encoded()
	if len(enc) > nameLen {
		enc = enc[:nameLen]
	}
	return filepath.Join(l.root, enc)
}

// Exists reports whether the layer with chainID is committed.
func (l *Layers) Exists(chainID digest.Digest) bool {
	if chainID.Validate() != nil {
		return false
	}
	st, err := os.Lstat(l.Dir(chainID))
	return err == nil && st.IsDir()
}

// Begin makes a fresh temp directory to unpack a layer into.
func (l *Layers) Begin() (string, error) {
	tmp, err := os.MkdirTemp(l.root, tmpPrefix)
	if err != nil {
		return "", fmt.Errorf("create temp layer dir: %w", err)
	}
	// MkdirTemp makes 0700; the layer root is "/" of read-only image
	// mounts and must be traversable by non-root container users. The
	// store's 0700 keeps other users of the host out.
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("chmod temp layer dir: %w", err)
	}
	return tmp, nil
}

// Commit moves a fully unpacked temp dir into place as chainID. If another
// unpack won the race, the temp dir is dropped and the existing layer kept.
func (l *Layers) Commit(tmp string, chainID digest.Digest) error {
	if err := chainID.Validate(); err != nil {
		l.Abort(tmp)
		return fmt.Errorf("chain id %q: %v: %w", chainID, err, errdefs.ErrInvalidArgument)
	}
	err := os.Rename(tmp, l.Dir(chainID))
	if err == nil {
		return nil
	}
	if l.Exists(chainID) {
		l.Abort(tmp)
		return nil
	}
	l.Abort(tmp)
	return fmt.Errorf("commit layer %q: %w", chainID, err)
}

// Abort removes a temp dir from Begin.
func (l *Layers) Abort(tmp string) {
	_ = os.RemoveAll(tmp)
}

// Remove deletes the layer chainID; a missing layer is not an error. The dir
// is renamed away first so a crash mid-delete never leaves a partial layer
// under its real name.
func (l *Layers) Remove(chainID digest.Digest) error {
	dir := l.Dir(chainID)
	del, err := os.MkdirTemp(l.root, delPrefix)
	if err != nil {
		return fmt.Errorf("remove layer %q: %w", chainID, err)
	}
	defer os.RemoveAll(del)
	if err := os.Rename(dir, filepath.Join(del, "l")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove layer %q: %w", chainID, err)
	}
	return os.RemoveAll(del)
}

// OverlayData builds overlay mount data. lowers are given top layer first.
func OverlayData(lowers []string, upper, work string) (string, error) {
	if len(lowers) == 0 {
		return "", fmt.Errorf("overlay needs at least one lower dir: %w", errdefs.ErrInvalidArgument)
	}
	for _, p := range append([]string{upper, work}, lowers...) {
		if strings.ContainsAny(p, ",:") {
			return "", fmt.Errorf("overlay path %q contains ',' or ':': %w", p, errdefs.ErrInvalidArgument)
		}
	}
	data := "lowerdir=" + strings.Join(lowers, ":")
	if upper != "" {
		data += ",upperdir=" + upper + ",workdir=" + work
	}
	if len(data) > maxMountData {
		return "", fmt.Errorf("overlay mount data for %d layers is %d bytes, over the %d byte limit: %w",
			len(lowers), len(data), maxMountData, errdefs.ErrInvalidArgument)
	}
	return data, nil
}

// MountOverlay mounts an overlay of lowers (top first) with upper/work at target.
func MountOverlay(lowers []string, upper, work, target string) error {
	data, err := OverlayData(lowers, upper, work)
	if err != nil {
		return err
	}
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount overlay at %q: %w", target, err)
	}
	return nil
}

// Unmount unmounts everything stacked at target, lazily if it is busy. A
// target that is not mounted or does not exist is fine.
func Unmount(target string) error {
	for range 64 {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		switch {
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not (or no longer) a mount point
		case errors.Is(err, unix.EBUSY):
			err = unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		}
		if err != nil {
			return fmt.Errorf("unmount %q: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %q: too many stacked mounts: %w", target, errdefs.ErrFailedPrecondition)
}
