// Package sigpolicy reads an image signature policy in the
// containers-policy.json format (containers/image, as CRI-O's
// signature_policy and podman read it) and decides, for an image being
// pulled, whether its sigstore (cosign) signatures satisfy it.
//
// Supported: the "docker" transport's scopes (image, repository,
// namespaces, registry, "*.domain" wildcards, "" for the transport) over
// "default"; requirement types insecureAcceptAnything, reject and
// sigstoreSigned with public keys (keyPath, keyPaths, keyData, keyDatas)
// and every signedIdentity form. Refused with a clear error, so a policy
// never silently means less than it says: signedBy (GPG simple signing),
// and sigstoreSigned with fulcio, pki or rekorPublicKey* (keyless
// signatures and transparency-log proofs are not verified yet).
// Scopes of other transports are ignored: berth pulls from registries only.
package sigpolicy

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/berth-runtime/berth/imagesvc/reference"
)

// Policy is a parsed, validated policy file.
type Policy struct {
	// Path is the file it was read from, named in errors.
	Path string
	def  Requirements
	// docker maps the docker transport's scopes to their requirements.
	docker map[string]Requirements
}

// Requirements must all be satisfied for an image to be accepted.
type Requirements []requirement

// requirement is one entry of a requirement list.
type requirement struct {
	typ string // insecureAcceptAnything, reject, sigstoreSigned
	// sigstoreSigned only: the keys, any of which may have made the
	// accepted signature, and the identity the signature must claim.
	keys     []signature.Verifier
	keyNames []string // where each key came from, for errors
	identity identityRule
}

// Load reads and validates the policy file at path. Errors wrap
// errdefs.ErrFailedPrecondition: a node told to verify signatures must not
// pull anything while its policy cannot be read.
func Load(path string) (*Policy, error) {
	data, err := readBounded(path, maxPolicySize)
	if err != nil {
		return nil, fmt.Errorf("signature policy: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("signature policy %s: %w", path, err)
	}
	p.Path = path
	return p, nil
}

type policyJSON struct {
	Default    []json.RawMessage                       `json:"default"`
	Transports map[string]map[string][]json.RawMessage `json:"transports"`
}

// Parse reads a policy from data, strictly, as containers/image does:
// an unknown field or a malformed requirement rejects the whole file.
func Parse(data []byte) (*Policy, error) {
	var pj policyJSON
	if err := strictUnmarshal(data, &pj); err != nil {
		return nil, invalid("%v", err)
	}
	if len(pj.Default) == 0 {
		return nil, invalid(`"default" must list at least one requirement`)
	}
	p := &Policy{docker: map[string]Requirements{}}
	var err error
	if p.def, err = parseRequirements(pj.Default); err != nil {
		return nil, invalid("default: %v", err)
	}
	for scope, raw := range pj.Transports["docker"] {
		if err := validScope(scope); err != nil {
			return nil, invalid("transports.docker %q: %v", scope, err)
		}
		if len(raw) == 0 {
			return nil, invalid("transports.docker %q: must list at least one requirement", scope)
		}
		if p.docker[scope], err = parseRequirements(raw); err != nil {
			return nil, invalid("transports.docker %q: %v", scope, err)
		}
	}
	return p, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrFailedPrecondition)...)
}

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// validScope accepts the docker transport's scope forms: "" (the
// transport's default), "*.domain", or a normalised registry, namespace,
// repository or image ("docker.io/library/busybox:latest").
func validScope(scope string) error {
	switch {
	case scope == "":
		return nil
	case strings.HasPrefix(scope, "*."):
		if strings.ContainsAny(scope[2:], "*/:@ ") || scope[2:] == "" {
			return errors.New(`a wildcard scope is "*." and a domain`)
		}
		return nil
	case strings.ContainsAny(scope, " *"):
		return errors.New("not a registry, namespace, repository or image")
	}
	return nil
}

type sigstoreJSON struct {
	Type           string           `json:"type"`
	KeyPath        string           `json:"keyPath"`
	KeyPaths       []string         `json:"keyPaths"`
	KeyData        []byte           `json:"keyData"`
	KeyDatas       [][]byte         `json:"keyDatas"`
	Fulcio         json.RawMessage  `json:"fulcio"`
	PKI            json.RawMessage  `json:"pki"`
	RekorKeyPath   string           `json:"rekorPublicKeyPath"`
	RekorKeyPaths  []string         `json:"rekorPublicKeyPaths"`
	RekorKeyData   []byte           `json:"rekorPublicKeyData"`
	RekorKeyDatas  [][]byte         `json:"rekorPublicKeyDatas"`
	SignedIdentity *json.RawMessage `json:"signedIdentity"`
}

func parseRequirements(raws []json.RawMessage) (Requirements, error) {
	out := make(Requirements, 0, len(raws))
	for i, raw := range raws {
		r, err := parseRequirement(raw)
		if err != nil {
			return nil, fmt.Errorf("requirement %d: %w", i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseRequirement(raw json.RawMessage) (requirement, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return requirement{}, err
	}
	switch head.Type {
	case "insecureAcceptAnything", "reject":
		var only struct {
			Type string `json:"type"`
		}
		if err := strictUnmarshal(raw, &only); err != nil {
			return requirement{}, fmt.Errorf("%s: %w", head.Type, err)
		}
		return requirement{typ: head.Type}, nil
	case "sigstoreSigned":
		return parseSigstore(raw)
	case "signedBy":
		return requirement{}, errors.New(`type "signedBy" (GPG simple signing) is not supported: berth verifies "sigstoreSigned" (cosign) signatures`)
	case "":
		return requirement{}, errors.New(`"type" is missing`)
	}
	return requirement{}, fmt.Errorf("unknown requirement type %q", head.Type)
}

func parseSigstore(raw json.RawMessage) (requirement, error) {
	var sj sigstoreJSON
	if err := strictUnmarshal(raw, &sj); err != nil {
		return requirement{}, fmt.Errorf("sigstoreSigned: %w", err)
	}
	switch {
	case sj.Fulcio != nil, sj.PKI != nil:
		return requirement{}, errors.New(`sigstoreSigned: keyless signatures ("fulcio", "pki") are not supported yet: use "keyPath" or "keyData" with the signer's public key`)
	case sj.RekorKeyPath != "", len(sj.RekorKeyPaths) != 0, sj.RekorKeyData != nil, len(sj.RekorKeyDatas) != 0:
		return requirement{}, errors.New(`sigstoreSigned: transparency log proofs ("rekorPublicKey*") are not verified yet: remove them to accept key-signed images without a Rekor entry check`)
	}
	r := requirement{typ: "sigstoreSigned"}
	sources := 0
	for _, set := range []bool{sj.KeyPath != "", sj.KeyPaths != nil, sj.KeyData != nil, sj.KeyDatas != nil} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return requirement{}, errors.New(`sigstoreSigned: exactly one of "keyPath", "keyPaths", "keyData", "keyDatas" is required`)
	}
	var pems [][]byte
	var names []string
	paths := sj.KeyPaths
	if sj.KeyPath != "" {
		paths = []string{sj.KeyPath}
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return requirement{}, fmt.Errorf("sigstoreSigned: key path %q is not absolute", p)
		}
		b, err := readBounded(p, maxKeySize)
		if err != nil {
			return requirement{}, fmt.Errorf("sigstoreSigned: %w", err)
		}
		pems, names = append(pems, b), append(names, "keyPath "+p)
	}
	datas := sj.KeyDatas
	if sj.KeyData != nil {
		datas = [][]byte{sj.KeyData}
	}
	for i, d := range datas {
		pems, names = append(pems, d), append(names, fmt.Sprintf("keyData %d", i+1))
	}
	if len(pems) == 0 {
		return requirement{}, errors.New("sigstoreSigned: the key list is empty")
	}
	for i, pem := range pems {
		v, err := loadVerifier(pem)
		if err != nil {
			return requirement{}, fmt.Errorf("sigstoreSigned: %s: %w", names[i], err)
		}
		r.keys = append(r.keys, v)
	}
	r.keyNames = names
	var err error
	if r.identity, err = parseIdentity(sj.SignedIdentity); err != nil {
		return requirement{}, fmt.Errorf("sigstoreSigned: signedIdentity: %w", err)
	}
	return r, nil
}

// maxPolicySize and maxKeySize bound the files a policy reads (a PEM
// public key is a few hundred bytes): a path naming a device must not
// make berthd read without end.
const (
	maxPolicySize = 4 << 20
	maxKeySize    = 64 << 10
)

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// loadVerifier reads a PEM public key (ECDSA, RSA or Ed25519, as cosign
// writes them) into a verifier of SHA-256 signatures, cosign's hash.
func loadVerifier(pem []byte) (signature.Verifier, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem)
	if err != nil {
		return nil, fmt.Errorf("not a PEM public key: %w", err)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	return v, nil
}

// For returns the requirements that apply to r and the scope they come
// from ("docker:<scope>" or "default"), as containers/image looks them up:
// the image itself, its repository, each enclosing namespace, the
// registry, "*.domain" wildcards from the most specific, the docker
// transport's "" scope, then "default".
func (p *Policy) For(r reference.Reference) (Requirements, string) {
	for _, scope := range scopes(r) {
		if reqs, ok := p.docker[scope]; ok {
			return reqs, "docker:" + scope
		}
	}
	if reqs, ok := p.docker[""]; ok {
		return reqs, `docker:""`
	}
	return p.def, "default"
}

// scopes lists r's scopes, most specific first.
func scopes(r reference.Reference) []string {
	out := []string{identityString(r)}
	for name := r.Repository(); ; {
		out = append(out, name)
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			break
		}
		name = name[:i]
	}
	host := r.Domain
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	for {
		i := strings.IndexByte(host, '.')
		if i < 0 {
			break
		}
		host = host[i+1:]
		out = append(out, "*."+host)
	}
	return out
}

// identityString is the image's own name: by digest when it has one (that
// is what is pulled), else by tag.
func identityString(r reference.Reference) string {
	if r.Digest != "" {
		return r.DigestRef(r.Digest)
	}
	return r.TagRef()
}
