package checkpoint

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hostFiles puts on the "host" (a temp dir outside any checkpoint) files
// a hostile checkpoint would like berth to read as its own: a valid
// spec.dump and config.dump, a tar, and a directory of CRIU images.
func hostFiles(t *testing.T) string {
	t.Helper()
	host := t.TempDir()
	if err := WriteJSON(host, SpecDumpFile, specs.Spec{Version: "1.0.2"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(host, ConfigDumpFile, ContainerConfig{ID: "host", RootfsImageName: "busybox"}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(host, "images"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "images", inventoryImage), []byte("inv"), 0o600); err != nil {
		t.Fatal(err)
	}
	return host
}

// archiveWith is a complete checkpoint archive whose member name is
// replaced by hdr (and whatever is below it left out).
func archiveWith(t *testing.T, replace string, hdr tar.Header) []byte {
	t.Helper()
	dir := dumpDir(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h tar.Header, body []byte) {
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == ".":
			return nil
		case rel == replace:
			add(hdr, nil)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case d.IsDir():
			add(tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: 0o700}, nil)
			return nil
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		add(tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(body))}, body)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if replace == RootFsDiffTar {
		add(hdr, nil)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestExtractRefusesLinksAndSpecialFiles: a checkpoint archive whose
// members berth or CRIU opens (spec.dump, config.dump, rootfs-diff.tar,
// the checkpoint/ directory and its images) may not be a symlink (to a
// host file, another tenant's checkpoint), a hardlink, a FIFO or a
// device: each is refused with InvalidArgument and nothing is left.
func TestExtractRefusesLinksAndSpecialFiles(t *testing.T) {
	host := hostFiles(t)
	for _, tc := range []struct {
		name, member string
		hdr          tar.Header
	}{
		{"spec.dump symlink to a host file", SpecDumpFile, tar.Header{Name: SpecDumpFile, Typeflag: tar.TypeSymlink, Linkname: filepath.Join(host, SpecDumpFile)}},
		{"config.dump relative symlink climbing out", ConfigDumpFile, tar.Header{Name: ConfigDumpFile, Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../.." + filepath.Join(host, ConfigDumpFile)}},
		{"rootfs-diff.tar symlink", RootFsDiffTar, tar.Header{Name: RootFsDiffTar, Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}},
		{"checkpoint dir symlink", CheckpointDirectory, tar.Header{Name: CheckpointDirectory, Typeflag: tar.TypeSymlink, Linkname: filepath.Join(host, "images")}},
		{"inventory symlink", filepath.Join(CheckpointDirectory, inventoryImage), tar.Header{Name: filepath.Join(CheckpointDirectory, inventoryImage), Typeflag: tar.TypeSymlink, Linkname: filepath.Join(host, "images", inventoryImage)}},
		{"spec.dump hardlink", SpecDumpFile, tar.Header{Name: SpecDumpFile, Typeflag: tar.TypeLink, Linkname: DumpLogFile}},
		{"spec.dump fifo", SpecDumpFile, tar.Header{Name: SpecDumpFile, Typeflag: tar.TypeFifo, Mode: 0o600}},
		{"rootfs-diff.tar device", RootFsDiffTar, tar.Header{Name: RootFsDiffTar, Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o600}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hostile.tar")
			if err := os.WriteFile(path, archiveWith(t, tc.member, tc.hdr), 0o600); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(t.TempDir(), "x")
			c, err := Extract(context.Background(), path, dest)
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Extract = %+v, %v; want InvalidArgument", c, err)
			}
			if _, serr := os.Lstat(dest); serr == nil {
				t.Errorf("Extract left %s behind", dest)
			}
		})
	}
}

// TestOpenRefusesLinksAndSpecialFiles: Open (also what a checkpoint
// image's copied layer goes through) reads spec.dump and config.dump
// without following a symlink, takes only regular files (a FIFO must not
// block), and wants checkpoint/ a real directory.
func TestOpenRefusesLinksAndSpecialFiles(t *testing.T) {
	host := hostFiles(t)
	for _, tc := range []struct {
		name   string
		member string
		make   func(p string) error
	}{
		{"spec.dump symlink", SpecDumpFile, func(p string) error { return os.Symlink(filepath.Join(host, SpecDumpFile), p) }},
		{"config.dump symlink", ConfigDumpFile, func(p string) error { return os.Symlink(filepath.Join(host, ConfigDumpFile), p) }},
		{"config.dump fifo", ConfigDumpFile, func(p string) error { return unix.Mkfifo(p, 0o600) }},
		{"checkpoint dir symlink", CheckpointDirectory, func(p string) error { return os.Symlink(filepath.Join(host, "images"), p) }},
		{"inventory symlink", filepath.Join(CheckpointDirectory, inventoryImage), func(p string) error {
			return os.Symlink(filepath.Join(host, "images", inventoryImage), p)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := dumpDir(t)
			p := filepath.Join(dir, tc.member)
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			if c, err := Open(dir); !errdefs.IsInvalidArgument(err) {
				t.Errorf("Open = %+v, %v; want InvalidArgument", c, err)
			}
		})
	}
}

// TestCopyFromLayerRefusesSymlinks: a checkpoint image's layer is
// unpacked as any layer is, symlinks included; copying it out for a
// restore refuses them, so a spec.dump or rootfs-diff.tar in the image
// cannot name a host file.
func TestCopyFromLayerRefusesSymlinks(t *testing.T) {
	host := hostFiles(t)
	for _, member := range []string{SpecDumpFile, RootFsDiffTar} {
		t.Run(member, func(t *testing.T) {
			layer := dumpDir(t)
			_ = os.Remove(filepath.Join(layer, member))
			target := filepath.Join(host, SpecDumpFile)
			if err := os.Symlink(target, filepath.Join(layer, member)); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(t.TempDir(), "x")
			c, err := CopyFromLayer(context.Background(), layer, dest)
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("CopyFromLayer = %+v, %v; want InvalidArgument", c, err)
			}
			if _, serr := os.Lstat(dest); serr == nil {
				t.Errorf("CopyFromLayer left %s behind", dest)
			}
		})
	}
	// An ordinary layer copies.
	layer := dumpDir(t)
	c, err := CopyFromLayer(context.Background(), layer, filepath.Join(t.TempDir(), "ok"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.ID != "abc" {
		t.Errorf("copied config.dump = %+v", c.Config)
	}
}
