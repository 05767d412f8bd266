package imagesvc

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/opencontainers/go-digest"
)

// TestAnnotationsAndLayerDir: a checkpoint image is recognised by its
// manifest's annotations and read from its unpacked layer, so both must
// survive the pull and a reload of the record.
func TestAnnotationsAndLayerDir(t *testing.T) {
	e := newEnv(t)
	l := layer(t, ent{name: "config.dump", body: `{"id":"x"}`}, ent{name: "checkpoint/", typ: tar.TypeDir})
	img := mutate.Annotations(image(t, v1.Config{}, l), map[string]string{
		"io.kubernetes.cri-o.annotations.checkpoint.name": "counter",
	}).(v1.Image)
	plain := image(t, v1.Config{Cmd: []string{"/x"}}, layer(t, ent{name: "x", body: "x"}))
	e.reg.push(t, "test/ckpt:v1", img)
	e.reg.push(t, "test/plain:v1", plain)

	got, err := e.svc.Pull(ctx, e.reg.host+"/test/ckpt:v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.svc.Get(ctx, got.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []Image{got, again} {
		if v := g.Annotations["io.kubernetes.cri-o.annotations.checkpoint.name"]; v != "counter" {
			t.Errorf("Annotations = %v, want the checkpoint name", g.Annotations)
		}
	}
	dir, err := e.svc.LayerDir(got.ChainIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "config.dump")); err != nil || string(b) != `{"id":"x"}` {
		t.Errorf("layer dir config.dump = %q, %v", b, err)
	}

	p, err := e.svc.Pull(ctx, e.reg.host+"/test/plain:v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Annotations) != 0 {
		t.Errorf("plain image Annotations = %v, want none", p.Annotations)
	}
	if _, err := e.svc.LayerDir(digest.FromString("missing")); !errdefs.IsNotFound(err) {
		t.Errorf("LayerDir(missing) = %v, want NotFound", err)
	}
}
