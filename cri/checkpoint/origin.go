package checkpoint

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// Origins of an archive: who wrote it decides where the container's CRI
// identity is recorded.
const (
	// OriginCRIO: CRI-O, Podman and berth, whose spec.dump carries the
	// container's metadata, labels and annotations as CRI-O annotations.
	OriginCRIO = "cri-o"
	// OriginContainerd: containerd's CRI (CheckpointContainer), whose
	// spec.dump carries io.kubernetes.cri.* annotations and whose
	// status.dump is the container's CRI status, metadata and all.
	OriginContainerd = "containerd"
)

// StatusDumpFile is containerd's status.dump: the CRI ContainerStatus of
// the checkpointed container, in protobuf's JSON field names.
const StatusDumpFile = "status.dump"

// containerd's spec annotations (internal/cri/annotations).
const (
	ctrdAnnotationContainerName = "io.kubernetes.cri.container-name"
	ctrdAnnotationContainerType = "io.kubernetes.cri.container-type"
)

// Identity is the checkpointed container's CRI identity, whichever
// runtime wrote the archive.
type Identity struct {
	Origin      string
	Name        string
	Attempt     uint32
	Labels      map[string]string
	Annotations map[string]string
	// ImageID is the base image's ID (its config digest) when the
	// archive records it: the writable layer is a diff against exactly
	// that image, so the node's image of that name must be the same.
	ImageID string
}

// containerdStatus is the part of status.dump berth maps.
type containerdStatus struct {
	Metadata struct {
		Name    string `json:"name"`
		Attempt uint32 `json:"attempt"`
	} `json:"metadata"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	ImageID     string            `json:"image_id"`
}

// identity reads the container's identity from where its writer keeps
// it. An archive of containerd is recognised by its spec annotations or
// its status.dump.
func (c *Checkpoint) identity() (Identity, error) {
	ann := c.Spec.Annotations
	hasStatus := hasMember(c.Dir, StatusDumpFile)
	if _, ok := ann[AnnotationMetadata]; !ok && (hasStatus || ann[ctrdAnnotationContainerName] != "") {
		return c.containerdIdentity(hasStatus)
	}
	id := Identity{Origin: OriginCRIO, Name: c.Config.Name}
	var m struct {
		Name    string `json:"name"`
		Attempt uint32 `json:"attempt"`
	}
	if err := json.Unmarshal([]byte(ann[AnnotationMetadata]), &m); err == nil && m.Name != "" {
		id.Name, id.Attempt = m.Name, m.Attempt
	}
	_ = json.Unmarshal([]byte(ann[AnnotationLabels]), &id.Labels)
	_ = json.Unmarshal([]byte(ann[AnnotationAnnotations]), &id.Annotations)
	// berth records the image's ID where it has no repo digest.
	if strings.HasPrefix(c.Config.RootfsImageRef, "sha256:") {
		id.ImageID = c.Config.RootfsImageRef
	}
	return id, nil
}

func (c *Checkpoint) containerdIdentity(hasStatus bool) (Identity, error) {
	id := Identity{Origin: OriginContainerd, Name: c.Spec.Annotations[ctrdAnnotationContainerName]}
	if t := c.Spec.Annotations[ctrdAnnotationContainerType]; t != "" && t != "container" {
		return id, fmt.Errorf("checkpoint of a containerd %q, not a container: %w", t, errdefs.ErrInvalidArgument)
	}
	if hasStatus {
		var st containerdStatus
		if err := readJSON(c.Dir, StatusDumpFile, &st); err != nil {
			return id, err
		}
		if st.Metadata.Name != "" {
			id.Name, id.Attempt = st.Metadata.Name, st.Metadata.Attempt
		}
		id.Labels, id.Annotations, id.ImageID = st.Labels, st.Annotations, st.ImageID
	}
	// containerd's config.dump names the container by its internal name
	// (name_pod_namespace_uid_attempt), never a CRI name: without either
	// record above there is no name to give the restored container.
	if id.Name == "" {
		return id, fmt.Errorf("containerd checkpoint names no container (no %s annotation, no metadata in %s): %w", ctrdAnnotationContainerName, StatusDumpFile, errdefs.ErrInvalidArgument)
	}
	return id, nil
}

// checkRuntime refuses a checkpoint that no runc-compatible runtime can
// restore: containerd records its runtime type (io.containerd.runc.v2),
// CRI-O and berth the handler's name or binary. A containerd runtime
// other than runc's shim (Kata, gVisor, ...) does not checkpoint with
// CRIU: its archive holds no process berth could resume.
func (c *Checkpoint) checkRuntime() error {
	rt := c.Config.OCIRuntime
	if strings.HasPrefix(rt, "io.containerd.") {
		switch rt {
		case "io.containerd.runc.v1", "io.containerd.runc.v2", "io.containerd.runtime.v1.linux":
			return nil
		}
		return fmt.Errorf("checkpoint was taken by containerd runtime %q; only runc's (io.containerd.runc.v2) checkpoints are CRIU images berth can restore: %w", rt, errdefs.ErrInvalidArgument)
	}
	// CRI-O records the handler's runtime (a name or a binary): the
	// sandboxed runtimes' checkpoints are theirs alone.
	base := filepath.Base(rt)
	if strings.Contains(base, "kata") || base == "runsc" || base == "gvisor" {
		return fmt.Errorf("checkpoint was taken by runtime %q, a VM or sandboxed runtime whose checkpoints are not CRIU images of the container's processes: %w", rt, errdefs.ErrInvalidArgument)
	}
	return nil
}

// hasMember reports whether dir/name exists, as anything: openMember
// then refuses what is not a regular file.
func hasMember(dir, name string) bool {
	_, err := os.Lstat(filepath.Join(dir, name))
	return err == nil
}
