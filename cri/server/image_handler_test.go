package server

import (
	"context"
	"testing"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/config"
)

// ImageSpec.runtime_handler (kubelet's RuntimeClassInImageCriApi): a
// configured handler pulls into the one store every handler runs from;
// an unknown one is refused before anything is pulled, as the CRI says.
func TestImageRuntimeHandler(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	ts.cfg.Runtime.DefaultHandler = "runc"
	ts.cfg.Runtime.Handlers = map[string]config.Handler{"runc": {Binary: "runc"}, "crun": {Binary: "crun"}}
	bad := &runtime.ImageSpec{Image: testImage, RuntimeHandler: "nope"}
	_, err := ts.PullImage(ctx, &runtime.PullImageRequest{Image: bad})
	wantErr(t, err, errdefs.IsInvalidArgument, "InvalidArgument for an unknown handler")
	if ts.images.has("pull " + testImage) {
		t.Errorf("an unknown handler's pull reached the store: %v", ts.images.all())
	}
	_, err = ts.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: bad})
	wantErr(t, err, errdefs.IsInvalidArgument, "InvalidArgument from ImageStatus")
	_, err = ts.RemoveImage(ctx, &runtime.RemoveImageRequest{Image: bad})
	wantErr(t, err, errdefs.IsInvalidArgument, "InvalidArgument from RemoveImage")

	spec := &runtime.ImageSpec{Image: testImage, RuntimeHandler: "crun"}
	pulled, err := ts.PullImage(ctx, &runtime.PullImageRequest{Image: spec, SandboxConfig: podConfig("web")})
	if err != nil {
		t.Fatal(err)
	}
	// Pulled for crun, the image is there for the default handler too.
	st, err := ts.ImageStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: testImage}})
	if err != nil || st.GetImage().GetId() != pulled.GetImageRef() {
		t.Fatalf("ImageStatus for the default handler = %v, %v", st, err)
	}
	list, err := ts.ListImages(ctx, &runtime.ListImagesRequest{})
	if err != nil || len(list.GetImages()) != 1 {
		t.Fatalf("ListImages = %v, %v", list, err)
	}
	if h := list.GetImages()[0].GetSpec().GetRuntimeHandler(); h != "" {
		t.Errorf("image listed with handler %q; containers name none, so kubelet's GC keys would differ", h)
	}
}
