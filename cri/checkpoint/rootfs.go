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
	"path"
	"path/filepath"
	"strings"

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
// with their setuid, setgid and sticky bits, and times kept), then what
// it deletes removed: the paths of deleted.files (CRI-O's and berth's
// record) and the OCI whiteouts inside the tar (containerd's, whose
// rootfs-diff.tar is an image layer's diff, gzip-compressed). Both go through imagesvc's extractor, which
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
	// containerd writes its rootfs-diff.tar gzip-compressed under that
	// name; CRI-O and berth write it plain. The content tells.
	r, err := unpack.Decompress(bufio.NewReader(f))
	if err != nil {
		return fmt.Errorf("%s: %v: %w", RootFsDiffTar, err, errdefs.ErrInvalidArgument)
	}
	defer r.Close()
	if err := replayDiff(context.Background(), r, rootfs); err != nil {
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

// replayDiff replays a rootfs diff onto rootfs, a mounted container root
// (the overlay's merged view, where a deletion is a removal and overlayfs
// records the whiteout itself). OCI whiteouts in the stream are taken out
// of it and applied after the rest: ".wh.NAME" removes NAME, an opaque
// marker ".wh..wh..opq" removes whatever the directory held that the
// stream did not put there. Deleting after unpacking is order-free: a
// layer diff never both adds and whites out one path.
func replayDiff(ctx context.Context, r io.Reader, rootfs string) error {
	pr, pw := io.Pipe()
	var wh whiteouts
	done := make(chan error, 1)
	go func() {
		err := wh.filter(r, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	err := replay(ctx, pr, rootfs)
	// Unblocks the filter if the extractor stopped reading first.
	pr.CloseWithError(errors.New("rootfs diff replay stopped"))
	if ferr := <-done; ferr != nil && err == nil {
		err = ferr
	}
	if err != nil {
		return err
	}
	return wh.apply(rootfs)
}

// whiteouts are the deletions a layer diff records.
type whiteouts struct {
	removed []string        // paths whited out, cleaned, relative
	opaque  []string        // directories marked opaque
	added   map[string]bool // every path the diff itself adds
}

// filter copies the tar stream r to w without its whiteout entries,
// recording them and every name it lets through.
func (wh *whiteouts) filter(r io.Reader, w io.Writer) error {
	wh.added = map[string]bool{}
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("read tar: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		name := path.Clean("/" + hdr.Name)
		dir, base := path.Split(name)
		switch {
		case base == ".wh..wh..opq":
			wh.opaque = append(wh.opaque, path.Clean(dir))
			continue
		case strings.HasPrefix(base, ".wh..wh."):
			continue // aufs bookkeeping, meaningless here
		case strings.HasPrefix(base, ".wh."):
			wh.removed = append(wh.removed, path.Join(dir, strings.TrimPrefix(base, ".wh.")))
			continue
		}
		wh.added[name] = true
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("read tar: %v: %w", err, errdefs.ErrInvalidArgument)
		}
	}
}

// apply removes what the whiteouts name, through imagesvc's Remove, which
// never follows a symlink out of rootfs.
func (wh *whiteouts) apply(rootfs string) error {
	for _, p := range wh.removed {
		if err := unpack.Remove(rootfs, p); err != nil {
			return fmt.Errorf("whiteout %q: %w", p, err)
		}
	}
	for _, dir := range wh.opaque {
		names, err := listBeneath(rootfs, dir)
		if err != nil {
			return fmt.Errorf("opaque directory %q: %w", dir, err)
		}
		for _, n := range names {
			if p := path.Join(dir, n); !wh.added[p] {
				if err := unpack.Remove(rootfs, p); err != nil {
					return fmt.Errorf("opaque directory %q: %w", dir, err)
				}
			}
		}
	}
	return nil
}

// listBeneath lists directory dir of root, resolved inside root with no
// symlink followed.
func listBeneath(root, dir string) ([]string, error) {
	rootfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(rootfd)
	fd, err := unix.Openat2(rootfd, "."+dir, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	return f.Readdirnames(-1)
}
