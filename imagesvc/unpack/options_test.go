package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

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
