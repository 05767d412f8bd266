package testutil

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is Debian's busybox-static, the only binary in every test image.
const BusyboxPath = "/bin/busybox"

// DefaultPath is the PATH of every test image.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BaseMarker is a file of the busybox layer that AppLayer-built images can
// white out, so a test can see that whiteouts are honoured.
const BaseMarker = "/etc/berth-base"

// Applets are the busybox applets linked into /bin of the base layer.
var Applets = []string{
	"[", "ash", "awk", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dd",
	"df", "dirname", "echo", "env", "expr", "false", "find", "grep", "head", "hostname",
	"id", "ip", "kill", "ln", "ls", "mkdir", "mount", "mv", "nc", "nproc", "printf",
	"ps", "pwd", "readlink", "rm", "rmdir", "sed", "seq", "sh", "sleep", "sort", "stat",
	"sync", "tail", "tee", "test", "timeout", "touch", "tr", "true", "uname", "wc",
	"whoami", "xargs", "yes", "httpd", "wget",
}

// fixedTime keeps layer tarballs byte-identical between builds, so every image
// built from the base layer shares it (same digest, same chain ID).
var fixedTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const passwd = `root:x:0:0:root:/root:/bin/sh
berth:x:1000:1000:berth:/home/berth:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`

const group = `root:x:0:
berth:x:1000:
nogroup:x:65534:
`

// File is one entry of a test layer.
type File struct {
	Path     string // absolute path inside the image
	Body     string // content of a regular file
	Mode     int64  // permission bits; 0 means 0644 (0755 for dirs)
	Dir      bool
	Symlink  string // target: the entry is a symlink
	Whiteout bool   // the entry is an OCI whiteout of Path
	UID, GID int
}

// BusyboxLayer is the base layer: /bin/busybox with applet symlinks, /etc/passwd
// and /etc/group (root 0, berth 1000:1000, nobody 65534), /tmp, /home/berth and
// BaseMarker.
func BusyboxLayer() (v1.Layer, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox-static: %w", err)
	}
	files := []File{
		{Path: "/bin", Dir: true},
		{Path: "/bin/busybox", Body: string(bb), Mode: 0o755},
		{Path: "/dev", Dir: true},
		{Path: "/etc", Dir: true},
		{Path: "/etc/passwd", Body: passwd},
		{Path: "/etc/group", Body: group},
		{Path: BaseMarker, Body: "base\n"},
		{Path: "/home", Dir: true},
		{Path: "/home/berth", Dir: true, UID: 1000, GID: 1000},
		{Path: "/proc", Dir: true},
		{Path: "/root", Dir: true, Mode: 0o700},
		{Path: "/sys", Dir: true},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
		{Path: "/usr", Dir: true},
		{Path: "/usr/bin", Dir: true},
		{Path: "/var", Dir: true},
	}
	for _, a := range Applets {
		files = append(files, File{Path: "/bin/" + a, Symlink: "busybox"})
	}
	return NewLayer(files)
}

// NewLayer builds a gzip-compressed OCI layer holding files, in their order.
func NewLayer(files []File) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := writeEntry(tw, f); err != nil {
			return nil, fmt.Errorf("layer entry %q: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close layer tar: %w", err)
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

func writeEntry(tw *tar.Writer, f File) error {
	name := f.Path[1:] // tar entries are relative
	hdr := &tar.Header{Name: name, ModTime: fixedTime, Uid: f.UID, Gid: f.GID, Format: tar.FormatPAX}
	switch {
	case f.Whiteout:
		hdr.Name = path.Join(path.Dir(name), ".wh."+path.Base(name))
		hdr.Typeflag, hdr.Mode = tar.TypeReg, 0o644
	case f.Dir:
		hdr.Name += "/"
		hdr.Typeflag, hdr.Mode = tar.TypeDir, orMode(f.Mode, 0o755)
	case f.Symlink != "":
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Symlink, 0o777
	default:
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, orMode(f.Mode, 0o644), int64(len(f.Body))
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
		_, err := io.WriteString(tw, f.Body)
		return err
	}
	return nil
}

func orMode(m, def int64) int64 {
	if m == 0 {
		return def
	}
	return m
}

// ImageSpec describes a test image: the busybox base layer, extra layers on
// top, and the config fields tests look at.
type ImageSpec struct {
	Extra      []v1.Layer // layers above the busybox layer
	Entrypoint []string
	Cmd        []string // nil means ["sh"]
	Env        []string // appended to DefaultPath
	User       string
	WorkingDir string
	StopSignal string
	Arch       string // default amd64
	// Docker uses Docker schema 2 media types instead of OCI ones.
	Docker bool
}

// NewImage builds the image described by spec on top of BusyboxLayer.
func NewImage(spec ImageSpec) (v1.Image, error) {
	base, err := BusyboxLayer()
	if err != nil {
		return nil, err
	}
	cmd := spec.Cmd
	if cmd == nil {
		cmd = []string{"sh"}
	}
	arch := spec.Arch
	if arch == "" {
		arch = "amd64"
	}
	cfg := &v1.ConfigFile{
		Architecture: arch,
		OS:           "linux",
		Created:      v1.Time{Time: fixedTime},
		Config: v1.Config{
			Entrypoint: spec.Entrypoint,
			Cmd:        cmd,
			Env:        append([]string{DefaultPath}, spec.Env...),
			User:       spec.User,
			WorkingDir: spec.WorkingDir,
			StopSignal: spec.StopSignal,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("set image config: %w", err)
	}
	manifestType, configType := types.OCIManifestSchema1, types.OCIConfigJSON
	if spec.Docker {
		manifestType, configType = types.DockerManifestSchema2, types.DockerConfigJSON
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, manifestType), configType)
	layers := append([]v1.Layer{base}, spec.Extra...)
	adds := make([]mutate.Addendum, 0, len(layers))
	for _, l := range layers {
		if spec.Docker {
			l = dockerLayer{l}
		}
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: fixedTime}}})
	}
	img, err = mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	return img, nil
}

// dockerLayer relabels a layer with the Docker schema 2 layer media type.
type dockerLayer struct{ v1.Layer }

func (dockerLayer) MediaType() (types.MediaType, error) { return types.DockerLayer, nil }

// Index builds an OCI image index of imgs, each under its config's platform.
func Index(imgs ...v1.Image) (v1.ImageIndex, error) {
	adds := make([]mutate.IndexAddendum, 0, len(imgs))
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("read image config: %w", err)
		}
		adds = append(adds, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture}},
		})
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	return mutate.AppendManifests(idx, adds...), nil
}

// ChainIDs returns the OCI chain ID of every layer prefix of img, bottom up.
func ChainIDs(img v1.Image) ([]v1.Hash, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	var ids []v1.Hash
	for i, d := range cf.RootFS.DiffIDs {
		if i == 0 {
			ids = append(ids, d)
			continue
		}
		h, _, err := v1.SHA256(bytes.NewReader([]byte(ids[i-1].String() + " " + d.String())))
		if err != nil {
			return nil, err
		}
		ids = append(ids, h)
	}
	return ids, nil
}
