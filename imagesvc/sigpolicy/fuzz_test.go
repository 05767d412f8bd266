package sigpolicy

import (
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/berth-runtime/berth/imagesvc/reference"
)

// FuzzParse reads arbitrary policy files: Parse never panics, and a policy
// it accepts gives every image some requirements and a scope.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"default": [{"type": "insecureAcceptAnything"}]}`,
		`{"default": [{"type": "reject"}], "transports": {"docker": {"reg.example/ns": [{"type": "insecureAcceptAnything"}], "*.example": [{"type": "reject"}], "": [{"type": "reject"}]}}}`,
		`{"default": [{"type": "sigstoreSigned", "keyData": "LS0tLS1CRUdJTg==", "signedIdentity": {"type": "remapIdentity", "prefix": "a", "signedPrefix": "b"}}]}`,
		`{"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}`, `{"default": []}`, `[]`, `null`, `{`,
	} {
		f.Add(s)
	}
	r, err := reference.Parse("reg.example/ns/app:1")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data string) {
		p, err := Parse([]byte(data))
		if err != nil {
			if !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Parse error is not FailedPrecondition: %v", err)
			}
			return
		}
		if reqs, scope := p.For(r); len(reqs) == 0 || scope == "" {
			t.Errorf("For(%s) = %v, %q: an accepted policy must give requirements", r, reqs, scope)
		}
	})
}

// FuzzIdentity matches arbitrary signed references under every rule: the
// matcher never panics, and never accepts a reference it cannot parse.
func FuzzIdentity(f *testing.F) {
	for _, s := range []string{"reg.example/ns/app", "reg.example/ns/app:1", "busybox", "a/b@sha256:" + digest.FromString("x").Encoded(), "", ":", "@", "UPPER/x"} {
		f.Add(s)
	}
	image, err := reference.Parse("reg.example/ns/app:1")
	if err != nil {
		f.Fatal(err)
	}
	exact, _ := parseSignedRef("reg.example/ns/app:1")
	rules := []identityRule{
		{typ: "matchExact"}, {typ: "matchRepoDigestOrExact"}, {typ: "matchRepository"},
		{typ: "exactReference", exact: exact}, {typ: "exactRepository", repository: "reg.example/ns/app"},
		{typ: "remapIdentity", prefix: "reg.example/ns", signedPrefix: "up.example"},
	}
	f.Fuzz(func(t *testing.T, signed string) {
		_, perr := parseSignedRef(signed)
		for _, rule := range rules {
			if err := rule.match(image, signed); err == nil && perr != nil {
				t.Errorf("%s accepted %q, which does not parse: %v", rule.typ, signed, perr)
			}
		}
	})
}
