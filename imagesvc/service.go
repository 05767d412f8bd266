// Package imagesvc owns images on the node: reference normalisation, pulls
// from registries, the verified content store, unpacking layers (each once,
// shared by every image that has it), image metadata in bbolt, and the
// overlayfs root filesystems of containers built from those layers.
//
// Layout under Options.Root: content/blobs/sha256/<hex> (blobs),
// layers/<first 20 hex of chain ID>/ (unpacked layers), containers/<id>/
// {upper,work,lower} (writable overlay dirs). With Root=/var/lib/berth, an
// overlay of about 80 layers fits in overlay's one-page mount data; deeper
// images are refused with ErrInvalidArgument.
package imagesvc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-runtime/berth/imagesvc/content"
	"github.com/berth-runtime/berth/imagesvc/hosts"
	"github.com/berth-runtime/berth/imagesvc/reference"
	"github.com/berth-runtime/berth/imagesvc/sigpolicy"
	"github.com/berth-runtime/berth/imagesvc/snapshot"
)

// DefaultMaxConcurrentDownloads bounds parallel layer downloads.
const DefaultMaxConcurrentDownloads = 3

// Options configure a Service.
type Options struct {
	Root string   // e.g. /var/lib/berth; must be absolute
	DB   *bolt.DB // opened by the caller; imagesvc uses buckets named "images*"
	// HostsDir is the certs.d directory: <host>/hosts.toml per registry
	// (mirrors, capabilities, TLS, plain HTTP), as containerd reads it.
	// "" => every registry is its own single upstream host.
	HostsDir string
	// InsecureHosts are registries ("127.0.0.1:5000") reached over plain
	// HTTP when HostsDir has no hosts.toml for them.
	InsecureHosts []string
	// ProgressInterval is how often a running pull logs bytes done of
	// total (0 => DefaultProgressInterval, negative => never).
	ProgressInterval time.Duration
	// MaxConcurrentDownloads bounds layer downloads across all pulls (0 => 3).
	MaxConcurrentDownloads int
	// PinnedImages are references ("registry.k8s.io/pause:3.10",
	// "name@sha256:...") of images reported pinned, which kubelet's image
	// GC never removes; normalised like any reference.
	PinnedImages []string
	// AuthFile is a docker config.json (auths, credHelpers, credsStore)
	// of node-level credentials, used per registry host for pulls whose
	// request carries none; read at every pull. "" => none.
	AuthFile string
	// SignaturePolicy is a containers-policy.json (package sigpolicy)
	// every pull from a registry must satisfy, checked before anything
	// but the top-level manifest is fetched; read at every pull, and once
	// by New so a broken file stops start-up. "" => no checks.
	SignaturePolicy string
	// UsageDir is where the last filesystem usage figures are kept so
	// that a restart can hand them out before it walks (berthd: its state
	// dir); "" => they are not kept.
	UsageDir string
	// Limits bound each pull (zero fields: defaults).
	Limits   Limits
	Platform *ocispec.Platform // nil => linux/runtime.GOARCH
	Logger   *slog.Logger
}

// Auth are registry credentials, in the CRI AuthConfig shape.
type Auth struct {
	Username, Password, Auth, IdentityToken, RegistryToken string
	// ServerAddress names the registry host the credentials are for (a
	// host or URL); empty means the image's registry. They are sent to
	// that host only, never to a mirror of it.
	ServerAddress string
}

// String never shows secrets: credentials must not reach a log.
func (a Auth) String() string {
	return fmt.Sprintf("Auth{user=%q server=%q secrets=redacted}", a.Username, a.ServerAddress)
}

// LogValue keeps slog from printing the fields.
func (a Auth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Image is an image record.
type Image struct {
	ID          string   // config digest, "sha256:..."
	RepoTags    []string // "docker.io/library/busybox:latest"
	RepoDigests []string // "docker.io/library/busybox@sha256:<manifest or index digest>"
	Size        uint64   // compressed layers + config
	Config      ocispec.Image
	ChainIDs    []digest.Digest // bottom layer first
	// Blobs are the content store blobs the image owns (manifests,
	// index, config, compressed layers), deleted with it when unused.
	Blobs []digest.Digest
	// Pinned is computed from Options.PinnedImages whenever a record is
	// read, never stored.
	Pinned bool `json:"-"`
	// Annotations are the manifest's (over the index's, when pulled
	// through one): a checkpoint image is recognised by them, as CRI-O
	// and containerd do.
	Annotations map[string]string `json:",omitempty"`
}

// FsUsage is what the image filesystem uses.
type FsUsage struct {
	Mountpoint            string
	UsedBytes, InodesUsed uint64
}

// Service is the image service.
type Service struct {
	root     string
	db       *bolt.DB
	log      *slog.Logger
	platform ocispec.Platform
	hosts    *hosts.Config
	content  *content.Store
	pinned   pinnedSet
	authFile string
	// sigPolicy is Options.SignaturePolicy.
	sigPolicy string

	progressInterval time.Duration
	limits           Limits
	layers           *snapshot.Layers
	sem              chan struct{} // download slots

	pulls      group[Image]
	layerPulls group[struct{}]

	mu sync.Mutex // guards active; held across a layer GC decision and delete
	// active counts chain IDs that running pulls rely on, so GC keeps them.
	active map[digest.Digest]int

	// imageUsage caches FsInfo: every change to layers and blobs (pull,
	// load, GC) marks it changed. ctrUsage caches ContainersFsInfo:
	// rootfs and volume setup and removal mark it changed.
	imageUsage usageCache
	ctrUsage   usageCache
	// mountpoint is Mountpoint(root), looked up once: it reads the whole
	// mount table, 10-20 ms on a node with 250 pods' mounts.
	mountpoint func() string
	// tags serves RepoTags.
	tags tagCache
}

// New opens the image service, creating its directories and buckets.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.Root == "" || !filepath.IsAbs(o.Root) {
		return nil, fmt.Errorf("image service root %q must be an absolute path: %w", o.Root, errdefs.ErrInvalidArgument)
	}
	if o.DB == nil {
		return nil, fmt.Errorf("image service needs a metadata db: %w", errdefs.ErrInvalidArgument)
	}
	s := &Service{
		root:   filepath.Clean(o.Root),
		db:     o.DB,
		log:    o.Logger,
		hosts:  hosts.New(o.HostsDir, o.InsecureHosts, o.Logger),
		active: map[digest.Digest]int{},

		progressInterval: o.ProgressInterval,
		limits:           o.Limits.withDefaults(),
		authFile:         o.AuthFile,
		sigPolicy:        o.SignaturePolicy,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.imageUsage.refresh, s.imageUsage.maxAge = imageUsageRefresh, imageUsageMaxAge
	s.ctrUsage.refresh, s.ctrUsage.maxAge = containerUsageRefresh, containerUsageMaxAge
	s.imageUsage.log, s.ctrUsage.log = s.log, s.log
	if o.UsageDir != "" {
		s.imageUsage.file = filepath.Join(o.UsageDir, "image-fs-usage.json")
		s.ctrUsage.file = filepath.Join(o.UsageDir, "container-fs-usage.json")
		s.imageUsage.load()
		s.ctrUsage.load()
	}
	s.mountpoint = sync.OnceValue(func() string { return Mountpoint(s.root) })
	if o.Platform != nil {
		s.platform = *o.Platform
	} else {
		s.platform = ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	var err error
	if s.pinned, err = newPinnedSet(o.PinnedImages); err != nil {
		return nil, err
	}
	if o.SignaturePolicy != "" {
		if _, err := sigpolicy.Load(o.SignaturePolicy); err != nil {
			return nil, err
		}
	}
	n := o.MaxConcurrentDownloads
	if n <= 0 {
		n = DefaultMaxConcurrentDownloads
	}
	s.sem = make(chan struct{}, n)
	if s.progressInterval == 0 {
		s.progressInterval = DefaultProgressInterval
	}
	if s.content, err = content.New(filepath.Join(s.root, "content")); err != nil {
		return nil, err
	}
	if s.layers, err = snapshot.NewLayers(filepath.Join(s.root, "layers")); err != nil {
		return nil, err
	}
	// Writable layers are containers' files: closed to other users, also
	// on a node an older berth (0711) set up.
	cdir := filepath.Join(s.root, "containers")
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return nil, fmt.Errorf("create containers dir: %w", err)
	}
	if err := os.Chmod(cdir, 0o700); err != nil {
		return nil, fmt.Errorf("close containers dir to other users: %w", err)
	}
	if err := initBuckets(s.db); err != nil {
		return nil, err
	}
	return s, nil
}

var (
	idRE     = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	bareIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Get finds an image by ID ("sha256:<hex>" or the bare 64-hex form), by tag
// reference (normalised: "busybox" finds docker.io/library/busybox:latest),
// or by digest reference ("busybox@sha256:..."). errdefs.ErrNotFound if none.
func (s *Service) Get(ctx context.Context, refOrID string) (Image, error) {
	var img Image
	err := s.db.View(func(tx *bolt.Tx) error {
		id, err := resolve(tx, refOrID)
		if err != nil {
			return err
		}
		img, err = getImage(tx, id)
		return err
	})
	return s.pinned.apply(img), err
}

// resolve maps any accepted name form to an image ID.
func resolve(tx *bolt.Tx, refOrID string) (string, error) {
	if bareIDRE.MatchString(refOrID) {
		refOrID = "sha256:" + refOrID
	}
	if idRE.MatchString(refOrID) {
		if tx.Bucket(bucketImages).Get([]byte(refOrID)) == nil {
			return "", fmt.Errorf("image %q: %w", refOrID, errdefs.ErrNotFound)
		}
		return refOrID, nil
	}
	r, err := reference.Parse(refOrID)
	if err != nil {
		return "", err
	}
	name := r.TagRef()
	if r.Digest != "" {
		name = r.DigestRef(r.Digest)
	}
	id := tx.Bucket(bucketNames).Get([]byte(name))
	if id == nil {
		return "", fmt.Errorf("image %q: %w", refOrID, errdefs.ErrNotFound)
	}
	return string(id), nil
}

// List returns every image record.
func (s *Service) List(ctx context.Context) ([]Image, error) {
	var imgs []Image
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		imgs, err = listImages(tx)
		return err
	})
	for i := range imgs {
		imgs[i] = s.pinned.apply(imgs[i])
	}
	return imgs, err
}

// Remove deletes the image record found by refOrID with all its names
// (errdefs.ErrNotFound if there is none), then deletes the layer dirs that
// no other image and no container rootfs uses, and the blobs no other image
// lists.
func (s *Service) Remove(ctx context.Context, refOrID string) error {
	var removed Image
	err := s.db.Update(func(tx *bolt.Tx) error {
		id, err := resolve(tx, refOrID)
		if err != nil {
			return err
		}
		removed, err = s.deleteImage(tx, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove image %q: %w", refOrID, err)
	}
	// A pinned image is removed too, as containerd does: pinning keeps
	// kubelet's GC away, an explicit RemoveImage is the operator's call.
	s.log.InfoContext(ctx, "image removed", "image_id", removed.ID, "tags", removed.RepoTags,
		"pinned", s.pinned.apply(removed).Pinned)
	s.gcLayers(ctx, removed.ChainIDs)
	s.gcBlobs(ctx, removed.Blobs)
	return nil
}

// gcBlobs deletes those of candidates no image lists and no pull holds.
func (s *Service) gcBlobs(ctx context.Context, candidates []digest.Digest) {
	defer s.imageUsage.changed()
	s.mu.Lock()
	defer s.mu.Unlock()
	used := map[digest.Digest]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		imgs, err := listImages(tx)
		for _, img := range imgs {
			for _, b := range img.Blobs {
				used[b] = true
			}
		}
		return err
	})
	if err != nil {
		s.log.WarnContext(ctx, "blob gc: read metadata", "error", err)
		return
	}
	for _, b := range sortedUnique(candidates) {
		if used[b] || s.active[b] > 0 {
			continue
		}
		if err := s.content.Delete(b); err != nil {
			s.log.WarnContext(ctx, "blob gc: delete blob", "digest", b, "error", err)
		}
	}
}

// gcLayers deletes those of candidates that nothing references any more.
// Errors are logged: a left-over layer wastes space but breaks nothing.
func (s *Service) gcLayers(ctx context.Context, candidates []digest.Digest) {
	defer s.imageUsage.changed()
	s.mu.Lock()
	defer s.mu.Unlock()
	var used map[digest.Digest]bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		used, err = usedChains(tx)
		return err
	})
	if err != nil {
		s.log.WarnContext(ctx, "layer gc: read metadata", "error", err)
		return
	}
	for _, c := range slices.Compact(slices.Sorted(slices.Values(candidates))) {
		if used[c] || s.active[c] > 0 {
			continue
		}
		if err := s.layers.Remove(c); err != nil {
			s.log.WarnContext(ctx, "layer gc: remove layer", "chain_id", c, "error", err)
			continue
		}
		s.log.DebugContext(ctx, "layer removed", "chain_id", c)
	}
}

// hold marks chain IDs and blob digests as in use by a pull until the
// returned func runs.
func (s *Service) hold(chains []digest.Digest) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range chains {
		s.active[c]++
	}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range chains {
			if s.active[c]--; s.active[c] <= 0 {
				delete(s.active, c)
			}
		}
	}
}

// chainIDs computes OCI chain IDs from diff IDs, bottom layer first.
func chainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(out[i-1].String() + " " + d.String())
	}
	return out
}
