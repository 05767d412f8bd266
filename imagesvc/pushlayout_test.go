package imagesvc

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// writeBlobLayout writes a layout whose one index has blob entries, as
// containerd's checkpoint image.
func writeBlobLayout(t *testing.T, blobs map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	put := func(mt string, data []byte) ocispec.Descriptor {
		d := digest.FromBytes(data)
		p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Annotations: map[string]string{"io.containerd.checkpoint.runtime": "io.containerd.runc.v2"}}
	idx.SchemaVersion = 2
	for mt, body := range blobs {
		d := put(mt, []byte(body))
		d.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
		idx.Manifests = append(idx.Manifests, d)
	}
	raw, _ := json.Marshal(idx)
	top := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{put(ocispec.MediaTypeImageIndex, raw)}}
	top.SchemaVersion = 2
	raw, _ = json.Marshal(top)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPushLayout(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	dir := writeBlobLayout(t, map[string]string{
		"application/vnd.containerd.container.criu.checkpoint.criu.tar":   "criu images",
		"application/vnd.containerd.container.checkpoint.config.v1+proto": "spec",
	})
	ref := host + "/ckpt/counter:v1"
	if err := PushLayout(context.Background(), dir, ref, true); err != nil {
		t.Fatalf("PushLayout: %v", err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 2 || m.Annotations["io.containerd.checkpoint.runtime"] != "io.containerd.runc.v2" {
		t.Fatalf("pushed index = %+v", m)
	}
	for _, d := range m.Manifests {
		if d.Platform == nil || d.Platform.OS != "linux" {
			t.Errorf("entry %s lost its platform", d.MediaType)
		}
		l, err := remote.Layer(r.Context().Digest(d.Digest.String()))
		if err != nil {
			t.Fatal(err)
		}
		if sz, err := l.Size(); err != nil || sz != d.Size {
			t.Errorf("blob %s: size %d, %v", d.Digest, sz, err)
		}
	}
}

func TestPushLayoutRefuses(t *testing.T) {
	dir := writeBlobLayout(t, map[string]string{ocispec.MediaTypeImageManifest: "{}"})
	if err := PushLayout(context.Background(), dir, "127.0.0.1:1/x:y", true); !errdefs.IsNotImplemented(err) {
		t.Errorf("layout with a manifest entry: %v, want NotImplemented", err)
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "index.json"), []byte(`{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:../../etc"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := PushLayout(context.Background(), bad, "127.0.0.1:1/x:y", true); !errdefs.IsInvalidArgument(err) {
		t.Errorf("layout with a bad digest: %v, want InvalidArgument", err)
	}
}
