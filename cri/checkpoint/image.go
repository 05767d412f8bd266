package checkpoint

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// CopyFromLayer copies a checkpoint image's unpacked layer (a shared,
// read-only directory of the image store) into dest, which must not exist,
// and validates it as Open does. A restore writes next to the CRIU images
// and the unpacked checkpoint moves into the container's bundle, so the
// layer itself is never used in place. On failure dest is removed.
func CopyFromLayer(ctx context.Context, layer, dest string) (_ *Checkpoint, retErr error) {
	if err := os.Mkdir(dest, 0o700); err != nil {
		return nil, fmt.Errorf("copy checkpoint image layer: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(dest)
		}
	}()
	err := filepath.WalkDir(layer, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, err := filepath.Rel(layer, p)
		if err != nil || rel == "." {
			return err
		}
		return copyEntry(p, filepath.Join(dest, rel), d)
	})
	if err != nil {
		return nil, fmt.Errorf("copy checkpoint image layer %q: %w", layer, err)
	}
	c, err := Open(dest)
	if err != nil {
		return nil, fmt.Errorf("checkpoint image: %w", err)
	}
	return c, nil
}

// copyEntry copies one entry of a checkpoint image's layer: directories
// and regular files only. The layer was unpacked as any image layer is,
// symlinks and all, but a symlink among a checkpoint's files would make
// a name berth or CRIU opens mean a file elsewhere on the host.
func copyEntry(src, dst string, d fs.DirEntry) error {
	switch {
	case d.IsDir():
		return os.Mkdir(dst, 0o700)
	case !d.Type().IsRegular():
		return fmt.Errorf("entry %q is a %v, only directories and regular files are taken: %w", src, typeName(d.Type()), errdefs.ErrInvalidArgument)
	}
	in, err := openMember(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return m.String()
}
