package checkpoint

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

type tarEnt struct {
	name, link, body string
	typ              byte
	mode             int64
}

func hostileTar(t *testing.T, ents []tarEnt) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Size: int64(len(e.body)),
			ModTime: time.Unix(1700000000, 0), Devmajor: 1, Devminor: 3}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// replayers run a hand-made archive through each replay: a rootfs diff
// (with deleted, the deleted.files list) and a volume archive.
var replayers = map[string]func(t *testing.T, archive []byte, deleted []string, dst string) error{
	"rootfs": func(t *testing.T, archive []byte, deleted []string, dst string) error {
		dir := dumpDir(t)
		if err := os.WriteFile(filepath.Join(dir, RootFsDiffTar), archive, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := WriteJSON(dir, DeletedFilesFile, deleted); err != nil {
			t.Fatal(err)
		}
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		return c.ApplyRootfsDiff(dst)
	},
	"volume": func(t *testing.T, archive []byte, _ []string, dst string) error {
		p := filepath.Join(t.TempDir(), "v.tar")
		if err := os.WriteFile(p, archive, 0o600); err != nil {
			t.Fatal(err)
		}
		return ApplyVolume(context.Background(), p, dst)
	},
}

// TestReplayStaysInside: symlinks in a rootfs diff or volume archive
// (the pod author's input) never lead a later entry, a chmod, a time
// change or a deletion to the host (issue 18 item 5).
func TestReplayStaysInside(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	cases := []struct {
		name    string
		ents    []tarEnt
		deleted []string
	}{
		{"write through dir symlink", []tarEnt{
			{name: "evil", typ: tar.TypeSymlink, link: outside},
			{name: "evil/victim", typ: tar.TypeReg, body: "pwned", mode: 0o4777},
			{name: "evil/new", typ: tar.TypeReg, body: "pwned"},
		}, nil},
		{"relative symlink up", []tarEnt{
			{name: "up", typ: tar.TypeSymlink, link: "../../../../../../../.." + outside},
			{name: "up/victim", typ: tar.TypeReg, body: "pwned"},
		}, nil},
		{"entry over symlink to file", []tarEnt{
			{name: "f", typ: tar.TypeSymlink, link: victim},
			{name: "f", typ: tar.TypeReg, body: "inside", mode: 0o777},
		}, nil},
		{"dir entry over symlink to dir", []tarEnt{
			{name: "d", typ: tar.TypeSymlink, link: outside},
			{name: "d/", typ: tar.TypeDir, mode: 0o777},
		}, nil},
		{"hardlink to host file", []tarEnt{
			{name: "s", typ: tar.TypeSymlink, link: outside},
			{name: "h", typ: tar.TypeLink, link: "s/victim"},
		}, nil},
		{"delete through symlink", []tarEnt{
			{name: "evil", typ: tar.TypeSymlink, link: outside},
		}, []string{"/evil/victim"}},
		{"device node", []tarEnt{
			{name: "mem", typ: tar.TypeChar, mode: 0o666},
		}, nil},
	}
	for rname, apply := range replayers {
		for _, tc := range cases {
			t.Run(rname+"/"+tc.name, func(t *testing.T) {
				if err := os.WriteFile(victim, []byte("host"), 0o600); err != nil {
					t.Fatal(err)
				}
				old := time.Unix(1000, 0)
				if err := os.Chtimes(victim, old, old); err != nil {
					t.Fatal(err)
				}
				dst := t.TempDir()
				err := apply(t, hostileTar(t, tc.ents), tc.deleted, dst)
				if tc.name == "device node" {
					if !errors.Is(err, errdefs.ErrInvalidArgument) {
						t.Errorf("device node: err = %v, want InvalidArgument", err)
					}
					if _, err := os.Lstat(filepath.Join(dst, "mem")); err == nil {
						t.Error("device node created")
					}
				}
				fi, serr := os.Stat(victim)
				if serr != nil {
					t.Fatalf("host file gone: %v (replay: %v)", serr, err)
				}
				b, _ := os.ReadFile(victim)
				if string(b) != "host" || fi.Mode() != 0o600 || !fi.ModTime().Equal(old) {
					t.Errorf("host file changed: %q mode %v mtime %v (replay: %v)", b, fi.Mode(), fi.ModTime(), err)
				}
				if entries, _ := os.ReadDir(outside); len(entries) != 1 {
					t.Errorf("replay wrote beside the host file: %v (replay: %v)", entries, err)
				}
				if tc.name == "entry over symlink to file" {
					if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "inside" {
						t.Errorf("f = %q, %v", b, err)
					}
				}
			})
		}
	}
}

// TestReplayResolvesInRoot: an absolute symlink that the image has (such
// as /var/run -> /run) is followed inside the rootfs, as the container
// sees it, rather than refused or followed on the host.
func TestReplayResolvesInRoot(t *testing.T) {
	rootfs := t.TempDir()
	if err := os.Mkdir(filepath.Join(rootfs, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(rootfs, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/run", filepath.Join(rootfs, "var", "run")); err != nil {
		t.Fatal(err)
	}
	err := replayers["rootfs"](t, hostileTar(t, []tarEnt{
		{name: "var/run/app.pid", typ: tar.TypeReg, body: "42"},
	}), []string{"/var/run/gone"}, rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "run", "app.pid")); err != nil || string(b) != "42" {
		t.Errorf("run/app.pid = %q, %v", b, err)
	}
}

// TestReplayKeepsSpecialBits: setuid, setgid and sticky bits survive a
// checkpoint's round trip through a volume archive and a rootfs diff.
func TestReplayKeepsSpecialBits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setgid on a file of another group needs root")
	}
	src := t.TempDir()
	want := map[string]os.FileMode{
		"suid":   os.ModeSetuid | 0o755,
		"sgid":   os.ModeSetgid | 0o750,
		"sticky": os.ModeDir | os.ModeSticky | 0o777,
		"shared": os.ModeDir | os.ModeSetgid | 0o775,
	}
	for name, mode := range want {
		p := filepath.Join(src, name)
		var err error
		if mode.IsDir() {
			err = os.Mkdir(p, 0o700)
		} else {
			err = os.WriteFile(p, []byte("#!"), 0o600)
		}
		if err == nil {
			err = os.Chmod(p, mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T, dst string) {
		t.Helper()
		for name, mode := range want {
			fi, err := os.Lstat(filepath.Join(dst, name))
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if fi.Mode() != mode {
				t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
			}
		}
	}
	t.Run("volume", func(t *testing.T) {
		archive := filepath.Join(t.TempDir(), "v.tar")
		if err := WriteVolume(context.Background(), src, archive); err != nil {
			t.Fatal(err)
		}
		dst := t.TempDir()
		if err := ApplyVolume(context.Background(), archive, dst); err != nil {
			t.Fatal(err)
		}
		check(t, dst)
	})
	t.Run("rootfs", func(t *testing.T) {
		dir := dumpDir(t)
		if err := WriteRootfsDiff(src, dir, nil); err != nil {
			t.Fatal(err)
		}
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		rootfs := t.TempDir()
		if err := c.ApplyRootfsDiff(rootfs); err != nil {
			t.Fatal(err)
		}
		check(t, rootfs)
	})
}

// TestWriteVolumeSwappedDir: a directory of a volume swapped for a symlink
// to a host directory while the volume is archived (another pod or a host
// process sharing it) must not put the host file into the archive.
func TestWriteVolumeSwappedDir(t *testing.T) {
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "f"), []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "f"), []byte("volume"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err := tarTree(context.Background(), &buf, src, func(rel, _ string, _ fs.DirEntry) (bool, error) {
		if rel == "sub/f" {
			// the swap, between the walk's listing and the archiving
			if err := os.Rename(filepath.Join(src, "sub"), filepath.Join(src, "old")); err != nil {
				return false, err
			}
			if err := os.Symlink(host, filepath.Join(src, "sub")); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	if bytes.Contains(buf.Bytes(), []byte("host secret")) {
		t.Fatalf("the host file went into the archive (err %v)", err)
	}
	if err == nil {
		t.Error("archiving through a swapped-in symlink succeeded")
	}
}

// TestReplayRefusesSymlinkedArchive: a rootfs-diff.tar or volume archive
// that is a symlink (kept by an archive, or placed in a pod checkpoint)
// must not replay the tar it points to, another tenant's perhaps.
func TestReplayRefusesSymlinkedArchive(t *testing.T) {
	other := filepath.Join(t.TempDir(), "other.tar")
	if err := os.WriteFile(other, hostileTar(t, []tarEnt{{name: "leak", typ: tar.TypeReg, body: "other tenant"}}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("rootfs", func(t *testing.T) {
		dir := dumpDir(t)
		if err := os.Symlink(other, filepath.Join(dir, RootFsDiffTar)); err != nil {
			t.Fatal(err)
		}
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		rootfs := t.TempDir()
		if err := c.ApplyRootfsDiff(rootfs); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ApplyRootfsDiff = %v, want InvalidArgument", err)
		}
		if _, err := os.Lstat(filepath.Join(rootfs, "leak")); err == nil {
			t.Error("the symlinked tar was replayed")
		}
	})
	t.Run("volume", func(t *testing.T) {
		link := filepath.Join(t.TempDir(), "v.tar")
		if err := os.Symlink(other, link); err != nil {
			t.Fatal(err)
		}
		dst := t.TempDir()
		if err := ApplyVolume(context.Background(), link, dst); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ApplyVolume = %v, want InvalidArgument", err)
		}
		if _, err := os.Lstat(filepath.Join(dst, "leak")); err == nil {
			t.Error("the symlinked tar was replayed")
		}
	})
}
