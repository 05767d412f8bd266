package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// zstdFrame is one zstd frame declaring a window of 1<<windowLog bytes
// and holding payload as a single raw block, as an encoder asked for a
// long window would write it (the window is the decoder's history
// buffer: declaring it costs the sender nothing).
func zstdFrame(windowLog uint, payload []byte) []byte {
	if len(payload) >= 128<<10 {
		panic("payload over zstd's block size")
	}
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(windowLog-10) << 3}
	hdr := uint32(1) | uint32(len(payload))<<3 // last block, raw
	f = binary.LittleEndian.AppendUint32(f, hdr)[:len(f)+3]
	return append(f, payload...)
}

func TestZstdWindowLimit(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 4096)
	read := func(frame []byte, opts ...Option) ([]byte, error) {
		rc, err := Decompress(bytes.NewReader(frame), opts...)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	// a 1 MiB window is within a 128 MiB limit.
	if got, err := read(zstdFrame(20, payload), WithMaxWindow(128<<20)); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("small window: %d bytes, %v", len(got), err)
	}
	// 256 MiB is under the library's default but over the limit.
	_, err := read(zstdFrame(28, payload), WithMaxWindow(128<<20))
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("256 MiB window with a 128 MiB limit: %v, want ResourceExhausted", err)
	}
	if _, err := Decompress(bytes.NewReader(nil), WithMaxWindow(1)); !errdefs.IsInvalidArgument(err) {
		t.Errorf("window limit under the format's minimum: %v", err)
	}
}

func TestBudget(t *testing.T) {
	file := func(name string, size int) ent {
		return ent{name: name, typ: tar.TypeReg, body: string(make([]byte, size))}
	}
	layer := mkTar(t, []ent{file("a", 3000), file("b", 3000)})
	// two layers of 2*(512+3000) bytes each share 10000 bytes: the second fails.
	b := NewBudget(10000)
	if err := Apply(context.Background(), t.TempDir(), bytes.NewReader(layer), nil, WithBudget(b)); err != nil {
		t.Fatalf("first layer within budget: %v", err)
	}
	dir := t.TempDir()
	err := Apply(context.Background(), dir, bytes.NewReader(layer), nil, WithBudget(b))
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("second layer over budget: %v, want ResourceExhausted", err)
	}
	// a released try gives its charge back: a retry is not counted twice.
	b = NewBudget(10000)
	try := b.Sub()
	if err := Apply(context.Background(), t.TempDir(), bytes.NewReader(layer), nil, WithBudget(try)); err != nil {
		t.Fatal(err)
	}
	try.Release()
	for range 2 {
		try = b.Sub()
		if err := Apply(context.Background(), t.TempDir(), bytes.NewReader(layer), nil, WithBudget(try)); err != nil {
			t.Fatalf("retry after release: %v", err)
		}
		try.Release()
	}
}

func TestBudgetRefusesBeforeWriting(t *testing.T) {
	// a header claiming 1 TiB followed by nothing: refused for its size,
	// not for the truncated stream, and no file is created.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	err := Apply(context.Background(), dir, bytes.NewReader(buf.Bytes()), nil, WithBudget(NewBudget(64<<30)))
	if !errdefs.IsResourceExhausted(err) {
		t.Fatalf("1 TiB file with a 64 GiB budget: %v, want ResourceExhausted", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "huge")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("file created before the budget check: %v", err)
	}
}
