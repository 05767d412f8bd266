package specgen

import (
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestExtraMounts(t *testing.T) {
	iv := &runtime.Mount{ContainerPath: "/iv/", Image: &runtime.ImageSpec{Image: "img"}}
	prepared := []specs.Mount{
		{Destination: "/iv", Type: "bind", Source: "/b/imagevols/0", Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/data", Type: "bind", Source: "/v/data", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/covered", Type: "bind", Source: "/v/covered", Options: []string{"rbind", "rprivate", "rw"}},
	}
	in := baseInput()
	in.Config.Mounts = []*runtime.Mount{iv, {ContainerPath: "/covered", HostPath: "/srv/c"}}
	in.ExtraMounts = prepared
	s, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	for dst, src := range map[string]string{"/iv": "/b/imagevols/0", "/data": "/v/data", "/covered": "/srv/c"} {
		m, i := findMount(s, dst)
		if i < 0 || m.Source != src || countDest(s, dst) != 1 {
			t.Errorf("mount at %s = %+v (%d of them), want source %s", dst, m, countDest(s, dst), src)
		}
	}
	// an image volume cri did not prepare is still refused.
	in = baseInput()
	in.Config.Mounts = []*runtime.Mount{iv}
	if _, err := Generate(in); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("unprepared image volume: %v", err)
	}
}
