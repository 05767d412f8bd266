package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestPinnedImages(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
		ok       bool
	}{
		{"default empty", "", []string{}, true},
		{"tags and digests", `[registry]
pinned_images = ["registry.k8s.io/pause:3.10", "busybox", "example.com/a@sha256:` + strings.Repeat("a", 64) + `"]
`, []string{"registry.k8s.io/pause:3.10", "busybox", "example.com/a@sha256:" + strings.Repeat("a", 64)}, true},
		{"bad reference", "[registry]\npinned_images = [\"Bad/UPPER\"]\n", nil, false},
		{"bad digest", "[registry]\npinned_images = [\"a@sha256:12\"]\n", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			err := Decode([]byte(tt.in), &cfg)
			if !tt.ok {
				if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "registry.pinned_images") {
					t.Fatalf("err = %v, want InvalidArgument naming registry.pinned_images", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Registry.PinnedImages, tt.want) {
				t.Errorf("pinned_images = %q, want %q", cfg.Registry.PinnedImages, tt.want)
			}
		})
	}
}
