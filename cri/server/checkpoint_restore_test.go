package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/checkpoint"
	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/imagesvc"
)

func TestCheckRestoreImage(t *testing.T) {
	img := imagesvc.Image{
		ID:          "sha256:c",
		RepoTags:    []string{"registry.example:5000/ckpt/counter:v1"},
		RepoDigests: []string{"registry.example:5000/ckpt/counter@sha256:" + strings.Repeat("a", 64)},
	}
	hub := imagesvc.Image{ID: "sha256:h", RepoTags: []string{"docker.io/library/ckpt:v1"}}
	for _, tc := range []struct {
		name string
		rt   config.Runtime
		img  imagesvc.Image
		want error // nil: allowed
		key  string
	}{
		{"default config", config.Default().Runtime, img, errdefs.ErrFailedPrecondition, "runtime.restore_from_images"},
		{"off with an allow-list", config.Runtime{RestoreImageRegistries: []string{"registry.example:5000"}}, img, errdefs.ErrFailedPrecondition, "runtime.restore_from_images"},
		{"on, empty allow-list", config.Runtime{RestoreFromImages: true}, img, errdefs.ErrPermissionDenied, "runtime.restore_image_registries"},
		{"on, other registry", config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"registry.example", "other:5000"}}, img, errdefs.ErrPermissionDenied, "runtime.restore_image_registries"},
		{"on, allowed", config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"other", "REGISTRY.example:5000"}}, img, nil, ""},
		{"docker hub short name", config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"docker.io"}}, hub, nil, ""},
		{"no names", config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"docker.io"}}, imagesvc.Image{ID: "sha256:n"}, errdefs.ErrPermissionDenied, "runtime.restore_image_registries"},
	} {
		err := checkRestoreImage(tc.rt, "ckpt", tc.img)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: %v, want allowed", tc.name, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		case tc.want != nil && !strings.Contains(err.Error(), tc.key):
			t.Errorf("%s: %v does not name %s", tc.name, err, tc.key)
		}
	}
}

// storeImages is an image store holding imgs, for what a restore asks of
// it (Get); any other call is a test bug.
type storeImages struct {
	Images
	imgs []imagesvc.Image
}

func (f storeImages) Get(_ context.Context, ref string) (imagesvc.Image, error) {
	for _, img := range f.imgs {
		if img.ID == ref || slices.Contains(img.RepoTags, ref) {
			return img, nil
		}
	}
	return imagesvc.Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}

func TestCheckBaseImage(t *testing.T) {
	s := &Server{
		cfg: config.Config{Runtime: config.Runtime{RestoreFromImages: true, RestoreImageRegistries: []string{"good.example"}}},
		images: storeImages{imgs: []imagesvc.Image{
			{ID: "sha256:b", RepoTags: []string{"good.example/busybox:1"}},
			{ID: "sha256:p", RepoTags: []string{"private.example/secret:1"}},
		}},
	}
	ctx := context.Background()
	for _, tc := range []struct {
		ref       string
		wantID    string
		fromImage bool
		want      error
	}{
		{"good.example/busybox:1", "", true, nil},
		{"good.example/busybox:1", "", false, nil},
		{"good.example/busybox:1", "sha256:b", false, nil},
		// Another image under the checkpoint's name: its diff would
		// apply to content it was not taken on.
		{"good.example/busybox:1", "sha256:other", false, errdefs.ErrFailedPrecondition},
		{"private.example/secret:1", "", false, nil},
		{"private.example/secret:1", "", true, errdefs.ErrPermissionDenied},
		{"good.example/absent:1", "", true, errdefs.ErrFailedPrecondition},
		{"good.example/absent:1", "", false, errdefs.ErrFailedPrecondition},
	} {
		_, err := s.checkBaseImage(ctx, tc.ref, tc.wantID, tc.fromImage)
		if tc.want == nil && err != nil || tc.want != nil && (!errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.ref)) {
			t.Errorf("checkBaseImage(%q, %q, fromImage=%v) = %v, want %v naming the image", tc.ref, tc.wantID, tc.fromImage, err, tc.want)
		}
	}
}

// TestCheckCheckpointSpec: what a checkpoint's spec.dump records and the
// restoring request would not give is refused before CRIU runs, naming it.
func TestCheckCheckpointSpec(t *testing.T) {
	bind := func(dst string) specs.Mount { return specs.Mount{Destination: dst, Type: "bind", Source: "/x" + dst} }
	base := func() *checkpoint.Checkpoint {
		return &checkpoint.Checkpoint{Spec: specs.Spec{
			Process: &specs.Process{Args: []string{"sh"}},
			Mounts: []specs.Mount{
				{Destination: "/proc", Type: "proc"}, bind("/etc/hosts"), bind("/etc/resolv.conf"),
				bind("/etc/hostname"), bind("/dev/shm"), bind("/data"), bind("/cache"),
			},
			Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/proc/1/ns/net"}}},
		}}
	}
	req := func() *runtime.ContainerConfig {
		return &runtime.ContainerConfig{Mounts: []*runtime.Mount{{ContainerPath: "/data/", HostPath: "/vol"}}}
	}
	imageVolumes := map[string]struct{}{"cache": {}}
	if err := checkCheckpointSpec(req(), base(), imageVolumes); err != nil {
		t.Fatalf("matching checkpoint refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*checkpoint.Checkpoint, *runtime.ContainerConfig)
		want   error
		names  string
	}{
		{"volume missing", func(c *checkpoint.Checkpoint, r *runtime.ContainerConfig) { r.Mounts = nil }, errdefs.ErrFailedPrecondition, `"/data"`},
		{"image volume not the image's", func(c *checkpoint.Checkpoint, r *runtime.ContainerConfig) {
			c.Spec.Mounts = append(c.Spec.Mounts, bind("/other"))
		}, errdefs.ErrFailedPrecondition, `"/other"`},
		{"terminal", func(c *checkpoint.Checkpoint, r *runtime.ContainerConfig) { c.Spec.Process.Terminal = true }, errdefs.ErrNotImplemented, "terminal"},
		{"shared PID namespace", func(c *checkpoint.Checkpoint, r *runtime.ContainerConfig) {
			c.Spec.Linux.Namespaces[0].Path = "/proc/42/ns/pid"
		}, errdefs.ErrNotImplemented, "/proc/42/ns/pid"},
		{"device", func(c *checkpoint.Checkpoint, r *runtime.ContainerConfig) {
			c.Spec.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/fuse"}}
		}, errdefs.ErrFailedPrecondition, "/dev/fuse"},
	} {
		c, r := base(), req()
		tc.change(c, r)
		err := checkCheckpointSpec(r, c, imageVolumes)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("%s: %v, want %v naming %s", tc.name, err, tc.want, tc.names)
		}
	}
	// A device the request gives is fine.
	c, r := base(), req()
	c.Spec.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/fuse"}}
	r.Devices = []*runtime.Device{{ContainerPath: "/dev/fuse", HostPath: "/dev/fuse"}}
	if err := checkCheckpointSpec(r, c, imageVolumes); err != nil {
		t.Errorf("device given by the request: %v", err)
	}
}

// TestRestoreConfigContainerdIdentity: a containerd archive's container
// name, attempt, labels and annotations (status.dump's) become the
// restored container's when the request leaves them out, never
// containerd's internal name from config.dump.
func TestRestoreConfigContainerdIdentity(t *testing.T) {
	ckpt := &checkpoint.Checkpoint{
		Config: checkpoint.ContainerConfig{Name: "counter_pod_ns_uid_0", RootfsImageName: "reg/busybox:latest"},
		Spec:   specs.Spec{Process: &specs.Process{Args: []string{"sh", "-c", "count"}, Cwd: "/", Env: []string{"A=b"}}},
		Container: checkpoint.Identity{Origin: checkpoint.OriginContainerd, Name: "counter", Attempt: 3,
			Labels: map[string]string{"app": "count"}, Annotations: map[string]string{"k": "v"}},
	}
	req := &runtime.ContainerConfig{Linux: &runtime.LinuxContainerConfig{SecurityContext: &runtime.LinuxContainerSecurityContext{
		NamespaceOptions: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER},
	}}}
	cfg, err := restoreConfig(req, ckpt)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GetMetadata().GetName() != "counter" || cfg.GetMetadata().GetAttempt() != 3 ||
		cfg.Labels["app"] != "count" || cfg.Annotations["k"] != "v" || cfg.GetImage().GetImage() != "reg/busybox:latest" {
		t.Errorf("restore config = %v", cfg)
	}
	// The identity map is not shared with the config (which the store keeps).
	cfg.Labels["app"] = "changed"
	if ckpt.Container.Labels["app"] != "count" {
		t.Error("restoreConfig shares the checkpoint's label map")
	}
}
