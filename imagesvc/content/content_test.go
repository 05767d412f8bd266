package content

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

func TestWriter(t *testing.T) {
	data := []byte("hello blob")
	good := digest.FromBytes(data)
	tests := []struct {
		name    string
		d       digest.Digest
		size    int64
		wantErr error
	}{
		{"ok", good, int64(len(data)), nil},
		{"unknown size", good, -1, nil},
		{"wrong digest", digest.FromString("other"), -1, errdefs.ErrInvalidArgument},
		{"wrong size", good, 3, errdefs.ErrInvalidArgument},
		{"bad digest", "sha256:zz", -1, errdefs.ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			w, err := s.Writer(tc.d, tc.size)
			if err == nil {
				_, _ = w.Write(data)
				err = w.Commit()
			}
			if !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			ingest, _ := os.ReadDir(filepath.Join(s.Root(), "ingest"))
			if len(ingest) != 0 {
				t.Errorf("ingest not empty: %v", ingest)
			}
			blobs, _ := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
			if tc.wantErr != nil {
				if len(blobs) != 0 {
					t.Errorf("blobs left after failure: %v", blobs)
				}
				return
			}
			got, err := s.ReadBlob(good)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("ReadBlob = %q, %v", got, err)
			}
			if !s.Has(good) {
				t.Error("Has = false")
			}
			if err := s.Delete(good); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(good); err != nil {
				t.Fatalf("second delete: %v", err)
			}
			if _, err := s.Open(good); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("Open after delete err = %v", err)
			}
		})
	}
}
