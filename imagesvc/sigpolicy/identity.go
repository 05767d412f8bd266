package sigpolicy

// identity.go: signedIdentity, which docker reference a signature must
// claim (its payload's critical.identity.docker-reference) for the image
// being pulled, with containers/image's semantics. cosign writes the bare
// repository there, so a pull by tag accepts a cosign signature only under
// matchRepository, exactRepository or a remapIdentity onto them: the
// signature binds the manifest digest, never the tag.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-runtime/berth/imagesvc/reference"
)

// identityRule is a parsed signedIdentity.
type identityRule struct {
	typ          string // matchRepoDigestOrExact by default
	exact        signedRef
	repository   string
	prefix       string
	signedPrefix string
}

// signedRef is a parsed docker reference; nameOnly when it has neither
// tag nor digest (reference.Parse would have added ":latest").
type signedRef struct {
	r        reference.Reference
	nameOnly bool
}

func (s signedRef) String() string {
	if s.nameOnly {
		return s.r.Repository()
	}
	return s.r.String()
}

func parseSignedRef(s string) (signedRef, error) {
	r, err := reference.Parse(s)
	if err != nil {
		return signedRef{}, err
	}
	last := s[strings.LastIndexByte(s, '/')+1:]
	if !strings.Contains(s, "@") && !strings.Contains(last, ":") {
		r.Tag = ""
		return signedRef{r: r, nameOnly: true}, nil
	}
	return signedRef{r: r}, nil
}

// imageRef is the image being pulled as a signedRef: by digest when the
// reference has one (that is what is pulled), else by tag.
func imageRef(r reference.Reference) signedRef {
	if r.Digest != "" {
		r.Tag = ""
	}
	return signedRef{r: r}
}

func parseIdentity(raw *json.RawMessage) (identityRule, error) {
	if raw == nil {
		return identityRule{typ: "matchRepoDigestOrExact"}, nil
	}
	var ij struct {
		Type             string `json:"type"`
		DockerReference  string `json:"dockerReference"`
		DockerRepository string `json:"dockerRepository"`
		Prefix           string `json:"prefix"`
		SignedPrefix     string `json:"signedPrefix"`
	}
	if err := strictUnmarshal(*raw, &ij); err != nil {
		return identityRule{}, err
	}
	rule := identityRule{typ: ij.Type}
	extra := ij.DockerReference != "" || ij.DockerRepository != "" || ij.Prefix != "" || ij.SignedPrefix != ""
	switch ij.Type {
	case "matchExact", "matchRepoDigestOrExact", "matchRepository":
		if extra {
			return identityRule{}, fmt.Errorf("%s takes no other field", ij.Type)
		}
	case "exactReference":
		ref, err := parseSignedRef(ij.DockerReference)
		if err != nil || ref.nameOnly || ij.DockerRepository != "" || ij.Prefix != "" || ij.SignedPrefix != "" {
			return identityRule{}, fmt.Errorf("exactReference needs dockerReference, a reference with a tag or digest, and nothing else (got %q)", ij.DockerReference)
		}
		rule.exact = ref
	case "exactRepository":
		ref, err := parseSignedRef(ij.DockerRepository)
		if err != nil || ij.DockerReference != "" || ij.Prefix != "" || ij.SignedPrefix != "" {
			return identityRule{}, fmt.Errorf("exactRepository needs dockerRepository, a repository, and nothing else (got %q)", ij.DockerRepository)
		}
		rule.repository = ref.r.Repository()
	case "remapIdentity":
		for _, p := range []string{ij.Prefix, ij.SignedPrefix} {
			if p == "" || strings.ContainsAny(p, "@ ") || strings.HasSuffix(p, "/") {
				return identityRule{}, fmt.Errorf("remapIdentity needs prefix and signedPrefix, each a registry, namespace or repository (got %q, %q)", ij.Prefix, ij.SignedPrefix)
			}
		}
		if ij.DockerReference != "" || ij.DockerRepository != "" {
			return identityRule{}, errors.New("remapIdentity takes only prefix and signedPrefix")
		}
		rule.prefix, rule.signedPrefix = ij.Prefix, ij.SignedPrefix
	case "":
		return identityRule{}, errors.New(`"type" is missing`)
	default:
		return identityRule{}, fmt.Errorf("unknown type %q", ij.Type)
	}
	return rule, nil
}

// match reports whether a signature claiming signed may stand for image.
func (rule identityRule) match(image reference.Reference, signed string) error {
	sig, err := parseSignedRef(signed)
	if err != nil {
		return fmt.Errorf("signed docker-reference %q: %w", signed, err)
	}
	want := imageRef(image)
	ok := false
	switch rule.typ {
	case "matchExact":
		ok = !sig.nameOnly && sig.String() == want.String()
	case "matchRepoDigestOrExact":
		ok = repoDigestOrExact(want, sig)
	case "matchRepository":
		ok = sig.r.Repository() == want.r.Repository()
	case "exactReference":
		ok = !sig.nameOnly && sig.String() == rule.exact.String()
	case "exactRepository":
		ok = sig.r.Repository() == rule.repository
	case "remapIdentity":
		if s := want.String(); refHasPrefix(s, rule.prefix) {
			remapped, err := parseSignedRef(rule.signedPrefix + s[len(rule.prefix):])
			if err != nil {
				return fmt.Errorf("remap %q to %q: %w", s, rule.signedPrefix, err)
			}
			want = remapped
		}
		ok = repoDigestOrExact(want, sig)
	}
	if !ok {
		return fmt.Errorf("signed identity %q does not match %q under %s", signed, want.String(), rule.typ)
	}
	return nil
}

// repoDigestOrExact: an image pulled by digest needs its repository
// signed, one pulled by tag the very name and tag.
func repoDigestOrExact(want, sig signedRef) bool {
	if want.r.Digest != "" {
		return sig.r.Repository() == want.r.Repository()
	}
	return !sig.nameOnly && sig.String() == want.String()
}

// refHasPrefix reports whether ref starts with prefix at a component
// boundary ("example.com/ns" is a prefix of "example.com/ns/app:1", not
// of "example.com/nsx/app:1").
func refHasPrefix(ref, prefix string) bool {
	if !strings.HasPrefix(ref, prefix) {
		return false
	}
	if len(ref) == len(prefix) {
		return true
	}
	return strings.ContainsRune("/:@", rune(ref[len(prefix)]))
}
