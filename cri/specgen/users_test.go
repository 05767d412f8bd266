package specgen

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
# comment
app:x:1000:1001::/home/app:/bin/sh
broken:x:notanumber:1
short:x
`

const testGroup = `root:x:0:
app:x:1001:
video:x:44:app,other
audio:x:29:other,app
wheel:x:10:root
`

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRootfsUsers(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/passwd"), testPasswd)
	writeFile(t, filepath.Join(root, "etc/group"), testGroup)
	u := NewRootfsUsers(root)

	users := []struct {
		name     string
		uid, gid uint32
		missing  bool
	}{
		{name: "root", uid: 0, gid: 0},
		{name: "app", uid: 1000, gid: 1001},
		{name: "1000", uid: 1000, gid: 1001},
		{name: "broken", missing: true},
		{name: "short", missing: true},
		{name: "ghost", missing: true},
		{name: "4242", missing: true},
	}
	for _, tt := range users {
		uid, gid, err := u.LookupUser(tt.name)
		if tt.missing {
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("LookupUser(%q) err = %v, want not found", tt.name, err)
			}
			continue
		}
		if err != nil || uid != tt.uid || gid != tt.gid {
			t.Errorf("LookupUser(%q) = %d, %d, %v", tt.name, uid, gid, err)
		}
	}
	if gid, err := u.LookupGroup("video"); err != nil || gid != 44 {
		t.Errorf("LookupGroup(video) = %d, %v", gid, err)
	}
	if gid, err := u.LookupGroup("10"); err != nil || gid != 10 {
		t.Errorf("LookupGroup(10) = %d, %v", gid, err)
	}
	if _, err := u.LookupGroup("nogroup"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("LookupGroup(nogroup) err = %v", err)
	}
	for _, name := range []string{"app", "1000"} {
		if got := u.GroupsOf(name, 1001); !slices.Equal(got, []uint32{44, 29}) {
			t.Errorf("GroupsOf(%q) = %v", name, got)
		}
	}
	if got := u.GroupsOf("root", 0); !slices.Equal(got, []uint32{10}) {
		t.Errorf("GroupsOf(root) = %v", got)
	}
}

func TestRootfsUsersMissingFiles(t *testing.T) {
	u := NewRootfsUsers(t.TempDir())
	if _, _, err := u.LookupUser("root"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("err = %v, want not found", err)
	}
	if g := u.GroupsOf("root", 0); len(g) != 0 {
		t.Fatalf("groups = %v", g)
	}
}

// An image's /etc/passwd or /etc/group that is a symlink is refused,
// whether it points at a host path, escapes with "..", or stays inside the
// rootfs: the last component is never followed. A symlinked directory
// above it resolves inside the rootfs.
func TestRootfsUsersSymlinks(t *testing.T) {
	host := t.TempDir()
	writeFile(t, filepath.Join(host, "passwd"), "evil:x:0:0::/:/bin/sh\n")
	root := t.TempDir()
	writeFile(t, filepath.Join(root, host, "passwd"), "inside:x:7:7::/:/bin/sh\n")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(host, "passwd"), filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../../"+host+"/passwd", filepath.Join(root, "etc/group")); err != nil {
		t.Fatal(err)
	}
	u := NewRootfsUsers(root)
	for _, name := range []string{"evil", "inside", "0"} {
		if _, _, err := u.LookupUser(name); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "symlink") {
			t.Errorf("LookupUser(%q) through a symlinked passwd: err = %v, want a symlink refusal", name, err)
		}
	}
	if _, err := u.LookupGroup("evil"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("LookupGroup through a symlinked group: err = %v", err)
	}
	if g := u.GroupsOf("root", 0); len(g) != 0 {
		t.Errorf("GroupsOf through a symlinked group = %v", g)
	}

	// /etc itself an absolute symlink: resolved inside root, never on the host.
	root2 := t.TempDir()
	writeFile(t, filepath.Join(root2, "real/etc/passwd"), "inside:x:7:7::/:/bin/sh\n")
	writeFile(t, filepath.Join(root2, host, "etc/passwd"), "inside:x:8:8::/:/bin/sh\n")
	if err := os.Symlink(filepath.Join(host, "etc"), filepath.Join(root2, "etc")); err != nil {
		t.Fatal(err)
	}
	if uid, _, err := NewRootfsUsers(root2).LookupUser("inside"); err != nil || uid != 8 {
		t.Errorf("LookupUser under a symlinked /etc = %d, %v; want uid 8 from inside the rootfs", uid, err)
	}
}

// A FIFO, a socket or a device node where /etc/passwd should be is refused
// without being opened for reading: a FIFO must not block, a device must
// not be read.
func TestRootfsUsersSpecialFiles(t *testing.T) {
	type mk func(t *testing.T, path string)
	cases := []struct {
		name, kind string
		make       mk
		root       bool
	}{
		{name: "fifo", kind: "fifo", make: func(t *testing.T, p string) {
			if err := unix.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "socket", kind: "socket", make: func(t *testing.T, p string) {
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}},
		{name: "char device", kind: "character device", root: true, make: func(t *testing.T, p string) {
			// 1:5 is /dev/zero: read, it fills the whole size bound.
			if err := unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "directory", kind: "directory", make: func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root && os.Geteuid() != 0 {
				t.Skip("mknod needs root")
			}
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			tt.make(t, filepath.Join(root, "etc/passwd"))
			done := make(chan error, 1)
			go func() {
				_, _, err := NewRootfsUsers(root).LookupUser("0")
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.kind) {
					t.Fatalf("err = %v, want a refusal naming a %s", err, tt.kind)
				}
			case <-time.After(10 * time.Second):
				// The goroutine stays blocked; the test binary exits anyway.
				t.Fatal("LookupUser blocked on a special file")
			}
		})
	}
}

func TestGenerateWithRootfsUsers(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/passwd"), testPasswd)
	writeFile(t, filepath.Join(root, "etc/group"), testGroup)
	in := baseInput()
	in.Users = NewRootfsUsers(root)
	in.Image.User = "app"
	s := mustGenerate(t, in)
	if u := s.Process.User; u.UID != 1000 || u.GID != 1001 || !slices.Equal(u.AdditionalGids, []uint32{1001, 44, 29}) {
		t.Fatalf("user = %+v", u)
	}
}

// The walk used on kernels without openat2 never follows a symlink, at
// the last component or above it.
func TestOpenPathNoSymlinks(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "real/etc/passwd"), "x")
	writeFile(t, filepath.Join(root, "etc/passwd"), "x")
	if err := os.Symlink("passwd", filepath.Join(root, "etc/group")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real/etc", filepath.Join(root, "linked")); err != nil {
		t.Fatal(err)
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dir)
	mode := func(rel string) (uint32, error) {
		fd, err := openPathNoSymlinks(dir, root, rel)
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode & unix.S_IFMT, nil
	}
	if m, err := mode("etc/passwd"); err != nil || m != unix.S_IFREG {
		t.Errorf("etc/passwd: mode %#o, %v; want a regular file", m, err)
	}
	if m, err := mode("etc/group"); err != nil || m != unix.S_IFLNK {
		t.Errorf("etc/group: mode %#o, %v; want the symlink itself", m, err)
	}
	if _, err := mode("linked/passwd"); err == nil {
		t.Error("linked/passwd: a symlinked directory was followed")
	}
	if m, err := mode("../../etc/passwd"); err != nil || m != unix.S_IFREG {
		t.Errorf("../../etc/passwd: mode %#o, %v; want the rootfs' own file", m, err)
	}
}
