package sigpolicy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/berth-runtime/berth/imagesvc/reference"
	"github.com/berth-runtime/berth/imagesvc/sigpolicy/sigtest"
)

func mustRef(t *testing.T, s string) reference.Reference {
	t.Helper()
	r, err := reference.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestScopes(t *testing.T) {
	got := scopes(mustRef(t, "reg.example.com:5000/ns/sub/app:1"))
	want := []string{"reg.example.com:5000/ns/sub/app:1", "reg.example.com:5000/ns/sub/app", "reg.example.com:5000/ns/sub",
		"reg.example.com:5000/ns", "reg.example.com:5000", "*.example.com", "*.com"}
	if !slices.Equal(got, want) {
		t.Errorf("scopes = %q\nwant %q", got, want)
	}
	d := digest.FromString("x")
	if got := scopes(mustRef(t, "busybox@"+d.String())); got[0] != "docker.io/library/busybox@"+d.String() || got[1] != "docker.io/library/busybox" {
		t.Errorf("scopes of a digest reference = %q", got)
	}
}

func TestForMostSpecificScope(t *testing.T) {
	p, err := Parse([]byte(`{
  "default": [{"type": "reject"}],
  "transports": {
    "docker": {
      "": [{"type": "insecureAcceptAnything"}],
      "*.example.com": [{"type": "reject"}],
      "reg.example.com/ns": [{"type": "insecureAcceptAnything"}],
      "reg.example.com/ns/app:pinned": [{"type": "reject"}]
    },
    "atomic": {"whatever": [{"type": "insecureAcceptAnything"}]}
  }
}`))
	if err != nil {
		t.Fatal(err)
	}
	for ref, scope := range map[string]string{
		"reg.example.com/ns/app:1":      "docker:reg.example.com/ns",
		"reg.example.com/ns/app:pinned": "docker:reg.example.com/ns/app:pinned",
		"reg.example.com/other/app:1":   "docker:*.example.com",
		"quay.io/x/y:1":                 `docker:""`,
	} {
		if _, got := p.For(mustRef(t, ref)); got != scope {
			t.Errorf("For(%s) = %s, want %s", ref, got, scope)
		}
	}
	p, _ = Parse([]byte(`{"default": [{"type": "insecureAcceptAnything"}]}`))
	if reqs, scope := p.For(mustRef(t, "busybox")); scope != "default" || len(reqs) != 1 || reqs[0].typ != "insecureAcceptAnything" {
		t.Errorf("For with only a default = %v, %s", reqs, scope)
	}
}

func TestParseRefuses(t *testing.T) {
	key := writeKey(t, newKey(t).PublicPEM)
	for name, tc := range map[string]struct{ policy, why string }{
		"empty default":   {`{"default": []}`, "at least one requirement"},
		"unknown field":   {`{"default": [{"type": "reject"}], "extra": 1}`, "unknown field"},
		"reject extra":    {`{"default": [{"type": "reject", "keyPath": "/k"}]}`, "unknown field"},
		"unknown type":    {`{"default": [{"type": "signedByMagic"}]}`, "unknown requirement type"},
		"gpg":             {`{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k"}]}`, "GPG simple signing) is not supported"},
		"fulcio":          {`{"default": [{"type": "sigstoreSigned", "fulcio": {"caPath": "/ca"}}]}`, "keyless signatures"},
		"rekor":           {fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyPath": %q, "rekorPublicKeyPath": "/r"}]}`, key), "not verified yet"},
		"no key":          {`{"default": [{"type": "sigstoreSigned"}]}`, "exactly one of"},
		"two key sources": {fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyPath": %q, "keyPaths": [%q]}]}`, key, key), "exactly one of"},
		"relative key":    {`{"default": [{"type": "sigstoreSigned", "keyPath": "key.pub"}]}`, "not absolute"},
		"endless key":     {`{"default": [{"type": "sigstoreSigned", "keyPath": "/dev/zero"}]}`, "larger than"},
		"missing key":     {`{"default": [{"type": "sigstoreSigned", "keyPath": "/nonexistent/key.pub"}]}`, "no such file"},
		"not a key":       {`{"default": [{"type": "sigstoreSigned", "keyData": "bm90IGEga2V5"}]}`, "not a PEM public key"},
		"bad identity":    {fmt.Sprintf(`{"default": [{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": "exactReference", "dockerReference": "reg/app"}}]}`, key), "tag or digest"},
		"empty scope":     {`{"default": [{"type": "reject"}], "transports": {"docker": {"reg": []}}}`, "at least one requirement"},
		"bad wildcard":    {`{"default": [{"type": "reject"}], "transports": {"docker": {"*.": [{"type": "reject"}]}}}`, "wildcard"},
	} {
		_, err := Parse([]byte(tc.policy))
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: %v, want FailedPrecondition saying %q", name, err, tc.why)
		}
	}
}

func newKey(t *testing.T) sigtest.Signer {
	t.Helper()
	k, err := sigtest.NewECDSA()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t *testing.T, k sigtest.Signer, payload []byte) string {
	t.Helper()
	sig, err := k.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func writeKey(t *testing.T, pem []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.pub")
	if err := os.WriteFile(p, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func payload(ref string, d digest.Digest) []byte {
	return fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":{"creator":"test"}}`, ref, d)
}

func TestCheckKeys(t *testing.T) {
	a, b := newKey(t), newKey(t)
	c, err := sigtest.NewEd25519()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(fmt.Appendf(nil, `{"default": [{"type": "sigstoreSigned", "keyPaths": [%q, %q], "signedIdentity": {"type": "matchRepository"}}]}`,
		writeKey(t, a.PublicPEM), writeKey(t, c.PublicPEM)))
	if err != nil {
		t.Fatal(err)
	}
	r := mustRef(t, "reg.example/app:1")
	d := digest.FromString("manifest")
	pl := payload("reg.example/app", d)
	sigs := func(s ...Signature) func() ([]Signature, error) {
		return func() ([]Signature, error) { return s, nil }
	}
	for name, tc := range map[string]struct {
		sigs []Signature
		ok   bool
	}{
		"first key":            {[]Signature{{pl, sign(t, a, pl)}}, true},
		"second key, ed25519":  {[]Signature{{pl, sign(t, c, pl)}}, true},
		"unknown key":          {[]Signature{{pl, sign(t, b, pl)}}, false},
		"one good of two":      {[]Signature{{pl, sign(t, b, pl)}, {pl, sign(t, a, pl)}}, true},
		"payload changed":      {[]Signature{{append(pl, ' '), sign(t, a, pl)}}, false},
		"not base64":           {[]Signature{{pl, "!!"}}, false},
		"other digest":         {[]Signature{{payload("reg.example/app", digest.FromString("other")), sign(t, a, payload("reg.example/app", digest.FromString("other")))}}, false},
		"other repository":     {[]Signature{{payload("reg.example/evil", d), sign(t, a, payload("reg.example/evil", d))}}, false},
		"no signatures at all": {nil, false},
	} {
		err := p.Check(r, d, sigs(tc.sigs...))
		if tc.ok != (err == nil) || (err != nil && !errdefs.IsPermissionDenied(err)) {
			t.Errorf("%s: %v, want accepted=%v (refusal PermissionDenied)", name, err, tc.ok)
		}
	}
	wrongType := []byte(strings.Replace(string(pl), "cosign container image signature", "atomic container signature", 1))
	if err := p.Check(r, d, sigs(Signature{wrongType, sign(t, a, wrongType)})); err == nil || !strings.Contains(err.Error(), "payload type") {
		t.Errorf("payload of another type: %v", err)
	}
}

func TestCheckRejectFetchesNothing(t *testing.T) {
	key := writeKey(t, newKey(t).PublicPEM)
	p, err := Parse(fmt.Appendf(nil, `{"default": [{"type": "reject"}, {"type": "sigstoreSigned", "keyPath": %q}]}`, key))
	if err != nil {
		t.Fatal(err)
	}
	err = p.Check(mustRef(t, "busybox"), digest.FromString("m"), func() ([]Signature, error) {
		t.Error("signatures fetched for a rejected image")
		return nil, nil
	})
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "scope default") {
		t.Errorf("reject: %v", err)
	}
	p, _ = Parse(fmt.Appendf(nil, `{"default": [{"type": "sigstoreSigned", "keyPath": %q}]}`, key))
	err = p.Check(mustRef(t, "busybox"), digest.FromString("m"), func() ([]Signature, error) {
		return nil, fmt.Errorf("registry down: %w", errdefs.ErrUnavailable)
	})
	if !errdefs.IsUnavailable(err) || errdefs.IsPermissionDenied(err) {
		t.Errorf("fetch failure: %v, want Unavailable, not a refusal", err)
	}
}

func TestIdentity(t *testing.T) {
	d := digest.FromString("m")
	rule := func(js string) identityRule {
		t.Helper()
		raw := json.RawMessage(js)
		r, err := parseIdentity(&raw)
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return r
	}
	def := identityRule{typ: "matchRepoDigestOrExact"}
	for _, tc := range []struct {
		rule          identityRule
		image, signed string
		ok            bool
	}{
		{def, "reg/app:1", "reg/app:1", true},
		{def, "reg/app:1", "reg/app", false}, // cosign's bare repository, pulled by tag
		{def, "reg/app:1", "reg/app:2", false},
		{def, "reg/app@" + d.String(), "reg/app", true},
		{def, "reg/app@" + d.String(), "reg/app:anything", true},
		{def, "reg/app@" + d.String(), "reg/other", false},
		{def, "busybox:1", "docker.io/library/busybox:1", true}, // both normalised
		{rule(`{"type": "matchExact"}`), "reg/app:1", "reg/app:1", true},
		{rule(`{"type": "matchExact"}`), "reg/app@" + d.String(), "reg/app", false},
		{rule(`{"type": "matchRepository"}`), "reg/app:1", "reg/app", true},
		{rule(`{"type": "matchRepository"}`), "reg/app:1", "reg/app2:1", false},
		{rule(`{"type": "exactReference", "dockerReference": "up/app:1"}`), "mirror/app:1", "up/app:1", true},
		{rule(`{"type": "exactReference", "dockerReference": "up/app:1"}`), "mirror/app:1", "up/app:2", false},
		{rule(`{"type": "exactRepository", "dockerRepository": "up/app"}`), "mirror/x:1", "up/app", true},
		{rule(`{"type": "remapIdentity", "prefix": "mirror.example/up", "signedPrefix": "up.example"}`), "mirror.example/up/app:1", "up.example/app:1", true},
		{rule(`{"type": "remapIdentity", "prefix": "mirror.example/up", "signedPrefix": "up.example"}`), "mirror.example/upx/app:1", "up.example/app:1", false},
	} {
		err := tc.rule.match(mustRef(t, tc.image), tc.signed)
		if tc.ok != (err == nil) {
			t.Errorf("%s: image %s signed %s: %v, want ok=%v", tc.rule.typ, tc.image, tc.signed, err, tc.ok)
		}
	}
}
