package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// podDir lays out a pod checkpoint with one container archive and one
// volume, and returns it with its dump.
func podDir(t *testing.T) (string, PodDump) {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{PodContainersDir, PodVolumesDir} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteArchive(context.Background(), dumpDir(t), filepath.Join(dir, PodContainersDir, "0.tar")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, PodVolumesDir, "0.tar"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d := PodDump{
		SandboxID: "sb", Config: json.RawMessage(`{"metadata":{"name":"p"}}`),
		Containers: []PodContainer{{
			Name: "counter", Archive: PodContainersDir + "/0.tar", Args: []string{"sh"},
			Mounts: []VolumeMount{{ContainerPath: "/data", Volume: "v0"}},
		}},
		Volumes: []PodVolume{{Name: "v0", Archive: PodVolumesDir + "/0.tar", Source: "/x"}},
	}
	if err := WritePodDump(dir, d); err != nil {
		t.Fatal(err)
	}
	return dir, d
}

func TestPodDumpRoundTrip(t *testing.T) {
	dir, want := podDir(t)
	got, err := ReadPodDump(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != PodDumpVersion || got.SandboxID != want.SandboxID || string(got.Config) != string(want.Config) ||
		len(got.Containers) != 1 || got.Containers[0].Name != "counter" || got.Containers[0].Mounts[0].Volume != "v0" ||
		len(got.Volumes) != 1 || got.Volumes[0].Archive != want.Volumes[0].Archive {
		t.Errorf("read back %+v, want %+v", got, want)
	}
}

func TestReadPodDumpRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(d *PodDump)
	}{
		{"version", func(d *PodDump) { d.Version = 99 }},
		{"no containers", func(d *PodDump) { d.Containers = nil }},
		{"repeated name", func(d *PodDump) { d.Containers = append(d.Containers, d.Containers[0]) }},
		{"archive escapes", func(d *PodDump) { d.Containers[0].Archive = "../x.tar" }},
		{"absolute archive", func(d *PodDump) { d.Containers[0].Archive = "/etc/passwd" }},
		{"missing archive", func(d *PodDump) { d.Containers[0].Archive = "containers/9.tar" }},
		{"unknown volume", func(d *PodDump) { d.Containers[0].Mounts[0].Volume = "v9" }},
		{"missing volume", func(d *PodDump) { d.Volumes[0].Archive = "volumes/9.tar" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, d := podDir(t)
			d.Version = PodDumpVersion
			tc.mod(&d)
			if err := WriteJSON(dir, PodDumpFile, d); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadPodDump(dir); !errdefs.IsInvalidArgument(err) {
				t.Errorf("ReadPodDump = %v, want InvalidArgument", err)
			}
		})
	}
	if _, err := ReadPodDump(filepath.Join(t.TempDir(), "none")); !errdefs.IsNotFound(err) {
		t.Errorf("ReadPodDump(missing dir) = %v, want NotFound", err)
	}
	if _, err := ReadPodDump(t.TempDir()); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ReadPodDump(empty dir) = %v, want InvalidArgument", err)
	}
}

func TestVolumeRoundTrip(t *testing.T) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	src := t.TempDir()
	must(os.MkdirAll(filepath.Join(src, "sub"), 0o750))
	must(os.WriteFile(filepath.Join(src, "sub", "f"), []byte("shared"), 0o640))
	must(os.Symlink("sub/f", filepath.Join(src, "link")))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o600))
	if os.Geteuid() == 0 {
		must(os.Chown(filepath.Join(src, "sub", "f"), 1000, 1001))
	}
	archive := filepath.Join(t.TempDir(), "v.tar")
	must(WriteVolume(context.Background(), src, archive))
	if err := WriteVolume(context.Background(), src, archive); err == nil {
		t.Error("WriteVolume over an existing archive succeeded")
	}

	dst := filepath.Join(t.TempDir(), "new")
	must(os.MkdirAll(filepath.Join(dst, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(dst, "sub", "f"), []byte("stale and longer"), 0o644))
	must(ApplyVolume(context.Background(), archive, dst))
	if b, err := os.ReadFile(filepath.Join(dst, "sub", "f")); err != nil || string(b) != "shared" {
		t.Errorf("restored file = %q, %v", b, err)
	}
	var st unix.Stat_t
	must(unix.Stat(filepath.Join(dst, "sub", "f"), &st))
	if st.Mode&0o777 != 0o640 || (os.Geteuid() == 0 && (st.Uid != 1000 || st.Gid != 1001)) {
		t.Errorf("restored file mode %o owner %d:%d", st.Mode&0o777, st.Uid, st.Gid)
	}
	if l, err := os.Readlink(filepath.Join(dst, "link")); err != nil || l != "sub/f" {
		t.Errorf("restored symlink = %q, %v", l, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "fifo")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fifo was archived: %v", err)
	}
}

func TestCopyFromLayer(t *testing.T) {
	layer := dumpDir(t)
	dest := filepath.Join(t.TempDir(), "c")
	c, err := CopyFromLayer(context.Background(), layer, dest)
	if err != nil {
		t.Fatal(err)
	}
	if c.Dir != dest || c.Config.Name != "counter" {
		t.Errorf("copied checkpoint %+v", c)
	}
	if b, err := os.ReadFile(filepath.Join(c.Images(), "pages-1.img")); err != nil || len(b) != 100000 {
		t.Errorf("pages image: %d bytes, %v", len(b), err)
	}
	// Not a checkpoint: refused, and nothing left.
	bad := filepath.Join(t.TempDir(), "c")
	if _, err := CopyFromLayer(context.Background(), t.TempDir(), bad); !errdefs.IsInvalidArgument(err) {
		t.Errorf("CopyFromLayer(empty layer) = %v, want InvalidArgument", err)
	}
	if _, err := os.Lstat(bad); err == nil {
		t.Error("failed copy left its destination")
	}
}
