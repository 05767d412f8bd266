package imagesvc

import (
	"archive/tar"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

var ctx = context.Background()

func TestPullByTagAndGet(t *testing.T) {
	e := newEnv(t)
	l1 := layer(t, ent{name: "etc/", typ: tar.TypeDir}, ent{name: "etc/os-release", body: "berth"})
	l2 := zstdLayer(t, ent{name: "bin/app", body: "#!/bin/sh\n", mode: 0o755})
	img := image(t, v1.Config{Env: []string{"A=1"}, Cmd: []string{"/bin/app"}, User: "1000", WorkingDir: "/w"}, l1, l2)
	md := e.reg.push(t, "test/app:v1", img)
	repo := e.reg.host + "/test/app"

	got, err := e.svc.Pull(ctx, repo+":v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := configDigest(t, img); got.ID != want {
		t.Errorf("ID = %s, want %s", got.ID, want)
	}
	if !slices.Equal(got.RepoTags, []string{repo + ":v1"}) {
		t.Errorf("RepoTags = %v", got.RepoTags)
	}
	if !slices.Equal(got.RepoDigests, []string{repo + "@" + md.String()}) {
		t.Errorf("RepoDigests = %v", got.RepoDigests)
	}
	if c := got.Config.Config; !slices.Equal(c.Cmd, []string{"/bin/app"}) || c.User != "1000" || c.WorkingDir != "/w" || !slices.Contains(c.Env, "A=1") {
		t.Errorf("Config = %+v", c)
	}
	m, _ := img.Manifest()
	wantSize := uint64(m.Config.Size + m.Layers[0].Size + m.Layers[1].Size)
	if got.Size != wantSize {
		t.Errorf("Size = %d, want %d", got.Size, wantSize)
	}
	if len(got.ChainIDs) != 2 {
		t.Fatalf("ChainIDs = %v", got.ChainIDs)
	}
	if b, err := os.ReadFile(filepath.Join(e.svc.layers.Dir(got.ChainIDs[0]), "etc/os-release")); err != nil || string(b) != "berth" {
		t.Errorf("layer 0 content %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(e.svc.layers.Dir(got.ChainIDs[1]), "bin/app")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("zstd layer content: %v %v", st, err)
	}
	for _, d := range []string{md.String(), configDigest(t, img), layerDigest(t, l1).String(), layerDigest(t, l2).String()} {
		if !e.svc.content.Has(digest.Digest(d)) {
			t.Errorf("blob %s not stored", d)
		}
	}
	if f := files(t, filepath.Join(e.root, "content", "ingest")); len(f) != 0 {
		t.Errorf("ingest left: %v", f)
	}

	hex := strings.TrimPrefix(got.ID, "sha256:")
	for _, n := range []string{got.ID, hex, repo + ":v1", repo + "@" + md.String(), repo + ":v1@" + md.String(), repo + ":other@" + md.String()} {
		g, err := e.svc.Get(ctx, n)
		if err != nil || g.ID != got.ID {
			t.Errorf("Get(%q) = %s, %v", n, g.ID, err)
		}
	}
	for _, n := range []string{repo + ":nope", "sha256:" + strings.Repeat("0", 64), repo + "@sha256:" + strings.Repeat("1", 64), "busybox"} {
		if _, err := e.svc.Get(ctx, n); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Get(%q) err = %v, want NotFound", n, err)
		}
	}

	// a second pull resolves the tag again but downloads no blob.
	before := e.reg.totalGets()
	if _, err := e.svc.Pull(ctx, repo+":v1", nil); err != nil {
		t.Fatal(err)
	}
	if after := e.reg.totalGets(); after != before {
		t.Errorf("re-pull fetched %d blobs", after-before)
	}
}

func TestPullByDigest(t *testing.T) {
	e := newEnv(t)
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	md := e.reg.push(t, "rand:t", img)
	ref := e.reg.host + "/rand@" + md.String()
	got, err := e.svc.Pull(ctx, ref, &Auth{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != configDigest(t, img) || len(got.RepoTags) != 0 || !slices.Equal(got.RepoDigests, []string{ref}) {
		t.Errorf("image = %s %v %v", got.ID, got.RepoTags, got.RepoDigests)
	}
	// name:tag@digest pulls by digest and does not record the tag.
	got, err = e.svc.Pull(ctx, e.reg.host+"/rand:x@"+md.String(), nil)
	if err != nil || len(got.RepoTags) != 0 {
		t.Errorf("pull tag@digest: %v, tags %v", err, got.RepoTags)
	}
}

func TestPullIndexPicksPlatform(t *testing.T) {
	e := newEnv(t)
	var adds []mutate.IndexAddendum
	var want string
	for _, arch := range []string{"arm64", "amd64", "s390x"} {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		if arch == "amd64" {
			want = configDigest(t, img)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	id := e.reg.pushIndex(t, "multi:latest", idx)
	got, err := e.svc.Pull(ctx, e.reg.host+"/multi", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != want {
		t.Errorf("ID = %s, want amd64 image %s", got.ID, want)
	}
	if wantDigest := e.reg.host + "/multi@" + id.String(); !slices.Equal(got.RepoDigests, []string{wantDigest}) {
		t.Errorf("RepoDigests = %v, want %s", got.RepoDigests, wantDigest)
	}
	if _, err := e.svc.Get(ctx, e.reg.host+"/multi@"+id.String()); err != nil {
		t.Errorf("Get by index digest: %v", err)
	}

	// Options.Platform picks another entry.
	arm, err := New(ctx, Options{Root: filepath.Join(t.TempDir(), "arm"), DB: e.db, InsecureHosts: []string{e.reg.host},
		Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	armImg, _ := adds[0].Add.(v1.Image)
	if got, err := arm.Pull(ctx, e.reg.host+"/multi", nil); err != nil || got.ID != configDigest(t, armImg) {
		t.Errorf("arm64 pull = %s, %v", got.ID, err)
	}

	// an index without the platform is NotFound.
	e2 := newEnv(t)
	riscv, _ := random.Image(256, 1)
	only := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: riscv, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "riscv64"}}})
	e2.reg.pushIndex(t, "arm:latest", only)
	if _, err := e2.svc.Pull(ctx, e2.reg.host+"/arm", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("pull of index without platform err = %v", err)
	}
}

func TestSharedLayersUnpackOnce(t *testing.T) {
	e := newEnv(t)
	base1 := layer(t, ent{name: "base1", body: "1"})
	base2 := layer(t, ent{name: "base2", body: "2"})
	a := image(t, v1.Config{}, base1, base2, layer(t, ent{name: "a", body: "a"}))
	b := image(t, v1.Config{}, base1, base2, layer(t, ent{name: "b", body: "b"}))
	e.reg.push(t, "a:1", a)
	e.reg.push(t, "b:1", b)
	ia, err := e.svc.Pull(ctx, e.reg.host+"/a:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := e.svc.Pull(ctx, e.reg.host+"/b:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ia.ChainIDs[:2], ib.ChainIDs[:2]) || ia.ChainIDs[2] == ib.ChainIDs[2] {
		t.Errorf("chain ids a=%v b=%v", ia.ChainIDs, ib.ChainIDs)
	}
	if dirs := layerDirs(t, e); len(dirs) != 4 {
		t.Errorf("layer dirs = %v, want 4", dirs)
	}
	for _, l := range []v1.Layer{base1, base2} {
		if n := e.reg.gets(layerDigest(t, l)); n != 1 {
			t.Errorf("base layer fetched %d times", n)
		}
	}
	imgs, err := e.svc.List(ctx)
	if err != nil || len(imgs) != 2 {
		t.Fatalf("List = %d images, %v", len(imgs), err)
	}
}

func TestConcurrentPullsCollapse(t *testing.T) {
	e := newEnv(t)
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	e.reg.push(t, "c:1", img)
	e.reg.setDelay(50e6) // 50ms per blob GET: pulls overlap for sure
	var wg sync.WaitGroup
	ids := make([]string, 6)
	errs := make([]error, 6)
	for i := range ids {
		wg.Go(func() {
			got, err := e.svc.Pull(ctx, e.reg.host+"/c:1", nil)
			ids[i], errs[i] = got.ID, err
		})
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != configDigest(t, img) {
			t.Errorf("pull %d: %s, %v", i, ids[i], errs[i])
		}
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		if n := e.reg.gets(layerDigest(t, l)); n != 1 {
			t.Errorf("layer fetched %d times", n)
		}
	}
}

func TestCancelledPullLeavesNothing(t *testing.T) {
	e := newEnv(t)
	img, _ := random.Image(1024, 2)
	e.reg.push(t, "slow:1", img)
	e.reg.setDelay(300e6)
	cctx, cancel := context.WithTimeout(ctx, 100e6)
	defer cancel()
	if _, err := e.svc.Pull(cctx, e.reg.host+"/slow:1", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	// the shared pull was cancelled with its only waiter and cleaned up
	// before Pull returned.
	if f := files(t, filepath.Join(e.root, "content")); len(f) != 0 {
		t.Errorf("content left: %v", f)
	}
	if dirs := layerDirs(t, e); len(dirs) != 0 {
		t.Errorf("layer dirs left: %v", dirs)
	}
	e.reg.setDelay(0)
	// a new pull starts afresh and works.
	if _, err := e.svc.Pull(ctx, e.reg.host+"/slow:1", nil); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptBlobLeavesNothing(t *testing.T) {
	for _, which := range []string{"layer", "config"} {
		t.Run(which, func(t *testing.T) {
			e := newEnv(t)
			good := layer(t, ent{name: "good", body: "g"})
			bad := layer(t, ent{name: "bad", body: strings.Repeat("x", 4000)})
			img := image(t, v1.Config{}, good, bad)
			e.reg.push(t, "corrupt:1", img)
			if which == "layer" {
				e.reg.setCorrupt(layerDigest(t, bad))
			} else {
				h, _ := img.ConfigName()
				e.reg.setCorrupt(h)
			}
			if _, err := e.svc.Pull(ctx, e.reg.host+"/corrupt:1", nil); err == nil {
				t.Fatal("pull of corrupt blob succeeded")
			}
			if f := files(t, filepath.Join(e.root, "content")); len(f) != 0 && which == "config" {
				t.Errorf("content left: %v", f)
			}
			// the good layer may have committed; the bad blob must not exist.
			if e.svc.content.Has(digest.Digest(layerDigest(t, bad).String())) {
				t.Error("corrupt blob stored")
			}
			for _, f := range files(t, filepath.Join(e.root, "content")) {
				if !strings.Contains(f, layerDigest(t, good).Hex) {
					t.Errorf("content left: %s", f)
				}
			}
			for _, d := range layerDirs(t, e) {
				if strings.HasPrefix(d, ".") {
					t.Errorf("temp layer dir left: %s", d)
				}
			}
			if _, err := e.svc.Get(ctx, e.reg.host+"/corrupt:1"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("image recorded after failed pull: %v", err)
			}
		})
	}
}

func TestHostileLayers(t *testing.T) {
	requireRoot(t)
	outside := t.TempDir()
	tests := []struct {
		name    string
		ents    []ent
		wantErr bool
	}{
		{"dotdot", []ent{{name: "../../../../../../../../.." + outside + "/x", body: "x"}}, true},
		{"absolute", []ent{{name: outside + "/x", body: "x"}}, true},
		{"symlink root", []ent{{name: "a", typ: tar.TypeSymlink, link: "/"}, {name: "a" + outside + "/x", body: "x"}}, false},
		{"symlink etc", []ent{{name: "a", typ: tar.TypeSymlink, link: "/"}, {name: "a/etc/berth-evil-x", body: "x"}}, false},
		{"hardlink out", []ent{{name: "h", typ: tar.TypeLink, link: "../x"}}, true},
		{"char device", []ent{{name: "x", typ: tar.TypeChar, mode: 0o666}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.reg.push(t, "evil:1", image(t, v1.Config{}, layer(t, tc.ents...)))
			_, err := e.svc.Pull(ctx, e.reg.host+"/evil:1", nil)
			if tc.wantErr != (err != nil) {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr && !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("err = %v, want InvalidArgument", err)
			}
			for _, p := range []string{filepath.Join(outside, "x"), "/etc/berth-evil-x"} {
				if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s written outside the layer", p)
				}
			}
			if dirs := layerDirs(t, e); tc.wantErr && len(dirs) != 0 {
				t.Errorf("layers left after failure: %v", dirs)
			}
			if tc.name == "char device" {
				img, _ := e.svc.Get(ctx, e.reg.host+"/evil:1")
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(e.svc.layers.Dir(img.ChainIDs[0]), "x"), &st); err == nil {
					t.Errorf("device node created, mode %o", st.Mode)
				}
			}
		})
	}
}

func TestBadReferences(t *testing.T) {
	e := newEnv(t)
	for _, ref := range []string{"", "UPPER/case", "a@sha256:bad", "a:b:c", "bad ref", "-x"} {
		if _, err := e.svc.Pull(ctx, ref, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Pull(%q) err = %v", ref, err)
		}
		if _, err := e.svc.Get(ctx, ref); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Get(%q) err = %v", ref, err)
		}
	}
	if _, err := e.svc.Pull(ctx, e.reg.host+"/missing:1", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("pull of missing image err = %v", err)
	}
}

func TestUnsupportedManifest(t *testing.T) {
	e := newEnv(t)
	for _, mt := range []string{"application/vnd.docker.distribution.manifest.v1+prettyjws", "application/vnd.example+json"} {
		body := `{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}`
		req, _ := http.NewRequest(http.MethodPut, "http://"+e.reg.host+"/v2/old/manifests/1", strings.NewReader(body))
		req.Header.Set("Content-Type", mt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("put manifest: %s", resp.Status)
		}
		_, err = e.svc.Pull(ctx, e.reg.host+"/old:1", nil)
		if err == nil || !(errors.Is(err, errdefs.ErrNotImplemented) || errors.Is(err, errdefs.ErrInvalidArgument)) {
			t.Errorf("%s: err = %v", mt, err)
		}
	}
}

func TestRemoveAndTagMove(t *testing.T) {
	e := newEnv(t)
	base := layer(t, ent{name: "base", body: "b"})
	a := image(t, v1.Config{Cmd: []string{"a"}}, base, layer(t, ent{name: "a", body: "a"}))
	b := image(t, v1.Config{Cmd: []string{"b"}}, base, layer(t, ent{name: "b", body: "b"}))
	repo := e.reg.host + "/r"
	mdA := e.reg.push(t, "r:1", a)
	ia, err := e.svc.Pull(ctx, repo+":1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// the tag moves to b: a keeps only its digest name.
	e.reg.push(t, "r:1", b)
	ib, err := e.svc.Pull(ctx, repo+":1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ia, err = e.svc.Get(ctx, ia.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ia.RepoTags) != 0 || !slices.Equal(ia.RepoDigests, []string{repo + "@" + mdA.String()}) {
		t.Errorf("old image names %v %v", ia.RepoTags, ia.RepoDigests)
	}
	if g, _ := e.svc.Get(ctx, repo+":1"); g.ID != ib.ID {
		t.Errorf("tag resolves to %s, want %s", g.ID, ib.ID)
	}
	if err := e.svc.Remove(ctx, repo+"@"+mdA.String()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{ia.ID, repo + "@" + mdA.String()} {
		if _, err := e.svc.Get(ctx, n); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Get(%q) after remove: %v", n, err)
		}
	}
	if err := e.svc.Remove(ctx, ia.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second remove err = %v", err)
	}
	// a's own layer is gone, the shared base stays for b.
	if e.svc.layers.Exists(ia.ChainIDs[1]) || !e.svc.layers.Exists(ia.ChainIDs[0]) || !e.svc.layers.Exists(ib.ChainIDs[1]) {
		t.Errorf("layers after remove: %v", layerDirs(t, e))
	}
	imgs, _ := e.svc.List(ctx)
	if len(imgs) != 1 || imgs[0].ID != ib.ID {
		t.Errorf("List = %v", imgs)
	}
	if err := e.svc.Remove(ctx, repo+":1"); err != nil {
		t.Fatal(err)
	}
	if dirs := layerDirs(t, e); len(dirs) != 0 {
		t.Errorf("layers left: %v", dirs)
	}
	// blobs nothing uses went with the images.
	if left := files(t, filepath.Join(e.root, "content")); len(left) != 0 {
		t.Errorf("blobs left: %v", left)
	}
	before := e.reg.totalGets()
	if _, err := e.svc.Pull(ctx, repo+":1", nil); err != nil {
		t.Fatal(err)
	}
	if n := e.reg.totalGets() - before; n != 3 {
		t.Errorf("re-pull after remove fetched %d blobs, want config and 2 layers", n)
	}
	if dirs := layerDirs(t, e); len(dirs) != 2 {
		t.Errorf("layers = %v", dirs)
	}
}

func TestFsInfo(t *testing.T) {
	e := newEnv(t)
	img, _ := random.Image(8192, 2)
	e.reg.push(t, "fs:1", img)
	empty, err := e.svc.FsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Pull(ctx, e.reg.host+"/fs:1", nil); err != nil {
		t.Fatal(err)
	}
	u, err := e.svc.FsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.UsedBytes <= empty.UsedBytes || u.InodesUsed <= empty.InodesUsed+4 {
		t.Errorf("usage %+v, before %+v", u, empty)
	}
	if u.Mountpoint == "" || !strings.HasPrefix(e.root, u.Mountpoint) {
		t.Errorf("mountpoint %q for root %q", u.Mountpoint, e.root)
	}
	// FsInfo is cached between changes: removing the image is one.
	if err := e.svc.Remove(ctx, e.reg.host+"/fs:1"); err != nil {
		t.Fatal(err)
	}
	after, err := e.svc.FsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.InodesUsed >= u.InodesUsed || after.UsedBytes >= u.UsedBytes {
		t.Errorf("usage after removing the image %+v, with it %+v", after, u)
	}
}

// After WarmUsage both figures are kept: the first ImageFsInfo after a
// start does not walk.
func TestWarmUsage(t *testing.T) {
	e := newEnv(t)
	for _, c := range []*usageCache{&e.svc.imageUsage, &e.svc.ctrUsage} {
		if c.valid {
			t.Fatal("a figure before anything measured")
		}
	}
	e.svc.WarmUsage(ctx)
	for i, c := range []*usageCache{&e.svc.imageUsage, &e.svc.ctrUsage} {
		c.mu.Lock()
		valid := c.valid
		c.mu.Unlock()
		if !valid {
			t.Errorf("cache %d not filled by WarmUsage", i)
		}
	}
}
