package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// missingRepo is the repository, in the kit's registry, of the image the
// missing-image pod runs: unique per run, pushed only once the pod waits.
func (e *env) missingRepo() string {
	return "e2e-test-images/berth-missing-" + strings.TrimPrefix(e.ns, "berth-kubelet-")
}

// missingImage is how the pod names it: registry.k8s.io, which the mirror
// tree sends to the kit's registry.
func (e *env) missingImage() string { return "registry.k8s.io/" + e.missingRepo() + ":1.0" }

func (e *env) missingPod() pod {
	c := shell("app", markerOf("missing", "app"), live)
	c.Image = e.missingImage()
	return newPod(e.ns, "missing", 2, c)
}

// checkMissingImage: the pod waits in image pull back-off with its sandbox
// and nothing else, retries, and starts once the image is pushed.
func (e *env) checkMissingImage(t *testing.T) {
	var reason string
	waiting := func() bool {
		p, ok := e.k.pod(e.ns, "missing")
		if !ok {
			return false
		}
		c, ok := p.container("app")
		if ok && c.State.Waiting != nil {
			reason = c.State.Waiting.Reason
		}
		return reason == "ErrImagePull" || reason == "ImagePullBackOff"
	}
	if _, err := waitFor(time.Minute, "missing/app in image pull back-off", waiting); err != nil {
		t.Fatalf("%v:%s", err, e.describe("missing"))
	}
	sb1, ctrs := e.snapshot(t).podObjects("missing")
	if len(sb1) != 1 || len(ctrs) != 0 {
		t.Errorf("waiting for its image, the pod has sandboxes %v and containers %v in berthd, want one sandbox and no container", sb1, ctrs)
	}
	// kubelet retries after 10s of back-off: nothing may pile up meanwhile.
	time.Sleep(12 * time.Second)
	sb2, ctrs := e.snapshot(t).podObjects("missing")
	if len(sb2) != 1 || len(sb1) != 1 || sb2[0] != sb1[0] || len(ctrs) != 0 {
		t.Errorf("after a pull retry the pod has sandboxes %v (was %v) and containers %v, want the same sandbox and no container", sb2, sb1, ctrs)
	}
	if p, _ := e.k.pod(e.ns, "missing"); p.Status.Phase != "Pending" {
		t.Errorf("pod phase %q while its image is missing, want Pending", p.Status.Phase)
	}
	e.pushMissing(t)
	pushed := time.Now()
	// The next retry comes after at most 20s of back-off (10s, doubled).
	if _, err := waitFor(90*time.Second, "missing Running and Ready once its image was pushed", func() bool {
		p, ok := e.k.pod(e.ns, "missing")
		return ok && p.ready()
	}); err != nil {
		t.Fatalf("%v:%s", err, e.describe("missing"))
	}
	t.Logf("pod started %s after its image was pushed", time.Since(pushed).Round(time.Second))
	if sb, _ := e.snapshot(t).podObjects("missing"); len(sb) != 1 || len(sb1) != 1 || sb[0] != sb1[0] {
		t.Errorf("the pod runs in sandboxes %v, want the one it waited in %v", sb, sb1)
	}
}

// pushMissing copies the kit's busybox to the missing image's repository
// and registers its removal (manifest deleted through the registry API,
// then the repository's directory, so the kit's catalog does not grow).
func (e *env) pushMissing(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := name.ParseReference(kitRegistry+"/e2e-test-images/busybox:1.29-2", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.ParseReference(kitRegistry+"/"+e.missingRepo()+":1.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(src, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("get %s: %v", src, err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err == nil {
			err = remote.WriteIndex(dst, idx, remote.WithContext(ctx))
		}
		if err != nil {
			t.Fatalf("push %s: %v", dst, err)
		}
	} else {
		img, err := desc.Image()
		if err == nil {
			err = remote.Write(dst, img, remote.WithContext(ctx))
		}
		if err != nil {
			t.Fatalf("push %s: %v", dst, err)
		}
	}
	t.Cleanup(func() {
		d := dst.Context().Digest(desc.Digest.String())
		if err := remote.Delete(d); err != nil {
			t.Errorf("delete %s from the kit registry: %v", d, err)
		}
		dir := filepath.Join(regData, "docker/registry/v2/repositories", e.missingRepo())
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
}
