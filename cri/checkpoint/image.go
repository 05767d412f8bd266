package checkpoint

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
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

func copyEntry(src, dst string, d fs.DirEntry) error {
	switch {
	case d.IsDir():
		return os.Mkdir(dst, 0o700)
	case d.Type()&fs.ModeSymlink != 0:
		l, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(l, dst)
	case !d.Type().IsRegular():
		return fmt.Errorf("entry %q has unsupported type %v: %w", src, d.Type(), errdefs.ErrInvalidArgument)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
