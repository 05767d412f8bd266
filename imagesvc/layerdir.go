package imagesvc

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// LayerDir is the unpacked directory of the committed layer chainID: the
// files of an image whose layers are data rather than a root file system
// (a checkpoint image) are read from it. It is shared by every image with
// that layer, so callers only read it.
func (s *Service) LayerDir(chainID digest.Digest) (string, error) {
	if !s.layers.Exists(chainID) {
		return "", fmt.Errorf("layer %q: %w", chainID, errdefs.ErrNotFound)
	}
	return s.layers.Dir(chainID), nil
}
