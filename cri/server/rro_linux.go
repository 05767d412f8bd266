package server

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// rroSupported reports whether the kernel makes a mount tree read-only
// recursively (mount_setattr with AT_RECURSIVE, Linux >= 5.12), which is
// what runc does for the "rro" option: a runtime that knows the option is
// no help on a kernel that cannot. It tries on a detached copy of dir's
// mount (without the mounts below it: the call is what is probed), which
// is gone once closed.
func rroSupported(dir string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %q: %w", dir, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("recursive read-only %q: %w", dir, err)
	}
	return nil
}
