package sigpolicy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/berth-runtime/berth/imagesvc/reference"
)

// Signature is one cosign signature of an image: a simple-signing payload
// (a layer of the image's "sha256-<hex>.sig" manifest) and the signature
// over it (that layer's dev.cosignproject.cosign/signature annotation,
// base64).
type Signature struct {
	Payload []byte
	Base64  string
}

// payloadType is the critical.type of a cosign simple-signing payload.
const payloadType = "cosign container image signature"

// simpleSigning is the payload cosign signs.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// Check decides whether the image r, whose top-level manifest (the one r
// names: an index for a multi-platform image) has digest d, is accepted.
// fetch is called at most once, and only when a requirement needs the
// image's signatures. A refusal wraps errdefs.ErrPermissionDenied and
// names the policy file, the scope and why; fetch's errors are returned
// as they are, wrapped.
func (p *Policy) Check(r reference.Reference, d digest.Digest, fetch func() ([]Signature, error)) error {
	reqs, scope := p.For(r)
	deny := func(err error) error {
		return fmt.Errorf("signature policy %s refuses the image (scope %s): %w: %w", p.Path, scope, err, errdefs.ErrPermissionDenied)
	}
	var (
		sigs    []Signature
		fetched bool
	)
	for i, req := range reqs {
		switch req.typ {
		case "insecureAcceptAnything":
		case "reject":
			return deny(errors.New("the policy rejects every image here"))
		case "sigstoreSigned":
			if !fetched {
				var err error
				if sigs, err = fetch(); err != nil {
					return fmt.Errorf("signature policy %s (scope %s): fetch signatures: %w", p.Path, scope, err)
				}
				fetched = true
			}
			if err := req.accept(r, d, sigs); err != nil {
				return deny(fmt.Errorf("requirement %d: %w", i+1, err))
			}
		}
	}
	return nil
}

// accept passes when at least one signature is made by one of req's keys
// over a payload naming digest d and an identity that matches r.
func (req requirement) accept(r reference.Reference, d digest.Digest, sigs []Signature) error {
	if len(sigs) == 0 {
		return errors.New("a sigstore signature is required, but the image has none")
	}
	var why []string
	for i, s := range sigs {
		err := req.acceptOne(r, d, s)
		if err == nil {
			return nil
		}
		why = append(why, fmt.Sprintf("signature %d: %v", i+1, err))
	}
	return fmt.Errorf("no signature accepted (%s)", strings.Join(why, "; "))
}

func (req requirement) acceptOne(r reference.Reference, d digest.Digest, s Signature) error {
	raw, err := base64.StdEncoding.DecodeString(s.Base64)
	if err != nil {
		return fmt.Errorf("signature annotation is not base64: %w", err)
	}
	if !req.signedByKey(raw, s.Payload) {
		return fmt.Errorf("not signed by the %s", strings.Join(req.keyNames, " or "))
	}
	// the payload is read only once its signature is good.
	var pl simpleSigning
	if err := strictUnmarshal(s.Payload, &pl); err != nil {
		return fmt.Errorf("signed payload: %w", err)
	}
	if pl.Critical.Type != payloadType {
		return fmt.Errorf("signed payload type %q is not %q", pl.Critical.Type, payloadType)
	}
	if pl.Critical.Image.DockerManifestDigest != d.String() {
		return fmt.Errorf("signed manifest digest %q is not the image's %q", pl.Critical.Image.DockerManifestDigest, d)
	}
	return req.identity.match(r, pl.Critical.Identity.DockerReference)
}

func (req requirement) signedByKey(sig, payload []byte) bool {
	for _, k := range req.keys {
		if k.VerifySignature(bytes.NewReader(sig), bytes.NewReader(payload)) == nil {
			return true
		}
	}
	return false
}
