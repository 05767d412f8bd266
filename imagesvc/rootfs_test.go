package imagesvc

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/sys/mountinfo"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

func assertNoRootfs(t *testing.T, e *env, id, target string) {
	t.Helper()
	if m, err := mountinfo.Mounted(target); err == nil && m {
		t.Errorf("%s still mounted", target)
	}
	for _, p := range []string{target, e.svc.containerDir(id)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}

func TestPrepareRootfs(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	lower := layer(t,
		ent{name: "etc/", typ: tar.TypeDir},
		ent{name: "etc/a", body: "from lower"},
		ent{name: "etc/gone", body: "deleted above"},
		ent{name: "var/", typ: tar.TypeDir},
		ent{name: "var/old", body: "hidden by opaque"},
	)
	top := layer(t,
		ent{name: "etc/.wh.gone"},
		ent{name: "etc/b", body: "from top"},
		ent{name: "var/.wh..wh..opq"},
		ent{name: "var/new", body: "n"},
	)
	e.reg.push(t, "two:1", image(t, v1.Config{}, lower, top))
	img, err := e.svc.Pull(ctx, e.reg.host+"/two:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "bundle", "rootfs")
	const id = "c1"
	if err := e.svc.PrepareRootfs(ctx, id, img.ID, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.svc.RemoveRootfs(ctx, id, target) })
	if m, err := mountinfo.Mounted(target); err != nil || !m {
		t.Fatalf("target not mounted: %v", err)
	}
	for p, want := range map[string]string{"etc/a": "from lower", "etc/b": "from top", "var/new": "n"} {
		if b, err := os.ReadFile(filepath.Join(target, p)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v", p, b, err)
		}
	}
	for _, p := range []string{"etc/gone", "var/old"} {
		if _, err := os.Lstat(filepath.Join(target, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s visible in merged view: %v", p, err)
		}
	}
	if err := os.WriteFile(filepath.Join(target, "written"), []byte("w"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(e.svc.containerDir(id), "upper", "written")); err != nil || string(b) != "w" {
		t.Errorf("write did not land in upper: %q, %v", b, err)
	}
	for _, l := range img.ChainIDs {
		if _, err := os.Stat(filepath.Join(e.svc.layers.Dir(l), "written")); err == nil {
			t.Error("write landed in a layer")
		}
	}
	if err := e.svc.PrepareRootfs(ctx, id, img.ID, target); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second prepare err = %v", err)
	}
	// removing the image keeps the layers the container uses.
	if err := e.svc.Remove(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	for _, l := range img.ChainIDs {
		if !e.svc.layers.Exists(l) {
			t.Errorf("layer %s removed while in use", l)
		}
	}
	if err := e.svc.RemoveRootfs(ctx, id, target); err != nil {
		t.Fatal(err)
	}
	assertNoRootfs(t, e, id, target)
	if dirs := layerDirs(t, e); len(dirs) != 0 {
		t.Errorf("unused layers not removed: %v", dirs)
	}
	if err := e.svc.RemoveRootfs(ctx, id, target); err != nil {
		t.Errorf("second RemoveRootfs: %v", err)
	}
}

func TestPrepareRootfsBusyAndEmptyImage(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	e.reg.push(t, "empty:1", image(t, v1.Config{Cmd: []string{"x"}}))
	img, err := e.svc.Pull(ctx, e.reg.host+"/empty:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.ChainIDs) != 0 {
		t.Fatalf("chain ids %v", img.ChainIDs)
	}
	target := filepath.Join(t.TempDir(), "rootfs")
	if err := e.svc.PrepareRootfs(ctx, "c2", img.ID, target); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// an open directory inside makes a plain unmount fail with EBUSY:
	// RemoveRootfs must fall back to a lazy detach.
	f, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Unmount(target, unix.MNT_FORCE); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("expected a busy mount, got %v", err)
	}
	if err := e.svc.RemoveRootfs(ctx, "c2", target); err != nil {
		t.Fatal(err)
	}
	assertNoRootfs(t, e, "c2", target)
}

func TestPrepareRootfsFailureUndoes(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	e.reg.push(t, "one:1", image(t, v1.Config{}, layer(t, ent{name: "f", body: "x"})))
	img, err := e.svc.Pull(ctx, e.reg.host+"/one:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "rootfs")
	tests := []struct {
		name, id, image string
		breakIt         func()
		want            error
	}{
		{"bad id", "../x", img.ID, nil, errdefs.ErrInvalidArgument},
		{"no image", "c3", "sha256:" + strings.Repeat("0", 64), nil, errdefs.ErrNotFound},
		{"missing layer", "c4", img.ID, func() { os.RemoveAll(e.svc.layers.Dir(img.ChainIDs[0])) }, errdefs.ErrFailedPrecondition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.breakIt != nil {
				tc.breakIt()
			}
			err := e.svc.PrepareRootfs(ctx, tc.id, tc.image, target)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.id != "../x" {
				assertNoRootfs(t, e, tc.id, target)
			}
			// the failed container's record is gone: the id can be used again.
			err = e.svc.db.View(func(tx *bolt.Tx) error {
				if _, ok, _ := getRootfs(tx, tc.id); ok {
					t.Error("rootfs record left")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
