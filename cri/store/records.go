package store

import "github.com/berth-runtime/berth/sandbox"

// Maps and byte slices in the metadata part of a record are set once, when
// the record is added, and never mutated afterwards; copies may share them.
// Status holds no pointers, so a struct copy is a deep copy, except IPs,
// which clone copies.

// SandboxState mirrors the CRI pod sandbox states.
type SandboxState string

// Sandbox states.
const (
	SandboxReady    SandboxState = "READY"
	SandboxNotReady SandboxState = "NOTREADY"
)

// PodMetadata identifies a pod the way kubelet does.
type PodMetadata struct {
	Name, UID, Namespace string
	Attempt              uint32
}

// Sandbox is the record of one pod sandbox.
type Sandbox struct {
	Version        int
	ID             string
	Name           string // reservation key built from the metadata
	Metadata       PodMetadata
	Labels         map[string]string
	Annotations    map[string]string
	Config         []byte // the CRI PodSandboxConfig, protobuf-encoded
	RuntimeHandler string
	CgroupParent   string
	CreatedAt      int64 // unix nanoseconds
	Pod            sandbox.Pod
	Status         SandboxStatus
}

// SandboxStatus is the mutable part of a sandbox record.
type SandboxStatus struct {
	State SandboxState
	IPs   []string
	// NetworkDown records that the pod's network was torn down, so Stop
	// after a restart does not tear it down again.
	NetworkDown bool
}

func (s Sandbox) clone() Sandbox {
	s.Status.IPs = append([]string(nil), s.Status.IPs...)
	return s
}

// ContainerState mirrors the CRI container states.
type ContainerState string

// Container states.
const (
	ContainerCreated ContainerState = "CREATED"
	ContainerRunning ContainerState = "RUNNING"
	ContainerExited  ContainerState = "EXITED"
	ContainerUnknown ContainerState = "UNKNOWN"
)

// ContainerMetadata identifies a container within its pod.
type ContainerMetadata struct {
	Name    string
	Attempt uint32
}

// Container is the record of one container.
type Container struct {
	Version        int
	ID             string
	SandboxID      string
	Name           string // reservation key built from pod and container metadata
	Metadata       ContainerMetadata
	Labels         map[string]string
	Annotations    map[string]string
	Config         []byte // the CRI ContainerConfig, protobuf-encoded
	Image          string // the image as kubelet asked for it
	ImageID        string // config digest of the image it was created from
	ImageRef       string // repo digest (or ID) reported as image_ref
	RuntimeHandler string
	LogPath        string // absolute path of the CRI log file, "" for none
	StopSignal     string // the image's stop signal, "" for SIGTERM
	Bundle         string // OCI bundle dir, also the shim's state dir
	Rootfs         string
	CreatedAt      int64
	// Restore is set for a container created from a checkpoint: its shim
	// restores it with CRIU on StartContainer, within a bound.
	Restore bool
	Status  ContainerStatus
}

// ContainerStatus is the mutable part of a container record.
type ContainerStatus struct {
	State      ContainerState
	Pid        int
	StartedAt  int64
	FinishedAt int64
	ExitCode   int32
	Reason     string
	Message    string
	// Removing is set once RemoveContainer began, so a restart finishes it.
	Removing bool
}

func (c Container) clone() Container { return c }
