package checkpoint

import (
	"archive/tar"
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
// and times kept), then the deleted.files removed. An archive without a
// rootfs-diff.tar (one made with the root file system left out) applies
// nothing.
func (c *Checkpoint) ApplyRootfsDiff(rootfs string) error {
	f, err := os.Open(filepath.Join(c.Dir, RootFsDiffTar))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("open %s: %w", RootFsDiffTar, err)
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s is corrupt: %v: %w", RootFsDiffTar, err, errdefs.ErrInvalidArgument)
		}
		target, err := within(rootfs, hdr.Name)
		if err != nil {
			return err
		}
		if target == rootfs {
			continue
		}
		if err := replaceEntry(rootfs, tr, hdr, target); err != nil {
			return fmt.Errorf("apply %s entry %q: %w", RootFsDiffTar, hdr.Name, err)
		}
	}
	var deleted []string
	if err := readJSON(c.Dir, DeletedFilesFile, &deleted); err != nil {
		if _, serr := os.Stat(filepath.Join(c.Dir, DeletedFilesFile)); errors.Is(serr, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, p := range deleted {
		target, err := within(rootfs, p)
		if err != nil {
			return err
		}
		if target == rootfs {
			continue
		}
		if err := mkdirBelow(rootfs, filepath.Dir(target)); err != nil {
			return fmt.Errorf("delete %q: %w", p, err)
		}
		if err := os.RemoveAll(target); err != nil {
			return fmt.Errorf("delete %q: %w", p, err)
		}
	}
	return nil
}

// replaceEntry writes one diff entry at target, replacing what the image
// had there.
func replaceEntry(root string, tr *tar.Reader, hdr *tar.Header, target string) error {
	if err := mkdirBelow(root, filepath.Dir(target)); err != nil {
		return err
	}
	mode := os.FileMode(hdr.Mode).Perm() | os.FileMode(hdr.Mode)&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)
	fi, lerr := os.Lstat(target)
	exists := lerr == nil
	switch hdr.Typeflag {
	case tar.TypeDir:
		if exists && !fi.IsDir() {
			if err := os.Remove(target); err != nil {
				return err
			}
			exists = false
		}
		if !exists {
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		}
	case tar.TypeReg, tar.TypeSymlink:
		if exists {
			if err := os.RemoveAll(target); err != nil {
				return err
			}
		}
		if hdr.Typeflag == tar.TypeSymlink {
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
			return os.Lchown(target, hdr.Uid, hdr.Gid)
		}
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported type %q: %w", hdr.Typeflag, errdefs.ErrInvalidArgument)
	}
	if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	// chmod after chown, which clears setuid bits.
	if err := os.Chmod(target, mode); err != nil {
		return err
	}
	return os.Chtimes(target, hdr.AccessTime, hdr.ModTime)
}
