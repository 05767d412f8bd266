package imagesvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-runtime/berth/imagesvc/reference"
	"github.com/berth-runtime/berth/imagesvc/unpack"
)

// maxSmallBlob bounds manifests and configs read into memory.
const maxSmallBlob = 16 << 20

// Pull fetches ref (normalised) and unpacks its layers, returning the
// record. Concurrent pulls of one reference share one download; a layer whose
// chain ID is already unpacked is neither downloaded nor unpacked again.
// auth may be nil for anonymous pulls; callers that join a pull already
// under way share it, credentials of the first caller included. When ref has both tag and digest the
// digest is pulled and the tag is not recorded (it was not verified).
func (s *Service) Pull(ctx context.Context, ref string, auth *Auth) (Image, error) {
	r, err := reference.Parse(ref)
	if err != nil {
		return Image{}, err
	}
	img, err := s.pulls.Do(ctx, r.String(), func(ctx context.Context) (Image, error) {
		return s.pull(ctx, r, auth)
	})
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: %w", r.String(), err)
	}
	return img, nil
}

func authenticator(a *Auth) authn.Authenticator {
	if a == nil || *a == (Auth{}) {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: a.Username, Password: a.Password, Auth: a.Auth,
		IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
	})
}

// source fetches blobs of one repository.
type source struct {
	puller *remote.Puller
	repo   name.Repository
}

func (src source) blob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	l, err := src.puller.Layer(ctx, src.repo.Digest(d.String()))
	if err != nil {
		return nil, remoteErr(err)
	}
	rc, err := l.Compressed()
	return rc, remoteErr(err)
}

func (s *Service) pull(ctx context.Context, r reference.Reference, auth *Auth) (Image, error) {
	rref, err := r.Remote(s.insecure[r.Domain])
	if err != nil {
		return Image{}, err
	}
	puller, err := remote.NewPuller(remote.WithAuth(authenticator(auth)), remote.WithUserAgent("berth"))
	if err != nil {
		return Image{}, fmt.Errorf("create puller: %w", err)
	}
	src := source{puller: puller, repo: rref.Context()}
	// manifests and config are stored only once the layers made it, so a
	// failed pull leaves nothing in the content store.
	top, manifest, blobs, err := s.resolveManifest(ctx, src, rref)
	if err != nil {
		return Image{}, err
	}
	cfgBytes, err := s.smallBlob(ctx, src, manifest.Config)
	if err != nil {
		return Image{}, fmt.Errorf("fetch config: %w", err)
	}
	blobs[manifest.Config.Digest] = cfgBytes
	var cfg ocispec.Image
	if err := json.Unmarshal(cfgBytes, &cfg); err != nil {
		return Image{}, fmt.Errorf("decode image config: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(cfg.RootFS.DiffIDs) != len(manifest.Layers) {
		return Image{}, fmt.Errorf("manifest has %d layers but config %d diff ids: %w",
			len(manifest.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	chains := chainIDs(cfg.RootFS.DiffIDs)
	release := s.hold(chains)
	defer release()
	if err := s.fetchLayers(ctx, src, manifest.Layers, cfg.RootFS.DiffIDs, chains); err != nil {
		return Image{}, err
	}
	for d, b := range blobs {
		if err := s.content.WriteBlob(d, b); err != nil {
			return Image{}, fmt.Errorf("store blob: %w", err)
		}
	}
	img := Image{ID: manifest.Config.Digest.String(), Config: cfg, ChainIDs: chains, Size: uint64(manifest.Config.Size)}
	for _, l := range manifest.Layers {
		img.Size += uint64(l.Size)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		img, err = storePulled(tx, img, tagName(r), r.DigestRef(top))
		return err
	})
	if err != nil {
		return Image{}, fmt.Errorf("record image: %w", err)
	}
	s.log.InfoContext(ctx, "image pulled", "ref", r.String(), "image_id", img.ID, "layers", len(chains))
	return img, nil
}

func tagName(r reference.Reference) string {
	if r.Digest != "" {
		return ""
	}
	return r.TagRef()
}

// resolveManifest fetches the manifest that ref names, going through an index
// to the platform's manifest. It returns the top-level digest (what the ref
// resolved to: the index's when there is one), the image manifest, and the
// verified raw manifests by digest, to store once the pull succeeds.
func (s *Service) resolveManifest(ctx context.Context, src source, ref name.Reference) (digest.Digest, ocispec.Manifest, map[digest.Digest][]byte, error) {
	fail := func(err error) (digest.Digest, ocispec.Manifest, map[digest.Digest][]byte, error) {
		return "", ocispec.Manifest{}, nil, err
	}
	desc, err := src.puller.Get(ctx, ref)
	if err != nil {
		return fail(fmt.Errorf("fetch manifest: %w", remoteErr(err)))
	}
	top := digest.Digest(desc.Digest.String())
	raw, mt := desc.Manifest, desc.MediaType
	if err := verifyBytes(top, raw); err != nil {
		return fail(err)
	}
	blobs := map[digest.Digest][]byte{top: raw}
	if mt == types.OCIImageIndex || mt == types.DockerManifestList {
		child, err := s.pickPlatform(raw)
		if err != nil {
			return fail(err)
		}
		cdesc, err := src.puller.Get(ctx, src.repo.Digest(child.String()))
		if err != nil {
			return fail(fmt.Errorf("fetch platform manifest: %w", remoteErr(err)))
		}
		raw, mt = cdesc.Manifest, cdesc.MediaType
		if err := verifyBytes(child, raw); err != nil {
			return fail(err)
		}
		blobs[child] = raw
	}
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return fail(fmt.Errorf("manifest media type %q is not supported (only OCI and Docker schema 2 images): %w",
			mt, errdefs.ErrNotImplemented))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fail(fmt.Errorf("decode manifest: %v: %w", err, errdefs.ErrInvalidArgument))
	}
	if cmt := types.MediaType(m.Config.MediaType); cmt != types.OCIConfigJSON && cmt != types.DockerConfigJSON {
		return fail(fmt.Errorf("config media type %q is not an image config: %w", cmt, errdefs.ErrNotImplemented))
	}
	return top, m, blobs, nil
}

func verifyBytes(d digest.Digest, b []byte) error {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q: only sha256 is supported: %w", d, errdefs.ErrInvalidArgument)
	}
	if got := digest.FromBytes(b); got != d {
		return fmt.Errorf("blob %q has digest %q: %w", d, got, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *Service) pickPlatform(raw []byte) (digest.Digest, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return "", fmt.Errorf("decode index: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	want := s.platform
	var best digest.Digest
	for _, m := range idx.Manifests {
		p := m.Platform
		if p == nil || p.OS != want.OS || p.Architecture != want.Architecture {
			continue
		}
		if p.Variant == want.Variant {
			return m.Digest, nil
		}
		if want.Variant == "" && best == "" {
			best = m.Digest
		}
	}
	if best == "" {
		return "", fmt.Errorf("no manifest for platform %s/%s in index: %w", want.OS, want.Architecture, errdefs.ErrNotFound)
	}
	return best, nil
}

// smallBlob returns a verified manifest-sized blob, from the store or the registry.
func (s *Service) smallBlob(ctx context.Context, src source, d ocispec.Descriptor) ([]byte, error) {
	if b, err := s.content.ReadBlob(d.Digest); err == nil {
		return b, nil
	}
	if d.Size > maxSmallBlob {
		return nil, fmt.Errorf("blob %q is %d bytes: %w", d.Digest, d.Size, errdefs.ErrInvalidArgument)
	}
	rc, err := src.blob(ctx, d.Digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSmallBlob+1))
	if err != nil {
		return nil, remoteErr(err)
	}
	return b, verifyBytes(d.Digest, b)
}

// fetchLayers downloads and unpacks the missing layers in parallel. Each
// chain ID is worked on by one goroutine service-wide (layerPulls).
func (s *Service) fetchLayers(ctx context.Context, src source, layers []ocispec.Descriptor, diffIDs, chains []digest.Digest) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for i := range layers {
		if s.layers.Exists(chains[i]) {
			continue
		}
		wg.Go(func() {
			_, err := s.layerPulls.Do(ctx, chains[i].String(), func(ctx context.Context) (struct{}, error) {
				return struct{}{}, s.fetchLayer(ctx, src, layers[i], diffIDs[i], chains[i])
			})
			if err != nil {
				errOnce.Do(func() { firstErr = fmt.Errorf("layer %q: %w", layers[i].Digest, err); cancel() })
			}
		})
	}
	wg.Wait()
	return firstErr
}

// fetchLayer streams one layer: compressed bytes go to the blob file and its
// digest check, decompressed bytes to the tar extractor and the diff ID
// check; the layer dir is committed only when both match.
func (s *Service) fetchLayer(ctx context.Context, src source, desc ocispec.Descriptor, diffID, chain digest.Digest) (err error) {
	if s.layers.Exists(chain) {
		return nil
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-ctx.Done():
		return ctx.Err()
	}
	blob, w, err := s.openLayerBlob(ctx, src, desc)
	if err != nil {
		return err
	}
	defer blob.Close()
	var compressed io.Reader = blob
	if w != nil {
		defer w.Close()
		compressed = io.TeeReader(blob, w)
	}
	tmp, err := s.layers.Begin()
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			s.layers.Abort(tmp)
		}
	}()
	if err := s.extract(ctx, compressed, tmp, diffID); err != nil {
		return err
	}
	if w != nil {
		if err := w.Commit(); err != nil {
			return err
		}
	}
	s.log.DebugContext(ctx, "layer unpacked", "digest", desc.Digest, "chain_id", chain)
	return s.layers.Commit(tmp, chain)
}

// openLayerBlob opens the layer from the content store if it is there (its
// blob was verified when stored), else from the registry with a blob writer.
func (s *Service) openLayerBlob(ctx context.Context, src source, desc ocispec.Descriptor) (io.ReadCloser, blobWriter, error) {
	if f, err := s.content.Open(desc.Digest); err == nil {
		return f, nil, nil
	}
	w, err := s.content.Writer(desc.Digest, desc.Size)
	if err != nil {
		return nil, nil, err
	}
	rc, err := src.blob(ctx, desc.Digest)
	if err != nil {
		w.Close()
		return nil, nil, err
	}
	return rc, w, nil
}

type blobWriter interface {
	io.Writer
	Commit() error
	Close() error
}

func (s *Service) extract(ctx context.Context, compressed io.Reader, dir string, diffID digest.Digest) error {
	dr, err := unpack.Decompress(compressed)
	if err != nil {
		return remoteErr(err)
	}
	defer dr.Close()
	dg := digest.SHA256.Digester()
	tr := io.TeeReader(dr, dg.Hash())
	if err := unpack.Apply(ctx, dir, tr, s.log); err != nil {
		return remoteErr(err)
	}
	// the tar's trailing padding counts for the diff ID; the compressed
	// stream's tail (gzip trailer, remote verification) for the blob digest.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return remoteErr(err)
	}
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		return remoteErr(err)
	}
	if got := dg.Digest(); got != diffID {
		return fmt.Errorf("layer content has diff id %q, config says %q: %w", got, diffID, errdefs.ErrInvalidArgument)
	}
	return nil
}

// remoteErr adds the errdefs class to registry and transport errors.
func remoteErr(err error) error {
	if err == nil {
		return nil
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch code := terr.StatusCode; {
		case code == http.StatusNotFound:
			return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		case code == http.StatusUnauthorized:
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
		case code == http.StatusForbidden:
			return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
		case code == http.StatusTooManyRequests || code >= 500:
			return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
		}
		return err
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	return err
}
