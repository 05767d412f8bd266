package checkpoint

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/zstd"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// crioDir lays out a dump as CRI-O writes it (internal/lib/checkpoint.go
// and checkpointctl's reader): the CRI identity in CRI-O annotations of
// spec.dump, the handler's runtime in config.dump, bind.mounts,
// deleted.files, a plain rootfs-diff.tar, and the files only
// checkpointctl reads (stats-dump, network.status).
func crioDir(t *testing.T, runtime string) string {
	t.Helper()
	dir := dumpDir(t)
	meta, _ := json.Marshal(map[string]any{"name": "counter", "attempt": 1})
	spec := specs.Spec{Version: "1.0.2", Process: &specs.Process{Args: []string{"sh"}}, Annotations: map[string]string{
		AnnotationMetadata:    string(meta),
		AnnotationLabels:      `{"app":"count"}`,
		AnnotationAnnotations: `{"note":"x"}`,
		AnnotationSandboxID:   "sb",
		AnnotationName:        "k8s_counter_pod_ns_uid_1",
	}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(WriteJSON(dir, SpecDumpFile, spec))
	must(WriteJSON(dir, ConfigDumpFile, ContainerConfig{ID: "c1", Name: "k8s_counter_pod_ns_uid_1", RootfsImageName: "quay.io/x/counter:1", RootfsImageRef: "sha256:abc", OCIRuntime: runtime}))
	must(WriteJSON(dir, BindMountsFile, []BindMount{{Source: "/var/lib/kubelet/pods/u/etc-hosts", Destination: "/etc/hosts", FileType: "file", Permissions: 0o644}}))
	must(WriteJSON(dir, DeletedFilesFile, []string{"/etc/motd"}))
	must(os.WriteFile(filepath.Join(dir, RootFsDiffTar), layerDiff(t, tarEntry{name: "marker", body: "m"}), 0o600))
	must(os.WriteFile(filepath.Join(dir, "stats-dump"), []byte("stats"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "network.status"), []byte("[]"), 0o600))
	return dir
}

func TestOpenCRIOArchive(t *testing.T) {
	for _, rt := range []string{"runc", "crun", "/usr/bin/crun", ""} {
		c, err := Open(crioDir(t, rt))
		if err != nil {
			t.Fatalf("runtime %q: %v", rt, err)
		}
		id := c.Container
		if id.Origin != OriginCRIO || id.Name != "counter" || id.Attempt != 1 || id.Labels["app"] != "count" ||
			id.Annotations["note"] != "x" || id.ImageID != "sha256:abc" {
			t.Errorf("runtime %q: identity %+v", rt, id)
		}
	}
}

// TestOpenRefusesSandboxedRuntimes: CRI-O names the handler's runtime; a
// VM or sandboxed runtime's checkpoint holds no CRIU images of processes
// berth could resume.
func TestOpenRefusesSandboxedRuntimes(t *testing.T) {
	for _, rt := range []string{"kata", "/usr/bin/kata-runtime", "containerd-shim-kata-v2", "runsc", "io.containerd.runsc.v1"} {
		if _, err := Open(crioDir(t, rt)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("runtime %q: Open = %v, want InvalidArgument", rt, err)
		}
	}
}

// TestExtractCompressedArchives: Podman exports checkpoints zstd-compressed
// by default (--compress), or gzip; kubelet's (CRI-O's) are plain tars.
func TestExtractCompressedArchives(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "plain.tar")
	if err := WriteArchive(context.Background(), crioDir(t, "runc"), plain); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(data)
	_ = zw.Close()
	enc, err := zstd.NewWriter(&zs)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = enc.Write(data)
	_ = enc.Close()
	for name, b := range map[string][]byte{"gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		p := filepath.Join(t.TempDir(), "ck.tar."+name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Extract(context.Background(), p, filepath.Join(t.TempDir(), "x"))
		if err != nil {
			t.Fatalf("%s archive: %v", name, err)
		}
		if c.Container.Name != "counter" {
			t.Errorf("%s archive: identity %+v", name, c.Container)
		}
	}
}

func TestIsImage(t *testing.T) {
	for _, a := range []string{"io.kubernetes.cri-o.annotations.checkpoint.name", "org.criu.checkpoint.container.name", "io.podman.annotations.checkpoint.name"} {
		if !IsImage(map[string]string{a: "counter"}) {
			t.Errorf("%s does not mark a checkpoint image", a)
		}
	}
	if IsImage(map[string]string{"org.opencontainers.image.ref.name": "x"}) || IsImage(nil) {
		t.Error("an ordinary image is taken for a checkpoint image")
	}
}
