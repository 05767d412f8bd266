// Package reference parses and normalises image references the way kubelet,
// docker and containerd do ("busybox" is "docker.io/library/busybox:latest"),
// and turns them into go-containerregistry names for the registry protocol.
package reference

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

const (
	// DefaultDomain is the registry of references without one.
	DefaultDomain = "docker.io"
	// DefaultTag is the tag of references with neither tag nor digest.
	DefaultTag   = "latest"
	legacyDomain = "index.docker.io"
	officialRepo = "library/"
)

var (
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	pathRE   = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	domainRE = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?$`)
)

// Reference is a normalised image reference. Tag and Digest may both be set
// ("name:tag@sha256:..."): the digest then decides what is pulled.
type Reference struct {
	Domain string        // "docker.io", "127.0.0.1:5000"
	Path   string        // "library/busybox"
	Tag    string        // "latest", may be empty when Digest is set
	Digest digest.Digest // may be empty
}

// Parse normalises s. Malformed references wrap errdefs.ErrInvalidArgument.
func Parse(s string) (Reference, error) {
	r, err := parse(s)
	if err != nil {
		return Reference{}, fmt.Errorf("parse reference %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return r, nil
}

func parse(s string) (Reference, error) {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return Reference{}, fmt.Errorf("empty or contains whitespace")
	}
	var r Reference
	nameTag := s
	if i := strings.IndexByte(s, '@'); i >= 0 {
		d, err := digest.Parse(s[i+1:])
		if err != nil {
			return Reference{}, fmt.Errorf("bad digest: %v", err)
		}
		r.Digest = d
		nameTag = s[:i]
	}
	nm := nameTag
	if i := strings.LastIndexByte(nameTag, ':'); i > strings.LastIndexByte(nameTag, '/') {
		r.Tag = nameTag[i+1:]
		nm = nameTag[:i]
		if !tagRE.MatchString(r.Tag) {
			return Reference{}, fmt.Errorf("bad tag %q", r.Tag)
		}
	}
	r.Domain, r.Path = splitDomain(nm)
	if !domainRE.MatchString(r.Domain) || !pathRE.MatchString(r.Path) || len(r.Repository()) > 255 {
		return Reference{}, fmt.Errorf("bad repository name %q", r.Repository())
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = DefaultTag
	}
	if _, err := name.NewRepository(r.Repository(), name.StrictValidation); err != nil {
		return Reference{}, err
	}
	return r, nil
}

// splitDomain follows docker/distribution: the first component is a domain
// only if it looks like a host (has '.' or ':', or is "localhost").
func splitDomain(nm string) (domain, path string) {
	i := strings.IndexByte(nm, '/')
	if i == -1 || (!strings.ContainsAny(nm[:i], ".:") && nm[:i] != "localhost" && strings.ToLower(nm[:i]) == nm[:i]) {
		domain, path = DefaultDomain, nm
	} else {
		domain, path = nm[:i], nm[i+1:]
	}
	if domain == legacyDomain {
		domain = DefaultDomain
	}
	if domain == DefaultDomain && !strings.ContainsRune(path, '/') {
		path = officialRepo + path
	}
	return domain, path
}

// Repository is "domain/path".
func (r Reference) Repository() string { return r.Domain + "/" + r.Path }

// String is the full normalised form.
func (r Reference) String() string {
	s := r.Repository()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// TagRef is "domain/path:tag", or "" when the reference has no tag.
func (r Reference) TagRef() string {
	if r.Tag == "" {
		return ""
	}
	return r.Repository() + ":" + r.Tag
}

// DigestRef is "domain/path@d".
func (r Reference) DigestRef(d digest.Digest) string {
	return r.Repository() + "@" + d.String()
}

// Remote returns the name to fetch: by digest when there is one, else by tag.
// Insecure hosts are reached over plain HTTP.
func (r Reference) Remote(insecure bool) (name.Reference, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	var (
		ref name.Reference
		err error
	)
	if r.Digest != "" {
		ref, err = name.NewDigest(r.DigestRef(r.Digest), opts...)
	} else {
		ref, err = name.NewTag(r.TagRef(), opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("reference %q: %v: %w", r.String(), err, errdefs.ErrInvalidArgument)
	}
	return ref, nil
}
