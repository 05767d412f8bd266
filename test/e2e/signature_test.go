package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc/codes"

	"github.com/berth-runtime/berth/imagesvc/sigpolicy/sigtest"
	"github.com/berth-runtime/berth/test/testutil"
)

// pushCosignSignature stores a signature of digest d in repo (host/path)
// the way `cosign sign` does.
func pushCosignSignature(t *testing.T, repo string, d v1.Hash, payload []byte, sig string) {
	t.Helper()
	img, err := sigtest.SignatureImage(sigtest.Signed{Payload: payload, Signature: sig})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(repo+":"+sigtest.SignatureTag(d), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push signature: %v", err)
	}
}

// storeFiles lists the blobs and layer dirs under berthd's root.
func storeFiles(t *testing.T, d *testutil.Daemon) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{"content/blobs/sha256", "layers"} {
		ents, err := os.ReadDir(filepath.Join(d.Root, dir))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range ents {
			out = append(out, dir+"/"+e.Name())
		}
	}
	return out
}

// TestSignaturePolicy pulls through berthd under a signature policy: an
// image signed with the policy's key pulls, an unsigned one, one signed
// with another key and one from a rejected repository are refused with
// PermissionDenied and leave nothing in the store.
func TestSignaturePolicy(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	reg, err := testutil.StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	key, err := sigtest.NewECDSA()
	if err != nil {
		t.Fatal(err)
	}
	other, err := sigtest.NewECDSA()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	push := func(repoTag, marker string) testutil.Pushed {
		l, err := testutil.NewLayer([]testutil.File{{Path: "/marker", Body: marker}})
		if err != nil {
			t.Fatal(err)
		}
		img, err := testutil.NewImage(testutil.ImageSpec{Extra: []v1.Layer{l}})
		if err != nil {
			t.Fatal(err)
		}
		p, err := reg.Push(ctx, repoTag, img)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	sign := func(s sigtest.Signer, p testutil.Pushed) {
		payload := sigtest.Payload(p.Repo, p.Digest.String())
		sig, err := s.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		pushCosignSignature(t, p.Repo, p.Digest, payload, sig)
	}
	signed, unsigned, wrongKey, elsewhere := push("team/app:signed", "signed"), push("team/app:unsigned", "unsigned"),
		push("team/app:wrongkey", "wrongkey"), push("other/app:1", "other")
	sign(key, signed)
	sign(other, wrongKey)
	sign(key, elsewhere) // signed, but the policy rejects the repository

	dir := t.TempDir()
	keyPath, err := key.WriteKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, fmt.Appendf(nil, `{
  "default": [{"type": "reject"}],
  "transports": {"docker": {"%s/team": [{"type": "sigstoreSigned", "keyPath": %q, "signedIdentity": {"type": "matchRepository"}}]}}
}`, reg.Host, keyPath), 0o644); err != nil {
		t.Fatal(err)
	}
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{Binaries: bins, InsecureHosts: []string{reg.Host}})
	if err := d.SetRegistryKey("signature_policy", policy); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(32<<10))
	}

	imageRef, code, err := pullCode(t, d, signed.Ref, nil)
	if code != codes.OK {
		t.Fatalf("pull of the signed image: %v", err)
	}
	checkPulled(t, d, signed.Ref, imageRef, signed)
	before := storeFiles(t, d)
	for _, tc := range []struct {
		ref, why string
	}{
		{unsigned.Ref, "the image has none"},
		{wrongKey.Ref, "not signed by the keyPath " + keyPath},
		{elsewhere.Ref, "scope default): the policy rejects every image here"},
	} {
		_, code, err := pullCode(t, d, tc.ref, nil)
		if code != codes.PermissionDenied || !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), policy) {
			t.Errorf("pull %s: %v (%s), want PermissionDenied saying %q", tc.ref, err, code, tc.why)
		}
		if img := imageStatus(t, d, tc.ref); img != nil {
			t.Errorf("refused image %s is listed: %v", tc.ref, img.Id)
		}
	}
	if after := storeFiles(t, d); !slices.Equal(before, after) {
		t.Errorf("refused pulls changed the store:\nbefore %v\nafter  %v", before, after)
	}
}
