package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestApplySparseAndTruncated(t *testing.T) {
	requireRoot(t)
	hole := strings.Repeat("\x00", 1<<20)
	tests := []struct {
		name, body string
	}{
		{"hole in the middle", "head" + hole + "tail"},
		{"trailing hole", "head" + hole},
		{"all zero", hole},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			data := mkTar(t, []ent{{name: "f", typ: tar.TypeReg, body: tc.body}})
			if err := Apply(context.Background(), dir, bytes.NewReader(data), nil); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "f"))
			if err != nil || string(b) != tc.body {
				t.Fatalf("content differs: %d bytes, %v", len(b), err)
			}
			var st unix.Stat_t
			unix.Stat(filepath.Join(dir, "f"), &st)
			if st.Blocks*512 >= int64(len(tc.body))/2 {
				t.Errorf("%d bytes allocated for a %d byte file with a 1 MiB hole", st.Blocks*512, len(tc.body))
			}
		})
	}
	// a tar cut inside a file's data is an error, not a short file.
	data := mkTar(t, []ent{{name: "f", typ: tar.TypeReg, body: strings.Repeat("x", 5000)}})
	if err := Apply(context.Background(), t.TempDir(), bytes.NewReader(data[:2048]), nil); err == nil {
		t.Error("truncated tar applied without error")
	}
}
