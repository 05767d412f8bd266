package store

import (
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// recordVersion is the layout of the records this berthd writes:
//
//	1 (or absent): the CRI config as it stood after the last resource
//	  update, the sandbox controller's pod at the top of a sandbox record.
//	2: the config as created, the current resources and the pod in the
//	  status.
//
// Open migrates older records and rewrites them; a record from a later
// berthd stops Open rather than being misread or overwritten.
const recordVersion = 2

// sandboxRecord is a sandbox as it is persisted. Meta's fields sit at the
// top of the JSON object, as in version 1.
type sandboxRecord struct {
	Version int
	SandboxMeta
	Config []byte // the CRI PodSandboxConfig, protobuf-encoded
	Status SandboxStatus
}

// sandboxRecordV1 adds what version 1 kept outside the status.
type sandboxRecordV1 struct {
	sandboxRecord
	Pod Pod
}

type containerRecord struct {
	Version int
	ContainerMeta
	Config []byte // the CRI ContainerConfig, protobuf-encoded
	Status ContainerStatus
}

func newerVersion(kind string, v int) error {
	return fmt.Errorf("%s record has version %d, this berthd reads up to %d (written by a newer berthd?): %w",
		kind, v, recordVersion, errdefs.ErrFailedPrecondition)
}

func encodeSandbox(sb Sandbox) ([]byte, error) {
	return json.Marshal(sandboxRecord{Version: recordVersion, SandboxMeta: sb.SandboxMeta, Config: sb.rawConfig, Status: sb.Status})
}

// decodeSandbox reads a sandbox record of any known version; migrated
// says it was older and should be written again.
func decodeSandbox(data []byte) (sb Sandbox, migrated bool, err error) {
	var v1 sandboxRecordV1
	if err := json.Unmarshal(data, &v1); err != nil {
		return sb, false, err
	}
	rec := v1.sandboxRecord
	if rec.Version > recordVersion {
		return sb, false, newerVersion("sandbox", rec.Version)
	}
	sb = Sandbox{SandboxMeta: rec.SandboxMeta, Status: rec.Status}
	cfg := &runtime.PodSandboxConfig{}
	if err := proto.Unmarshal(rec.Config, cfg); err != nil {
		return sb, false, fmt.Errorf("decode config: %w", err)
	}
	sb.Config, sb.rawConfig = cfg, rec.Config
	if rec.Version >= 2 {
		return sb, false, nil
	}
	// Version 1 recorded UpdatePodSandboxResources by rewriting the config,
	// so its resources are the current ones.
	sb.Status.Pod = v1.Pod
	sb.Status.Resources = ResourcesFromCRI(cfg.GetLinux().GetResources())
	sb.Status.Overhead = ResourcesFromCRI(cfg.GetLinux().GetOverhead())
	return sb, true, nil
}

func encodeContainer(c Container) ([]byte, error) {
	return json.Marshal(containerRecord{Version: recordVersion, ContainerMeta: c.ContainerMeta, Config: c.rawConfig, Status: c.Status})
}

func decodeContainer(data []byte) (c Container, migrated bool, err error) {
	var rec containerRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return c, false, err
	}
	if rec.Version > recordVersion {
		return c, false, newerVersion("container", rec.Version)
	}
	c = Container{ContainerMeta: rec.ContainerMeta, Status: rec.Status}
	cfg := &runtime.ContainerConfig{}
	if err := proto.Unmarshal(rec.Config, cfg); err != nil {
		return c, false, fmt.Errorf("decode config: %w", err)
	}
	c.Config, c.rawConfig = cfg, rec.Config
	if rec.Version >= 2 {
		return c, false, nil
	}
	// Version 1 merged UpdateContainerResources into the config.
	c.Status.Resources = ResourcesFromCRI(cfg.GetLinux().GetResources())
	return c, true, nil
}

// encodeConfig fills the encoded config of a record being added.
func encodeConfig(m proto.Message) ([]byte, error) {
	raw, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return raw, nil
}
