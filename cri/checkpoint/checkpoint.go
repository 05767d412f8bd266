// Package checkpoint owns the container checkpoint archive: the files a
// checkpoint consists of, in the layout CRI-O and Podman use (so that
// checkpointctl reads berth's archives and CRI-O restores them), how the
// archive is written from a dump directory, and how it is read back,
// validated and applied to a new container's root filesystem; and the pod
// checkpoint (pod.go), a directory of such archives plus the pod's config
// and its volumes' contents.
//
// An archive is an uncompressed tar holding:
//
//	checkpoint/        CRIU's images (inventory.img, pages-*.img, ...)
//	config.dump        ContainerConfig (JSON)
//	spec.dump          the container's OCI runtime spec (JSON), with
//	                   CRI-O's annotations naming its metadata and labels
//	rootfs-diff.tar    files added or changed in the writable layer
//	deleted.files      JSON list of paths deleted from the image's layers
//	dump.log           CRIU's log of the dump
//	bind.mounts        the spec's bind mounts and their file types
package checkpoint

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
)

// The names inside an archive, as checkpointctl's lib defines them.
const (
	CheckpointDirectory = "checkpoint"
	ConfigDumpFile      = "config.dump"
	SpecDumpFile        = "spec.dump"
	RootFsDiffTar       = "rootfs-diff.tar"
	DeletedFilesFile    = "deleted.files"
	DumpLogFile         = "dump.log"
	RestoreLogFile      = "restore.log"
	BindMountsFile      = "bind.mounts"
	// inventoryImage is the CRIU image every dump has.
	inventoryImage = "inventory.img"
)

// Annotations in spec.dump, under CRI-O's names: CRI-O's restore reads the
// container's CRI metadata, labels and annotations from them.
const (
	AnnotationMetadata      = "io.kubernetes.cri-o.Metadata"
	AnnotationLabels        = "io.kubernetes.cri-o.Labels"
	AnnotationAnnotations   = "io.kubernetes.cri-o.Annotations"
	AnnotationSandboxID     = "io.kubernetes.cri-o.SandboxID"
	AnnotationSandboxName   = "io.kubernetes.cri-o.SandboxName"
	AnnotationContainerName = "io.kubernetes.cri-o.ContainerName"
	AnnotationContainerType = "io.kubernetes.cri-o.ContainerType"
	AnnotationImageName     = "io.kubernetes.cri-o.ImageName"
	AnnotationLogPath       = "io.kubernetes.cri-o.LogPath"
	AnnotationName          = "io.kubernetes.cri-o.Name"
	AnnotationNamespace     = "io.kubernetes.cri-o.Namespace"
	// ImageAnnotationName marks an OCI image that holds a checkpoint (one
	// layer with the archive's files), as CRI-O marks them; see
	// ImageAnnotations for the other writers' marks.
	ImageAnnotationName = "io.kubernetes.cri-o.annotations.checkpoint.name"
)

// ImageAnnotations are the annotations, any one of which marks an OCI
// image as a checkpoint image: CRI-O's; checkpointctl's common one, which
// `checkpointctl build`, CRI-O's own tests and the tools converting
// kubelet's archives with buildah set; and Podman's (podman container
// checkpoint --create-image).
var ImageAnnotations = []string{
	ImageAnnotationName,
	"org.criu.checkpoint.container.name",
	"io.podman.annotations.checkpoint.name",
}

// IsImage reports whether an image's manifest annotations mark it as a
// checkpoint image.
func IsImage(annotations map[string]string) bool {
	for _, a := range ImageAnnotations {
		if _, ok := annotations[a]; ok {
			return true
		}
	}
	return false
}

// ContainerConfig is config.dump (checkpointctl's lib.ContainerConfig).
type ContainerConfig struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	RootfsImageName string    `json:"rootfsImageName,omitempty"`
	RootfsImageRef  string    `json:"rootfsImageRef,omitempty"`
	RootfsImage     string    `json:"rootfsImage,omitempty"`
	OCIRuntime      string    `json:"runtime,omitempty"`
	CreatedTime     time.Time `json:"createdTime"`
	CheckpointedAt  time.Time `json:"checkpointedTime,omitempty"`
	RestoredAt      time.Time `json:"restoredTime,omitempty"`
	Restored        bool      `json:"restored,omitempty"`
}

// BindMount is one entry of bind.mounts (CRI-O's ExternalBindMount).
type BindMount struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	FileType    string `json:"file_type"`
	Permissions uint32 `json:"permissions"`
}

// WriteJSON writes v as dir/name, readable only by its owner: the files
// sit next to memory images.
func WriteJSON(dir, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// maxJSON bounds a JSON file of a checkpoint read into memory.
const maxJSON = 16 << 20

// readJSON reads dir/name into v; a missing, malformed or oversized file,
// or one that is not a regular file (see openMember), makes the checkpoint
// invalid.
func readJSON(dir, name string, v any) error {
	f, err := openMember(filepath.Join(dir, name))
	if errdefs.IsInvalidArgument(err) {
		return fmt.Errorf("checkpoint %s: %w", name, err)
	}
	if err != nil {
		return fmt.Errorf("checkpoint lacks %s: %w", name, errdefs.ErrInvalidArgument)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJSON+1))
	if err != nil {
		return fmt.Errorf("read checkpoint %s: %w", name, err)
	}
	if len(data) > maxJSON {
		return fmt.Errorf("checkpoint %s is over %d bytes: %w", name, maxJSON, errdefs.ErrInvalidArgument)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("checkpoint %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	return nil
}
