package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/imagesvc"
)

func TestCheckRestoreImage(t *testing.T) {
	img := imagesvc.Image{
		ID:          "sha256:c",
		RepoTags:    []string{"registry.example:5000/ckpt/counter:v1"},
		RepoDigests: []string{"registry.example:5000/ckpt/counter@sha256:" + strings.Repeat("a", 64)},
	}
	hub := imagesvc.Image{ID: "sha256:h", RepoTags: []string{"docker.io/library/ckpt:v1"}}
	for _, tc := range []struct {
		name string
		rt   config.Runtime
		img  imagesvc.Image
		want error // nil: allowed
		key  string
	}{
		{"default config", config.Default().Runtime, img, errdefs.ErrFailedPrecondition, "runtime.restore_from_images"},
		{"off with an allow-list", config.Runtime{RestoreImageRegistries: []string{"registry.example:5000"}}, img, errdefs.ErrFailedPrecondition, "runtime.restore_from_images"},
		{"on, empty allow-list", config.Runtime{RestoreFromImages: true}, img, errdefs.ErrPermissionDenied, "runtime.restore_image_registries"},
		{"on, other registry", config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"registry.example", "other:5000"}}, img, errdefs.ErrPermissionDenied, "runtime.restore_image_registries"},
		{"on, allowed", config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"other", "REGISTRY.example:5000"}}, img, nil, ""},
		{"docker hub short name", config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"docker.io"}}, hub, nil, ""},
		{"no names", config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"docker.io"}}, imagesvc.Image{ID: "sha256:n"}, errdefs.ErrPermissionDenied, "runtime.restore_image_registries"},
	} {
		err := checkRestoreImage(tc.rt, "ckpt", tc.img)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: %v, want allowed", tc.name, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		case tc.want != nil && !strings.Contains(err.Error(), tc.key):
			t.Errorf("%s: %v does not name %s", tc.name, err, tc.key)
		}
	}
}

// storeImages is an image store holding imgs, for what a restore asks of
// it (Get); any other call is a test bug.
type storeImages struct {
	Images
	imgs []imagesvc.Image
}

func (f storeImages) Get(_ context.Context, ref string) (imagesvc.Image, error) {
	for _, img := range f.imgs {
		if img.ID == ref || slices.Contains(img.RepoTags, ref) {
			return img, nil
		}
	}
	return imagesvc.Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}

func TestCheckBaseImage(t *testing.T) {
	s := &Server{
		cfg: config.Config{Runtime: config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"good.example"}}},
		images: storeImages{imgs: []imagesvc.Image{
			{ID: "sha256:b", RepoTags: []string{"good.example/busybox:1"}},
			{ID: "sha256:p", RepoTags: []string{"private.example/secret:1"}},
		}},
	}
	ctx := context.Background()
	for _, tc := range []struct {
		ref       string
		wantID    string
		fromImage bool
		want      error
	}{
		{"good.example/busybox:1", "", true, nil},
		{"good.example/busybox:1", "", false, nil},
		{"good.example/busybox:1", "sha256:b", false, nil},
		// Another image under the checkpoint's name: its diff would
		// apply to content it was not taken on.
		{"good.example/busybox:1", "sha256:other", false, errdefs.ErrFailedPrecondition},
		{"private.example/secret:1", "", false, nil},
		{"private.example/secret:1", "", true, errdefs.ErrPermissionDenied},
		{"good.example/absent:1", "", true, errdefs.ErrFailedPrecondition},
		{"good.example/absent:1", "", false, errdefs.ErrFailedPrecondition},
	} {
		_, err := s.checkBaseImage(ctx, tc.ref, tc.wantID, tc.fromImage)
		if tc.want == nil && err != nil || tc.want != nil && (!errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.ref)) {
			t.Errorf("checkBaseImage(%q, %q, fromImage=%v) = %v, want %v naming the image", tc.ref, tc.wantID, tc.fromImage, err, tc.want)
		}
	}
}
