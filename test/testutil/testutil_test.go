package testutil

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

func TestPushTestImages(t *testing.T) {
	r, err := StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	ti, err := PushTestImages(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	// Every image shares the busybox layer; the multi-layer one adds one.
	base, err := ti.Busybox.Image.Layers()
	if err != nil || len(base) != 1 {
		t.Fatalf("busybox layers = %d, %v", len(base), err)
	}
	baseDigest, _ := base[0].Digest()
	for _, p := range []Pushed{ti.Index, ti.Multi, ti.Entrypoint, ti.User, ti.UID, ti.StopSignal} {
		ref, err := name.ParseReference(p.DigestRef)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
		if err != nil {
			t.Fatalf("pull %s back: %v", p.DigestRef, err)
		}
		cd, _ := img.ConfigName()
		if cd != p.ConfigDigest {
			t.Errorf("%s: config digest %s, want %s", p.Ref, cd, p.ConfigDigest)
		}
		ls, _ := img.Layers()
		d, _ := ls[0].Digest()
		if d != baseDigest {
			t.Errorf("%s: bottom layer %s, want the shared %s", p.Ref, d, baseDigest)
		}
	}
	if ti.Arm64 == ti.Index.ConfigDigest {
		t.Errorf("arm64 and amd64 images of the index have the same config")
	}
	// The flattened multi-layer image has /app/hello.txt and no marker.
	files := map[string]string{}
	tr := tar.NewReader(mutate.Extract(ti.Multi.Image))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files["/"+h.Name] = string(b)
	}
	if got := files["/app/hello.txt"]; got != AppHello+"\n" {
		t.Errorf("/app/hello.txt = %q", got)
	}
	if _, ok := files[BaseMarker]; ok {
		t.Errorf("%s survived its whiteout", BaseMarker)
	}
	if !strings.Contains(files["/etc/passwd"], "berth:x:1000:1000") {
		t.Errorf("/etc/passwd = %q", files["/etc/passwd"])
	}
}

func TestLeakCheckFindsAndRemoves(t *testing.T) {
	RequiresRoot(t)
	dir, err := os.MkdirTemp("/tmp", "btl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s := scope{dir: dir, state: filepath.Join(dir, "run"), cgroupParent: "/berth-leaktest-" + randomHex(4), runcRoot: filepath.Join(dir, "run", "runc")}
	mnt := filepath.Join(dir, "mnt")
	pins := filepath.Join(s.state, "netns")
	for _, p := range []string{mnt, pins} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pins, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join("/sys/fs/cgroup/pids", s.cgroupParent, "child")
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = sleeper.Wait() }()
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(sleeper.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	leaks := strings.Join(findLeaks(s), "\n")
	for _, want := range []string{"mount " + mnt, "namespace pin " + filepath.Join(pins, "x"), "cgroup " + cg, "in cgroup " + s.cgroupParent + "/child"} {
		if !strings.Contains(leaks, want) {
			t.Errorf("leaks do not mention %q:\n%s", want, leaks)
		}
	}
	forceCleanup(t, s, true)
	if left := findLeaks(s); len(left) != 0 {
		t.Errorf("left after force cleanup: %v", left)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/pids", s.cgroupParent)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup parent not removed: %v", err)
	}
}
