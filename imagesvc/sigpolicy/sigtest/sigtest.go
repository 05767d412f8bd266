// Package sigtest makes cosign-style key-pair signatures for tests: a
// simple-signing payload signed over its SHA-256 with a key generated in
// the test, and the public key in PEM as `cosign generate-key-pair`
// writes it. It is for tests only.
package sigtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// Signer is a generated key pair.
type Signer struct {
	priv crypto.Signer
	// PublicPEM is the public key, PEM-encoded (a policy's keyPath file
	// or, base64-encoded, its keyData).
	PublicPEM []byte
}

// NewECDSA makes a P-256 key pair, cosign's default.
func NewECDSA() (Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Signer{}, err
	}
	return newSigner(k)
}

// NewEd25519 makes an Ed25519 key pair.
func NewEd25519() (Signer, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Signer{}, err
	}
	return newSigner(k)
}

func newSigner(k crypto.Signer) (Signer, error) {
	pub, err := cryptoutils.MarshalPublicKeyToPEM(k.Public())
	if err != nil {
		return Signer{}, err
	}
	return Signer{priv: k, PublicPEM: pub}, nil
}

// Sign signs payload and returns the signature in base64, as cosign
// stores it in the dev.cosignproject.cosign/signature annotation.
func (s Signer) Sign(payload []byte) (string, error) {
	var sig []byte
	var err error
	if _, ok := s.priv.(ed25519.PrivateKey); ok {
		sig, err = s.priv.Sign(rand.Reader, payload, crypto.Hash(0))
	} else {
		h := sha256.Sum256(payload)
		sig, err = s.priv.Sign(rand.Reader, h[:], crypto.SHA256)
	}
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// WriteKey writes the public key to dir/key.pub and returns the path.
func (s Signer) WriteKey(dir string) (string, error) {
	p := filepath.Join(dir, "key.pub")
	return p, os.WriteFile(p, s.PublicPEM, 0o644)
}

// Payload is the simple-signing payload `cosign sign` makes for the image
// whose manifest digest is digest ("sha256:..."), claiming dockerRef (cosign
// writes the bare repository).
func Payload(dockerRef, digest string) []byte {
	return fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`,
		dockerRef, digest)
}

// Signed is a payload and its base64 signature.
type Signed struct {
	Payload   []byte
	Signature string
}

// SignatureImage is the manifest `cosign sign` pushes for an image's
// signatures: one simple-signing layer per signature, the signature in its
// dev.cosignproject.cosign/signature annotation. Push it tagged
// SignatureTag(digest) in the signed image's repository.
func SignatureImage(sigs ...Signed) (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, s := range sigs {
		var err error
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:       static.NewLayer(s.Payload, "application/vnd.dev.cosign.simplesigning.v1+json"),
			Annotations: map[string]string{"dev.cosignproject.cosign/signature": s.Signature},
		})
		if err != nil {
			return nil, err
		}
	}
	return img, nil
}

// SignatureTag is the tag cosign stores the signatures of digest d under.
func SignatureTag(d v1.Hash) string { return d.Algorithm + "-" + d.Hex + ".sig" }
