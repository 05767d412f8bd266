package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestPinnedImages: images named in registry.pinned_images (by tag or by
// digest) report pinned in ImageStatus and ListImages, others do not, and
// RemoveImage still removes a pinned image, as containerd does.
func TestPinnedImages(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{Binaries: bins, InsecureHosts: []string{reg.Host}})
	cfg, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	pinned := fmt.Sprintf("[registry]\npinned_images = [%q, %q]\n", images.Busybox.Ref, images.Docker.DigestRef)
	if !strings.Contains(string(cfg), "[registry]\n") {
		t.Fatal("config has no [registry] table")
	}
	if err := os.WriteFile(d.ConfigPath, []byte(strings.Replace(string(cfg), "[registry]\n", pinned, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(32<<10))
	}
	ctx := context.Background()
	want := map[string]bool{ // image ID -> pinned
		images.Busybox.ConfigDigest.String():    true,
		images.Docker.ConfigDigest.String():     true, // pinned by digest, pulled by tag
		images.Entrypoint.ConfigDigest.String(): false,
	}
	for _, ref := range []string{images.Busybox.Ref, images.Docker.Ref, images.Entrypoint.Ref} {
		ensureImage(t, d, ref)
		st, err := d.Images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, true)
		if err != nil || st.GetImage() == nil {
			t.Fatalf("ImageStatus(%s): %v %v", ref, st, err)
		}
		if got := st.GetImage().GetPinned(); got != want[st.GetImage().GetId()] {
			t.Errorf("ImageStatus(%s).pinned = %v", ref, got)
		}
		if info := st.GetInfo()["info"]; !strings.Contains(info, fmt.Sprintf(`"pinned":%v`, want[st.GetImage().GetId()])) {
			t.Errorf("verbose info of %s does not say pinned=%v: %s", ref, want[st.GetImage().GetId()], info)
		}
	}
	list, err := d.Images.ListImages(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, img := range list {
		if p, ok := want[img.GetId()]; ok {
			seen++
			if img.GetPinned() != p {
				t.Errorf("ListImages: %v pinned = %v, want %v", img.GetRepoTags(), img.GetPinned(), p)
			}
		}
	}
	if seen != len(want) {
		t.Errorf("ListImages has %d of the %d images", seen, len(want))
	}
	// kubelet's GC skips pinned images; an explicit RemoveImage removes them.
	if err := d.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: images.Busybox.Ref}); err != nil {
		t.Fatalf("RemoveImage of a pinned image: %v", err)
	}
	if st, err := d.Images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: images.Busybox.Ref}, false); err != nil || st.GetImage() != nil {
		t.Errorf("pinned image still there after RemoveImage: %v %v", st.GetImage(), err)
	}
	testutil.AssertNoLeaks(t, d)
}
