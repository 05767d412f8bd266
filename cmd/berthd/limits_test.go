package main

import (
	"testing"

	"github.com/berth-runtime/berth/cri/config"
)

func TestImageLimits(t *testing.T) {
	r := config.Default().Registry
	l := imageLimits(r)
	if l.ProgressTimeout != r.ProgressTimeout() || l.MaxLayers != r.MaxLayers || l.MaxManifestSize != r.MaxManifestSize ||
		l.MaxConfigSize != r.MaxConfigSize || l.MaxZstdWindow != r.MaxZstdWindow || l.MaxUnpackedSize != r.MaxUnpackedSize {
		t.Errorf("imageLimits(%+v) = %+v", r, l)
	}
	// imagesvc reads a zero timeout as its default: "0s" must reach it as off.
	r.PullProgressTimeout = "0s"
	if l := imageLimits(r); l.ProgressTimeout >= 0 {
		t.Errorf("pull_progress_timeout 0s gives imagesvc %s, want a negative (off)", l.ProgressTimeout)
	}
}
