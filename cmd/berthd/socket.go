package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// checkStaleSocket refuses to replace what is at the socket path unless it
// is a socket berthd's own user owns: removing a symlink planted there, a
// file, or another user's socket would let someone else choose what berthd
// deletes or where kubelet's requests go.
func checkStaleSocket(path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("inspect socket path %s: %w", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("socket path %s is a symlink; refusing to start: %w", path, errdefs.ErrFailedPrecondition)
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return fmt.Errorf("socket path %s exists and is not a socket; refusing to start: %w", path, errdefs.ErrFailedPrecondition)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("socket path %s is owned by uid %d, not by berthd's uid %d; refusing to start: %w", path, st.Uid, os.Geteuid(), errdefs.ErrFailedPrecondition)
	}
	return nil
}
