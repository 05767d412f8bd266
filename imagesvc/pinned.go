package imagesvc

import (
	"fmt"
	"slices"

	"github.com/berth-runtime/berth/imagesvc/reference"
)

// pinnedSet holds the normalised names (tag or digest references) of the
// images the operator pinned. The CRI's Image.pinned tells kubelet's image
// GC to never remove them (the sandbox image, node agents' images).
//
// Pinning is decided at read time from the configured names, not stored
// in the image record, so a name added to or taken out of the config
// applies to images already present, and an image loaded offline is pinned
// like a pulled one. As in containerd, pinning does not stop an explicit
// RemoveImage: the flag protects an image from kubelet's GC, not from an
// operator who asks for its removal.
type pinnedSet map[string]bool

// newPinnedSet normalises refs; a malformed one is ErrInvalidArgument.
func newPinnedSet(refs []string) (pinnedSet, error) {
	set := pinnedSet{}
	for _, ref := range refs {
		r, err := reference.Parse(ref)
		if err != nil {
			return nil, fmt.Errorf("pinned image %q: %w", ref, err)
		}
		if r.Digest != "" {
			// a tag next to a digest is not verified: the digest names it.
			set[r.DigestRef(r.Digest)] = true
			continue
		}
		set[r.TagRef()] = true
	}
	return set, nil
}

// apply sets img.Pinned when one of its names is pinned.
func (p pinnedSet) apply(img Image) Image {
	img.Pinned = slices.ContainsFunc(img.RepoTags, p.has) || slices.ContainsFunc(img.RepoDigests, p.has)
	return img
}

func (p pinnedSet) has(name string) bool { return p[name] }
