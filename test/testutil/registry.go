package testutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is an in-process OCI registry (ggcr's pkg/registry) served over
// plain HTTP on 127.0.0.1.
type Registry struct {
	// Host is host:port, the registry part of every reference pushed here.
	Host string
	srv  *http.Server
	done chan error
}

// StartRegistry serves an empty registry on a free loopback port.
func StartRegistry() (*Registry, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for test registry: %w", err)
	}
	r := &Registry{
		Host: ln.Addr().String(),
		srv: &http.Server{
			Handler:           registry.New(registry.Logger(log.New(io.Discard, "", 0))),
			ReadHeaderTimeout: 10 * time.Second,
		},
		done: make(chan error, 1),
	}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

// Close stops serving.
func (r *Registry) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		// A client may hold a connection it dialled but never used, which
		// Shutdown waits on; the registry's users are done, so cut it.
		if cerr := r.srv.Close(); cerr != nil {
			return fmt.Errorf("close test registry after %v: %w", err, cerr)
		}
	}
	if err := <-r.done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("test registry: %w", err)
	}
	return nil
}

// Ref is the full reference of repoTag ("busybox:latest") in this registry.
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// Pushed is what a push left in the registry.
type Pushed struct {
	Ref       string  // host/repo:tag
	Repo      string  // host/repo
	Digest    v1.Hash // manifest (or index) digest
	DigestRef string  // host/repo@sha256:...
	// ConfigDigest is the config digest of the image (for an index: of its
	// linux/amd64 image), the image ID containerd and kubelet use.
	ConfigDigest v1.Hash
	Image        v1.Image // the image (for an index: its linux/amd64 image)
}

// Push writes img under repoTag.
func (r *Registry) Push(ctx context.Context, repoTag string, img v1.Image) (Pushed, error) {
	ref, err := name.ParseReference(r.Ref(repoTag), name.Insecure)
	if err != nil {
		return Pushed{}, fmt.Errorf("parse %q: %w", repoTag, err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return Pushed{}, fmt.Errorf("push %q: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return Pushed{}, fmt.Errorf("digest of %q: %w", ref, err)
	}
	cd, err := img.ConfigName()
	if err != nil {
		return Pushed{}, fmt.Errorf("config digest of %q: %w", ref, err)
	}
	repo := ref.Context().Name()
	return Pushed{Ref: ref.Name(), Repo: repo, Digest: d, DigestRef: repo + "@" + d.String(), ConfigDigest: cd, Image: img}, nil
}

// PushIndex writes idx under repoTag; amd64 is its linux/amd64 image.
func (r *Registry) PushIndex(ctx context.Context, repoTag string, idx v1.ImageIndex, amd64 v1.Image) (Pushed, error) {
	ref, err := name.ParseReference(r.Ref(repoTag), name.Insecure)
	if err != nil {
		return Pushed{}, fmt.Errorf("parse %q: %w", repoTag, err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		return Pushed{}, fmt.Errorf("push index %q: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return Pushed{}, fmt.Errorf("digest of %q: %w", ref, err)
	}
	cd, err := amd64.ConfigName()
	if err != nil {
		return Pushed{}, fmt.Errorf("config digest of %q: %w", ref, err)
	}
	repo := ref.Context().Name()
	return Pushed{Ref: ref.Name(), Repo: repo, Digest: d, DigestRef: repo + "@" + d.String(), ConfigDigest: cd, Image: amd64}, nil
}

// TestImages is the standard set of images the e2e tests pull.
type TestImages struct {
	// Busybox: the base layer only, Cmd ["sh"] (OCI media types).
	Busybox Pushed
	// Docker: the same file system with Docker schema 2 media types (Env
	// MEDIA=docker, so its image ID differs from Busybox's).
	Docker Pushed
	// Index: an OCI index of a linux/amd64 busybox (Env ARCH=amd64) and a
	// linux/arm64 one (Env ARCH=arm64).
	Index Pushed
	// Arm64 is the config digest of the index's arm64 image.
	Arm64 v1.Hash
	// Multi: base layer + an app layer that whites out BaseMarker and adds
	// /app/hello.txt ("hello from app layer").
	Multi Pushed
	// Entrypoint: Entrypoint ["echo", "entry"], Cmd ["default"], Env
	// IMG_VAR=fromimage and OVERRIDE=image, WorkingDir /tmp.
	Entrypoint Pushed
	// User: User "berth" (1000:1000), WorkingDir /home/berth.
	User Pushed
	// UID: User "1000" (numeric).
	UID Pushed
	// StopSignal: StopSignal SIGUSR1.
	StopSignal Pushed
}

// AppHello is the content of /app/hello.txt in TestImages.Multi.
const AppHello = "hello from app layer"

// PushTestImages builds the standard images and pushes them to r.
func PushTestImages(ctx context.Context, r *Registry) (TestImages, error) {
	var ti TestImages
	app, err := NewLayer([]File{
		{Path: BaseMarker, Whiteout: true},
		{Path: "/app", Dir: true},
		{Path: "/app/hello.txt", Body: AppHello + "\n"},
	})
	if err != nil {
		return ti, err
	}
	amd, err := NewImage(ImageSpec{Env: []string{"ARCH=amd64"}})
	if err != nil {
		return ti, err
	}
	arm, err := NewImage(ImageSpec{Env: []string{"ARCH=arm64"}, Arch: "arm64"})
	if err != nil {
		return ti, err
	}
	if ti.Arm64, err = arm.ConfigName(); err != nil {
		return ti, err
	}
	idx, err := Index(amd, arm)
	if err != nil {
		return ti, err
	}
	if ti.Index, err = r.PushIndex(ctx, "multiarch:latest", idx, amd); err != nil {
		return ti, err
	}
	for _, p := range []struct {
		dst  *Pushed
		tag  string
		spec ImageSpec
	}{
		{&ti.Busybox, "busybox:latest", ImageSpec{}},
		{&ti.Docker, "busybox-docker:latest", ImageSpec{Docker: true, Env: []string{"MEDIA=docker"}}},
		{&ti.Multi, "multilayer:latest", ImageSpec{Extra: []v1.Layer{app}}},
		{&ti.Entrypoint, "entrypoint:latest", ImageSpec{
			Entrypoint: []string{"echo", "entry"}, Cmd: []string{"default"},
			Env: []string{"IMG_VAR=fromimage", "OVERRIDE=image"}, WorkingDir: "/tmp",
		}},
		{&ti.User, "user:latest", ImageSpec{User: "berth", WorkingDir: "/home/berth"}},
		{&ti.UID, "uid:latest", ImageSpec{User: "1000"}},
		{&ti.StopSignal, "stopsignal:latest", ImageSpec{StopSignal: "SIGUSR1"}},
	} {
		img, err := NewImage(p.spec)
		if err != nil {
			return ti, err
		}
		if *p.dst, err = r.Push(ctx, p.tag, img); err != nil {
			return ti, err
		}
	}
	return ti, nil
}
