package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

type ent struct {
	name, link, body string
	typ              byte
	mode             int64
	uid, gid         int
	devmaj           int64
	pax              map[string]string
}

func mkTar(t testing.TB, ents []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	for _, e := range ents {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: mode, Uid: e.uid, Gid: e.gid,
			Size: int64(len(e.body)), ModTime: mt, Devmajor: e.devmaj, PAXRecords: e.pax, Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestApply(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	data := mkTar(t, []ent{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/", typ: tar.TypeDir, mode: 0o750},
		{name: "etc/passwd", typ: tar.TypeReg, body: "root:x:0:0\n", mode: 0o640, uid: 12, gid: 34,
			pax: map[string]string{"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.overlay.redirect": "/x"}},
		{name: "bin/sh", typ: tar.TypeReg, body: "#!", mode: 0o4755},
		{name: "bin/ash", typ: tar.TypeLink, link: "bin/sh"},
		{name: "usr/bin/env", typ: tar.TypeSymlink, link: "/bin/sh"},
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		{name: "dev/null", typ: tar.TypeChar, devmaj: 1},
		{name: "opt/.wh.gone", typ: tar.TypeReg},
		{name: "var/.wh..wh..opq", typ: tar.TypeReg},
		{name: "var/.wh..wh.plnk", typ: tar.TypeReg},
	})
	if err := Apply(context.Background(), dir, bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "etc/passwd"))
	if err != nil || string(b) != "root:x:0:0\n" {
		t.Fatalf("passwd = %q, %v", b, err)
	}
	var st unix.Stat_t
	mustLstat := func(p string) unix.Stat_t {
		t.Helper()
		if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil {
			t.Fatalf("lstat %s: %v", p, err)
		}
		return st
	}
	if s := mustLstat("etc/passwd"); s.Mode&0o7777 != 0o640 || s.Uid != 12 || s.Gid != 34 || s.Mtim.Sec != 1700000000 {
		t.Errorf("passwd attrs mode=%o uid=%d gid=%d mtime=%d", s.Mode&0o7777, s.Uid, s.Gid, s.Mtim.Sec)
	}
	if s := mustLstat("etc"); s.Mode&0o7777 != 0o750 || s.Mtim.Sec != 1700000000 {
		t.Errorf("etc mode=%o mtime=%d", s.Mode&0o7777, s.Mtim.Sec)
	}
	if s := mustLstat("bin/sh"); s.Mode&0o7777 != 0o4755 || s.Nlink != 2 {
		t.Errorf("sh mode=%o nlink=%d", s.Mode&0o7777, s.Nlink)
	}
	if l, err := os.Readlink(filepath.Join(dir, "usr/bin/env")); err != nil || l != "/bin/sh" {
		t.Errorf("symlink = %q, %v", l, err)
	}
	if s := mustLstat("run/fifo"); s.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo mode %o", s.Mode)
	}
	if s := mustLstat("dev/null"); s.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(s.Rdev) != 1 || s.Mode&0o7777 != 0o644 {
		t.Errorf("device node mode=%o rdev=%d:%d", s.Mode, unix.Major(s.Rdev), unix.Minor(s.Rdev))
	}
	if s := mustLstat("opt/gone"); s.Mode&unix.S_IFMT != unix.S_IFCHR || s.Rdev != 0 {
		t.Errorf("whiteout mode=%o rdev=%d", s.Mode, s.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(dir, "opt/.wh.gone")); err == nil {
		t.Error(".wh. file kept")
	}
	v := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "var"), OpaqueXattr, v); err != nil || string(v[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", v[:n], err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(dir, "etc/passwd"), "user.k", v); err != nil || string(v[:n]) != "v" {
		t.Errorf("user xattr = %q, %v", v[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(dir, "etc/passwd"), "trusted.overlay.redirect", v); err == nil {
		t.Error("overlay xattr from layer was applied")
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "var")); len(entries) != 0 {
		t.Errorf("var has %v", entries)
	}
}

func TestApplyHostile(t *testing.T) {
	requireRoot(t)
	outside := t.TempDir()
	evilName := "berth-evil-" + filepath.Base(outside)
	tests := []struct {
		name    string
		ents    []ent
		wantErr bool
	}{
		{"dotdot", []ent{{name: "../" + evilName, typ: tar.TypeReg, body: "x"}}, true},
		{"nested dotdot", []ent{{name: "a/../../" + evilName, typ: tar.TypeReg, body: "x"}}, true},
		{"absolute", []ent{{name: filepath.Join(outside, "x"), typ: tar.TypeReg, body: "x"}}, true},
		{"symlink to root", []ent{
			{name: "a", typ: tar.TypeSymlink, link: "/"},
			{name: "a/tmp/" + evilName, typ: tar.TypeReg, body: "x"},
			{name: "a" + outside + "/x", typ: tar.TypeReg, body: "x"},
		}, false},
		{"symlink to outside abs", []ent{
			{name: "o", typ: tar.TypeSymlink, link: outside},
			{name: "o/x", typ: tar.TypeReg, body: "x"},
			{name: "o/d/", typ: tar.TypeDir},
		}, true}, // the target does not exist inside the layer: ENOENT
		{"symlink relative up", []ent{
			{name: "r", typ: tar.TypeSymlink, link: "../../../../../../../../../.." + outside},
			{name: "r/x", typ: tar.TypeReg, body: "x"},
			{name: "r/.wh.x", typ: tar.TypeReg},
		}, true},
		{"symlink to inside dir", []ent{
			{name: "real/", typ: tar.TypeDir},
			{name: "in", typ: tar.TypeSymlink, link: "/real"},
			{name: "in/x", typ: tar.TypeReg, body: "x"},
		}, false},
		{"file over symlink", []ent{
			{name: "f", typ: tar.TypeSymlink, link: filepath.Join(outside, "x")},
			{name: "f", typ: tar.TypeReg, body: "inside"},
		}, false},
		{"hardlink dotdot", []ent{{name: "h", typ: tar.TypeLink, link: "../x"}}, true},
		{"hardlink absolute", []ent{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, true},
		{"hardlink via symlink", []ent{
			{name: "s", typ: tar.TypeSymlink, link: "/etc"},
			{name: "h", typ: tar.TypeLink, link: "s/passwd"},
		}, true},
		{"char device", []ent{{name: "x", typ: tar.TypeChar, devmaj: 1, mode: 0o666}}, false},
		{"block device", []ent{{name: "x", typ: tar.TypeBlock, devmaj: 8, mode: 0o666}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := Apply(context.Background(), dir, bytes.NewReader(mkTar(t, tc.ents)), nil)
			if tc.wantErr != (err != nil) {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) && !errors.Is(err, unix.ENOENT) {
				t.Errorf("unexpected error kind: %v", err)
			}
			for _, p := range []string{filepath.Join(outside, "x"), filepath.Join(outside, "d"),
				filepath.Join(filepath.Dir(dir), evilName), "/tmp/" + evilName} {
				if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists outside the layer", p)
				}
			}
			if _, err := os.Lstat(filepath.Join(dir, "x")); (tc.name == "char device" || tc.name == "block device") && err != nil {
				t.Errorf("device node not created in the layer: %v", err)
			}
			if tc.name == "symlink to inside dir" {
				if _, err := os.Stat(filepath.Join(dir, "real/x")); err != nil {
					t.Errorf("entry under in-layer symlink not resolved inside: %v", err)
				}
			}
			if tc.name == "file over symlink" {
				b, err := os.ReadFile(filepath.Join(dir, "f"))
				if err != nil || string(b) != "inside" {
					t.Errorf("f = %q, %v", b, err)
				}
			}
		})
	}
}

func TestDecompress(t *testing.T) {
	payload := bytes.Repeat([]byte("layer"), 1000)
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(payload)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(payload)
	zw.Close()
	for name, in := range map[string][]byte{"plain": payload, "gzip": gz.Bytes(), "zstd": zs.Bytes(), "empty": nil} {
		t.Run(name, func(t *testing.T) {
			rc, err := Decompress(bytes.NewReader(in))
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			want := payload
			if name == "empty" {
				want = nil
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes, want %d", len(got), len(want))
			}
		})
	}
}
