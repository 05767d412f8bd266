package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/berth-runtime/berth/test/testutil"
)

// pauseTag is the sandbox image containerd is configured with; the mirror
// tree sends registry.k8s.io to the bench registry, which serves it.
const pauseTag = "pause:3.10"

// images is what the bench registry serves.
type images struct {
	reg      *testutil.Registry
	Busybox  string // workload image of every container
	Pause    string // registry.k8s.io/pause:3.10 as containerd names it
	PauseSrc string // where the pause image came from
	CertsDir string // certs.d tree: registry.k8s.io and the bench host -> bench registry
}

// startImages serves the bench registry on 127.0.0.1 and pushes the
// workload and pause images. The pause image is the conformance kit's (a
// static C pause, what operators run) when its registry is up, else one
// built around berth-pause.
func startImages(ctx context.Context, dir, berthBin, kitRegistry string, log *slog.Logger) (*images, error) {
	reg, err := testutil.StartRegistry()
	if err != nil {
		return nil, err
	}
	im := &images{reg: reg, CertsDir: filepath.Join(dir, "certs.d")}
	bb, err := testutil.NewImage(testutil.ImageSpec{})
	if err != nil {
		return im, err
	}
	p, err := reg.Push(ctx, "bench/busybox:1", bb)
	if err != nil {
		return im, err
	}
	im.Busybox = p.Ref
	pause, src, err := pauseImage(ctx, berthBin, kitRegistry, log)
	if err != nil {
		return im, err
	}
	if _, err := reg.Push(ctx, pauseTag, pause); err != nil {
		return im, err
	}
	im.Pause, im.PauseSrc = "registry.k8s.io/"+pauseTag, src
	for _, host := range []string{"registry.k8s.io", reg.Host} {
		hd := filepath.Join(im.CertsDir, host)
		if err := os.MkdirAll(hd, 0o755); err != nil {
			return im, fmt.Errorf("make certs.d: %w", err)
		}
		body := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
			"http://"+reg.Host, "http://"+reg.Host)
		if err := os.WriteFile(filepath.Join(hd, "hosts.toml"), []byte(body), 0o644); err != nil {
			return im, fmt.Errorf("write hosts.toml: %w", err)
		}
	}
	return im, nil
}

func (im *images) close() {
	if im != nil && im.reg != nil {
		_ = im.reg.Close()
	}
}

func pauseImage(ctx context.Context, berthBin, kitRegistry string, log *slog.Logger) (v1.Image, string, error) {
	if kitRegistry != "" {
		src := kitRegistry + "/" + pauseTag
		ref, err := name.ParseReference(src, name.Insecure)
		if err == nil {
			// The push right after reads it: ctx must outlive this call.
			var img v1.Image
			img, err = remote.Image(ref, remote.WithContext(ctx))
			if err == nil {
				_, err = img.RawConfigFile()
			}
			if err == nil {
				return img, src, nil
			}
			log.Info("conformance kit pause image unavailable; building one from berth-pause", "src", src, "err", err)
		}
	}
	bin, err := os.ReadFile(filepath.Join(berthBin, "berth-pause"))
	if err != nil {
		return nil, "", fmt.Errorf("read berth-pause for the pause image: %w", err)
	}
	layer, err := testutil.NewLayer([]testutil.File{{Path: "/pause", Body: string(bin), Mode: 0o755}})
	if err != nil {
		return nil, "", err
	}
	img, err := imageOf(layer, []string{"/pause"})
	return img, "berth-pause", err
}

func imageOf(layer v1.Layer, entrypoint []string) (v1.Image, error) {
	return imageOfLayers([]v1.Layer{layer}, entrypoint)
}

func imageOfLayers(layers []v1.Layer, entrypoint []string) (v1.Image, error) {
	cfg := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Config:       v1.Config{Entrypoint: entrypoint, Env: []string{testutil.DefaultPath}},
		RootFS:       v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	return img, nil
}

// bigImage is a multi-layer image of about totalMB uncompressed, from
// seeded pseudo-random text (6 bits of entropy a byte, so gzip shrinks it to
// about three quarters, like binaries and libraries do), in 4 MiB files.
type bigImage struct {
	Ref              string
	Layers           int
	Bytes            int64 // uncompressed layer bytes
	CompressedBytes  int64
	GenerateDuration time.Duration
}

func (im *images) pushBig(ctx context.Context, tag string, seed uint64, totalMB, nlayers int) (bigImage, error) {
	start := time.Now()
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'b', 'e', 'r', 't', 'h'}))
	per := int64(totalMB) << 20 / int64(nlayers)
	bi := bigImage{Layers: nlayers}
	layers := make([]v1.Layer, 0, nlayers)
	for i := range nlayers {
		data, raw, err := randomLayer(rng, i, per)
		if err != nil {
			return bi, err
		}
		bi.Bytes += raw
		bi.CompressedBytes += int64(len(data))
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return bi, fmt.Errorf("layer %d: %w", i, err)
		}
		layers = append(layers, l)
	}
	img, err := imageOfLayers(layers, []string{"/bin/true"})
	if err != nil {
		return bi, err
	}
	p, err := im.reg.Push(ctx, tag, img)
	if err != nil {
		return bi, err
	}
	bi.Ref, bi.GenerateDuration = p.Ref, time.Since(start)
	return bi, nil
}

const fileSize = 4 << 20

func randomLayer(rng *rand.Rand, layer int, size int64) (gz []byte, raw int64, err error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var buf bytes.Buffer
	// Huffman only: the text has no repeats for LZ to find, and the fast
	// levels give up on entropy coding and store it.
	zw, err := gzip.NewWriterLevel(&buf, gzip.HuffmanOnly)
	if err != nil {
		return nil, 0, err
	}
	tw := tar.NewWriter(zw)
	dir := fmt.Sprintf("data/l%02d/", layer)
	if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
		return nil, 0, err
	}
	chunk := make([]byte, fileSize)
	for n := 0; int64(n)*fileSize < size; n++ {
		fsz := min(int64(fileSize), size-int64(n)*fileSize)
		for i := range chunk[:fsz] {
			chunk[i] = alphabet[rng.Uint32()&63]
		}
		hdr := &tar.Header{Name: fmt.Sprintf("%sf%03d", dir, n), Typeflag: tar.TypeReg, Mode: 0o644, Size: fsz, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, 0, err
		}
		if _, err := tw.Write(chunk[:fsz]); err != nil {
			return nil, 0, err
		}
		raw += fsz
	}
	if err := tw.Close(); err != nil {
		return nil, 0, err
	}
	if err := zw.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), raw, nil
}
