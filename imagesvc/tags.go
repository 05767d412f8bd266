package imagesvc

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// tagCache keeps the tags of the images RepoTags was asked for.
// ContainerStatus and PodSandboxStatus name every container's image by its
// tags, several times a second under kubelet's relist, and reading the
// image's record for it (a read transaction, then decoding the whole
// record with its OCI config) was most of those handlers' time (full-node
// bench, execution trace and CPU profile of berthd). Every commit that
// writes an image record empties the cache (putImage and deleteImage
// register changed on the transaction).
type tagCache struct {
	mu sync.Mutex
	// gen counts the commits that changed image records: a read that began
	// before one must not be kept.
	gen uint64
	m   map[string][]string
}

// RepoTags returns the tags of the image with this ID ("sha256:..."), as
// Get does.
func (s *Service) RepoTags(ctx context.Context, id string) ([]string, error) {
	if !strings.HasPrefix(id, "sha256:") {
		img, err := s.Get(ctx, id)
		return img.RepoTags, err
	}
	s.tags.mu.Lock()
	tags, ok := s.tags.m[id]
	gen := s.tags.gen
	s.tags.mu.Unlock()
	if ok {
		return slices.Clone(tags), nil
	}
	img, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	s.tags.mu.Lock()
	if s.tags.gen == gen {
		if s.tags.m == nil {
			s.tags.m = map[string][]string{}
		}
		s.tags.m[id] = img.RepoTags
	}
	s.tags.mu.Unlock()
	return slices.Clone(img.RepoTags), nil
}

// changed empties the cache; it runs once a transaction that wrote an
// image record has committed.
func (c *tagCache) changed() {
	c.mu.Lock()
	c.gen++
	c.m = nil
	c.mu.Unlock()
}
