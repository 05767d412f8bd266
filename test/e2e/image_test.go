package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

var imageCases = []sharedCase{
	{"PullByTag", testPullByTag},
	{"PullByDigest", testPullByDigest},
	{"PullIndex", testPullIndex},
	{"PullDockerMediaTypes", testPullDocker},
	{"ImageUser", testImageUser},
	{"ListImages", testListImages},
	{"RemoveImage", testRemoveImage},
	{"PullMissing", testPullMissing},
	{"LayersSharedByChainID", testLayersShared},
}

// isID reports whether an image ID names the config digest h (with or
// without the algorithm prefix).
func isID(id string, h v1.Hash) bool { return id == h.String() || id == h.Hex }

func pull(t *testing.T, d *testutil.Daemon, ref string) string {
	t.Helper()
	got, err := d.Images.PullImage(context.Background(), &runtimeapi.ImageSpec{Image: ref}, nil, nil)
	if err != nil {
		t.Fatalf("PullImage(%s): %v", ref, err)
	}
	return got
}

func imageStatus(t *testing.T, d *testutil.Daemon, ref string) *runtimeapi.Image {
	t.Helper()
	resp, err := d.Images.ImageStatus(context.Background(), &runtimeapi.ImageSpec{Image: ref}, false)
	if err != nil {
		t.Fatalf("ImageStatus(%s): %v", ref, err)
	}
	return resp.GetImage()
}

// checkPulled asserts the image pulled as ref is p's (linux/amd64) image.
func checkPulled(t *testing.T, d *testutil.Daemon, ref, imageRef string, p testutil.Pushed) *runtimeapi.Image {
	t.Helper()
	img := imageStatus(t, d, ref)
	if img == nil {
		t.Fatalf("ImageStatus(%s) after pull: no image", ref)
	}
	if !isID(img.Id, p.ConfigDigest) {
		t.Errorf("ImageStatus(%s).Id = %q, want the config digest %s", ref, img.Id, p.ConfigDigest)
	}
	if imageRef != img.Id && !strings.HasPrefix(imageRef, p.Repo+"@sha256:") {
		t.Errorf("PullImage(%s) returned %q, want the image id %q or a repo digest", ref, imageRef, img.Id)
	}
	if img.Size == 0 {
		t.Errorf("ImageStatus(%s).Size = 0", ref)
	}
	if byID := imageStatus(t, d, img.Id); byID == nil || byID.Id != img.Id {
		t.Errorf("ImageStatus(<id %s>) = %v, want the same image", img.Id, byID)
	}
	return img
}

func testPullByTag(t *testing.T, d *testutil.Daemon) {
	p := images.Busybox
	img := checkPulled(t, d, p.Ref, pull(t, d, p.Ref), p)
	if !slices.Contains(img.RepoTags, p.Ref) {
		t.Errorf("RepoTags = %v, want %s", img.RepoTags, p.Ref)
	}
	if !slices.Contains(img.RepoDigests, p.DigestRef) {
		t.Errorf("RepoDigests = %v, want %s", img.RepoDigests, p.DigestRef)
	}
	// A second pull of the same tag is a no-op that finds the same image.
	if again := checkPulled(t, d, p.Ref, pull(t, d, p.Ref), p); again.Id != img.Id {
		t.Errorf("second pull: id %s, first %s", again.Id, img.Id)
	}
}

func testPullByDigest(t *testing.T, d *testutil.Daemon) {
	p := images.Multi
	img := checkPulled(t, d, p.DigestRef, pull(t, d, p.DigestRef), p)
	if !slices.Contains(img.RepoDigests, p.DigestRef) {
		t.Errorf("RepoDigests = %v, want %s", img.RepoDigests, p.DigestRef)
	}
}

func testPullIndex(t *testing.T, d *testutil.Daemon) {
	p := images.Index
	img := checkPulled(t, d, p.Ref, pull(t, d, p.Ref), p)
	if isID(img.Id, images.Arm64) {
		t.Fatalf("pulled the arm64 image of the index")
	}
	manifest, err := p.Image.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	for _, rd := range img.RepoDigests {
		ok = ok || rd == p.DigestRef || rd == p.Repo+"@"+manifest.String()
	}
	if !ok {
		t.Errorf("RepoDigests = %v, want %s (index) or the amd64 manifest %s", img.RepoDigests, p.DigestRef, manifest)
	}
	// The amd64 image is the one that runs.
	pod := podConfig(t, d, "index")
	podID := runPod(t, d, pod)
	st, out, _ := runToExit(t, d, podID, pod, ctrConfig("arch", p.Ref, "sh", "-c", "echo $ARCH"))
	if st.ExitCode != 0 || strings.TrimSpace(out) != "amd64" {
		t.Errorf("container of the index image: exit %d, ARCH=%q, want 0 and amd64", st.ExitCode, out)
	}
	removePod(t, d, podID)
}

func testPullDocker(t *testing.T, d *testutil.Daemon) {
	p := images.Docker
	checkPulled(t, d, p.Ref, pull(t, d, p.Ref), p)
}

func testImageUser(t *testing.T, d *testutil.Daemon) {
	named := checkPulled(t, d, images.User.Ref, pull(t, d, images.User.Ref), images.User)
	if named.Username != "berth" || named.Uid != nil {
		t.Errorf("image with User berth: username %q uid %v, want berth and no uid", named.Username, named.Uid)
	}
	numeric := checkPulled(t, d, images.UID.Ref, pull(t, d, images.UID.Ref), images.UID)
	if numeric.GetUid().GetValue() != 1000 || numeric.Username != "" {
		t.Errorf("image with User 1000: uid %v username %q, want 1000 and no username", numeric.Uid, numeric.Username)
	}
}

func testListImages(t *testing.T, d *testutil.Daemon) {
	ensureImage(t, d, images.Busybox.Ref)
	ensureImage(t, d, images.Entrypoint.Ref)
	list, err := d.Images.ListImages(context.Background(), nil)
	if err != nil {
		t.Fatalf("ListImages: %v", err)
	}
	for _, p := range []testutil.Pushed{images.Busybox, images.Entrypoint} {
		found := false
		for _, img := range list {
			if isID(img.Id, p.ConfigDigest) {
				found = true
				if !slices.Contains(img.RepoTags, p.Ref) {
					t.Errorf("ListImages: %s has tags %v, want %s", img.Id, img.RepoTags, p.Ref)
				}
			}
		}
		if !found {
			t.Errorf("ListImages does not list %s (%s)", p.Ref, p.ConfigDigest)
		}
	}
}

func testRemoveImage(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		p    testutil.Pushed
		byID bool
	}{
		{"by tag", images.Docker, false},
		{"by id", images.UID, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ensureImage(t, d, tc.p.Ref)
			img := imageStatus(t, d, tc.p.Ref)
			if img == nil {
				t.Fatalf("no image %s", tc.p.Ref)
			}
			ref := tc.p.Ref
			if tc.byID {
				ref = img.Id
			}
			if err := d.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: ref}); err != nil {
				t.Fatalf("RemoveImage(%s): %v", ref, err)
			}
			if got := imageStatus(t, d, tc.p.Ref); got != nil {
				t.Errorf("ImageStatus(%s) after remove = %v, want none", tc.p.Ref, got)
			}
			list, err := d.Images.ListImages(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range list {
				if l.Id == img.Id {
					t.Errorf("ListImages still lists removed %s", img.Id)
				}
			}
			// CRI: removing an image that is not there succeeds.
			if err := d.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: ref}); err != nil {
				t.Errorf("second RemoveImage(%s): %v", ref, err)
			}
		})
	}
	if err := d.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: reg.Ref("never-pushed:latest")}); err != nil {
		t.Errorf("RemoveImage of an unknown image: %v", err)
	}
}

func testPullMissing(t *testing.T, d *testutil.Daemon) {
	ctx := context.Background()
	ref := reg.Ref("never-pushed:latest")
	if _, err := d.Images.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil); err == nil {
		t.Errorf("PullImage(%s) of a missing image succeeded", ref)
	} else {
		t.Logf("PullImage of a missing image: code %s: %v", code(err), err)
	}
	if img := imageStatus(t, d, ref); img != nil {
		t.Errorf("ImageStatus(%s) of a missing image = %v, want nil image and no error", ref, img)
	}
}

var digestHex = regexp.MustCompile(`^[0-9a-f]{12,64}$`)

// Each layer is unpacked once per chain ID under <root>/layers and shared by
// every image that has it. An entry is named by the chain ID's hex or a
// prefix of it of at least 12 digits (short names keep overlay options small).
func testLayersShared(t *testing.T, d *testutil.Daemon) {
	want := map[string]bool{}
	for _, p := range []testutil.Pushed{images.Busybox, images.Multi, images.Entrypoint, images.Index} {
		ensureImage(t, d, p.Ref)
		ids, err := testutil.ChainIDs(p.Image)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			want[id.Hex] = true
		}
	}
	if len(want) != 2 {
		t.Fatalf("test images have %d chain IDs, want 2 (base, base+app)", len(want))
	}
	dir := filepath.Join(d.Root, "layers")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read layer store: %v", err)
	}
	got := map[string]int{}
	for _, e := range entries {
		if !digestHex.MatchString(e.Name()) {
			continue
		}
		matched := false
		for h := range want {
			if strings.HasPrefix(h, e.Name()) {
				got[h]++
				matched = true
			}
		}
		if !matched {
			t.Errorf("layer store %s has an entry %s that is no chain ID of the pulled images (entries: %v)", dir, e.Name(), names(entries))
		}
	}
	for h := range want {
		if got[h] != 1 {
			t.Errorf("layer store %s has %d entries for chain ID %s, want 1 (entries: %v)", dir, got[h], h, names(entries))
		}
	}
}

func names(es []os.DirEntry) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}
