package imagesvc

import (
	"archive/tar"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-runtime/berth/imagesvc/sigpolicy/sigtest"
)

// testSigner is a sigtest.Signer that fails the test on error.
type testSigner struct{ sigtest.Signer }

func newTestSigner(t *testing.T) testSigner {
	t.Helper()
	s, err := sigtest.NewECDSA()
	if err != nil {
		t.Fatal(err)
	}
	return testSigner{s}
}

// keyFile writes the public key where a policy can name it.
func (sg testSigner) keyFile(t *testing.T) string {
	t.Helper()
	p, err := sg.WriteKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func cosignPayload(ref string, d v1.Hash) []byte { return sigtest.Payload(ref, d.String()) }

// signed is payload with sg's signature over it.
func (sg testSigner) signed(t *testing.T, payload []byte) sigtest.Signed {
	t.Helper()
	sig, err := sg.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	return sigtest.Signed{Payload: payload, Signature: sig}
}

// pushSignatures stores sigs as cosign does, in repo (host/path).
func pushSignatures(t *testing.T, reg *testRegistry, repo string, d v1.Hash, sigs ...sigtest.Signed) {
	t.Helper()
	img, err := sigtest.SignatureImage(sigs...)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, strings.TrimPrefix(repo, reg.host+"/")+":"+sigtest.SignatureTag(d), img)
}

func writePolicy(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSignaturePolicy(t *testing.T) {
	reg := newRegistry(t)
	sg, other := newTestSigner(t), newTestSigner(t)
	policy := filepath.Join(t.TempDir(), "policy.json")
	writePolicy(t, policy, fmt.Sprintf(`{
  "default": [{"type": "reject"}],
  "transports": {
    "docker": {
      "%[1]s/signed": [{"type": "sigstoreSigned", "keyPath": %[2]q, "signedIdentity": {"type": "matchRepository"}}],
      "%[1]s/exact": [{"type": "sigstoreSigned", "keyData": %[3]q}],
      "%[1]s/open": [{"type": "insecureAcceptAnything"}]
    },
    "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}
  }
}`, reg.host, sg.keyFile(t), base64.StdEncoding.EncodeToString(sg.PublicPEM)))
	e := envWith(t, func(o *Options) { o.InsecureHosts = []string{reg.host}; o.SignaturePolicy = policy })

	pushImage := func(repoTag, body string) (v1.Hash, v1.Layer) {
		l := layer(t, ent{name: "f", body: body})
		return reg.push(t, repoTag, image(t, v1.Config{Cmd: []string{"/f"}}, l)), l
	}
	signed := reg.host + "/signed"
	good, _ := pushImage("signed:good", "good")
	pushSignatures(t, reg, signed, good, sg.signed(t, cosignPayload(signed, good)))
	if _, err := e.svc.Pull(ctx, signed+":good", nil); err != nil {
		t.Fatalf("pull of a signed image: %v", err)
	}

	// refusals: each is PermissionDenied naming the scope and the reason,
	// and fetches no layer.
	_, unsignedLayer := pushImage("signed:unsigned", "unsigned")
	wrongKey, wrongKeyLayer := pushImage("signed:wrongkey", "wrongkey")
	pushSignatures(t, reg, signed, wrongKey, other.signed(t, cosignPayload(signed, wrongKey)))
	replayed, replayedLayer := pushImage("signed:replayed", "replayed")
	// a good signature of another image, copied under this one's tag.
	pushSignatures(t, reg, signed, replayed, sg.signed(t, cosignPayload(signed, good)))
	_, rejectedLayer := pushImage("elsewhere:1", "elsewhere")
	exact := reg.host + "/exact"
	byTag, byTagLayer := pushImage("exact:1", "bytag")
	// cosign signs the bare repository: under the default
	// matchRepoDigestOrExact that is accepted by digest, not by tag.
	pushSignatures(t, reg, exact, byTag, sg.signed(t, cosignPayload(exact, byTag)))
	for _, tc := range []struct {
		ref   string
		layer v1.Layer
		why   string
	}{
		{signed + ":unsigned", unsignedLayer, "the image has none"},
		{signed + ":wrongkey", wrongKeyLayer, "not signed by the keyPath"},
		{signed + ":replayed", replayedLayer, "signed manifest digest"},
		{reg.host + "/elsewhere:1", rejectedLayer, "rejects every image"},
		{exact + ":1", byTagLayer, "does not match"},
	} {
		_, err := e.svc.Pull(ctx, tc.ref, nil)
		if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), policy) {
			t.Errorf("pull %s: %v, want PermissionDenied saying %q", tc.ref, err, tc.why)
		}
		if n := reg.gets(layerDigest(t, tc.layer)); n != 0 {
			t.Errorf("pull %s fetched its layer %d times before the policy refused it", tc.ref, n)
		}
	}
	if _, err := e.svc.Pull(ctx, signed+":unsigned", nil); err == nil || !strings.Contains(err.Error(), `(scope docker:`+signed+`)`) {
		t.Errorf("refusal does not name the scope: %v", err)
	}
	if _, err := e.svc.Pull(ctx, exact+"@"+byTag.String(), nil); err != nil {
		t.Errorf("pull by digest of a repository-signed image: %v", err)
	}
	pushImage("open:1", "open")
	if _, err := e.svc.Pull(ctx, reg.host+"/open:1", nil); err != nil {
		t.Errorf("pull under insecureAcceptAnything: %v", err)
	}
	imgs, err := e.svc.List(ctx)
	if err != nil || len(imgs) != 3 {
		t.Errorf("images = %d (%v), want the 3 accepted ones", len(imgs), err)
	}
	assertClean(t, e.root)

	// the file is read at every pull: a broken one refuses everything.
	writePolicy(t, policy, `{"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}`)
	if _, err := e.svc.Pull(ctx, reg.host+"/open:1", nil); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "signedBy") {
		t.Errorf("pull under an unsupported policy: %v, want FailedPrecondition naming signedBy", err)
	}
	os.Remove(policy)
	if _, err := e.svc.Pull(ctx, reg.host+"/open:1", nil); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("pull with the policy file gone: %v, want FailedPrecondition", err)
	}
}

func TestSignaturePolicyKeylessNotSupported(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.json")
	writePolicy(t, policy, `{"default": [{"type": "sigstoreSigned", "fulcio": {"caPath": "/ca.pem", "oidcIssuer": "https://issuer", "subjectEmail": "a@b"}, "rekorPublicKeyPath": "/rekor.pub"}]}`)
	root := t.TempDir()
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = New(ctx, Options{Root: filepath.Join(root, "berth"), DB: db, SignaturePolicy: policy})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not supported yet") {
		t.Errorf("New with a keyless policy: %v, want FailedPrecondition saying not supported yet", err)
	}
}

// TestSignaturePolicyMirror: the signature is found on the mirror the
// image comes from, and the identity checked is the name asked for.
func TestSignaturePolicyMirror(t *testing.T) {
	reg := newRegistry(t)
	sg := newTestSigner(t)
	img := image(t, v1.Config{}, layer(t, ent{name: "etc/", typ: tar.TypeDir}))
	d := reg.push(t, "lib/app:1", img)
	pushSignatures(t, reg, reg.host+"/lib/app", d, sg.signed(t, cosignPayload("registry.example/lib/app:1", d)))
	dir := t.TempDir()
	writeHosts(t, dir, "registry.example", fmt.Sprintf(`server = "https://%s"
[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, deadAddr(t), reg.host))
	policy := filepath.Join(t.TempDir(), "policy.json")
	writePolicy(t, policy, fmt.Sprintf(`{"default": [{"type": "reject"}], "transports": {"docker": {"registry.example": [{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": "matchExact"}}]}}}`, sg.keyFile(t)))
	e := envWith(t, func(o *Options) { o.HostsDir = dir; o.SignaturePolicy = policy })
	if _, err := e.svc.Pull(ctx, "registry.example/lib/app:1", nil); err != nil {
		t.Fatal(err)
	}
}

// TestSignaturePolicyIndex: a multi-platform image is signed at its index
// digest, as `cosign sign` does; a signature of the platform manifest
// alone does not stand for the index the reference names.
func TestSignaturePolicyIndex(t *testing.T) {
	reg := newRegistry(t)
	sg := newTestSigner(t)
	index := func(body string) (v1.Hash, v1.Hash) {
		img := image(t, v1.Config{}, layer(t, ent{name: "f", body: body}))
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
			mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}})
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return reg.pushIndex(t, "multi:"+body, idx), d
	}
	repo := reg.host + "/multi"
	good, _ := index("good")
	pushSignatures(t, reg, repo, good, sg.signed(t, cosignPayload(repo, good)))
	childOnly, child := index("child")
	pushSignatures(t, reg, repo, child, sg.signed(t, cosignPayload(repo, child)))
	policy := filepath.Join(t.TempDir(), "policy.json")
	writePolicy(t, policy, fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": "matchRepository"}}]}`, sg.keyFile(t)))
	e := envWith(t, func(o *Options) { o.InsecureHosts = []string{reg.host}; o.SignaturePolicy = policy })
	if _, err := e.svc.Pull(ctx, repo+":good", nil); err != nil {
		t.Errorf("pull of an index signed at its digest: %v", err)
	}
	if _, err := e.svc.Pull(ctx, repo+":child", nil); !errdefs.IsPermissionDenied(err) {
		t.Errorf("pull of an index whose platform manifest alone is signed (%s): %v, want PermissionDenied", childOnly, err)
	}
}

// TestSignaturePolicyRegistryDown: when the registry cannot say whether
// signatures exist, the pull fails Unavailable (kubelet retries), never
// as unsigned and never accepted.
func TestSignaturePolicyRegistryDown(t *testing.T) {
	inner := quietRegistry()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, ".sig") {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	reg := &testRegistry{host: strings.TrimPrefix(srv.URL, "http://")}
	reg.push(t, "app:1", testImage(t))
	policy := filepath.Join(t.TempDir(), "policy.json")
	writePolicy(t, policy, fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyPath": %q}]}`, newTestSigner(t).keyFile(t)))
	e := envWith(t, func(o *Options) { o.InsecureHosts = []string{reg.host}; o.SignaturePolicy = policy })
	_, err := e.svc.Pull(ctx, reg.host+"/app:1", nil)
	if !errdefs.IsUnavailable(err) || errdefs.IsPermissionDenied(err) {
		t.Errorf("pull with the signature tag unavailable: %v, want Unavailable", err)
	}
	if imgs, _ := e.svc.List(ctx); len(imgs) != 0 {
		t.Errorf("images = %v, want none", imgs)
	}
}
