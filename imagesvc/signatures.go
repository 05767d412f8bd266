package imagesvc

// signatures.go applies the signature policy (Options.SignaturePolicy, a
// containers-policy.json) to a pull once the reference is resolved to its
// top-level manifest digest and before anything else is fetched: a refused
// image leaves nothing on the node. Signatures are found the cosign way: the
// manifest tagged "sha256-<hex>.sig" in the image's repository (on the
// image's mirrors first, as the image itself), one simple-signing payload
// per layer, the signature in the layer's annotation.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-runtime/berth/imagesvc/hosts"
	"github.com/berth-runtime/berth/imagesvc/reference"
	"github.com/berth-runtime/berth/imagesvc/sigpolicy"
)

const (
	// cosignPayloadType is the media type of a signature manifest's layers.
	cosignPayloadType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// cosignSignatureAnnotation holds a layer's base64 signature.
	cosignSignatureAnnotation = "dev.cosignproject.cosign/signature"
	// maxSignatures bounds the signatures read for one image; more are
	// ignored (a registry cannot make a pull verify without end).
	maxSignatures = 64
	// maxPayloadSize bounds one simple-signing payload (cosign's are
	// a few hundred bytes).
	maxPayloadSize = 64 << 10
)

// checkSignatures applies the signature policy, when one is configured,
// to r whose top-level manifest is d. The policy file is read at every
// pull, as hosts.toml is, so an edit needs no restart.
func (s *Service) checkSignatures(ctx context.Context, r reference.Reference, hs []hosts.Host, d digest.Digest, auth *Auth, prog *progress) error {
	if s.sigPolicy == "" {
		return nil
	}
	p, err := sigpolicy.Load(s.sigPolicy)
	if err != nil {
		return err
	}
	err = p.Check(r, d, func() ([]sigpolicy.Signature, error) {
		return s.fetchSignatures(ctx, r, hs, d, auth, prog)
	})
	if err != nil {
		return err
	}
	s.log.DebugContext(ctx, "signature policy accepts image", "ref", r.String(), "digest", d)
	return nil
}

// signatureTag is the tag cosign stores the signatures of d under.
func signatureTag(d digest.Digest) string {
	return string(d.Algorithm()) + "-" + d.Encoded() + ".sig"
}

// fetchSignatures asks each host with the resolve capability, in order,
// for d's signature manifest. A host that lacks it passes to the next; none
// having it means no signatures; a host that could not answer makes the
// check fail (Unavailable), as the signatures may be there.
func (s *Service) fetchSignatures(ctx context.Context, r reference.Reference, hs []hosts.Host, d digest.Digest, auth *Auth, prog *progress) ([]sigpolicy.Signature, error) {
	tag := signatureTag(d)
	var errs hostErrors
	for _, h := range hs {
		if !h.Capabilities.Has(hosts.Resolve) {
			continue
		}
		src, err := s.source(ctx, r, h, auth, prog)
		if err == nil {
			var sigs []sigpolicy.Signature
			if sigs, err = s.signaturesFrom(ctx, src, tag); err == nil {
				return sigs, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errdefs.IsNotFound(err) {
			errs.add(h, err)
		}
	}
	if errs.last != nil {
		return nil, errs.err("signature tag " + tag)
	}
	return nil, nil
}

// signaturesFrom reads the signature manifest tagged tag from src and the
// payloads of its cosign layers.
func (s *Service) signaturesFrom(ctx context.Context, src source, tag string) ([]sigpolicy.Signature, error) {
	desc, err := src.puller.Get(ctx, src.repo.Tag(tag))
	if err != nil {
		return nil, remoteErr(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return nil, fmt.Errorf("decode signature manifest: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	var sigs []sigpolicy.Signature
	for _, l := range m.Layers {
		b64, ok := l.Annotations[cosignSignatureAnnotation]
		if l.MediaType != cosignPayloadType || !ok || l.Size > maxPayloadSize {
			continue
		}
		if len(sigs) == maxSignatures {
			s.log.WarnContext(ctx, "image has more signatures than are checked", "tag", tag, "checked", maxSignatures)
			break
		}
		payload, err := payloadBlob(ctx, src, l.Digest)
		if err != nil {
			return nil, fmt.Errorf("signature payload %q: %w", l.Digest, err)
		}
		sigs = append(sigs, sigpolicy.Signature{Payload: payload, Base64: strings.TrimSpace(b64)})
	}
	return sigs, nil
}

func payloadBlob(ctx context.Context, src source, d digest.Digest) ([]byte, error) {
	rc, err := src.blob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxPayloadSize+1))
	if err != nil {
		return nil, remoteErr(err)
	}
	if len(b) > maxPayloadSize {
		return nil, fmt.Errorf("larger than %d bytes: %w", maxPayloadSize, errdefs.ErrResourceExhausted)
	}
	return b, verifyBytes(d, b)
}
