package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// TestExtractOptions: without Whiteouts a ".wh." name is a plain file,
// without Xattrs none is set, without Devices a device node is refused.
func TestExtractOptions(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	data := mkTar(t, []ent{
		{name: "a/.wh.b", typ: tar.TypeReg, body: "kept"},
		{name: "a/.wh..wh..opq", typ: tar.TypeReg, body: "kept"},
		{name: "x", typ: tar.TypeReg, body: "x", pax: map[string]string{"SCHILY.xattr.user.k": "v"}},
	})
	if err := Extract(context.Background(), dir, bytes.NewReader(data), Options{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a/.wh.b", "a/.wh..wh..opq"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != "kept" {
			t.Errorf("%s = %q, %v", p, b, err)
		}
	}
	if _, err := unix.Lgetxattr(filepath.Join(dir, "a"), OpaqueXattr, make([]byte, 8)); err == nil {
		t.Error("opaque xattr set without Whiteouts")
	}
	if _, err := unix.Lgetxattr(filepath.Join(dir, "x"), "user.k", make([]byte, 8)); err == nil {
		t.Error("xattr set without Xattrs")
	}
	for _, e := range []ent{
		{name: "d", typ: tar.TypeChar, devmaj: 1, mode: 0o666},
		{name: "d", typ: tar.TypeBlock, devmaj: 8, mode: 0o666},
		{name: "d", typ: tar.TypeChar},
	} {
		err := Extract(context.Background(), dir, bytes.NewReader(mkTar(t, []ent{e})), Options{})
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("device %c %d: err = %v, want invalid argument", e.typ, e.devmaj, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, "d")); err == nil {
			t.Errorf("device %c %d created", e.typ, e.devmaj)
		}
	}
}

// TestRemove: removal resolves parents inside the tree, so a symlink in
// it cannot aim the removal at the host.
func TestRemove(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/link/victim", "link/victim", "/missing/x", "/d/../link/victim", "/"} {
		if err := Remove(dir, p); err != nil {
			t.Errorf("Remove(%q) = %v", p, err)
		}
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("file outside the tree removed: %v", err)
	}
	if err := Remove(dir, "/link"); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir, "d"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left %v", entries)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("file outside the tree removed with the symlink: %v", err)
	}
	if err := Remove(dir, "../x"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Remove(../x) = %v, want invalid argument", err)
	}
}

// TestExtractFilesOnly: with FilesOnly a symlink, hardlink, device node or
// FIFO is refused and not created; directories and regular files are
// taken.
func TestExtractFilesOnly(t *testing.T) {
	dir := t.TempDir()
	ok := mkTar(t, []ent{
		{name: "d/", typ: tar.TypeDir, mode: 0o755},
		{name: "d/f", typ: tar.TypeReg, body: "f", mode: 0o644},
	})
	if err := Extract(context.Background(), dir, bytes.NewReader(ok), Options{FilesOnly: true}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "d/f")); err != nil || string(b) != "f" {
		t.Errorf("d/f = %q, %v", b, err)
	}
	for _, e := range []ent{
		{name: "x", typ: tar.TypeSymlink, link: "/etc/passwd"},
		{name: "x", typ: tar.TypeSymlink, link: "d/f"},
		{name: "x", typ: tar.TypeLink, link: "d/f"},
		{name: "x", typ: tar.TypeFifo, mode: 0o644},
		{name: "x", typ: tar.TypeChar, devmaj: 1, mode: 0o666},
		{name: "x", typ: tar.TypeBlock, devmaj: 8, mode: 0o666},
	} {
		err := Extract(context.Background(), dir, bytes.NewReader(mkTar(t, []ent{e})), Options{FilesOnly: true, Devices: true})
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("type %c: err = %v, want invalid argument", e.typ, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, "x")); err == nil {
			t.Errorf("type %c created", e.typ)
		}
	}
}

// TestExtractFlatLinks: with FilesOnly and FlatLinks a symlink or
// hardlink becomes a hard link to the file its target names inside dir;
// one whose target is outside dir is refused, and a FIFO still is.
func TestExtractFlatLinks(t *testing.T) {
	dir := t.TempDir()
	o := Options{FilesOnly: true, FlatLinks: true}
	data := mkTar(t, []ent{
		{name: "a/layer.tar", typ: tar.TypeReg, body: "layer"},
		{name: "b/layer.tar", typ: tar.TypeSymlink, link: "../a/layer.tar"},
		{name: "c/layer.tar", typ: tar.TypeSymlink, link: "/a/layer.tar"},
		{name: "d", typ: tar.TypeLink, link: "a/layer.tar"},
	})
	if err := Extract(context.Background(), dir, bytes.NewReader(data), o); err != nil {
		t.Fatal(err)
	}
	var want unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "a/layer.tar"), &want); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"b/layer.tar", "c/layer.tar", "d"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil || st.Ino != want.Ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
			t.Errorf("%s: not a hard link of a/layer.tar (%v)", p, err)
		}
	}
	for _, e := range []ent{
		{name: "x", typ: tar.TypeSymlink, link: "../outside"},
		{name: "a/x", typ: tar.TypeSymlink, link: "../../outside"},
		{name: "x", typ: tar.TypeLink, link: "../outside"},
		{name: "x", typ: tar.TypeLink, link: "/a/layer.tar"},
		{name: "x", typ: tar.TypeFifo},
	} {
		err := Extract(context.Background(), dir, bytes.NewReader(mkTar(t, []ent{e})), o)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%c %q -> %q: err = %v, want invalid argument", e.typ, e.name, e.link, err)
		}
		if _, err := os.Lstat(filepath.Join(dir, e.name)); err == nil {
			t.Errorf("%c %q -> %q created", e.typ, e.name, e.link)
		}
	}
}

// TestExtractPrivate: owners, modes and times of the stream are ignored;
// files are 0600 and directories (named or implied) 0700.
func TestExtractPrivate(t *testing.T) {
	dir := t.TempDir()
	data := mkTar(t, []ent{
		{name: "d/", typ: tar.TypeDir, mode: 0o777, uid: 4242, gid: 4242},
		{name: "d/f", typ: tar.TypeReg, body: "f", mode: 0o4755, uid: 4242, gid: 4242},
		{name: "e/g", typ: tar.TypeReg, body: "g", mode: 0o000},
	})
	before := time.Now().Add(-time.Minute)
	if err := Extract(context.Background(), dir, bytes.NewReader(data), Options{Private: true}); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]uint32{"d": 0o700, "e": 0o700, "d/f": 0o600, "e/g": 0o600} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != mode || int(st.Uid) != os.Geteuid() {
			t.Errorf("%s: mode %o uid %d, want %o uid %d", p, st.Mode&0o7777, st.Uid, mode, os.Geteuid())
		}
		if time.Unix(st.Mtim.Unix()).Before(before) {
			t.Errorf("%s: the stream's mtime was kept", p)
		}
	}
}

// TestExtractMaxEntries: a stream of more entries than MaxEntries is
// refused; one of exactly that many is not.
func TestExtractMaxEntries(t *testing.T) {
	ents := []ent{{name: "a", typ: tar.TypeReg}, {name: "b", typ: tar.TypeReg}, {name: "c", typ: tar.TypeReg}}
	if err := Extract(context.Background(), t.TempDir(), bytes.NewReader(mkTar(t, ents)), Options{MaxEntries: 3}); err != nil {
		t.Fatal(err)
	}
	err := Extract(context.Background(), t.TempDir(), bytes.NewReader(mkTar(t, ents)), Options{MaxEntries: 2})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("3 entries, at most 2: err = %v, want invalid argument", err)
	}
}

// TestExtractStreamIsInput: a malformed or truncated stream is
// InvalidArgument only when the stream is the whole input; a system
// call's error keeps its own class either way.
func TestExtractStreamIsInput(t *testing.T) {
	data := mkTar(t, []ent{{name: "f", typ: tar.TypeReg, body: string(bytes.Repeat([]byte("x"), 4096))}})
	for name, in := range map[string][]byte{"garbage": []byte("hello"), "truncated": data[:1024]} {
		err := Extract(context.Background(), t.TempDir(), bytes.NewReader(in), Options{})
		if err == nil || errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s, a download: err = %v, want unclassified", name, err)
		}
		err = Extract(context.Background(), t.TempDir(), bytes.NewReader(in), Options{StreamIsInput: true})
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s, the input: err = %v, want invalid argument", name, err)
		}
	}
	err := Extract(context.Background(), filepath.Join(t.TempDir(), "missing"), bytes.NewReader(data), Options{StreamIsInput: true})
	if errors.Is(err, errdefs.ErrInvalidArgument) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing dir: err = %v, want ENOENT unclassified", err)
	}
}
