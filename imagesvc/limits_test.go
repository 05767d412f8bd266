package imagesvc

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// assertNothingLeft checks that a failed pull left no blob, no layer (whole
// or partial) and no image record.
func assertNothingLeft(t *testing.T, e *env, ref string) {
	t.Helper()
	if f := files(t, filepath.Join(e.root, "content")); len(f) != 0 {
		t.Errorf("content left: %v", f)
	}
	if d := layerDirs(t, e); len(d) != 0 {
		t.Errorf("layer dirs left: %v", d)
	}
	if _, err := e.svc.Get(ctx, ref); !errdefs.IsNotFound(err) {
		t.Errorf("image recorded after a failed pull: %v", err)
	}
}

// trickle serves one blob a byte at a time, every period, for as long as
// the client listens; everything else comes from inner.
type trickle struct {
	inner  http.Handler
	victim string
	period time.Duration
}

func (tr *trickle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || path.Base(r.URL.Path) != tr.victim {
		tr.inner.ServeHTTP(w, r)
		return
	}
	for _, b := range startBody(w, r, tr.inner) {
		select {
		case <-r.Context().Done():
			return
		case <-time.After(tr.period):
		}
		if _, err := w.Write([]byte{b}); err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
}

func TestProgressTimeout(t *testing.T) {
	img := image(t, v1.Config{}, layer(t, ent{name: "f", body: strings.Repeat("slow", 4096)}))
	ls, _ := img.Layers()
	srv := httptest.NewServer(&trickle{inner: quietRegistry(), victim: layerDigest(t, ls[0]).String(), period: 100 * time.Millisecond})
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	pushWith(t, http.DefaultTransport, host, "lib/slow:1", img)
	good := newRegistry(t)
	good.push(t, "lib/app:1", testImage(t))
	e := envWith(t, func(o *Options) {
		o.InsecureHosts = []string{host, good.host}
		o.MaxConcurrentDownloads = 1
		o.Limits.ProgressTimeout = 400 * time.Millisecond
	})

	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := e.svc.Pull(cctx, host+"/lib/slow:1", nil)
	if !errdefs.IsDeadlineExceeded(err) || !strings.Contains(err.Error(), "progress timeout") {
		t.Fatalf("pull from a trickling registry: %v, want the progress timeout", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the stalled pull took %s to fail", took)
	}
	if n := len(e.svc.sem); n != 0 {
		t.Errorf("%d download slots still held", n)
	}
	assertClean(t, e.root)
	assertNothingLeft(t, e, host+"/lib/slow:1")
	// the one download slot is free for the next pull.
	if _, err := e.svc.Pull(cctx, good.host+"/lib/app:1", nil); err != nil {
		t.Fatalf("pull after the stalled one: %v", err)
	}
}

func TestTooManyLayersRefusedBeforeDownload(t *testing.T) {
	var ls []v1.Layer
	for i := range 5 {
		ls = append(ls, layer(t, ent{name: fmt.Sprint(i), body: "x"}))
	}
	e := newEnvWith(t, func(o *Options) { o.Limits.MaxLayers = 4 })
	e.reg.push(t, "lib/deep:1", image(t, v1.Config{}, ls...))
	_, err := e.svc.Pull(ctx, e.reg.host+"/lib/deep:1", nil)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "5 layers") {
		t.Fatalf("pull of 5 layers with a limit of 4: %v, want ResourceExhausted", err)
	}
	if n := e.reg.totalGets(); n != 0 {
		t.Errorf("%d blobs downloaded before the layer count was checked", n)
	}
	assertNothingLeft(t, e, e.reg.host+"/lib/deep:1")

	e = newEnvWith(t, func(o *Options) { o.Limits.MaxLayers = 5 })
	e.reg.push(t, "lib/deep:1", image(t, v1.Config{}, ls...))
	if _, err := e.svc.Pull(ctx, e.reg.host+"/lib/deep:1", nil); err != nil {
		t.Fatalf("pull of 5 layers with a limit of 5: %v", err)
	}
}

func TestOversizedConfigRefused(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { o.Limits.MaxConfigSize = 8 << 10 })
	img := image(t, v1.Config{Labels: map[string]string{"big": strings.Repeat("c", 16<<10)}}, layer(t, ent{name: "f", body: "x"}))
	e.reg.push(t, "lib/fat:1", img)
	cfg, _ := img.ConfigName()
	_, err := e.svc.Pull(ctx, e.reg.host+"/lib/fat:1", nil)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "image config") {
		t.Fatalf("pull of a 16 KiB config with an 8 KiB limit: %v, want ResourceExhausted", err)
	}
	if n := e.reg.gets(cfg); n != 0 {
		t.Errorf("oversized config downloaded %d times", n)
	}
	assertNothingLeft(t, e, e.reg.host+"/lib/fat:1")
}

func TestOversizedManifestRefused(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { o.Limits.MaxManifestSize = 4 << 10 })
	img := mutate.Annotations(testImage(t), map[string]string{"big": strings.Repeat("m", 8<<10)}).(v1.Image)
	md := e.reg.push(t, "lib/fat:1", img)
	for _, ref := range []string{e.reg.host + "/lib/fat:1", e.reg.host + "/lib/fat@" + md.String()} {
		_, err := e.svc.Pull(ctx, ref, nil)
		if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "manifest") {
			t.Fatalf("pull %s of an 8 KiB manifest with a 4 KiB limit: %v, want ResourceExhausted", ref, err)
		}
		assertNothingLeft(t, e, ref)
	}
}

// zstdFrame is one zstd frame declaring a window of 1<<windowLog bytes and
// holding payload as a single raw block: declaring a window costs the
// sender nothing and the decoder the window's memory.
func zstdFrame(windowLog uint, payload []byte) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(windowLog-10) << 3}
	hdr := uint32(1) | uint32(len(payload))<<3 // last block, raw
	f = binary.LittleEndian.AppendUint32(f, hdr)[:len(f)+3]
	return append(f, payload...)
}

// rawLayer is a layer given by its bytes, for compressions no writer makes.
type rawLayer struct {
	compressed, uncompressed []byte
	mt                       types.MediaType
}

func (l rawLayer) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(l.compressed))
	return h, err
}
func (l rawLayer) DiffID() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(l.uncompressed))
	return h, err
}
func (l rawLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}
func (l rawLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.uncompressed)), nil
}
func (l rawLayer) Size() (int64, error)                { return int64(len(l.compressed)), nil }
func (l rawLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func TestZstdWindowRefused(t *testing.T) {
	tarball := mkTar(t, ent{name: "f", body: "hello"})
	// 256 MiB: under the decoder's own default, over berth's 128 MiB.
	l := rawLayer{compressed: zstdFrame(28, tarball), uncompressed: tarball, mt: types.OCILayerZStd}
	e := newEnvWith(t, func(*Options) {})
	e.reg.push(t, "lib/window:1", image(t, v1.Config{}, l))
	_, err := e.svc.Pull(ctx, e.reg.host+"/lib/window:1", nil)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "window") {
		t.Fatalf("pull of a zstd layer with a 256 MiB window: %v, want ResourceExhausted", err)
	}
	assertClean(t, e.root)
	assertNothingLeft(t, e, e.reg.host+"/lib/window:1")

	// the same frame with a 1 MiB window is an ordinary layer.
	l.compressed = zstdFrame(20, tarball)
	e.reg.push(t, "lib/window:2", image(t, v1.Config{}, l))
	if _, err := e.svc.Pull(ctx, e.reg.host+"/lib/window:2", nil); err != nil {
		t.Fatalf("pull of a zstd layer with a 1 MiB window: %v", err)
	}
}

func TestUnpackedSizeLimit(t *testing.T) {
	e := newEnvWith(t, func(o *Options) { o.Limits.MaxUnpackedSize = 32 << 10 })
	// 64 KiB of zeros gzip to almost nothing: a (small) decompression bomb.
	e.reg.push(t, "lib/bomb:1", image(t, v1.Config{}, layer(t, ent{name: "zeros", body: string(make([]byte, 64<<10))})))
	_, err := e.svc.Pull(ctx, e.reg.host+"/lib/bomb:1", nil)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "unpacked size limit") {
		t.Fatalf("pull of 64 KiB with a 32 KiB unpacked limit: %v, want ResourceExhausted", err)
	}
	assertClean(t, e.root)
	assertNothingLeft(t, e, e.reg.host+"/lib/bomb:1")

	e.reg.push(t, "lib/small:1", image(t, v1.Config{}, layer(t, ent{name: "f", body: string(make([]byte, 16<<10))})))
	if _, err := e.svc.Pull(ctx, e.reg.host+"/lib/small:1", nil); err != nil {
		t.Fatalf("pull of 16 KiB with a 32 KiB unpacked limit: %v", err)
	}
}

// newEnvWith is newEnv (its test registry reachable over plain HTTP) with
// options changed by mod.
func newEnvWith(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	reg := newRegistry(t)
	e := envWith(t, func(o *Options) {
		o.InsecureHosts = []string{reg.host}
		mod(o)
	})
	e.reg = reg
	return e
}

func TestLimitTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/x/manifests/big", "/v2/x/manifests/exact":
			n := 4 << 10
			if strings.HasSuffix(r.URL.Path, "big") {
				n++
			}
			// flushed before the body: chunked, with no Content-Length to check.
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			w.Write(bytes.Repeat([]byte("m"), n))
		case "/v2/x/blobs/silent":
			<-r.Context().Done() // never answers
		}
	}))
	defer srv.Close()
	c := &http.Client{Transport: &limitTransport{base: http.DefaultTransport, timeout: 300 * time.Millisecond, maxManifest: 4 << 10}}
	get := func(p string) ([]byte, error) {
		resp, err := c.Get(srv.URL + p)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	if b, err := get("/v2/x/manifests/exact"); err != nil || len(b) != 4<<10 {
		t.Errorf("manifest at the limit: %d bytes, %v", len(b), err)
	}
	if _, err := get("/v2/x/manifests/big"); !errdefs.IsResourceExhausted(err) {
		t.Errorf("chunked manifest a byte over the limit: %v, want ResourceExhausted", err)
	}
	start := time.Now()
	if _, err := get("/v2/x/blobs/silent"); !errdefs.IsDeadlineExceeded(err) || !strings.Contains(err.Error(), "progress timeout") {
		t.Errorf("registry that never answers: %v, want the progress timeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("silent registry took %s to time out", took)
	}
}
