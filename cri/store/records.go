package store

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A record is its metadata, fixed when the record is added, and its
// status, which changes only through UpdateSandboxStatus and
// UpdateContainerStatus. Maps, slices and the decoded Config in the
// metadata are shared by every copy and must not be modified. Status holds
// no pointers; its slices and maps are copied by clone, so a copy of a
// status is independent of the store's.

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
	SandboxMeta
	Status SandboxStatus
}

// SandboxMeta is the part of a sandbox record that never changes.
type SandboxMeta struct {
	ID          string
	Name        string // reservation key built from the metadata
	Metadata    PodMetadata
	Labels      map[string]string
	Annotations map[string]string
	// Config is the PodSandboxConfig kubelet created the pod with, decoded
	// once when the record is added or loaded. Resources set later by
	// UpdatePodSandboxResources are in the status.
	Config         *runtime.PodSandboxConfig `json:"-"`
	rawConfig      []byte                    // Config encoded, as persisted
	RuntimeHandler string
	CgroupParent   string
	CreatedAt      int64 // unix nanoseconds
}

// SandboxStatus is the mutable part of a sandbox record.
type SandboxStatus struct {
	State SandboxState
	IPs   []string
	// NetworkDown records that the pod's network was torn down, so Stop
	// after a restart does not tear it down again.
	NetworkDown bool
	// Pod is what the sandbox controller made; empty until it made it.
	Pod Pod
	// Resources and Overhead are the pod cgroup's size as kubelet last set
	// it, at creation or through UpdatePodSandboxResources.
	Resources Resources
	Overhead  Resources
}

// Pod is the store's record of what the sandbox controller made for a pod:
// its directory, namespace pins, pod files and infra process. The store
// owns this type, apart from the controller's, so the record on disk does
// not change when the controller's type does.
type Pod struct {
	ID, Dir             string
	NetNS, IPCNS, UTSNS string // pin paths, "" when the host's is used
	HostnamePath        string
	HostsPath           string
	ResolvPath          string
	ShmPath             string // "" with HostIPC
	InfraPID            int    // 0 when no infra process
	InfraStartTime      uint64 // field 22 of /proc/<pid>/stat, in clock ticks since boot
	// NoInfra says the pod never has an infra process. Records from before
	// the field have it false, which makes removal search for one.
	NoInfra bool
}

func (s Sandbox) clone() Sandbox {
	s.Status = s.Status.clone()
	return s
}

func (st SandboxStatus) clone() SandboxStatus {
	st.IPs = slices.Clone(st.IPs)
	st.Resources = st.Resources.clone()
	st.Overhead = st.Overhead.clone()
	return st
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
	ContainerMeta
	Status ContainerStatus
}

// ContainerMeta is the part of a container record that never changes.
type ContainerMeta struct {
	ID          string
	SandboxID   string
	Name        string // reservation key built from pod and container metadata
	Metadata    ContainerMetadata
	Labels      map[string]string
	Annotations map[string]string
	// Config is the ContainerConfig the container was created from (with
	// the image volumes' image_ref resolved), decoded once when the record
	// is added or loaded. Resources set later are in the status.
	Config         *runtime.ContainerConfig `json:"-"`
	rawConfig      []byte                   // Config encoded, as persisted
	Image          string                   // the image as kubelet asked for it
	ImageID        string                   // config digest of the image it was created from
	ImageRef       string                   // repo digest (or ID) reported as image_ref
	RuntimeHandler string
	LogPath        string // absolute path of the CRI log file, "" for none
	StopSignal     string // the config's stop signal, else the image's (as images name it, "SIGRTMIN+3"); "" for SIGTERM
	Bundle         string // OCI bundle dir, also the shim's state dir
	Rootfs         string
	CreatedAt      int64
	// Restore is set for a container created from a checkpoint: its shim
	// restores it with CRIU on StartContainer, within a bound.
	Restore bool
}

// ContainerStatus is the mutable part of a container record.
type ContainerStatus struct {
	State ContainerState
	Pid   int
	// ShimPid and ShimStart identify the shim (its start time in clock
	// ticks since boot), recorded with Pid: a restart tells a running
	// container from one whose shim died with one read of /proc.
	ShimPid    int    `json:",omitempty"`
	ShimStart  uint64 `json:",omitempty"`
	StartedAt  int64
	FinishedAt int64
	ExitCode   int32
	Reason     string
	Message    string
	// Removing is set once RemoveContainer began, so a restart finishes it.
	Removing bool
	// Resources are the container's limits as kubelet last set them, at
	// creation or through UpdateContainerResources.
	Resources Resources
}

func (c Container) clone() Container {
	c.Status = c.Status.clone()
	return c
}

func (st ContainerStatus) clone() ContainerStatus {
	st.Resources = st.Resources.clone()
	return st
}

// Resources are a cgroup's limits in the terms of the CRI's
// LinuxContainerResources. The zero value sets nothing.
type Resources struct {
	CPUPeriod              int64             `json:",omitempty"`
	CPUQuota               int64             `json:",omitempty"`
	CPUShares              int64             `json:",omitempty"`
	MemoryLimitInBytes     int64             `json:",omitempty"`
	OOMScoreAdj            int64             `json:",omitempty"`
	CpusetCPUs             string            `json:",omitempty"`
	CpusetMems             string            `json:",omitempty"`
	HugepageLimits         []HugepageLimit   `json:",omitempty"`
	Unified                map[string]string `json:",omitempty"`
	MemorySwapLimitInBytes int64             `json:",omitempty"`
}

// HugepageLimit bounds the use of one huge page size.
type HugepageLimit struct {
	PageSize string
	Limit    uint64
}

func (r Resources) clone() Resources {
	r.HugepageLimits = slices.Clone(r.HugepageLimits)
	r.Unified = maps.Clone(r.Unified)
	return r
}

// IsZero reports whether r sets nothing.
func (r Resources) IsZero() bool {
	return r.CPUPeriod == 0 && r.CPUQuota == 0 && r.CPUShares == 0 && r.MemoryLimitInBytes == 0 &&
		r.OOMScoreAdj == 0 && r.CpusetCPUs == "" && r.CpusetMems == "" && len(r.HugepageLimits) == 0 &&
		len(r.Unified) == 0 && r.MemorySwapLimitInBytes == 0
}

// ResourcesFromCRI copies the CRI's resources; nil gives the zero value.
func ResourcesFromCRI(r *runtime.LinuxContainerResources) Resources {
	if r == nil {
		return Resources{}
	}
	out := Resources{
		CPUPeriod: r.GetCpuPeriod(), CPUQuota: r.GetCpuQuota(), CPUShares: r.GetCpuShares(),
		MemoryLimitInBytes: r.GetMemoryLimitInBytes(), OOMScoreAdj: r.GetOomScoreAdj(),
		CpusetCPUs: r.GetCpusetCpus(), CpusetMems: r.GetCpusetMems(),
		Unified: maps.Clone(r.GetUnified()), MemorySwapLimitInBytes: r.GetMemorySwapLimitInBytes(),
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	return out
}

// CRI returns r as a new CRI message.
func (r Resources) CRI() *runtime.LinuxContainerResources {
	out := &runtime.LinuxContainerResources{
		CpuPeriod: r.CPUPeriod, CpuQuota: r.CPUQuota, CpuShares: r.CPUShares,
		MemoryLimitInBytes: r.MemoryLimitInBytes, OomScoreAdj: r.OOMScoreAdj,
		CpusetCpus: r.CpusetCPUs, CpusetMems: r.CpusetMems,
		Unified: maps.Clone(r.Unified), MemorySwapLimitInBytes: r.MemorySwapLimitInBytes,
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, &runtime.HugepageLimit{PageSize: h.PageSize, Limit: h.Limit})
	}
	return out
}

// CurrentConfig returns a new copy of the pod's config with the resources
// and overhead kubelet last set, for whatever reports or saves the whole
// config.
func (s Sandbox) CurrentConfig() *runtime.PodSandboxConfig {
	cfg := proto.Clone(s.Config).(*runtime.PodSandboxConfig)
	if s.Status.Resources.IsZero() && s.Status.Overhead.IsZero() {
		return cfg
	}
	if cfg.Linux == nil {
		cfg.Linux = &runtime.LinuxPodSandboxConfig{}
	}
	if !s.Status.Resources.IsZero() {
		cfg.Linux.Resources = s.Status.Resources.CRI()
	}
	if !s.Status.Overhead.IsZero() {
		cfg.Linux.Overhead = s.Status.Overhead.CRI()
	}
	return cfg
}

// CurrentConfig returns a new copy of the container's config with the
// resources kubelet last set.
func (c Container) CurrentConfig() *runtime.ContainerConfig {
	cfg := proto.Clone(c.Config).(*runtime.ContainerConfig)
	if c.Status.Resources.IsZero() {
		return cfg
	}
	if cfg.Linux == nil {
		cfg.Linux = &runtime.LinuxContainerConfig{}
	}
	cfg.Linux.Resources = c.Status.Resources.CRI()
	return cfg
}
