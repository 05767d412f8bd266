package imagesvc

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tarDir packs dir as an archive, as `tar -C dir -c .` would.
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, _ := d.Info()
		hdr, _ := tar.FileInfoHeader(info, "")
		hdr.Name = rel
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			f, _ := os.Open(p)
			defer f.Close()
			_, err = io.Copy(tw, f)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return buf.Bytes()
}

func TestLoadOCILayout(t *testing.T) {
	e := newEnv(t)
	named, unnamed := testImage(t), image(t, v1.Config{Cmd: []string{"other"}}, layer(t, ent{name: "o", body: "o"}))
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(named, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          "example.com/team/app:2.0",
		"org.opencontainers.image.ref.name": "2.0",
	})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(unnamed, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "bare-tag"})); err != nil {
		t.Fatal(err)
	}
	imgs, err := e.svc.Load(ctx, bytes.NewReader(tarDir(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].ID != configDigest(t, named) || imgs[1].ID != configDigest(t, unnamed) {
		t.Fatalf("loaded %+v", imgs)
	}
	md, _ := named.Digest()
	got, err := e.svc.Get(ctx, "example.com/team/app:2.0")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.RepoDigests, []string{"example.com/team/app@" + md.String()}) {
		t.Errorf("RepoDigests = %v", got.RepoDigests)
	}
	if len(imgs[1].RepoTags) != 0 || len(imgs[1].RepoDigests) != 0 {
		t.Errorf("a bare ref.name named the image: %v %v", imgs[1].RepoTags, imgs[1].RepoDigests)
	}
	if b, err := os.ReadFile(filepath.Join(e.svc.layers.Dir(got.ChainIDs[1]), "b")); err != nil || len(b) != 1<<16 {
		t.Errorf("layer content: %d bytes, %v", len(b), err)
	}
	// loading the same archive again is a no-op that succeeds.
	if _, err := e.svc.Load(ctx, bytes.NewReader(tarDir(t, dir))); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(e.root, ".load-*")); len(left) != 0 {
		t.Errorf("load dirs left: %v", left)
	}
}

func TestLoadDockerSave(t *testing.T) {
	e := newEnv(t)
	img := testImage(t)
	t1, _ := name.NewTag("busybox:saved")
	t2, _ := name.NewTag("registry.example:5000/x/busybox:1")
	var buf bytes.Buffer
	if err := tarball.MultiRefWrite(map[name.Reference]v1.Image{t1: img, t2: img}, &buf); err != nil {
		t.Fatal(err)
	}
	imgs, err := e.svc.Load(ctx, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].ID != configDigest(t, img) {
		t.Fatalf("loaded %+v", imgs)
	}
	for _, ref := range []string{"docker.io/library/busybox:saved", "busybox:saved", "registry.example:5000/x/busybox:1"} {
		if g, err := e.svc.Get(ctx, ref); err != nil || g.ID != imgs[0].ID {
			t.Errorf("Get(%s) = %v, %v", ref, g.ID, err)
		}
	}
	// the image is removable by either tag and then leaves nothing.
	if err := e.svc.Remove(ctx, "busybox:saved"); err != nil {
		t.Fatal(err)
	}
	if left := files(t, filepath.Join(e.root, "content")); len(left) != 0 {
		t.Errorf("blobs left: %v", left)
	}
	if dirs := layerDirs(t, e); len(dirs) != 0 {
		t.Errorf("layers left: %v", dirs)
	}
}

func TestLoadBadArchives(t *testing.T) {
	e := newEnv(t)
	good := testImage(t)
	var save bytes.Buffer
	tag, _ := name.NewTag("busybox:x")
	if err := tarball.Write(tag, good, &save); err != nil {
		t.Fatal(err)
	}
	// a docker save whose layer was swapped: diff id check fails.
	tampered := rewriteTar(t, save.Bytes(), func(h *tar.Header, body []byte) []byte {
		if filepath.Ext(h.Name) == ".gz" || filepath.Ext(h.Name) == ".tar" {
			body = bytes.Clone(body)
			body[len(body)/2] ^= 0xff
		}
		return body
	})
	tests := map[string][]byte{
		"not a tar":   []byte("hello"),
		"empty":       mkTar(t),
		"escape":      mkTar(t, ent{name: "../evil", body: "x"}),
		"tampered":    tampered,
		"no manifest": mkTar(t, ent{name: "manifest.json", body: `[{"Config":"missing.json","RepoTags":["a:b"],"Layers":[]}]`}),
	}
	for n, data := range tests {
		_, err := e.svc.Load(ctx, bytes.NewReader(data))
		if err == nil {
			t.Errorf("%s: loaded", n)
			continue
		}
		if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotFound(err) {
			t.Errorf("%s: error class of %v", n, err)
		}
	}
	imgs, _ := e.svc.List(ctx)
	if len(imgs) != 0 || len(files(t, filepath.Join(e.root, "content"))) != 0 || len(layerDirs(t, e)) != 0 {
		t.Errorf("failed loads left images %v, blobs or layers", imgs)
	}
}

// rewriteTar rewrites each entry of the tar data with f (which may change
// the header too), then appends the bodiless entries extra.
func rewriteTar(t *testing.T, data []byte, f func(*tar.Header, []byte) []byte, extra ...*tar.Header) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		body = f(h, body)
		h.Size = int64(len(body))
		tw.WriteHeader(h)
		tw.Write(body)
	}
	for _, h := range extra {
		tw.WriteHeader(h)
	}
	tw.Close()
	return buf.Bytes()
}

// TestLoadDockerSaveLinkedLayers: docker save before 25 stores a layer
// once and links the other copies to it; a link may not lead out of the
// archive.
func TestLoadDockerSaveLinkedLayers(t *testing.T) {
	e := newEnv(t)
	img := testImage(t)
	tag, _ := name.NewTag("busybox:linked")
	var save bytes.Buffer
	if err := tarball.Write(tag, img, &save); err != nil {
		t.Fatal(err)
	}
	// every layer file (named by its digest) moves to store-<hex>/layer.tar,
	// and the manifest names link-<hex>/layer.tar, a symlink to it.
	ls, err := img.Layers()
	if err != nil || len(ls) == 0 {
		t.Fatalf("layers: %d, %v", len(ls), err)
	}
	var hexes []string
	var links []*tar.Header
	for _, l := range ls {
		d, _ := l.Digest()
		hexes = append(hexes, d.Hex)
		links = append(links, &tar.Header{Name: "link-" + d.Hex + "/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../store-" + d.Hex + "/layer.tar", Mode: 0o777})
	}
	layerHex := func(name string) string {
		for _, h := range hexes {
			if strings.HasPrefix(name, h) {
				return h
			}
		}
		return ""
	}
	linked := func(escape ...*tar.Header) []byte {
		return rewriteTar(t, save.Bytes(), func(h *tar.Header, body []byte) []byte {
			if hex := layerHex(h.Name); hex != "" {
				h.Name = "store-" + hex + "/layer.tar"
			}
			if h.Name != "manifest.json" {
				return body
			}
			var m []dockerManifest
			if err := json.Unmarshal(body, &m); err != nil || len(m) != 1 {
				t.Fatalf("manifest.json: %v", err)
			}
			for i, l := range m[0].Layers {
				m[0].Layers[i] = "link-" + layerHex(l) + "/layer.tar"
			}
			body, _ = json.Marshal(m)
			return body
		}, append(links, escape...)...)
	}
	imgs, err := e.svc.Load(ctx, bytes.NewReader(linked()))
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].ID != configDigest(t, img) {
		t.Fatalf("loaded %+v", imgs)
	}
	escape := &tar.Header{Name: "x/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../../../../etc/passwd", Mode: 0o777}
	if _, err := e.svc.Load(ctx, bytes.NewReader(linked(escape))); !errdefs.IsInvalidArgument(err) {
		t.Errorf("archive with a link out of it: %v, want invalid argument", err)
	}
}
