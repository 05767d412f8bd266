package imagesvc

import (
	"archive/tar"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"
)

// reopen is a second Service on e's root and db with other pinned images,
// as berthd restarted with a changed config.
func reopen(t *testing.T, e *env, pinned []string) *Service {
	t.Helper()
	svc, err := New(ctx, Options{Root: e.root, DB: e.db, InsecureHosts: []string{e.reg.host}, PinnedImages: pinned})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestPinnedImages(t *testing.T) {
	e := newEnv(t)
	a := image(t, v1.Config{Cmd: []string{"a"}}, layer(t, ent{name: "a", body: "a"}))
	b := image(t, v1.Config{Cmd: []string{"b"}}, layer(t, ent{name: "b", body: "b"}))
	c := image(t, v1.Config{Cmd: []string{"c"}}, layer(t, ent{name: "c", body: "c"}), layer(t, ent{name: "etc/", typ: tar.TypeDir}))
	e.reg.push(t, "pause:3.10", a)
	mdB := e.reg.push(t, "agent:1", b)
	e.reg.push(t, "app:1", c)
	h := e.reg.host
	svc := reopen(t, e, []string{h + "/pause:3.10", h + "/agent:ignored@" + mdB.String()})
	want := map[string]bool{}
	for _, tt := range []struct {
		ref    string
		pinned bool
	}{
		{h + "/pause:3.10", true},
		{h + "/agent:1", true}, // pinned by its digest
		{h + "/app:1", false},
	} {
		img, err := svc.Pull(ctx, tt.ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		if img.Pinned != tt.pinned {
			t.Errorf("Pull(%s).Pinned = %v, want %v", tt.ref, img.Pinned, tt.pinned)
		}
		if g, err := svc.Get(ctx, img.ID); err != nil || g.Pinned != tt.pinned {
			t.Errorf("Get(%s).Pinned = %v (%v), want %v", tt.ref, g.Pinned, err, tt.pinned)
		}
		want[img.ID] = tt.pinned
	}
	imgs, err := svc.List(ctx)
	if err != nil || len(imgs) != 3 {
		t.Fatalf("List = %d images, %v", len(imgs), err)
	}
	for _, img := range imgs {
		if img.Pinned != want[img.ID] {
			t.Errorf("List: %v pinned = %v, want %v", img.RepoTags, img.Pinned, want[img.ID])
		}
	}

	// the flag follows the config, not what was stored at pull time.
	unpinned := reopen(t, e, nil)
	if g, err := unpinned.Get(ctx, h+"/pause:3.10"); err != nil || g.Pinned {
		t.Errorf("after unpinning in config: Pinned = %v (%v)", g.Pinned, err)
	}
	// and nothing of it is in the record.
	err = e.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketImages).Get([]byte(imgs[0].ID))
		if v == nil || containsBytes(v, `"Pinned"`) {
			t.Errorf("record %s stores the pinned flag", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// RemoveImage removes a pinned image, as containerd does.
	if err := svc.Remove(ctx, h+"/pause:3.10"); err != nil {
		t.Fatalf("remove pinned image: %v", err)
	}
	if _, err := svc.Get(ctx, h+"/pause:3.10"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("pinned image still there after remove: %v", err)
	}
}

func TestPinnedImagesBadReference(t *testing.T) {
	root := t.TempDir()
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, ref := range []string{"UPPER/case", "a@sha256:short", ""} {
		_, err := New(ctx, Options{Root: filepath.Join(root, "berth"), DB: db, PinnedImages: []string{ref}})
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("PinnedImages [%q]: err = %v, want InvalidArgument", ref, err)
		}
	}
}

func containsBytes(b []byte, s string) bool { return strings.Contains(string(b), s) }
