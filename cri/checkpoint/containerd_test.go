package checkpoint

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// containerdDir lays out a dump as containerd 2.x's CheckpointContainer
// writes it (internal/cri/server/container_checkpoint_linux.go): its
// config.dump naming the container by containerd's internal name,
// spec.dump with io.kubernetes.cri.* annotations, status.dump holding the
// CRI status, and rootfs-diff.tar a gzip-compressed layer diff.
func containerdDir(t *testing.T, diff []byte) string {
	t.Helper()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, CheckpointDirectory), 0o700))
	must(os.WriteFile(filepath.Join(dir, CheckpointDirectory, inventoryImage), []byte("inv"), 0o600))
	for name, data := range map[string]string{
		ConfigDumpFile: `{"id":"9bb8","name":"counter_src_e2e_uid-1_0","rootfsImage":"reg/busybox:latest",` +
			`"rootfsImageRef":"reg/busybox@sha256:6b48","rootfsImageName":"reg/busybox:latest","runtime":"io.containerd.runc.v2",` +
			`"createdTime":"2026-12-04T10:06:53Z","checkpointedTime":"2026-12-04T10:06:54Z","restoredTime":"0001-01-01T00:00:00Z","restored":false}`,
		StatusDumpFile: `{"id":"9bb8","metadata":{"name":"counter","attempt":2},"state":1,"image":{"image":"reg/busybox:latest"},` +
			`"image_ref":"reg/busybox@sha256:6b48","labels":{"app":"count"},"annotations":{"note":"x"},"image_id":"sha256:85ea"}`,
		"status":     `{}`,
		"stats-dump": `{}`,
		"dump.log":   "log",
	} {
		must(os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600))
	}
	spec := specs.Spec{Version: "1.2.1", Annotations: map[string]string{
		"io.kubernetes.cri.container-name": "counter",
		"io.kubernetes.cri.container-type": "container",
		"io.kubernetes.cri.sandbox-id":     "fe10",
	}}
	must(WriteJSON(dir, SpecDumpFile, spec))
	if diff != nil {
		must(os.WriteFile(filepath.Join(dir, RootFsDiffTar), diff, 0o600))
	}
	return dir
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layerDiff is a tar of entries with bodies, in order.
func layerDiff(t *testing.T, ents ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		hdr := tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body))}
		if e.dir {
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type tarEntry struct {
	name, body string
	dir        bool
}

func TestOpenContainerdArchive(t *testing.T) {
	c, err := Open(containerdDir(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{Origin: OriginContainerd, Name: "counter", Attempt: 2, ImageID: "sha256:85ea"}
	got := c.Container
	if got.Origin != want.Origin || got.Name != want.Name || got.Attempt != want.Attempt || got.ImageID != want.ImageID ||
		got.Labels["app"] != "count" || got.Annotations["note"] != "x" {
		t.Errorf("identity = %+v, want %+v with the status' labels and annotations", got, want)
	}
}

func TestOpenContainerdArchiveRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
	}{
		{"kata runtime", func(t *testing.T, dir string) {
			rewrite(t, dir, ConfigDumpFile, func(m map[string]any) { m["runtime"] = "io.containerd.kata.v2" })
		}},
		{"sandbox container", func(t *testing.T, dir string) {
			rewrite(t, dir, SpecDumpFile, func(m map[string]any) {
				m["annotations"].(map[string]any)["io.kubernetes.cri.container-type"] = "sandbox"
			})
		}},
		{"no name anywhere", func(t *testing.T, dir string) {
			rewrite(t, dir, SpecDumpFile, func(m map[string]any) { delete(m["annotations"].(map[string]any), "io.kubernetes.cri.container-name") })
			rewrite(t, dir, StatusDumpFile, func(m map[string]any) { delete(m, "metadata") })
		}},
		{"corrupt status", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, StatusDumpFile), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := containerdDir(t, nil)
			tc.change(t, dir)
			if _, err := Open(dir); !errdefs.IsInvalidArgument(err) {
				t.Errorf("Open = %v, want InvalidArgument", err)
			}
		})
	}
}

// rewrite edits the JSON file dir/name through a generic map.
func rewrite(t *testing.T, dir, name string, edit func(map[string]any)) {
	t.Helper()
	var m map[string]any
	if err := readJSON(dir, name, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if err := WriteJSON(dir, name, m); err != nil {
		t.Fatal(err)
	}
}

// TestApplyContainerdRootfsDiff: containerd's rootfs-diff.tar is gzip under
// a .tar name, and records deletions as OCI whiteouts; both apply.
func TestApplyContainerdRootfsDiff(t *testing.T) {
	diff := gzipped(t, layerDiff(t,
		tarEntry{name: "etc/", dir: true},
		tarEntry{name: "etc/.wh.gone"},
		tarEntry{name: "etc/hosts"}, // a mount point's placeholder
		tarEntry{name: "marker", body: "migrated-file\n"},
		tarEntry{name: "data/", dir: true},
		tarEntry{name: "data/.wh..wh..opq"},
		tarEntry{name: "data/new", body: "new"},
		tarEntry{name: "var/.wh..wh.plnk"},
	))
	c, err := Open(containerdDir(t, diff))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := t.TempDir()
	for name, body := range map[string]string{"etc/gone": "image", "etc/kept": "image", "data/old": "image", "data/new": "image"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(rootfs, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ApplyRootfsDiff(rootfs); err != nil {
		t.Fatalf("ApplyRootfsDiff: %v", err)
	}
	for name, want := range map[string]string{"marker": "migrated-file\n", "etc/kept": "image", "data/new": "new", "etc/hosts": ""} {
		if b, err := os.ReadFile(filepath.Join(rootfs, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	for _, name := range []string{"etc/gone", "data/old", "etc/.wh.gone", "data/.wh..wh..opq", "var/.wh..wh.plnk"} {
		if _, err := os.Lstat(filepath.Join(rootfs, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is there after the diff deleted it (or it is whiteout bookkeeping): %v", name, err)
		}
	}
}

func TestApplyRootfsDiffRefusesCorrupt(t *testing.T) {
	full := gzipped(t, layerDiff(t, tarEntry{name: "a", body: string(bytes.Repeat([]byte("x"), 10000))}))
	c, err := Open(containerdDir(t, full[:len(full)/2]))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyRootfsDiff(t.TempDir()); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ApplyRootfsDiff of a truncated gzip diff = %v, want InvalidArgument", err)
	}
}

// TestWhiteoutStaysInside: a whiteout naming a path above the diff's root
// deletes inside the rootfs (the name is resolved there), never beside it.
func TestWhiteoutStaysInside(t *testing.T) {
	c, err := Open(containerdDir(t, gzipped(t, layerDiff(t, tarEntry{name: "../.wh.victim"}))))
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	rootfs := filepath.Join(parent, "rootfs")
	for _, p := range []string{filepath.Join(parent, "victim"), filepath.Join(rootfs, "victim")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ApplyRootfsDiff(rootfs); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(parent, "victim")); err != nil {
		t.Errorf("a whiteout deleted beside the rootfs: %v", err)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "victim")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the whiteout's path inside the rootfs is still there: %v", err)
	}
}

func TestReplayDiffStopsOnExtractError(t *testing.T) {
	// A device node is refused by the extractor; the filter goroutine
	// must not be left blocked on the pipe.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "dev", Typeflag: tar.TypeChar, Mode: 0o644})
	for i := range 100 {
		body := bytes.Repeat([]byte("y"), 64<<10)
		_ = tw.WriteHeader(&tar.Header{Name: "f" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		_, _ = tw.Write(body)
	}
	_ = tw.Close()
	if err := replayDiff(context.Background(), &buf, t.TempDir()); err == nil {
		t.Fatal("replayDiff of a device node succeeded")
	}
}
