package checkpoint

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/berth-runtime/berth/imagesvc/unpack"
)

// containerd's checkpoint image (client.Container.Checkpoint, restored by
// client.Restore and `ctr containers restore --live --rw`): an OCI index
// whose entries are the CRIU images as a tar, the container's spec as a
// protobuf Any, and the writable layer as a gzip layer diff; annotations
// on the index name the base image, runtime and snapshotter.
const (
	MediaTypeContainerdCheckpoint       = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
	MediaTypeContainerdCheckpointConfig = "application/vnd.containerd.container.checkpoint.config.v1+proto"
	ctrdCheckpointRuntimeLabel          = "io.containerd.checkpoint.runtime"
	ctrdCheckpointSnapshotterLabel      = "io.containerd.checkpoint.snapshotter"
	// ctrdSpecTypeURL is the type URL containerd registers the OCI spec
	// under (core/runtime/typeurl.go).
	ctrdSpecTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
)

// ContainerdImageOptions say where on the containerd node the restored
// container runs: what a checkpoint records of its old node (the pod's
// namespace pins, its files, its cgroup) does not exist there.
type ContainerdImageOptions struct {
	// NetNS is the network namespace to restore into (a pinned path,
	// such as a pod's). CRIU restores the process into the namespace it
	// is given, never a new one: required.
	NetNS string
	// Binds replace the sources of the checkpoint's bind mounts, by
	// destination (the pod's /etc/hosts, /etc/resolv.conf, volumes):
	// CRIU restores each one onto a mount of the same destination. A
	// bind mount without a replacement keeps its source, which must
	// then exist on the containerd node.
	Binds map[string]string
	// CgroupsPath is the restored container's cgroup; empty leaves the
	// choice to the runtime.
	CgroupsPath string
	// Runtime and Snapshotter are containerd's names; empty: runc's shim
	// and overlayfs.
	Runtime, Snapshotter string
}

// WriteContainerdImage writes the checkpoint as containerd's checkpoint
// image, into an OCI image layout at dir (which must not exist), tagged
// ref. Push it to a registry with any OCI tool; containerd restores it
// with `ctr containers restore --live --rw ID REF`, its base image pulled
// on that node first. On failure dir is removed.
func (c *Checkpoint) WriteContainerdImage(ctx context.Context, dir, ref string, o ContainerdImageOptions) (retErr error) {
	if o.NetNS == "" {
		return fmt.Errorf("containerd checkpoint image: a network namespace to restore into is required (CRIU restores the process into the one it is given): %w", errdefs.ErrInvalidArgument)
	}
	if o.Runtime == "" {
		o.Runtime = "io.containerd.runc.v2"
	}
	if o.Snapshotter == "" {
		o.Snapshotter = "overlayfs"
	}
	base := c.Config.RootfsImageName
	if base == "" {
		return fmt.Errorf("containerd checkpoint image: the checkpoint names no base image: %w", errdefs.ErrInvalidArgument)
	}
	spec, err := c.containerdSpec(o)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("containerd checkpoint image: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	l := &layoutWriter{dir: dir}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o700); err != nil {
		return err
	}
	platform := &ocispec.Platform{OS: "linux", Architecture: goruntime.GOARCH}
	criu, err := l.blob(MediaTypeContainerdCheckpoint, func(w io.Writer) error {
		return tarTree(ctx, w, c.Images(), nil)
	})
	if err != nil {
		return fmt.Errorf("containerd checkpoint image: CRIU images: %w", err)
	}
	criu.Platform = platform
	cfg, err := l.blob(MediaTypeContainerdCheckpointConfig, func(w io.Writer) error {
		data, err := proto.Marshal(&anypb.Any{TypeUrl: ctrdSpecTypeURL, Value: spec})
		if err == nil {
			_, err = w.Write(data)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("containerd checkpoint image: spec: %w", err)
	}
	rw, err := l.blob(ocispec.MediaTypeImageLayerGzip, func(w io.Writer) error { return c.writeLayerDiff(w) })
	if err != nil {
		return fmt.Errorf("containerd checkpoint image: writable layer: %w", err)
	}
	rw.Platform = platform
	index := ocispec.Index{
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{criu, cfg, rw},
		Annotations: map[string]string{
			ocispec.AnnotationRefName:      base,
			ctrdCheckpointRuntimeLabel:     o.Runtime,
			ctrdCheckpointSnapshotterLabel: o.Snapshotter,
		},
	}
	index.SchemaVersion = 2
	idx, err := l.jsonBlob(ocispec.MediaTypeImageIndex, index)
	if err != nil {
		return err
	}
	idx.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
	top := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{idx}}
	top.SchemaVersion = 2
	if err := writeFileJSON(filepath.Join(dir, "index.json"), top); err != nil {
		return err
	}
	return writeFileJSON(filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
}

// containerdSpec is spec.dump made to run on the containerd node: the
// bundle's rootfs, the network namespace and bind sources given, no
// namespace path of the old node (IPC and UTS are CRIU's to restore, as
// it dumped them), and no hooks (the old node's binaries).
func (c *Checkpoint) containerdSpec(o ContainerdImageOptions) ([]byte, error) {
	var spec specs.Spec
	// A deep copy: the checkpoint's spec is not changed.
	data, err := json.Marshal(c.Spec)
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	if err != nil {
		return nil, fmt.Errorf("copy spec: %w", err)
	}
	if spec.Process != nil && spec.Process.Terminal {
		return nil, fmt.Errorf("checkpoint of a container with a terminal: %w", errdefs.ErrNotImplemented)
	}
	spec.Root = &specs.Root{Path: "rootfs", Readonly: spec.Root != nil && spec.Root.Readonly}
	spec.Hooks = nil
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	spec.Linux.CgroupsPath = o.CgroupsPath
	for i, ns := range spec.Linux.Namespaces {
		switch {
		case ns.Type == specs.NetworkNamespace:
			spec.Linux.Namespaces[i].Path = o.NetNS
		case ns.Type == specs.PIDNamespace && ns.Path != "":
			return nil, fmt.Errorf("checkpoint of a container that joined PID namespace %q: CRIU needs the container's own: %w", ns.Path, errdefs.ErrNotImplemented)
		default:
			spec.Linux.Namespaces[i].Path = ""
		}
	}
	used := map[string]bool{}
	for i, m := range spec.Mounts {
		if src, ok := o.Binds[path.Clean(m.Destination)]; ok && m.Type == "bind" {
			spec.Mounts[i].Source = src
			used[path.Clean(m.Destination)] = true
		}
	}
	for dst := range o.Binds {
		if !used[path.Clean(dst)] {
			return nil, fmt.Errorf("no bind mount at %q in the checkpoint to give a source: %w", dst, errdefs.ErrInvalidArgument)
		}
	}
	return json.Marshal(&spec)
}

// writeLayerDiff writes the writable layer as an OCI layer diff, gzip
// compressed: rootfs-diff.tar's entries, then a whiteout for each path of
// deleted.files.
func (c *Checkpoint) writeLayerDiff(w io.Writer) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	f, err := openMember(filepath.Join(c.Dir, RootFsDiffTar))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		defer f.Close()
		r, err := unpack.Decompress(bufio.NewReader(f))
		if err != nil {
			return fmt.Errorf("%s: %w", RootFsDiffTar, err)
		}
		defer r.Close()
		tr := tar.NewReader(r)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read %s: %v: %w", RootFsDiffTar, err, errdefs.ErrInvalidArgument)
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return fmt.Errorf("read %s: %v: %w", RootFsDiffTar, err, errdefs.ErrInvalidArgument)
			}
		}
	}
	var deleted []string
	if hasMember(c.Dir, DeletedFilesFile) {
		if err := readJSON(c.Dir, DeletedFilesFile, &deleted); err != nil {
			return err
		}
	}
	for _, p := range deleted {
		dir, base := path.Split(path.Clean("/" + p))
		if base == "" || base == "." || base == ".." || strings.HasPrefix(base, ".wh.") {
			return fmt.Errorf("%s names %q: %w", DeletedFilesFile, p, errdefs.ErrInvalidArgument)
		}
		hdr := &tar.Header{Name: strings.TrimPrefix(path.Join(dir, ".wh."+base), "/"), Typeflag: tar.TypeReg, Mode: 0o600}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// layoutWriter writes blobs into an OCI image layout.
type layoutWriter struct{ dir string }

// blob writes what write produces as a blob of the layout and describes it.
func (l *layoutWriter) blob(mediaType string, write func(io.Writer) error) (ocispec.Descriptor, error) {
	tmp, err := os.CreateTemp(filepath.Join(l.dir, "blobs", "sha256"), ".tmp-")
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	dg := digest.SHA256.Digester()
	cw := &countingWriter{w: io.MultiWriter(tmp, dg.Hash())}
	bw := bufio.NewWriterSize(cw, 1<<20)
	if err := write(bw); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := bw.Flush(); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := tmp.Close(); err != nil {
		return ocispec.Descriptor{}, err
	}
	d := dg.Digest()
	if err := os.Rename(tmp.Name(), filepath.Join(l.dir, "blobs", "sha256", d.Encoded())); err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: cw.n}, nil
}

func (l *layoutWriter) jsonBlob(mediaType string, v any) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return l.blob(mediaType, func(w io.Writer) error { _, err := io.Copy(w, bytes.NewReader(data)); return err })
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeFileJSON(p string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}
