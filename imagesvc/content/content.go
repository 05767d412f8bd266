// Package content owns the verified blob store: registry blobs (manifests,
// configs, compressed layers) kept by digest under blobs/sha256/<hex>. A blob
// becomes visible only once its bytes hash to the expected digest.
package content

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// Store is a content-addressed blob store rooted at a directory.
type Store struct {
	root string
}

// New creates (if needed) the store layout under root.
func New(root string) (*Store, error) {
	for _, d := range []string{filepath.Join(root, "blobs", "sha256"), filepath.Join(root, "ingest")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create content dir: %w", err)
		}
	}
	// Blobs are private images' layers: closed to other users, also in a
	// store an older berth made.
	if err := os.Chmod(root, 0o700); err != nil {
		return nil, fmt.Errorf("close content store to other users: %w", err)
	}
	// Ingest files are never valid after a restart: drop leftovers of a crash.
	stale, err := os.ReadDir(filepath.Join(root, "ingest"))
	if err != nil {
		return nil, fmt.Errorf("read ingest dir: %w", err)
	}
	for _, e := range stale {
		if err := os.RemoveAll(filepath.Join(root, "ingest", e.Name())); err != nil {
			return nil, fmt.Errorf("remove stale ingest file: %w", err)
		}
	}
	return &Store{root: root}, nil
}

// Root is the directory the store lives in.
func (s *Store) Root() string { return s.root }

func validate(d digest.Digest) error {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q: only valid sha256 digests are supported: %w", d, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Path is where blob d lives (whether or not it exists).
func (s *Store) Path(d digest.Digest) string {
	return filepath.Join(s.root, "blobs", "sha256", d.Encoded())
}

// Has reports whether blob d is stored.
func (s *Store) Has(d digest.Digest) bool {
	if validate(d) != nil {
		return false
	}
	_, err := os.Stat(s.Path(d))
	return err == nil
}

// Open opens blob d for reading.
func (s *Store) Open(d digest.Digest) (*os.File, error) {
	if err := validate(d); err != nil {
		return nil, err
	}
	f, err := os.Open(s.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %q: %w", d, errdefs.ErrNotFound)
	}
	return f, err
}

// ReadBlob returns the whole of blob d (for small blobs: manifests, configs).
func (s *Store) ReadBlob(d digest.Digest) ([]byte, error) {
	f, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// WriteBlob stores data as blob d, verifying it.
func (s *Store) WriteBlob(d digest.Digest, data []byte) error {
	if s.Has(d) {
		return nil
	}
	w, err := s.Writer(d, int64(len(data)))
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.Commit()
}

// Delete removes blob d; a missing blob is not an error.
func (s *Store) Delete(d digest.Digest) error {
	if err := validate(d); err != nil {
		return err
	}
	if err := os.Remove(s.Path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %q: %w", d, err)
	}
	return nil
}

// Writer streams a blob into a temp file while hashing it. Commit makes it
// visible only if digest and size match; Close without Commit removes it.
type Writer struct {
	s        *Store
	f        *os.File
	expected digest.Digest
	size     int64 // expected size, -1 when unknown
	written  int64
	dg       digest.Digester
	done     bool
}

// Writer starts writing blob expected of the given size (-1 if unknown).
func (s *Store) Writer(expected digest.Digest, size int64) (*Writer, error) {
	if err := validate(expected); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "ingest"), expected.Encoded()[:12]+"-")
	if err != nil {
		return nil, fmt.Errorf("create ingest file for %q: %w", expected, err)
	}
	return &Writer{s: s, f: f, expected: expected, size: size, dg: digest.SHA256.Digester()}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.dg.Hash().Write(p[:n])
	w.written += int64(n)
	return n, err
}

// Commit verifies the bytes written and renames the blob into place.
func (w *Writer) Commit() error {
	if w.done {
		return fmt.Errorf("blob %q already committed or closed: %w", w.expected, errdefs.ErrFailedPrecondition)
	}
	defer w.Close()
	if w.size >= 0 && w.written != w.size {
		return fmt.Errorf("blob %q: size %d, expected %d: %w", w.expected, w.written, w.size, errdefs.ErrInvalidArgument)
	}
	if got := w.dg.Digest(); got != w.expected {
		return fmt.Errorf("blob %q: content has digest %q: %w", w.expected, got, errdefs.ErrInvalidArgument)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("sync blob %q: %w", w.expected, err)
	}
	if err := w.f.Chmod(0o444); err != nil {
		return fmt.Errorf("chmod blob %q: %w", w.expected, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close blob %q: %w", w.expected, err)
	}
	if err := os.Rename(w.f.Name(), w.s.Path(w.expected)); err != nil {
		return fmt.Errorf("commit blob %q: %w", w.expected, err)
	}
	w.done = true
	return nil
}

// Close aborts an uncommitted write; it is safe to call more than once.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove ingest file: %w", err)
	}
	return nil
}
