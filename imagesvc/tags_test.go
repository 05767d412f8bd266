package imagesvc

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// RepoTags answers what Get does after every change of an image's names,
// though it keeps what it read between calls.
func TestRepoTagsFollowsNames(t *testing.T) {
	e := newEnv(t)
	a := image(t, v1.Config{Cmd: []string{"a"}}, layer(t, ent{name: "a", body: "a"}))
	b := image(t, v1.Config{Cmd: []string{"b"}}, layer(t, ent{name: "b", body: "b"}))
	repo := e.reg.host + "/r"
	e.reg.push(t, "r:1", a)
	e.reg.push(t, "r:2", a)
	ia, err := e.svc.Pull(ctx, repo+":1", nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(step, id string) {
		t.Helper()
		img, gerr := e.svc.Get(ctx, id)
		for range 2 { // decoded, then from the cache
			tags, err := e.svc.RepoTags(ctx, id)
			if !errors.Is(err, gerr) && (err == nil) != (gerr == nil) {
				t.Fatalf("%s: RepoTags err %v, Get err %v", step, err, gerr)
			}
			if !slices.Equal(tags, img.RepoTags) {
				t.Errorf("%s: RepoTags %v, Get %v", step, tags, img.RepoTags)
			}
		}
	}
	check("pulled", ia.ID)
	if _, err := e.svc.Pull(ctx, repo+":2", nil); err != nil {
		t.Fatal(err)
	}
	check("second tag", ia.ID)
	// A caller changing what it got changes nothing kept.
	tags, _ := e.svc.RepoTags(ctx, ia.ID)
	tags[0] = "changed"
	check("caller's copy changed", ia.ID)

	e.reg.push(t, "r:1", b)
	if _, err := e.svc.Pull(ctx, repo+":1", nil); err != nil {
		t.Fatal(err)
	}
	check("tag moved away", ia.ID)
	if got, _ := e.svc.RepoTags(ctx, ia.ID); !slices.Equal(got, []string{repo + ":2"}) {
		t.Errorf("after the move: %v", got)
	}
	if err := e.svc.Remove(ctx, ia.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RepoTags(ctx, ia.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("RepoTags of a removed image: %v", err)
	}
	if len(e.svc.tags.m) != 0 {
		t.Errorf("tags kept after a removal: %v", e.svc.tags.m)
	}
	// A name, not an ID, is looked up as Get does.
	if got, err := e.svc.RepoTags(ctx, repo+":1"); err != nil || !slices.Equal(got, []string{repo + ":1"}) {
		t.Errorf("RepoTags by name: %v, %v", got, err)
	}
}

// BenchmarkImageName compares what a container status pays to name its
// image: the whole record decoded (Get) against RepoTags.
func BenchmarkImageName(b *testing.B) {
	e := newEnv(b)
	var env []string
	for i := range 12 {
		env = append(env, fmt.Sprintf("VAR%d=value-%d", i, i))
	}
	img := image(b, v1.Config{Env: env, Cmd: []string{"nginx", "-g", "daemon off;"}}, layer(b, ent{name: "a", body: "a"}), layer(b, ent{name: "b", body: "b"}))
	e.reg.push(b, "app:1", img)
	got, err := e.svc.Pull(ctx, e.reg.host+"/app:1", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Get", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.svc.Get(ctx, got.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("RepoTags", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.svc.RepoTags(ctx, got.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
}
