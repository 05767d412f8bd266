package checkpoint

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// berthDir is a dump as berth writes it, with a writable layer.
func berthDir(t *testing.T) string {
	t.Helper()
	dir := dumpDir(t)
	spec := specs.Spec{
		Version: "1.2.1",
		Process: &specs.Process{Args: []string{"sh"}},
		Root:    &specs.Root{Path: "/run/berth/containers/x/rootfs"},
		Hooks:   &specs.Hooks{Poststop: []specs.Hook{{Path: "/old/node/bin"}}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: "/run/berth/sandboxes/p/hosts"},
			{Destination: "/data", Type: "bind", Source: "/var/lib/vol"},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/berth/pod/x",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: "/run/berth/netns/p"},
				{Type: specs.IPCNamespace, Path: "/run/berth/ipcns/p"},
			},
		},
	}
	if err := WriteJSON(dir, SpecDumpFile, spec); err != nil {
		t.Fatal(err)
	}
	diff := layerDiff(t, tarEntry{name: "marker", body: "migrated\n"}, tarEntry{name: "etc/", dir: true})
	if err := os.WriteFile(filepath.Join(dir, RootFsDiffTar), diff, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(dir, DeletedFilesFile, []string{"/etc/berth-base"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestWriteContainerdImage(t *testing.T) {
	c, err := Open(berthDir(t))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "layout")
	o := ContainerdImageOptions{NetNS: "/var/run/netns/cni-1", Binds: map[string]string{"/etc/hosts": "/ctd/pod/hosts"}, CgroupsPath: "/kubepods/x"}
	if err := c.WriteContainerdImage(context.Background(), out, "ckpt:v1", o); err != nil {
		t.Fatal(err)
	}
	var top ocispec.Index
	readLayoutJSON(t, filepath.Join(out, "index.json"), &top)
	if len(top.Manifests) != 1 || top.Manifests[0].Annotations[ocispec.AnnotationRefName] != "ckpt:v1" {
		t.Fatalf("layout index = %+v", top)
	}
	var idx ocispec.Index
	readLayoutJSON(t, layoutBlob(out, top.Manifests[0]), &idx)
	if idx.Annotations[ocispec.AnnotationRefName] != "busybox" || idx.Annotations[ctrdCheckpointRuntimeLabel] != "io.containerd.runc.v2" ||
		idx.Annotations[ctrdCheckpointSnapshotterLabel] != "overlayfs" {
		t.Errorf("index annotations = %v", idx.Annotations)
	}
	byType := map[string]ocispec.Descriptor{}
	for _, d := range idx.Manifests {
		byType[d.MediaType] = d
	}

	// The CRIU images, as a tar of the checkpoint directory's files.
	names := tarNames(t, layoutBlob(out, byType[MediaTypeContainerdCheckpoint]), false)
	if !slices.Contains(names, inventoryImage) || !slices.Contains(names, "pages-1.img") {
		t.Errorf("CRIU tar holds %v", names)
	}
	// The writable layer: the diff's files and a whiteout per deletion.
	names = tarNames(t, layoutBlob(out, byType[ocispec.MediaTypeImageLayerGzip]), true)
	if !slices.Contains(names, "marker") || !slices.Contains(names, "etc/.wh.berth-base") {
		t.Errorf("layer holds %v", names)
	}
	// The spec, as containerd stores a container's: a protobuf Any.
	data, err := os.ReadFile(layoutBlob(out, byType[MediaTypeContainerdCheckpointConfig]))
	if err != nil {
		t.Fatal(err)
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil || a.TypeUrl != ctrdSpecTypeURL {
		t.Fatalf("spec blob: %v, type %q", err, a.TypeUrl)
	}
	var spec specs.Spec
	if err := json.Unmarshal(a.Value, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Root.Path != "rootfs" || spec.Hooks != nil || spec.Linux.CgroupsPath != "/kubepods/x" {
		t.Errorf("spec root %v, hooks %v, cgroup %q", spec.Root, spec.Hooks, spec.Linux.CgroupsPath)
	}
	for _, ns := range spec.Linux.Namespaces {
		want := ""
		if ns.Type == specs.NetworkNamespace {
			want = o.NetNS
		}
		if ns.Path != want {
			t.Errorf("%s namespace path %q, want %q", ns.Type, ns.Path, want)
		}
	}
	for _, m := range spec.Mounts {
		if m.Destination == "/etc/hosts" && m.Source != "/ctd/pod/hosts" || m.Destination == "/data" && m.Source != "/var/lib/vol" {
			t.Errorf("mount %s from %s", m.Destination, m.Source)
		}
	}
	// The checkpoint's own spec is untouched.
	if c.Spec.Linux.Namespaces[2].Path != "/run/berth/netns/p" {
		t.Error("WriteContainerdImage changed the checkpoint's spec")
	}
}

func TestWriteContainerdImageRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    ContainerdImageOptions
		edit func(*Checkpoint)
		want error
	}{
		{"no netns", ContainerdImageOptions{}, nil, errdefs.ErrInvalidArgument},
		{"bind not in the checkpoint", ContainerdImageOptions{NetNS: "/n", Binds: map[string]string{"/nowhere": "/x"}}, nil, errdefs.ErrInvalidArgument},
		{"terminal", ContainerdImageOptions{NetNS: "/n"}, func(c *Checkpoint) { c.Spec.Process.Terminal = true }, errdefs.ErrNotImplemented},
		{"shared PID", ContainerdImageOptions{NetNS: "/n"}, func(c *Checkpoint) { c.Spec.Linux.Namespaces[0].Path = "/proc/1/ns/pid" }, errdefs.ErrNotImplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(berthDir(t))
			if err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(c)
			}
			out := filepath.Join(t.TempDir(), "layout")
			if err := c.WriteContainerdImage(context.Background(), out, "x", tc.o); !errors.Is(err, tc.want) {
				t.Errorf("WriteContainerdImage = %v, want %v", err, tc.want)
			}
			if _, err := os.Lstat(out); err == nil {
				t.Error("a refused export left its output directory")
			}
		})
	}
}

func readLayoutJSON(t *testing.T, p string, v any) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

func layoutBlob(dir string, d ocispec.Descriptor) string {
	return filepath.Join(dir, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded())
}

func tarNames(t *testing.T, p string, gz bool) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}
