package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

func TestLayers(t *testing.T) {
	root := filepath.Join(t.TempDir(), "layers")
	if err := os.MkdirAll(filepath.Join(root, tmpPrefix+"stale"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := NewLayers(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, tmpPrefix+"stale")); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale temp dir not cleaned")
	}
	id := digest.FromString("chain")
	if l.Exists(id) {
		t.Fatal("exists before commit")
	}
	for i := range 2 { // the second commit loses the race and is dropped
		tmp, err := l.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "f"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := l.Commit(tmp, id); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("temp dir %s left", tmp)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(l.Dir(id), "f")); string(b) != "0" {
		t.Errorf("layer content %q, want first commit", b)
	}
	if got := filepath.Base(l.Dir(id)); len(got) != nameLen || !strings.HasPrefix(id.Encoded(), got) {
		t.Errorf("dir name %q", got)
	}
	if st, _ := os.Stat(l.Dir(id)); st.Mode().Perm() != 0o755 {
		t.Errorf("layer root mode %v", st.Mode())
	}
	for range 2 {
		if err := l.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("store not empty after remove: %v", entries)
	}
}

func TestOverlayData(t *testing.T) {
	l := &Layers{root: "/var/lib/berth/layers"}
	mk := func(n int) []string {
		var lowers []string
		for i := range n {
			lowers = append(lowers, l.Dir(digest.FromString(fmt.Sprint(i))))
		}
		return lowers
	}
	const upper, work = "/var/lib/berth/containers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/upper",
		"/var/lib/berth/containers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/work"
	tests := []struct {
		name    string
		lowers  []string
		upper   string
		wantErr error
	}{
		{"one", mk(1), upper, nil},
		{"80 layers fit", mk(80), upper, nil},
		{"200 layers do not", mk(200), upper, errdefs.ErrInvalidArgument},
		{"none", nil, upper, errdefs.ErrInvalidArgument},
		{"colon", []string{"/a:b"}, upper, errdefs.ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := OverlayData(tc.lowers, tc.upper, work)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && !strings.HasPrefix(data, "lowerdir="+tc.lowers[0]+":") && len(tc.lowers) > 1 {
				t.Errorf("data %q does not start with top layer", data)
			}
		})
	}
}

func TestMountOverlay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	var lowers []string
	for i, name := range []string{"top", "bottom"} {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprint(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		lowers = append(lowers, d)
	}
	upper, work, target := filepath.Join(dir, "u"), filepath.Join(dir, "w"), filepath.Join(dir, "m")
	for _, d := range []string{upper, work, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := MountOverlay(lowers, upper, work, target); err != nil {
		t.Fatal(err)
	}
	defer Unmount(target)
	if b, _ := os.ReadFile(filepath.Join(target, "f")); string(b) != "top" {
		t.Errorf("f = %q, want top layer's", b)
	}
	for _, f := range []string{"0", "1"} {
		if _, err := os.Stat(filepath.Join(target, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	// stack a second mount: Unmount must take both away.
	if err := unix.Mount("tmpfs", target, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(target); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(target); err != nil {
		t.Fatalf("second unmount: %v", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("target still shows %v", entries)
	}
	if err := Unmount(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("unmount of missing path: %v", err)
	}
}

// TestLayersClosed: the store is 0700 (also one an older berth made 0711),
// each layer 0755 inside it: other users are kept out by the store, while
// "/" of an image mount stays traversable.
func TestLayersClosed(t *testing.T) {
	root := filepath.Join(t.TempDir(), "layers")
	if err := os.Mkdir(root, 0o711); err != nil {
		t.Fatal(err)
	}
	l, err := NewLayers(root)
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := l.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Abort(tmp)
	for p, want := range map[string]os.FileMode{root: 0o700, tmp: 0o755} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s is %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}
