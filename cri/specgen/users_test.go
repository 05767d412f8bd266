package specgen

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
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

// An image's /etc/passwd that is a symlink to an absolute path must
// resolve inside the rootfs, never to the host's file.
func TestRootfsUsersSymlinkStaysInRoot(t *testing.T) {
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
	// And one escaping with "..".
	if err := os.Symlink("../../../../../../../../"+host+"/passwd", filepath.Join(root, "etc/group")); err != nil {
		t.Fatal(err)
	}
	u := NewRootfsUsers(root)
	if _, _, err := u.LookupUser("evil"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("host passwd was read: err = %v", err)
	}
	if uid, _, err := u.LookupUser("inside"); err != nil || uid != 7 {
		t.Fatalf("LookupUser(inside) = %d, %v", uid, err)
	}
	if _, err := u.LookupGroup("evil"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("host file read through ..: err = %v", err)
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
