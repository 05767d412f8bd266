package imagesvc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// PushLayout pushes the one image index of the OCI image layout at dir
// to ref, its entries blobs as they are, with their platforms and
// annotations and the index's annotations. It is for indexes whose
// entries are not manifests (containerd's checkpoint image), which image
// tools (crane's layout push among them) cannot carry. Credentials come
// from the user's docker config; plainHTTP pushes over HTTP.
func PushLayout(ctx context.Context, dir, ref string, plainHTTP bool) error {
	var top v1.IndexManifest
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return fmt.Errorf("read layout: %w", err)
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return fmt.Errorf("layout %q: index.json: %v: %w", dir, err, errdefs.ErrInvalidArgument)
	}
	if len(top.Manifests) != 1 || !top.Manifests[0].MediaType.IsIndex() {
		return fmt.Errorf("layout %q: want one image index, have %d entries: %w", dir, len(top.Manifests), errdefs.ErrInvalidArgument)
	}
	open := layoutBlob(dir)
	var index v1.IndexManifest
	if err := readLayoutJSON(open, top.Manifests[0].Digest, &index); err != nil {
		return err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, d := range index.Manifests {
		if d.MediaType.IsImage() || d.MediaType.IsIndex() {
			return fmt.Errorf("layout %q: entry %s is a manifest; only blob entries are pushed: %w", dir, d.Digest, errdefs.ErrNotImplemented)
		}
		l, err := partial.CompressedToLayer(&pushBlob{open: open, desc: d})
		if err != nil {
			return err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: l, Descriptor: d})
	}
	if len(index.Annotations) > 0 {
		idx = mutate.Annotations(idx, index.Annotations).(v1.ImageIndex)
	}
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return fmt.Errorf("reference %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("push %q: %w", ref, err)
	}
	return nil
}

func readLayoutJSON(open func(digest.Digest) (io.ReadCloser, error), h v1.Hash, v any) error {
	f, err := open(digest.Digest(h.String()))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := json.NewDecoder(io.LimitReader(f, 4<<20)).Decode(v); err != nil {
		return fmt.Errorf("layout blob %s: %v: %w", h, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// pushBlob is a blob of a layout, read from its file when pushed.
type pushBlob struct {
	open func(digest.Digest) (io.ReadCloser, error)
	desc v1.Descriptor
}

func (b *pushBlob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *pushBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *pushBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }
func (b *pushBlob) Compressed() (io.ReadCloser, error) {
	return b.open(digest.Digest(b.desc.Digest.String()))
}
