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
	"strconv"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/imagesvc/unpack"
)

// WriteArchive tars the contents of dir (a dump directory laid out as the
// package comment says) into path, atomically: the archive appears
// complete or not at all. It is created 0600, since it holds every memory
// page of the container.
func WriteArchive(ctx context.Context, dir, path string) (retErr error) {
	if _, err := os.Stat(filepath.Join(dir, CheckpointDirectory, inventoryImage)); err != nil {
		return fmt.Errorf("dump in %q has no CRIU images: %w", dir, errdefs.ErrFailedPrecondition)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("create checkpoint archive %q: %w", path, err)
	}
	defer func() {
		if retErr != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("create checkpoint archive %q: %w", path, err)
	}
	err = tarTree(ctx, tmp, dir, nil)
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write checkpoint archive %q: %w", path, err)
	}
	return nil
}

// tarTree writes the entries below root to w as a tar stream, each named by
// its slash-separated path relative to root. keep, when not nil, decides
// per entry: false leaves it out, an error (filepath.SkipDir included) is
// handed to the walk. Entries are opened relative to root without
// following any symlink (see addFile): root may be a pod's volume, which
// other processes can change while it is archived.
func tarTree(ctx context.Context, w io.Writer, root string, keep func(rel, path string, d fs.DirEntry) (bool, error)) error {
	rootfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", root, err)
	}
	defer unix.Close(rootfd)
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if keep != nil {
			if ok, err := keep(rel, p, d); err != nil || !ok {
				return err
			}
		}
		return addFile(tw, rootfd, rel)
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	return err
}

// addFile writes the entry name below rootfd to tw. It is opened once,
// with no symlink followed on the way nor at its end, and its header and
// contents are read from that descriptor: a directory swapped for a
// symlink between the walk and the open fails the archive instead of
// putting a host file into it.
func addFile(tw *tar.Writer, rootfd int, name string) error {
	fd, err := unix.Openat2(rootfd, name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fmt.Errorf("open %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	link := ""
	if info.Mode()&fs.ModeSymlink != 0 {
		if link, err = readlinkFd(fd); err != nil {
			return fmt.Errorf("read symlink %q: %w", name, err)
		}
	}
	hdr, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	if info.IsDir() {
		hdr.Name += "/"
	}
	// Names of the dumping node's users mean nothing on another.
	hdr.Uname, hdr.Gname = "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return nil
	}
	// The O_PATH descriptor reopened: the very file that was stat'ed.
	rf, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer rf.Close()
	_, err = io.CopyN(tw, rf, hdr.Size)
	return err
}

func readlinkFd(fd int) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// Checkpoint is an archive unpacked into Dir.
type Checkpoint struct {
	Dir    string
	Config ContainerConfig
	Spec   specs.Spec
	// Container is the checkpointed container's CRI identity, read from
	// where the archive's writer (CRI-O, berth or containerd) keeps it.
	Container Identity
}

// Images is the directory of CRIU images.
func (c *Checkpoint) Images() string { return filepath.Join(c.Dir, CheckpointDirectory) }

// Extract unpacks the archive at path into dest (which must not exist) and
// validates it as Open does. The archive may be gzip- or zstd-compressed.
// It goes through imagesvc's extractor taking directories and regular
// files only: every name stays inside dest, and a symlink, hardlink,
// device node or FIFO member is refused with InvalidArgument, so no file
// berth or CRIU later opens in dest can lead elsewhere on the host. On
// failure dest is removed: a corrupt, truncated or refused archive leaves
// nothing behind.
func Extract(ctx context.Context, path, dest string) (_ *Checkpoint, retErr error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("checkpoint archive %q: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("open checkpoint archive %q: %w", path, err)
	}
	defer f.Close()
	if err := os.Mkdir(dest, 0o700); err != nil {
		return nil, fmt.Errorf("unpack checkpoint archive %q: %w", path, err)
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(dest)
		}
	}()
	r, err := unpack.Decompress(f)
	if err != nil {
		return nil, fmt.Errorf("checkpoint archive %q: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	defer r.Close()
	if err := unpack.Extract(ctx, dest, r, unpack.Options{FilesOnly: true, StreamIsInput: true}); err != nil {
		return nil, fmt.Errorf("checkpoint archive %q is corrupt, truncated or refused: %w", path, err)
	}
	c, err := Open(dest)
	if err != nil {
		return nil, fmt.Errorf("checkpoint archive %q: %w", path, err)
	}
	return c, nil
}

// Open reads an unpacked checkpoint in dir (an archive's contents, or the
// layer of a checkpoint image) and validates it.
func Open(dir string) (*Checkpoint, error) {
	c := &Checkpoint{Dir: dir}
	if err := readJSON(dir, ConfigDumpFile, &c.Config); err != nil {
		return nil, err
	}
	if err := readJSON(dir, SpecDumpFile, &c.Spec); err != nil {
		return nil, err
	}
	// CRIU reads its images from the directory as root: it must be one,
	// not a symlink to another checkpoint's or any directory on the node.
	if fi, err := os.Lstat(c.Images()); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("checkpoint lacks CRIU images (%s/ is missing or not a directory): %w", CheckpointDirectory, errdefs.ErrInvalidArgument)
	}
	inv, err := openMember(filepath.Join(c.Images(), inventoryImage))
	if err != nil {
		return nil, fmt.Errorf("checkpoint lacks CRIU images (%s/%s): %v: %w", CheckpointDirectory, inventoryImage, err, errdefs.ErrInvalidArgument)
	}
	inv.Close()
	if err := c.checkRuntime(); err != nil {
		return nil, err
	}
	if c.Container, err = c.identity(); err != nil {
		return nil, err
	}
	return c, nil
}
