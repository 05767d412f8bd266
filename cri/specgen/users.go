package specgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// maxDBSize bounds how much of an image's passwd/group file is read: the
// files come from untrusted images.
const maxDBSize = 4 << 20

// RootfsUsers resolves users against <rootfs>/etc/passwd and /etc/group.
// Files are re-read on each call; Generate makes only a few.
type RootfsUsers struct {
	rootfs string
}

var _ UserLookup = (*RootfsUsers)(nil)

// NewRootfsUsers returns a UserLookup reading the image's own databases.
// Symlinks in the image are resolved inside rootfs, never on the host.
func NewRootfsUsers(rootfs string) *RootfsUsers {
	return &RootfsUsers{rootfs: rootfs}
}

type passwdEntry struct {
	name     string
	uid, gid uint32
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// LookupUser implements UserLookup.
func (r *RootfsUsers) LookupUser(name string) (uint32, uint32, error) {
	ents, err := r.passwd()
	if err != nil {
		return 0, 0, err
	}
	if e, ok := findUser(ents, name); ok {
		return e.uid, e.gid, nil
	}
	return 0, 0, fmt.Errorf("user %q: %w", name, errdefs.ErrNotFound)
}

// LookupGroup implements UserLookup.
func (r *RootfsUsers) LookupGroup(name string) (uint32, error) {
	ents, err := r.groups()
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if e.name == name {
			return e.gid, nil
		}
	}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		for _, e := range ents {
			if e.gid == uint32(n) {
				return e.gid, nil
			}
		}
	}
	return 0, fmt.Errorf("group %q: %w", name, errdefs.ErrNotFound)
}

// GroupsOf implements UserLookup. Unreadable databases yield no groups:
// membership is best effort, as in runc's user package.
func (r *RootfsUsers) GroupsOf(user string, gid uint32) []uint32 {
	if ents, err := r.passwd(); err == nil {
		if e, ok := findUser(ents, user); ok {
			user = e.name
		}
	}
	groups, err := r.groups()
	if err != nil {
		return nil
	}
	var out []uint32
	for _, g := range groups {
		if g.gid == gid {
			continue
		}
		for _, m := range g.members {
			if m == user {
				out = append(out, g.gid)
				break
			}
		}
	}
	return out
}

func findUser(ents []passwdEntry, name string) (passwdEntry, bool) {
	for _, e := range ents {
		if e.name == name {
			return e, true
		}
	}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		for _, e := range ents {
			if e.uid == uint32(n) {
				return e, true
			}
		}
	}
	return passwdEntry{}, false
}

func (r *RootfsUsers) passwd() ([]passwdEntry, error) {
	data, err := r.readFile("etc/passwd")
	if err != nil {
		return nil, err
	}
	var out []passwdEntry
	for _, f := range splitDB(data, 4) {
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid)})
	}
	return out, nil
}

func (r *RootfsUsers) groups() ([]groupEntry, error) {
	data, err := r.readFile("etc/group")
	if err != nil {
		return nil, err
	}
	var out []groupEntry
	for _, f := range splitDB(data, 3) {
		gid, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		e := groupEntry{name: f[0], gid: uint32(gid)}
		if len(f) > 3 && f[3] != "" {
			e.members = strings.Split(f[3], ",")
		}
		out = append(out, e)
	}
	return out, nil
}

// splitDB splits colon-separated lines, skipping comments and lines with
// fewer than minFields+1 fields.
func splitDB(data string, minFields int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), maxDBSize)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < minFields {
			continue
		}
		out = append(out, f)
	}
	return out
}

// readFile reads rel inside the rootfs; a missing file reads as empty so
// images without /etc/passwd still run numeric users. Anything but a
// regular file is refused: the image chooses what sits there, and opening
// a FIFO, a device node or a host file for it runs on the host as root.
func (r *RootfsUsers) readFile(rel string) (string, error) {
	f, err := openRegularInRoot(r.rootfs, rel)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("open %s in rootfs %q: %w", rel, r.rootfs, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDBSize))
	if err != nil {
		return "", fmt.Errorf("read %s in rootfs %q: %w", rel, r.rootfs, err)
	}
	return string(data), nil
}

// openRegularInRoot opens rel for reading only if it is a regular file
// inside root. The path is resolved with openat2(RESOLVE_IN_ROOT), so "..",
// absolute symlinks and magic links in the image cannot reach host files,
// and the last component is not followed even inside root. It is first
// opened O_PATH, which has no side effects on devices and never blocks on
// FIFOs, checked with fstat, and only then reopened for reading.
func openRegularInRoot(root, rel string) (*os.File, error) {
	pathFD, err := openPathInRoot(root, rel)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pathFD)
	var st unix.Stat_t
	if err := unix.Fstat(pathFD, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: filepath.Join(root, rel), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is a %s, not a regular file: %w", rel, fileType(st.Mode), errdefs.ErrInvalidArgument)
	}
	// Reopening through the O_PATH descriptor reads exactly the inode that
	// was checked, whatever happens to the path meanwhile.
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pathFD), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "reopen", Path: filepath.Join(root, rel), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, rel)), nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFDIR:
		return "directory"
	}
	return fmt.Sprintf("file of mode %#o", mode&unix.S_IFMT)
}

// openPathInRoot returns an O_PATH descriptor of rel resolved inside root
// without following a symlink at its last component (which then is the
// descriptor's file, found by fstat).
func openPathInRoot(root, rel string) (int, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dir)
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for attempt := 0; ; attempt++ {
		fd, err := unix.Openat2(dir, rel, how)
		switch {
		case err == nil:
			return fd, nil
		case (errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN)) && attempt < 10:
			// EAGAIN: a concurrent rename raced the resolution; retry a few times.
			continue
		case errors.Is(err, unix.ENOSYS):
			return openPathNoSymlinks(dir, root, rel)
		}
		return -1, &os.PathError{Op: "openat2", Path: filepath.Join(root, rel), Err: err}
	}
}

// openPathNoSymlinks is openPathInRoot for kernels without openat2 (before
// 5.6): it walks rel one component at a time and refuses any symlink, which
// is stricter than RESOLVE_IN_ROOT but never leaves root.
func openPathNoSymlinks(dir int, root, rel string) (int, error) {
	parts := strings.Split(filepath.Clean("/" + rel)[1:], "/")
	cur, err := unix.Dup(dir)
	if err != nil {
		return -1, &os.PathError{Op: "dup", Path: root, Err: err}
	}
	for i, p := range parts {
		flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i < len(parts)-1 {
			flags |= unix.O_DIRECTORY
		}
		next, err := unix.Openat(cur, p, flags, 0)
		unix.Close(cur)
		if err != nil {
			return -1, &os.PathError{Op: "openat", Path: filepath.Join(root, rel), Err: err}
		}
		cur = next
	}
	return cur, nil
}
