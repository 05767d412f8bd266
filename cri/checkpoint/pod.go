package checkpoint

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// A pod checkpoint is a directory (CheckpointPod's output_path) holding:
//
//	pod.dump            PodDump (JSON): the pod's config and what follows
//	containers/<n>.tar  one container archive per container, each in the
//	                    layout above (CRI-O's), restorable on its own
//	volumes/<n>.tar     the contents of each writable directory volume,
//	                    copied while the pod was frozen
const (
	PodDumpFile      = "pod.dump"
	PodContainersDir = "containers"
	PodVolumesDir    = "volumes"
	// PodDumpVersion is the layout version this package writes and reads.
	PodDumpVersion = 1
)

// PodDump describes a pod checkpoint. Config fields hold CRI messages in
// protojson, which this package does not interpret.
type PodDump struct {
	Version        int             `json:"version"`
	SandboxID      string          `json:"sandboxId"`
	Config         json.RawMessage `json:"config"`
	RuntimeHandler string          `json:"runtimeHandler,omitempty"`
	CheckpointedAt time.Time       `json:"checkpointedTime"`
	Containers     []PodContainer  `json:"containers"`
	Volumes        []PodVolume     `json:"volumes,omitempty"`
}

// PodContainer is one container of a pod checkpoint: where its archive is
// and what its process was, so a restore request can be checked against it
// without unpacking the archive.
type PodContainer struct {
	Name     string          `json:"name"`
	ID       string          `json:"id"`
	Archive  string          `json:"archive"` // relative to the pod checkpoint
	Config   json.RawMessage `json:"config"`
	Image    string          `json:"image"`
	ImageID  string          `json:"imageId,omitempty"`
	ImageRef string          `json:"imageRef,omitempty"`
	Args     []string        `json:"args,omitempty"`
	Env      []string        `json:"env,omitempty"`
	Cwd      string          `json:"cwd,omitempty"`
	// Mounts are the container paths where pod volumes were mounted.
	Mounts []VolumeMount `json:"mounts,omitempty"`
}

// VolumeMount places volume Volume at ContainerPath of a container.
type VolumeMount struct {
	ContainerPath string `json:"containerPath"`
	Volume        string `json:"volume"`
}

// PodVolume is a directory volume's saved contents. Source is its host
// path on the checkpointing node, for the record only.
type PodVolume struct {
	Name    string `json:"name"`
	Archive string `json:"archive"` // relative to the pod checkpoint
	Source  string `json:"source"`
}

// WritePodDump writes d as dir/pod.dump.
func WritePodDump(dir string, d PodDump) error {
	d.Version = PodDumpVersion
	return WriteJSON(dir, PodDumpFile, d)
}

// ReadPodDump reads and validates the pod checkpoint in dir: a known
// version, at least one container, unique names, and every archive it
// names present inside dir.
func ReadPodDump(dir string) (*PodDump, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("pod checkpoint %q is not a directory: %w", dir, errdefs.ErrNotFound)
	}
	var d PodDump
	if err := readJSON(dir, PodDumpFile, &d); err != nil {
		return nil, fmt.Errorf("pod checkpoint %q: %w", dir, err)
	}
	if d.Version != PodDumpVersion {
		return nil, fmt.Errorf("pod checkpoint %q has version %d, this berth reads %d: %w", dir, d.Version, PodDumpVersion, errdefs.ErrInvalidArgument)
	}
	if len(d.Containers) == 0 {
		return nil, fmt.Errorf("pod checkpoint %q has no containers: %w", dir, errdefs.ErrInvalidArgument)
	}
	vols := map[string]bool{}
	for _, v := range d.Volumes {
		if v.Name == "" || vols[v.Name] {
			return nil, fmt.Errorf("pod checkpoint %q: volume name %q empty or repeated: %w", dir, v.Name, errdefs.ErrInvalidArgument)
		}
		vols[v.Name] = true
		if err := inDir(dir, v.Archive); err != nil {
			return nil, fmt.Errorf("pod checkpoint %q: volume %q: %w", dir, v.Name, err)
		}
	}
	names := map[string]bool{}
	for _, c := range d.Containers {
		if c.Name == "" || names[c.Name] {
			return nil, fmt.Errorf("pod checkpoint %q: container name %q empty or repeated: %w", dir, c.Name, errdefs.ErrInvalidArgument)
		}
		names[c.Name] = true
		if err := inDir(dir, c.Archive); err != nil {
			return nil, fmt.Errorf("pod checkpoint %q: container %q: %w", dir, c.Name, err)
		}
		for _, m := range c.Mounts {
			if !vols[m.Volume] {
				return nil, fmt.Errorf("pod checkpoint %q: container %q mounts unknown volume %q: %w", dir, c.Name, m.Volume, errdefs.ErrInvalidArgument)
			}
		}
	}
	return &d, nil
}

// inDir checks that rel names a regular file inside dir.
func inDir(dir, rel string) error {
	if rel == "" || filepath.IsAbs(rel) || strings.HasPrefix(filepath.Clean(rel), "..") {
		return fmt.Errorf("archive path %q is not inside the checkpoint: %w", rel, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Lstat(filepath.Join(dir, rel))
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("archive %q missing: %w", rel, errdefs.ErrInvalidArgument)
	}
	return nil
}

// WriteVolume tars the contents of directory src into path (created 0600):
// owners, modes, times and symlinks kept; sockets, devices and FIFOs left
// out, as the container recreates those.
func WriteVolume(ctx context.Context, src, path string) (retErr error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write volume archive %q: %w", path, err)
	}
	defer func() {
		if err := f.Close(); retErr == nil && err != nil {
			retErr = fmt.Errorf("write volume archive %q: %w", path, err)
		}
		if retErr != nil {
			_ = os.Remove(path)
		}
	}()
	// Only files, directories and symlinks: sockets, FIFOs and devices in
	// a volume are the processes' business, not its content.
	err = tarTree(ctx, f, src, func(_, _ string, d fs.DirEntry) (bool, error) {
		return d.Type().IsRegular() || d.IsDir() || d.Type()&fs.ModeSymlink != 0, nil
	})
	if err != nil {
		return fmt.Errorf("write volume archive of %q: %w", src, err)
	}
	return nil
}

// ApplyVolume unpacks a volume archive into directory dst (created if
// missing), replacing entries of the same name: the restored containers
// find the files their checkpointed processes had open, at the sizes
// they had. Entries are resolved inside dst, as ApplyRootfsDiff's are.
func ApplyVolume(ctx context.Context, path, dst string) error {
	f, err := openMember(path)
	if err != nil {
		return fmt.Errorf("open volume archive %q: %w", path, err)
	}
	defer f.Close()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("create volume directory %q: %w", dst, err)
	}
	if err := replay(ctx, bufio.NewReader(f), dst); err != nil {
		return fmt.Errorf("restore volume archive %q into %q: %w", path, dst, err)
	}
	return nil
}
