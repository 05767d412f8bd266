package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestRegistryLimits(t *testing.T) {
	def := Default().Registry
	if def.ProgressTimeout() != 5*time.Minute || def.MaxLayers != 128 || def.MaxManifestSize != 4<<20 ||
		def.MaxConfigSize != 8<<20 || def.MaxZstdWindow != 128<<20 || def.MaxUnpackedSize != 64<<30 {
		t.Errorf("registry limit defaults = %+v", def)
	}
	for _, tc := range []struct {
		in, key string // key "" => valid
	}{
		{`pull_progress_timeout = "30s"`, ""},
		{`pull_progress_timeout = "0s"`, ""},
		{`pull_progress_timeout = "-1s"`, "registry.pull_progress_timeout"},
		{`pull_progress_timeout = "soon"`, "registry.pull_progress_timeout"},
		{`max_layers = 1`, ""},
		{`max_layers = 0`, "registry.max_layers"},
		{`max_manifest_size = 0`, "registry.max_manifest_size"},
		{`max_config_size = -1`, "registry.max_config_size"},
		{`max_unpacked_size = 0`, "registry.max_unpacked_size"},
		{`max_zstd_window = 1024`, ""},
		{`max_zstd_window = 1023`, "registry.max_zstd_window"},
		{`max_zstd_window = 9223372036854775807`, "registry.max_zstd_window"},
		{`max_layers = "many"`, "registry.max_layers"},
		{`signature_policy = "/etc/berth/policy.json"`, ""},
		{`signature_policy = "policy.json"`, "registry.signature_policy"},
	} {
		cfg := Default()
		err := Decode([]byte("[registry]\n"+tc.in+"\n"), &cfg)
		if tc.key == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.in, err)
			}
			continue
		}
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: error %v, want invalid argument naming %s", tc.in, err, tc.key)
		}
	}
	cfg := Default()
	if err := Decode([]byte("[registry]\npull_progress_timeout = \"0s\"\n"), &cfg); err != nil || cfg.Registry.ProgressTimeout() != 0 {
		t.Errorf("pull_progress_timeout 0s: %s, %v", cfg.Registry.ProgressTimeout(), err)
	}
}
