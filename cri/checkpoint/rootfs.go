package checkpoint

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/imagesvc/unpack"
)

// WriteRootfsDiff records a container's writable-layer changes into dir:
// rootfs-diff.tar holds what was added or changed (read from the overlay
// upper directory), deleted.files the paths the container deleted from the
// image's layers (the upper directory's whiteouts). Paths in skip (mount
// destinations inside the container, such as /etc/hosts) and below them
// are left out: they are the runtime's, not the container's.
func WriteRootfsDiff(upper, dir string, skip []string) (retErr error) {
	skipSet := map[string]bool{}
	for _, p := range skip {
		skipSet[filepath.Clean("/"+p)] = true
	}
	f, err := os.OpenFile(filepath.Join(dir, RootFsDiffTar), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", RootFsDiffTar, err)
	}
	defer func() {
		if err := f.Close(); retErr == nil && err != nil {
			retErr = fmt.Errorf("write %s: %w", RootFsDiffTar, err)
		}
	}()
	deleted := []string{}
	err = tarTree(context.Background(), f, upper, func(rel, p string, d fs.DirEntry) (bool, error) {
		inPath := "/" + rel
		if skipped(inPath, skipSet) {
			if d.IsDir() {
				return false, filepath.SkipDir
			}
			return false, nil
		}
		if isWhiteout(p, d) {
			deleted = append(deleted, inPath)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("write %s from %q: %w", RootFsDiffTar, upper, err)
	}
	return WriteJSON(dir, DeletedFilesFile, deleted)
}

func skipped(p string, skip map[string]bool) bool {
	for q := p; q != "/" && q != "."; q = filepath.Dir(q) {
		if skip[q] {
			return true
		}
	}
	return false
}

// isWhiteout: overlayfs records a deletion as a 0/0 character device.
func isWhiteout(p string, d fs.DirEntry) bool {
	if d.Type()&fs.ModeCharDevice == 0 {
		return false
	}
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil && st.Rdev == 0
}

// ApplyRootfsDiff replays the checkpoint's writable-layer changes onto a
// freshly prepared rootfs: rootfs-diff.tar unpacked over it (owners, modes
// with their setuid, setgid and sticky bits, and times kept), then the
// deleted.files removed. Both go through imagesvc's extractor, which
// resolves every path inside rootfs and never follows a symlink out of
// it: the archive is the pod author's input. An archive without a
// rootfs-diff.tar (one made with the root file system left out) applies
// nothing.
func (c *Checkpoint) ApplyRootfsDiff(rootfs string) error {
	f, err := openMember(filepath.Join(c.Dir, RootFsDiffTar))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("open %s: %w", RootFsDiffTar, err)
	}
	defer f.Close()
	if err := replay(context.Background(), bufio.NewReader(f), rootfs); err != nil {
		return fmt.Errorf("apply %s: %w", RootFsDiffTar, err)
	}
	var deleted []string
	if err := readJSON(c.Dir, DeletedFilesFile, &deleted); err != nil {
		if _, serr := os.Lstat(filepath.Join(c.Dir, DeletedFilesFile)); errors.Is(serr, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, p := range deleted {
		if err := unpack.Remove(rootfs, p); err != nil {
			return fmt.Errorf("delete %q: %w", p, err)
		}
	}
	return nil
}

// openMember opens a file that is a member of a checkpoint (a tar, a JSON
// file, a CRIU image): never through a symlink (the checkpoint's author
// could aim one at another tenant's archive or any file on the node), and
// only a regular file (a FIFO would block, a device would be read).
func openMember(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%q is a symlink: %w", path, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%q is not a regular file: %w", path, errdefs.ErrInvalidArgument)
	}
	return f, nil
}

// replay unpacks a rootfs diff or volume archive over dst, replacing
// entries of the same name. Device nodes are refused (the writers never
// archive one, and one placed in a host directory would be reachable
// there), as are overlay whiteouts and xattrs: only what the writers put
// in is taken. A malformed stream is the archive's fault: InvalidArgument,
// as is any entry the extractor refuses; a failing system call keeps its
// own error.
func replay(ctx context.Context, r io.Reader, dst string) error {
	return unpack.Extract(ctx, dst, r, unpack.Options{StreamIsInput: true})
}
