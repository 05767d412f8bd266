package imagesvc

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// lstatCount is the reference the walker must agree with: every inode
// below dir, by full-path Lstat, hard links once.
func lstatCount(t testing.TB, dirs ...string) (bytes, inodes uint64) {
	t.Helper()
	seen := map[[2]uint64]bool{}
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			key := [2]uint64{uint64(st.Dev), st.Ino} //nolint:unconvert // Stat_t.Dev is uint32 on some architectures
			if !seen[key] {
				seen[key] = true
				inodes++
				bytes += uint64(st.Blocks) * 512
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return bytes, inodes
}

// The walker counts what a full-path walk counts (files, hard links once,
// symlinks as links, a tree deeper than the descriptors it holds), does
// not follow a symlink out of the tree, and tells a missing dir.
func TestDiskUsage(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	outside := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(a, "x", "y"), 0o755))
	must(os.MkdirAll(b, 0o755))
	must(os.WriteFile(filepath.Join(a, "x", "f"), []byte(strings.Repeat("z", 70000)), 0o644))
	must(os.WriteFile(filepath.Join(a, "x", "y", "g"), []byte("g"), 0o644))
	must(os.Link(filepath.Join(a, "x", "f"), filepath.Join(b, "f-link")))
	must(os.WriteFile(filepath.Join(outside, "big"), []byte(strings.Repeat("o", 1<<20)), 0o644))
	must(os.Symlink(outside, filepath.Join(a, "escape")))
	deep := a
	for range duHeldDirs + 20 {
		deep = filepath.Join(deep, "d")
	}
	must(os.MkdirAll(deep, 0o755))
	must(os.WriteFile(filepath.Join(deep, "leaf"), []byte(strings.Repeat("l", 9000)), 0o644))
	for i := range 300 { // more names than one getdents buffer holds
		must(os.WriteFile(filepath.Join(b, strings.Repeat("n", 40)+string(rune('a'+i%26))+strings.Repeat("k", i%7)+"-"+strconv.Itoa(i)), nil, 0o644))
	}

	var du DiskUsage
	ctx := context.Background()
	must(du.Add(ctx, a))
	must(du.Add(ctx, b))
	wantBytes, wantInodes := lstatCount(t, a, b)
	if du.Bytes != wantBytes || du.Inodes != wantInodes {
		t.Fatalf("DiskUsage %d bytes, %d inodes; a full-path walk counts %d, %d", du.Bytes, du.Inodes, wantBytes, wantInodes)
	}
	if du.Bytes >= 1<<20 {
		t.Fatalf("DiskUsage followed the symlink out of the tree: %d bytes", du.Bytes)
	}
	if err := du.Add(ctx, filepath.Join(root, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing dir: %v, want fs.ErrNotExist", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	var du2 DiskUsage
	if err := du2.Add(cancelled, a); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled walk: %v", err)
	}
}

// A node's writable layers: 400 containers with an upper dir holding a
// few dirs and files and an empty work dir. Compare with
// BenchmarkDiskUsageWalkDir (the walk DiskUsage replaced) in CPU time:
//
//	go test -c -o is.test ./imagesvc
//	/usr/bin/time -f "%U %S" ./is.test -test.run XXX -test.bench '^BenchmarkDiskUsage$' -test.benchtime 200x
func BenchmarkDiskUsage(b *testing.B) {
	root := layersTree(b)
	for b.Loop() {
		var du DiskUsage
		if err := du.Add(context.Background(), root); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDiskUsageWalkDir(b *testing.B) {
	root := layersTree(b)
	for b.Loop() {
		lstatCount(b, root)
	}
}

func layersTree(b *testing.B) string {
	root := b.TempDir()
	for i := range 400 {
		c := filepath.Join(root, strconv.Itoa(i))
		for _, d := range []string{"work/work", "upper/etc", "upper/tmp", "upper/var/log"} {
			if err := os.MkdirAll(filepath.Join(c, d), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		for _, f := range []string{"upper/etc/hostname", "upper/tmp/x", "upper/var/log/app.log"} {
			if err := os.WriteFile(filepath.Join(c, f), []byte("data"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	return root
}
