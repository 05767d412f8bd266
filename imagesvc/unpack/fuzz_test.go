package unpack

import (
	"bytes"
	"context"
	"io"
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
