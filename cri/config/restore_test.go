package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestRestoreFromImagesKeys(t *testing.T) {
	def := Default()
	if def.Runtime.RestoreFromImages || len(def.Runtime.RestoreImageRegistries) != 0 {
		t.Fatalf("restore from checkpoint images is on by default: %v %q", def.Runtime.RestoreFromImages, def.Runtime.RestoreImageRegistries)
	}
	cfg := Default()
	in := "[runtime]\nrestore_from_images = true\nrestore_image_registries = [\"docker.io\", \"127.0.0.1:5000\", \"[::1]:5000\"]\n"
	if err := Decode([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if !cfg.Runtime.RestoreFromImages || !slices.Equal(cfg.Runtime.RestoreImageRegistries, []string{"docker.io", "127.0.0.1:5000", "[::1]:5000"}) {
		t.Errorf("decoded %v %q", cfg.Runtime.RestoreFromImages, cfg.Runtime.RestoreImageRegistries)
	}
	for _, bad := range []string{`""`, `"docker.io/library"`, `"a b"`, `"x@y"`} {
		cfg := Default()
		err := Decode([]byte("[runtime]\nrestore_image_registries = ["+bad+"]\n"), &cfg)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "runtime.restore_image_registries") {
			t.Errorf("%s: err = %v, want InvalidArgument naming runtime.restore_image_registries", bad, err)
		}
	}
}
