package checkpoint

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
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// dumpDir lays out a minimal dump: fake CRIU images and the JSON files.
func dumpDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, CheckpointDirectory), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		filepath.Join(CheckpointDirectory, inventoryImage): "inv",
		filepath.Join(CheckpointDirectory, "pages-1.img"):  string(bytes.Repeat([]byte{7}, 100000)),
		DumpLogFile: "log",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := ContainerConfig{ID: "abc", Name: "counter", RootfsImageName: "busybox", CreatedTime: time.Unix(1, 0).UTC()}
	if err := WriteJSON(dir, ConfigDumpFile, cfg); err != nil {
		t.Fatal(err)
	}
	spec := specs.Spec{Version: "1.0.2", Annotations: map[string]string{AnnotationSandboxID: "sb"}}
	if err := WriteJSON(dir, SpecDumpFile, spec); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestArchiveRoundTrip(t *testing.T) {
	dir := dumpDir(t)
	out := filepath.Join(t.TempDir(), "c.tar")
	if err := WriteArchive(context.Background(), dir, out); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v, %v; want mode 0600", fi, err)
	}
	dest := filepath.Join(t.TempDir(), "x")
	c, err := Extract(context.Background(), out, dest)
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.ID != "abc" || c.Config.Name != "counter" || c.Spec.Annotations[AnnotationSandboxID] != "sb" {
		t.Errorf("read back %+v / %+v", c.Config, c.Spec.Annotations)
	}
	pages, err := os.ReadFile(filepath.Join(c.Images(), "pages-1.img"))
	if err != nil || len(pages) != 100000 || pages[99999] != 7 {
		t.Errorf("pages image: %d bytes, %v", len(pages), err)
	}
}

func tarOf(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		h.Mode = 0o644
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractRefusesBadArchives(t *testing.T) {
	dir := dumpDir(t)
	good := filepath.Join(t.TempDir(), "good.tar")
	if err := WriteArchive(context.Background(), dir, good); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated", full[:len(full)/2]},
		{"empty", nil},
		{"garbage", bytes.Repeat([]byte("x"), 4096)},
		{"escape", tarOf(t, tar.Header{Name: "../evil", Typeflag: tar.TypeReg})},
		{"below symlink", tarOf(t, tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/tmp"}, tar.Header{Name: "l/x", Typeflag: tar.TypeReg})},
		{"no images", tarOf(t, tar.Header{Name: "config.dump", Typeflag: tar.TypeReg})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.tar")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(t.TempDir(), "x")
			_, err := Extract(context.Background(), path, dest)
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Extract = %v, want InvalidArgument", err)
			}
			if _, serr := os.Lstat(dest); serr == nil {
				t.Errorf("Extract left %s behind", dest)
			}
		})
	}
	if _, err := Extract(context.Background(), filepath.Join(t.TempDir(), "missing"), filepath.Join(t.TempDir(), "x")); !errdefs.IsNotFound(err) {
		t.Errorf("Extract of missing archive = %v, want NotFound", err)
	}
}

func TestRootfsDiffRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("whiteouts need root")
	}
	upper := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(upper, "data", "sub"), 0o755))
	must(os.WriteFile(filepath.Join(upper, "data", "sub", "f"), []byte("hello"), 0o640))
	must(os.Chown(filepath.Join(upper, "data", "sub", "f"), 1000, 1001))
	must(os.Symlink("sub/f", filepath.Join(upper, "data", "link")))
	must(os.MkdirAll(filepath.Join(upper, "etc"), 0o755))
	must(unix.Mknod(filepath.Join(upper, "etc", "motd"), unix.S_IFCHR, 0))
	must(os.WriteFile(filepath.Join(upper, "etc", "hosts"), []byte("mountpoint"), 0o644))

	dir := dumpDir(t)
	must(WriteRootfsDiff(upper, dir, []string{"/etc/hosts"}))

	rootfs := t.TempDir()
	must(os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(rootfs, "etc", "motd"), []byte("image"), 0o644))
	must(os.MkdirAll(filepath.Join(rootfs, "data"), 0o755))
	must(os.WriteFile(filepath.Join(rootfs, "data", "link"), []byte("was a file"), 0o644))
	c, err := Open(dir)
	must(err)
	must(c.ApplyRootfsDiff(rootfs))

	if b, err := os.ReadFile(filepath.Join(rootfs, "data", "sub", "f")); err != nil || string(b) != "hello" {
		t.Errorf("added file: %q, %v", b, err)
	}
	var st unix.Stat_t
	must(unix.Stat(filepath.Join(rootfs, "data", "sub", "f"), &st))
	if st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o777 != 0o640 {
		t.Errorf("owner/mode = %d:%d %o, want 1000:1001 640", st.Uid, st.Gid, st.Mode&0o777)
	}
	if l, err := os.Readlink(filepath.Join(rootfs, "data", "link")); err != nil || l != "sub/f" {
		t.Errorf("symlink replaced file: %q, %v", l, err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc", "motd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted file still there: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc", "hosts")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("skipped mount destination was applied: %v", err)
	}
}
