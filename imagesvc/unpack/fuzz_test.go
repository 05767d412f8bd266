package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// FuzzApply feeds arbitrary bytes (seeded with valid and hostile layers in
// testdata/fuzz/FuzzApply) to Apply: it may fail, but must never panic nor
// write anything outside the layer dir.
func FuzzApply(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "layer")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		_ = Apply(context.Background(), dir, bytes.NewReader(data), log)
		entries, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != "layer" {
			t.Fatalf("entries written outside the layer dir: %v", entries)
		}
		for _, p := range []string{"/tmp/evil", "/evil", "/etc/evil"} {
			if _, err := os.Lstat(p); err == nil {
				t.Fatalf("%s written outside the layer", p)
			}
		}
		// a decompressing reader must also cope with the same input.
		if rc, err := Decompress(bytes.NewReader(data)); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(rc, 1<<20))
			rc.Close()
		}
	})
}

// FuzzExtractArchive feeds arbitrary bytes to Extract as image load reads
// an archive (FilesOnly, FlatLinks, Private): it may fail, but must write
// nothing outside dir, and leave only directories and regular files in it
// (no name there may lead elsewhere).
func FuzzExtractArchive(f *testing.F) {
	f.Add([]byte{})
	f.Add(mkTar(f, []ent{
		{name: "a/layer.tar", typ: tar.TypeReg, body: "layer"},
		{name: "b/layer.tar", typ: tar.TypeSymlink, link: "../a/layer.tar"},
		{name: "c", typ: tar.TypeSymlink, link: "/a/layer.tar"},
		{name: "d", typ: tar.TypeLink, link: "a/layer.tar"},
		{name: "e", typ: tar.TypeSymlink, link: "../../evil"},
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "archive")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		o := Options{FilesOnly: true, FlatLinks: true, Private: true, MaxEntries: 64, StreamIsInput: true}
		_ = Extract(context.Background(), dir, bytes.NewReader(data), o)
		entries, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != "archive" {
			t.Fatalf("entries written outside the archive dir: %v", entries)
		}
		err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && !d.Type().IsRegular() {
				t.Errorf("%s has type %v", p, d.Type())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
