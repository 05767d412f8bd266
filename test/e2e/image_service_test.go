package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestImageVolumes runs a container with an image volume (the whole image
// and an image_sub_path, read-only) and an image-declared volume (a fresh
// writable dir), then checks removal releases everything.
func TestImageVolumes(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := startDaemon(t)
	ctx := context.Background()
	base, err := testutil.NewImage(testutil.ImageSpec{})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Volumes = map[string]struct{}{"/data": {}, "/covered": {}}
	withVol, err := mutate.Config(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := reg.Push(ctx, "volumes-"+randID()+":latest", withVol)
	if err != nil {
		t.Fatal(err)
	}
	ensureImage(t, d, p.Ref)
	ensureImage(t, d, images.Multi.Ref)

	podCfg := podConfig(t, d, "imgvol")
	pod := runPod(t, d, podCfg)
	defer removePod(t, d, pod)
	hostDir := t.TempDir()
	c := ctrConfig("vol", p.Ref, "sh", "-c", `cat /iv/app/hello.txt; cat /sub/hello.txt
touch /iv/x 2>/dev/null && echo iv-writable || echo iv-readonly
echo d > /data/f && cat /data/f
ls /covered`)
	c.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/iv", Readonly: true, Image: &runtimeapi.ImageSpec{Image: images.Multi.Ref}},
		{ContainerPath: "/sub", Readonly: true, Image: &runtimeapi.ImageSpec{Image: images.Multi.Ref}, ImageSubPath: "app"},
		{ContainerPath: "/covered", HostPath: hostDir},
	}
	if err := os.WriteFile(filepath.Join(hostDir, "host-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, stdout, stderr := runToExit(t, d, pod, podCfg, c)
	want := testutil.AppHello + "\n" + testutil.AppHello + "\niv-readonly\nd\nhost-file\n"
	if st.GetExitCode() != 0 || stdout != want {
		t.Errorf("exit %d, stdout %q (want %q), stderr %q", st.GetExitCode(), stdout, want, stderr)
	}
	// each image volume reports the ID of the image it mounts (KEP-5365).
	multi, err := d.Images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: images.Multi.Ref}, false)
	if err != nil {
		t.Fatal(err)
	}
	ivs := 0
	for _, m := range st.GetMounts() {
		if m.GetImage().GetImage() == "" {
			continue
		}
		ivs++
		if m.GetImage().GetImageRef() != multi.GetImage().GetId() {
			t.Errorf("mount %s image_ref = %q, want the image ID %q", m.GetContainerPath(), m.GetImage().GetImageRef(), multi.GetImage().GetId())
		}
	}
	if ivs != 2 {
		t.Errorf("ContainerStatus lists %d image volumes, want 2: %v", ivs, st.GetMounts())
	}
	// an image volume is read-only by definition: a writable one is refused.
	rw := ctrConfig("rw", p.Ref, "true")
	rw.Mounts = []*runtimeapi.Mount{{ContainerPath: "/iv", Image: &runtimeapi.ImageSpec{Image: images.Multi.Ref}}}
	_, err = d.Runtime.CreateContainer(ctx, pod, rw, podCfg)
	wantCode(t, "CreateContainer with a writable image volume", err, codes.InvalidArgument)
	// the writable layer (with the declared volume) shows in ImageFsInfo.
	fs, err := d.Images.ImageFsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs.GetContainerFilesystems()) != 1 || fs.GetContainerFilesystems()[0].GetInodesUsed().GetValue() == 0 ||
		len(fs.GetImageFilesystems()) != 1 || fs.GetImageFilesystems()[0].GetUsedBytes().GetValue() == 0 {
		t.Errorf("ImageFsInfo = %v", fs)
	}
	// an image volume naming an image that is not there fails cleanly.
	bad := ctrConfig("bad", p.Ref, "true")
	bad.Mounts = []*runtimeapi.Mount{{ContainerPath: "/iv", Readonly: true, Image: &runtimeapi.ImageSpec{Image: reg.Ref("never-pulled:1")}}}
	if _, err := d.Runtime.CreateContainer(ctx, pod, bad, podCfg); err == nil {
		t.Error("CreateContainer with a missing image volume succeeded")
	}
	removePod(t, d, pod)
	// nothing holds the volume image's layers any more: it can go entirely.
	if err := d.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: p.Ref}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.Root, "containers")); len(ents) != 0 {
		t.Errorf("container dirs left: %v", ents)
	}
	testutil.AssertNoLeaks(t, d)
}

// TestImageConformanceMirror pulls what critest pulls through the
// conformance kit's certs.d mirror tree (plain HTTP to the kit's
// REGISTRY_ADDR, 127.0.0.1:5000 unless the Makefile moved it).
func TestImageConformanceMirror(t *testing.T) {
	testutil.RequiresRoot(t)
	const tree = "/etc/cri-conformance/certs.d"
	kitRegistry := os.Getenv("REGISTRY_ADDR")
	if kitRegistry == "" {
		kitRegistry = "127.0.0.1:5000"
	}
	if _, err := os.Stat(filepath.Join(tree, "docker.io", "hosts.toml")); err != nil {
		t.Skip("conformance mirror tree not set up")
	}
	if c, err := net.DialTimeout("tcp", kitRegistry, time.Second); err != nil {
		t.Skip("conformance registry not running")
	} else {
		c.Close()
	}
	t.Parallel()
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{Binaries: bins})
	if err := d.SetRegistryConfigPath(tree); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(16<<10))
	}
	ctx := context.Background()
	for _, ref := range []string{"busybox", "docker.io/library/busybox:1.36", "registry.k8s.io/e2e-test-images/busybox:1.29-2"} {
		id, err := d.Images.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil)
		if err != nil {
			t.Errorf("PullImage(%s): %v", ref, err)
			continue
		}
		st := imageStatus(t, d, ref)
		if st == nil || st.Id != id {
			t.Errorf("ImageStatus(%s) = %v, want id %s", ref, st, id)
		}
	}
	// a missing image names the mirror it tried.
	_, err := d.ImageClient.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "docker.io/library/no-such-image-berth:1"}})
	if err == nil || !strings.Contains(err.Error(), kitRegistry) {
		t.Errorf("pull of a missing image: %v", err)
	}
}

// TestImageLoad imports a docker save tar with `berthd image load` while
// berthd is stopped (on the store directly), then another while it runs
// (through its admin socket): both are listed and runnable.
func TestImageLoad(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	archive := func(ref, env string) (string, v1.Hash) {
		t.Helper()
		img, err := testutil.NewImage(testutil.ImageSpec{Env: []string{"LOADED=" + env}})
		if err != nil {
			t.Fatal(err)
		}
		tag, _ := name.NewTag(ref)
		p := filepath.Join(t.TempDir(), "img.tar")
		if err := tarball.MultiRefWriteToFile(p, map[name.Reference]v1.Image{tag: img}); err != nil {
			t.Fatal(err)
		}
		id, _ := img.ConfigName()
		return p, id
	}
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{Binaries: bins})
	load := func(archive string) {
		t.Helper()
		out, err := exec.Command(bins.Berthd, "image", "load", "--config", d.ConfigPath, archive).CombinedOutput()
		if err != nil {
			t.Fatalf("berthd image load: %v\n%s", err, out)
		}
	}
	offline, offlineID := archive("offline.example/berth/loaded:1", "offline")
	load(offline)
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(16<<10))
	}
	online, onlineID := archive("offline.example/berth/loaded-live:1", "live")
	off := logLen(t, d)
	load(online)
	waitLog(t, d, off, regexp.MustCompile(`(image loaded.*loaded-live)`), 5*time.Second)

	imgs, err := d.Images.ListImages(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, img := range imgs {
		for _, tag := range img.RepoTags {
			listed[tag] = isID(img.Id, offlineID) || isID(img.Id, onlineID)
		}
	}
	podCfg := podConfig(t, d, "loaded")
	pod := runPod(t, d, podCfg)
	defer removePod(t, d, pod)
	for ref, want := range map[string]string{"offline.example/berth/loaded:1": "offline", "offline.example/berth/loaded-live:1": "live"} {
		if !listed[ref] {
			t.Errorf("ListImages has no %s with its loaded id: %v", ref, imgs)
		}
		name := strings.NewReplacer(".", "-", "/", "-", ":", "-").Replace(ref)
		cst, stdout, _ := runToExit(t, d, pod, podCfg, ctrConfig(name, ref, "sh", "-c", "echo $LOADED"))
		if cst.GetExitCode() != 0 || stdout != want+"\n" {
			t.Errorf("container from %s: exit %d, stdout %q, want %q", ref, cst.GetExitCode(), stdout, want)
		}
	}
}
