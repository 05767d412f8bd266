package imagesvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-runtime/berth/imagesvc/reference"
	"github.com/berth-runtime/berth/imagesvc/unpack"
)

// maxArchiveEntries bounds the files an archive may hold (a hostile tar
// full of empty entries must not exhaust inodes).
const maxArchiveEntries = 1 << 16

// Load imports the images of an OCI image-layout tar or a `docker save` tar
// (both forms docker and skopeo write) into the store, for nodes with no
// registry. Images are named by the archive's names (OCI layout
// annotations io.containerd.image.name or a full reference in
// org.opencontainers.image.ref.name; docker's RepoTags); unnamed images are
// kept by ID. Nothing is left of an archive that fails.
func (s *Service) Load(ctx context.Context, r io.Reader) ([]Image, error) {
	tmp, err := os.MkdirTemp(s.root, ".load-")
	if err != nil {
		return nil, fmt.Errorf("create load dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := untarFlat(ctx, r, tmp); err != nil {
		return nil, fmt.Errorf("read image archive: %w", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "index.json")); err == nil {
		return s.loadLayout(ctx, tmp)
	}
	if _, err := os.Stat(filepath.Join(tmp, "manifest.json")); err == nil {
		return s.loadDockerSave(ctx, tmp)
	}
	return nil, fmt.Errorf("archive has neither index.json (OCI layout) nor manifest.json (docker save): %w", errdefs.ErrInvalidArgument)
}

// untarFlat writes the archive's files under dir, through the layer
// extractor: it is the archive's own layout (not a layer), so only
// directories, regular files and links inside it are taken, each link made
// a hard link (docker save before 25 links identical layer.tar files;
// the target is inside the archive and resolved at read time), and
// nothing of the archive's owners or modes is kept.
func untarFlat(ctx context.Context, r io.Reader, dir string) error {
	return unpack.Extract(ctx, dir, r, unpack.Options{
		FilesOnly: true, FlatLinks: true, Private: true,
		MaxEntries: maxArchiveEntries, StreamIsInput: true,
	})
}

// layoutBlob opens a blob of an OCI layout (or docker save's files by path).
func layoutBlob(dir string) func(d digest.Digest) (io.ReadCloser, error) {
	return func(d digest.Digest) (io.ReadCloser, error) {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("digest %q: %w", d, errdefs.ErrInvalidArgument)
		}
		f, err := os.Open(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("blob %q is not in the archive: %w", d, errdefs.ErrNotFound)
		}
		return f, err
	}
}

func (s *Service) loadLayout(ctx context.Context, dir string) ([]Image, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("decode index.json: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	src := source{local: layoutBlob(dir), prog: newProgress("archive")}
	var out []Image
	for _, desc := range idx.Manifests {
		n := layoutNames(desc)
		top := resolved{digest: desc.Digest}
		img, err := s.loadOne(ctx, src, top, n)
		if err != nil {
			return out, fmt.Errorf("load %s: %w", cmpOr(n.ref, desc.Digest.String()), err)
		}
		out = append(out, img)
	}
	return out, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// layoutNames reads an index entry's name annotations. A bare tag in
// ref.name ("1.0") names no repository and is ignored, as containerd does.
func layoutNames(desc ocispec.Descriptor) names {
	for _, k := range []string{"io.containerd.image.name", ocispec.AnnotationRefName} {
		v := desc.Annotations[k]
		if v == "" || !strings.ContainsAny(v, "/:@") {
			continue
		}
		r, err := reference.Parse(v)
		if err != nil {
			continue
		}
		return names{tag: tagName(r), repoDigest: r.DigestRef(desc.Digest), ref: r.String()}
	}
	return names{ref: desc.Digest.String()}
}

func (s *Service) loadOne(ctx context.Context, src source, top resolved, n names) (Image, error) {
	// one image loads at a time per manifest, like one pull per reference.
	return s.pulls.Do(ctx, "load:"+top.digest.String()+":"+n.tag, func(ctx context.Context) (Image, error) {
		return s.pullFrom(ctx, src, top, n)
	})
}

// dockerManifest is one entry of docker save's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// loadDockerSave imports the legacy docker save layout: a config file and
// layer tars by path. A Docker schema 2 manifest is synthesised (layers by
// their file digests) so the image is stored like a pulled one.
func (s *Service) loadDockerSave(ctx context.Context, dir string) ([]Image, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var ms []dockerManifest
	if err := json.Unmarshal(raw, &ms); err != nil {
		return nil, fmt.Errorf("decode manifest.json: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var out []Image
	for _, m := range ms {
		img, err := s.loadDockerImage(ctx, dir, m)
		if err != nil {
			return out, fmt.Errorf("load %v: %w", m.RepoTags, err)
		}
		out = append(out, img)
	}
	return out, nil
}

func (s *Service) loadDockerImage(ctx context.Context, dir string, m dockerManifest) (Image, error) {
	files := map[digest.Digest]string{}
	file := func(rel string) (ocispec.Descriptor, error) {
		p := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+rel)))
		f, err := os.Open(p)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("archive file %q: %w", rel, errdefs.ErrInvalidArgument)
		}
		defer f.Close()
		dg := digest.SHA256.Digester()
		n, err := io.Copy(dg.Hash(), f)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		files[dg.Digest()] = p
		return ocispec.Descriptor{Digest: dg.Digest(), Size: n}, nil
	}
	cfg, err := file(m.Config)
	if err != nil {
		return Image{}, err
	}
	cfg.MediaType = string(types.DockerConfigJSON)
	man := ocispec.Manifest{MediaType: string(types.DockerManifestSchema2), Config: cfg}
	man.SchemaVersion = 2
	for _, l := range m.Layers {
		d, err := file(l)
		if err != nil {
			return Image{}, err
		}
		d.MediaType = string(types.DockerUncompressedLayer) // decompression sniffs the bytes
		man.Layers = append(man.Layers, d)
	}
	manRaw, err := json.Marshal(man)
	if err != nil {
		return Image{}, err
	}
	top := resolved{digest: digest.FromBytes(manRaw), raw: manRaw, mt: types.DockerManifestSchema2}
	src := source{prog: newProgress("archive"), local: func(d digest.Digest) (io.ReadCloser, error) {
		p, ok := files[d]
		if !ok {
			return nil, fmt.Errorf("blob %q is not in the archive: %w", d, errdefs.ErrNotFound)
		}
		return os.Open(p)
	}}
	if len(m.RepoTags) == 0 {
		return s.loadOne(ctx, src, top, names{ref: top.digest.String()})
	}
	var img Image
	for _, t := range m.RepoTags {
		r, err := reference.Parse(t)
		if err != nil {
			return Image{}, err
		}
		if img, err = s.loadOne(ctx, src, top, names{tag: tagName(r), ref: r.String()}); err != nil {
			return Image{}, err
		}
	}
	return img, nil
}
