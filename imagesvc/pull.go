package imagesvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/attribute"

	"github.com/berth-runtime/berth/imagesvc/hosts"
	"github.com/berth-runtime/berth/imagesvc/reference"
	"github.com/berth-runtime/berth/imagesvc/unpack"
)

// Pull fetches ref (normalised) and unpacks its layers, returning the
// record. Concurrent pulls of one reference share one download; a layer whose
// chain ID is already unpacked is neither downloaded nor unpacked again.
// auth may be nil for anonymous pulls. Only callers with the same
// credentials share a pull: one that joined another's would get an image
// its own credentials may not reach. When ref has both tag and digest the
// digest is pulled and the tag is not recorded (it was not verified).
//
// The registry's hosts (mirrors, then the upstream server, from the
// certs.d config) are tried in order: a tag is resolved by the first host
// with the resolve capability that knows it, and the content is fetched from
// the first host with the pull capability that serves all of it.
func (s *Service) Pull(ctx context.Context, ref string, auth *Auth) (img Image, err error) {
	ctx, span := startSpan(ctx, "image.pull", attribute.String("image.ref", ref))
	defer func() { endSpan(span, err) }()
	r, err := reference.Parse(ref)
	if err != nil {
		return Image{}, err
	}
	img, err = s.pulls.Do(ctx, r.String()+"\x00"+auth.key(), func(ctx context.Context) (Image, error) {
		return s.pull(ctx, r, auth)
	})
	if err != nil {
		return Image{}, fmt.Errorf("pull %q: %w", r.String(), err)
	}
	return img, nil
}

// source fetches manifests and blobs of one repository from one host, or
// from local files (an image archive being loaded) when local is set.
type source struct {
	host   hosts.Host
	puller *remote.Puller
	repo   name.Repository
	prog   *progress
	local  func(d digest.Digest) (io.ReadCloser, error)
	// budget is what the pull may still unpack, set by pullFrom.
	budget *unpack.Budget
}

// where names the source in logs and errors.
func (src source) where() string {
	if src.local != nil {
		return "archive"
	}
	return src.host.URL()
}

// manifest fetches the manifest d (not yet verified); a registry's is
// bounded by the transport, a local one by limit.
func (src source) manifest(ctx context.Context, d digest.Digest, limit int64) ([]byte, types.MediaType, error) {
	if src.local != nil {
		rc, err := src.local(d)
		if err != nil {
			return nil, "", err
		}
		defer rc.Close()
		raw, err := io.ReadAll(io.LimitReader(rc, limit+1))
		if err != nil {
			return nil, "", err
		}
		if int64(len(raw)) > limit {
			return nil, "", manifestTooLarge(-1, limit)
		}
		return raw, sniffMediaType(raw), nil
	}
	desc, err := src.puller.Get(ctx, src.repo.Digest(d.String()))
	if err != nil {
		return nil, "", remoteErr(err)
	}
	return desc.Manifest, desc.MediaType, nil
}

// sniffMediaType reads a manifest's own mediaType, guessing OCI when it
// has none (the field is optional in OCI manifests and indexes).
func sniffMediaType(raw []byte) types.MediaType {
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	_ = json.Unmarshal(raw, &m)
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.Manifests != nil:
		return types.OCIImageIndex
	}
	return types.OCIManifestSchema1
}

func (src source) blob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	if src.local != nil {
		return src.local(d)
	}
	l, err := src.puller.Layer(ctx, src.repo.Digest(d.String()))
	if err != nil {
		return nil, remoteErr(err)
	}
	rc, err := l.Compressed()
	return rc, remoteErr(err)
}

// source connects to host h with auth, or, when the request carried no
// credentials, with the node auth file's for h.
func (s *Service) source(ctx context.Context, r reference.Reference, h hosts.Host, auth *Auth, prog *progress) (source, error) {
	repo, err := name.NewRepository(h.Host+"/"+r.Path, name.StrictValidation)
	if err != nil {
		return source{}, fmt.Errorf("repository %q on %s: %v: %w", r.Path, h.URL(), err, errdefs.ErrInvalidArgument)
	}
	if auth.none() {
		if auth, err = s.nodeAuth(ctx, h); err != nil {
			return source{}, err
		}
	}
	puller, err := remote.NewPuller(
		remote.WithAuth(authenticator(auth, r.Domain, h)),
		remote.WithTransport(&limitTransport{base: h.Transport, timeout: s.limits.ProgressTimeout, maxManifest: s.limits.MaxManifestSize}),
		remote.WithUserAgent("berth"),
	)
	if err != nil {
		return source{}, fmt.Errorf("create puller: %w", err)
	}
	return source{host: h, puller: puller, repo: repo, prog: prog}, nil
}

// hostErrors collects why each host failed, for the error a pull returns
// when none worked: operators need to see which mirrors were tried.
type hostErrors struct {
	tried []string
	last  error
}

func (e *hostErrors) add(h hosts.Host, err error) {
	e.tried = append(e.tried, fmt.Sprintf("%s: %v", h.URL(), err))
	e.last = err
}

func (e *hostErrors) err(what string) error {
	if e.last == nil {
		return fmt.Errorf("%s: no registry host has the capability: %w", what, errdefs.ErrFailedPrecondition)
	}
	if len(e.tried) == 1 {
		return fmt.Errorf("%s from %w", what, e.last)
	}
	return fmt.Errorf("%s: all %d hosts failed [%s]: %w", what, len(e.tried), strings.Join(e.tried, "; "), e.last)
}

// resolved is the top-level manifest a reference names.
type resolved struct {
	digest digest.Digest
	raw    []byte          // nil when not fetched yet (pull by digest)
	mt     types.MediaType // with raw
}

func (s *Service) pull(ctx context.Context, r reference.Reference, auth *Auth) (Image, error) {
	hs, err := s.hosts.Lookup(r.Domain)
	if err != nil {
		return Image{}, fmt.Errorf("registry hosts of %q: %w", r.Domain, err)
	}
	prog := newProgress(r.String())
	stop := s.logProgress(ctx, prog)
	defer stop()
	top := resolved{digest: r.Digest}
	if top.digest == "" {
		if top, err = s.resolveTag(ctx, r, hs, auth, prog); err != nil {
			return Image{}, err
		}
	}
	if err := s.checkSignatures(ctx, r, hs, top.digest, auth, prog); err != nil {
		return Image{}, err
	}
	var errs hostErrors
	for _, h := range hs {
		if !h.Capabilities.Has(hosts.Pull) {
			continue
		}
		src, err := s.source(ctx, r, h, auth, prog)
		if err == nil {
			var img Image
			if img, err = s.pullFrom(ctx, src, top, names{tag: tagName(r), repoDigest: r.DigestRef(top.digest), ref: r.String()}); err == nil {
				return img, nil
			}
		}
		if ctx.Err() != nil {
			return Image{}, ctx.Err()
		}
		if len(hs) > 1 {
			s.log.WarnContext(ctx, "pull from registry host failed", "ref", r.String(), "host", h.URL(), "error", err)
		}
		errs.add(h, err)
	}
	return Image{}, errs.err("fetch")
}

// resolveTag asks each host with the resolve capability for the tag's manifest.
func (s *Service) resolveTag(ctx context.Context, r reference.Reference, hs []hosts.Host, auth *Auth, prog *progress) (res resolved, err error) {
	ctx, span := startSpan(ctx, "image.resolve", attribute.String("image.ref", r.String()))
	defer func() { endSpan(span, err) }()
	var errs hostErrors
	for _, h := range hs {
		if !h.Capabilities.Has(hosts.Resolve) {
			continue
		}
		src, err := s.source(ctx, r, h, auth, prog)
		if err == nil {
			var desc *remote.Descriptor
			if desc, err = src.puller.Get(ctx, src.repo.Tag(r.Tag)); err == nil {
				d := digest.Digest(desc.Digest.String())
				if err = verifyBytes(d, desc.Manifest); err == nil {
					return resolved{digest: d, raw: desc.Manifest, mt: desc.MediaType}, nil
				}
			}
			err = remoteErr(err)
		}
		if ctx.Err() != nil {
			return resolved{}, ctx.Err()
		}
		if len(hs) > 1 {
			s.log.WarnContext(ctx, "resolve on registry host failed", "ref", r.String(), "host", h.URL(), "error", err)
		}
		errs.add(h, err)
	}
	return resolved{}, errs.err("resolve tag " + r.Tag)
}

// names are what an image is recorded under; both may be empty.
type names struct {
	tag, repoDigest string
	ref             string // for logs
}

// pullFrom pulls the image top names from one source.
func (s *Service) pullFrom(ctx context.Context, src source, top resolved, n names) (Image, error) {
	// Blobs and layers written by this pull (or left by its failure) are
	// in FsInfo from here on.
	defer s.imageUsage.changed()
	// manifests and config are stored only once the layers made it, so a
	// failed pull leaves nothing in the content store.
	manifest, blobs, err := s.resolveManifest(ctx, src, top)
	if err != nil {
		return Image{}, err
	}
	if n := len(manifest.Layers); n > s.limits.MaxLayers {
		return Image{}, fmt.Errorf("image has %d layers, over the limit of %d: %w", n, s.limits.MaxLayers, errdefs.ErrResourceExhausted)
	}
	cfgBytes, err := s.config(ctx, src, manifest.Config)
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
	allBlobs := slices.Collect(maps.Keys(blobs))
	for _, l := range manifest.Layers {
		allBlobs = append(allBlobs, l.Digest)
	}
	release := s.hold(append(slices.Clone(chains), allBlobs...))
	defer release()
	src.prog.plan(manifest.Layers, chains, s.layers.Exists)
	src.budget = unpack.NewBudget(s.limits.MaxUnpackedSize)
	if err := s.fetchLayers(ctx, src, manifest.Layers, cfg.RootFS.DiffIDs, chains); err != nil {
		return Image{}, err
	}
	for d, b := range blobs {
		if err := s.content.WriteBlob(d, b); err != nil {
			return Image{}, fmt.Errorf("store blob: %w", err)
		}
	}
	img := Image{ID: manifest.Config.Digest.String(), Config: cfg, ChainIDs: chains, Size: uint64(manifest.Config.Size)}
	img.Annotations = manifestAnnotations(blobs[top.digest], manifest)
	for _, l := range manifest.Layers {
		img.Size += uint64(l.Size)
	}
	img.Blobs = sortedUnique(allBlobs)
	err = s.db.Update(func(tx *bolt.Tx) error {
		img, err = s.storePulled(tx, img, n.tag, n.repoDigest)
		return err
	})
	if err != nil {
		return Image{}, fmt.Errorf("record image: %w", err)
	}
	s.log.InfoContext(ctx, "image stored", "ref", n.ref, "image_id", img.ID, "layers", len(chains), "source", src.where())
	return s.pinned.apply(img), nil
}

// manifestAnnotations merges the top-level manifest's or index's
// annotations (raw) with the image manifest's, which win.
func manifestAnnotations(raw []byte, m ocispec.Manifest) map[string]string {
	var top struct {
		Annotations map[string]string `json:"annotations"`
	}
	_ = json.Unmarshal(raw, &top)
	out := top.Annotations
	for k, v := range m.Annotations {
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

func sortedUnique(ds []digest.Digest) []digest.Digest {
	return slices.Compact(slices.Sorted(slices.Values(ds)))
}

func tagName(r reference.Reference) string {
	if r.Digest != "" {
		return ""
	}
	return r.TagRef()
}

// resolveManifest fetches (unless top already holds it) the manifest top
// names, going through an index to the platform's manifest. It returns the
// image manifest and the verified raw manifests by digest, to store once the
// pull succeeds.
func (s *Service) resolveManifest(ctx context.Context, src source, top resolved) (ocispec.Manifest, map[digest.Digest][]byte, error) {
	fail := func(err error) (ocispec.Manifest, map[digest.Digest][]byte, error) {
		return ocispec.Manifest{}, nil, err
	}
	raw, mt := top.raw, top.mt
	if raw == nil {
		var err error
		if raw, mt, err = src.manifest(ctx, top.digest, s.limits.MaxManifestSize); err != nil {
			return fail(fmt.Errorf("fetch manifest: %w", err))
		}
	}
	if err := verifyBytes(top.digest, raw); err != nil {
		return fail(err)
	}
	blobs := map[digest.Digest][]byte{top.digest: raw}
	if mt == types.OCIImageIndex || mt == types.DockerManifestList {
		child, err := s.pickPlatform(raw)
		if err != nil {
			return fail(err)
		}
		if raw, mt, err = src.manifest(ctx, child, s.limits.MaxManifestSize); err != nil {
			return fail(fmt.Errorf("fetch platform manifest: %w", err))
		}
		if err := verifyBytes(child, raw); err != nil {
			return fail(err)
		}
		blobs[child] = raw
	}
	m, err := parseManifest(raw, mt)
	if err != nil {
		return fail(err)
	}
	return m, blobs, nil
}

// parseManifest accepts OCI and Docker schema 2 image manifests only.
func parseManifest(raw []byte, mt types.MediaType) (ocispec.Manifest, error) {
	switch mt {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return ocispec.Manifest{}, fmt.Errorf("manifest media type %q: Docker schema 1 images are not supported (push the image again with a current client): %w",
			mt, errdefs.ErrNotImplemented)
	default:
		return ocispec.Manifest{}, fmt.Errorf("manifest media type %q is not supported (only OCI and Docker schema 2 images): %w",
			mt, errdefs.ErrNotImplemented)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return ocispec.Manifest{}, fmt.Errorf("decode manifest: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if cmt := types.MediaType(m.Config.MediaType); cmt != types.OCIConfigJSON && cmt != types.DockerConfigJSON {
		return ocispec.Manifest{}, fmt.Errorf("config media type %q is not an image config: %w", cmt, errdefs.ErrNotImplemented)
	}
	for _, l := range m.Layers {
		switch types.MediaType(l.MediaType) {
		case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer, types.DockerLayer, types.DockerUncompressedLayer,
			types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer, types.DockerForeignLayer:
		default:
			return ocispec.Manifest{}, fmt.Errorf("layer media type %q is not supported: %w", l.MediaType, errdefs.ErrNotImplemented)
		}
	}
	return m, nil
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

// config returns the verified image config d, from the store or the
// source. Its size is checked before it is fetched, and the read is cut
// off past it for a descriptor that lies.
func (s *Service) config(ctx context.Context, src source, d ocispec.Descriptor) ([]byte, error) {
	limit := s.limits.MaxConfigSize
	tooLarge := func(size string) error {
		return fmt.Errorf("image config %q is %s, over the %d byte limit: %w", d.Digest, size, limit, errdefs.ErrResourceExhausted)
	}
	if d.Size > limit {
		return nil, tooLarge(fmt.Sprintf("%d bytes", d.Size))
	}
	if b, err := s.content.ReadBlob(d.Digest); err == nil {
		return b, nil
	}
	rc, err := src.blob(ctx, d.Digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, remoteErr(err)
	}
	if int64(len(b)) > limit {
		return nil, tooLarge("larger")
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
				return
			}
			src.prog.complete(layers[i].Digest)
		})
	}
	wg.Wait()
	return firstErr
}

// layerAttempts bounds tries of one layer download: a connection cut
// mid-body is retried (each try from a fresh temp dir), as a registry
// restarting or a load balancer dropping a long transfer are routine.
const layerAttempts = 3

// fetchLayer streams one layer: compressed bytes go to the blob file and its
// digest check, decompressed bytes to the tar extractor and the diff ID
// check; the layer dir is committed only when both match.
func (s *Service) fetchLayer(ctx context.Context, src source, desc ocispec.Descriptor, diffID, chain digest.Digest) (err error) {
	if s.layers.Exists(chain) {
		return nil
	}
	ctx, span := startSpan(ctx, "image.layer", attribute.String("image.layer.digest", desc.Digest.String()),
		attribute.Int64("image.layer.size", desc.Size), attribute.String("image.layer.chain_id", chain.String()))
	defer func() { endSpan(span, err) }()
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-ctx.Done():
		return ctx.Err()
	}
	for attempt := 1; ; attempt++ {
		done, err := s.fetchLayerOnce(ctx, src, desc, diffID, chain)
		if err == nil {
			return nil
		}
		src.prog.add(desc.Digest, -done)
		if attempt == layerAttempts || ctx.Err() != nil || !retryable(err) {
			return err
		}
		s.log.WarnContext(ctx, "layer download interrupted, retrying", "digest", desc.Digest, "attempt", attempt, "error", err)
		select {
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func retryable(err error) bool {
	return errdefs.IsUnavailable(err) || errors.Is(err, io.ErrUnexpectedEOF)
}

// fetchLayerOnce makes one try and returns the compressed bytes it read
// (for progress accounting).
func (s *Service) fetchLayerOnce(ctx context.Context, src source, desc ocispec.Descriptor, diffID, chain digest.Digest) (n int64, err error) {
	blob, w, err := s.openLayerBlob(ctx, src, desc)
	if err != nil {
		return 0, err
	}
	defer blob.Close()
	cr := &countingReader{r: blob, d: desc.Digest}
	if w != nil {
		cr.prog = src.prog // a local blob is not a download
	}
	var compressed io.Reader = cr
	if w != nil {
		defer w.Close()
		compressed = io.TeeReader(cr, w)
	}
	tmp, err := s.layers.Begin()
	if err != nil {
		return cr.counted(), err
	}
	try := src.budget.Sub()
	defer func() {
		if err != nil {
			s.layers.Abort(tmp)
			try.Release()
		}
	}()
	if err := s.extract(ctx, compressed, tmp, diffID, try); err != nil {
		return cr.counted(), err
	}
	if w != nil {
		if err := w.Commit(); err != nil {
			return cr.counted(), err
		}
	}
	s.log.DebugContext(ctx, "layer unpacked", "digest", desc.Digest, "chain_id", chain)
	return cr.counted(), s.layers.Commit(tmp, chain)
}

// openLayerBlob opens the layer from the content store if it is there (its
// blob was verified when stored), else from the registry with a blob writer.
func (s *Service) openLayerBlob(ctx context.Context, src source, desc ocispec.Descriptor) (_ io.ReadCloser, _ blobWriter, err error) {
	if f, err := s.content.Open(desc.Digest); err == nil {
		return f, nil, nil
	}
	ctx, span := startSpan(ctx, "image.layer.fetch")
	defer func() { endSpan(span, err) }()
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

func (s *Service) extract(ctx context.Context, compressed io.Reader, dir string, diffID digest.Digest, budget *unpack.Budget) (err error) {
	ctx, span := startSpan(ctx, "image.layer.unpack")
	defer func() { endSpan(span, err) }()
	dr, err := unpack.Decompress(compressed, unpack.WithMaxWindow(uint64(s.limits.MaxZstdWindow)))
	if err != nil {
		return layerErr(err)
	}
	defer dr.Close()
	dg := digest.SHA256.Digester()
	tr := io.TeeReader(dr, dg.Hash())
	if err := unpack.Apply(ctx, dir, tr, s.log, unpack.WithBudget(budget)); err != nil {
		return layerErr(err)
	}
	// the tar's trailing padding counts for the diff ID; the compressed
	// stream's tail (gzip trailer, remote verification) for the blob digest.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return layerErr(err)
	}
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		return layerErr(err)
	}
	if got := dg.Digest(); got != diffID {
		return fmt.Errorf("layer content has diff id %q, config says %q: %w", got, diffID, errdefs.ErrInvalidArgument)
	}
	return nil
}

// layerErr classifies an error met while reading a layer: network
// trouble is Unavailable (and retried), a stream that ends early is left
// for the retry logic, and anything else the decoders reject (a malformed
// tar, gzip or zstd stream) is the layer's fault: InvalidArgument.
func layerErr(err error) error {
	err = remoteErr(err)
	var errno syscall.Errno
	var nerr net.Error
	switch {
	case errdefs.IsUnavailable(err), errdefs.IsInvalidArgument(err), errdefs.IsNotFound(err), errdefs.IsResourceExhausted(err),
		errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &errno), errors.As(err, &nerr):
		return err
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
}

// remoteErr adds the errdefs class to registry and transport errors.
func remoteErr(err error) error {
	if err == nil {
		return nil
	}
	if errdefs.IsResourceExhausted(err) || errdefs.IsDeadlineExceeded(err) {
		// a limit of the pull's, not trouble on the network: never retried.
		return err
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
