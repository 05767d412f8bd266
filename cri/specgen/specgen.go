package specgen

import (
	"fmt"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Input is everything Generate needs for one container.
type Input struct {
	// ID is the container id; it names the container's cgroup.
	ID string
	// Config is the CreateContainer request's config.
	Config *runtime.ContainerConfig
	// Sandbox is the config of the pod the container belongs to.
	Sandbox *runtime.PodSandboxConfig
	// Image is the image's config (User, Env, Entrypoint, Cmd, WorkingDir).
	Image ocispec.ImageConfig
	// RootfsPath is the already mounted root filesystem (spec.Root.Path).
	RootfsPath string
	// Users resolves user and group names in the image; nil => numeric only.
	Users UserLookup
	// Namespaces holds the pinned pod namespaces the container joins.
	Namespaces SandboxNamespaces
	// PodFiles are host files bind-mounted into the container.
	PodFiles PodFiles
	// ExtraMounts are mounts cri prepared with I/O: image volumes (each
	// replaces the CRI Mount with image set at its container_path) and the
	// image's declared volumes (a CRI mount at the same path wins).
	ExtraMounts []specs.Mount
	// CgroupParent is the pod cgroup parent (cgroupfs style); "" => "/berth".
	CgroupParent string
	// SystemdCgroup selects the systemd cgroup driver: CgroupParent names
	// (or is turned into) a slice and cgroupsPath takes runc's
	// "slice:prefix:name" form.
	SystemdCgroup bool
	// CDI resolves the container's CDI devices; nil refuses any.
	CDI CDIInjector
	// OOMScoreAdjMin, when non-nil, is the lowest oom_score_adj the daemon
	// may set (restrict_oom_score_adj): without CAP_SYS_RESOURCE the kernel
	// refuses to lower the score below the daemon's own.
	OOMScoreAdjMin *int
	// AllCaps is what "all capabilities" means (privileged, add "ALL"):
	// runc cannot grant a capability the daemon lacks, so cri passes
	// CurrentCapabilities(), as containerd does. nil => every known one.
	AllCaps []string
	// RecursiveReadOnly is whether the OCI runtime knows the "rro" mount
	// option; without it a recursive read-only mount is refused.
	RecursiveReadOnly bool
	// DevRoot is where host devices are listed for privileged containers;
	// "" => /dev.
	DevRoot string
	// AppArmor is the host's AppArmor; nil => a host without AppArmor.
	AppArmor AppArmor
	// SELinux is whether the host has SELinux enabled (SELinuxEnabled):
	// only there are SELinux options refused.
	SELinux bool
}

// SandboxNamespaces are paths of namespaces to join (e.g. netns pins, or
// /proc/<pid>/ns/pid). An empty path means a new namespace, unless the pod
// asked for the host's (NODE mode), in which case none is configured.
type SandboxNamespaces struct {
	Net, IPC, UTS string
	// PID is the pod's shared PID namespace (PID mode POD) or, for mode
	// TARGET, the target container's (cri computes /proc/<pid>/ns/pid).
	PID string
	// User is the pod's user namespace to join (its infra process's, which
	// owns the shared PID namespace); "" with a user namespace pod => a new
	// one with the pod's mappings.
	User string
}

// PodFiles are host paths of per-pod files; "" => not mounted.
type PodFiles struct {
	Hostname, Hosts, Resolv string
	// Shm is a directory (the pod's tmpfs, or the host /dev/shm for host
	// IPC) bind-mounted at /dev/shm; "" => a private tmpfs per container.
	Shm string
}

// UserLookup resolves users and groups in the container image.
type UserLookup interface {
	// LookupUser resolves a user name (or, failing that, a decimal uid) to
	// its uid and primary gid; errdefs.ErrNotFound when absent.
	LookupUser(name string) (uid, gid uint32, err error)
	// LookupGroup resolves a group name (or a decimal gid) to its gid;
	// errdefs.ErrNotFound when absent.
	LookupGroup(name string) (gid uint32, err error)
	// GroupsOf returns the gids of the groups listing user (a name or a
	// decimal uid) as a member. gid is the user's primary group, which
	// implementations may skip.
	GroupsOf(user string, gid uint32) []uint32
}

// Container annotations for tools reading config.json (same keys as
// containerd's CRI plugin).
const (
	AnnotationContainerType    = "io.kubernetes.cri.container-type"
	AnnotationContainerName    = "io.kubernetes.cri.container-name"
	AnnotationImageName        = "io.kubernetes.cri.image-name"
	AnnotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	containerTypeContainer     = "container"
	defaultCgroupParent        = "/berth"
	defaultPathEnv             = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	hostnameEnv                = "HOSTNAME"
)

// Generate builds the OCI spec for in. Invalid requests fail with
// errdefs.ErrInvalidArgument naming the field; confinement berth cannot
// provide (SELinux labels on a host with SELinux; an AppArmor profile on a
// host without AppArmor or one not loaded) fails rather than being
// silently ignored.
func Generate(in Input) (*specs.Spec, error) {
	if err := validate(in); err != nil {
		return nil, err
	}
	sc := in.Config.GetLinux().GetSecurityContext()
	modes := namespaceModes(in)
	s := defaultSpec()
	s.Root.Path = in.RootfsPath
	s.Root.Readonly = sc.GetReadonlyRootfs()
	cgPath, err := cgroupsPathFor(in)
	if err != nil {
		return nil, err
	}
	s.Linux.CgroupsPath = cgPath
	s.Annotations = annotations(in)

	steps := []func(*specs.Spec, Input, nsModes) error{
		applyProcess,
		applyNamespaces,
		applyMounts,
		applyResources,
		applySysctls,
		applySecurity,
		applyDevices,
	}
	for _, step := range steps {
		if err := step(s, in, modes); err != nil {
			return nil, fmt.Errorf("generate spec for container %q: %w", in.ID, err)
		}
	}
	applyUserns(s, in)
	// CDI edits go last: they see the final namespaces (a user namespace
	// turns their mounts idmapped) and replace same-path devices.
	if err := applyCDI(s, in); err != nil {
		return nil, fmt.Errorf("generate spec for container %q: %w", in.ID, err)
	}
	return s, nil
}

func validate(in Input) error {
	switch {
	case in.ID == "":
		return fmt.Errorf("container id is required: %w", errdefs.ErrInvalidArgument)
	case in.Config == nil:
		return fmt.Errorf("container config is required: %w", errdefs.ErrInvalidArgument)
	case in.Config.GetMetadata().GetName() == "":
		return fmt.Errorf("container config metadata.name is required: %w", errdefs.ErrInvalidArgument)
	case in.Config.GetImage().GetImage() == "":
		return fmt.Errorf("container config image.image is required: %w", errdefs.ErrInvalidArgument)
	case in.Sandbox == nil:
		return fmt.Errorf("sandbox config is required: %w", errdefs.ErrInvalidArgument)
	case in.RootfsPath == "":
		return fmt.Errorf("rootfs path is required: %w", errdefs.ErrInvalidArgument)
	}
	if in.Config.GetLinux().GetSecurityContext().GetPrivileged() &&
		!in.Sandbox.GetLinux().GetSecurityContext().GetPrivileged() {
		// CRI: a sandbox that will run a privileged container MUST say so.
		return fmt.Errorf("privileged container in non-privileged sandbox: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func cgroupsPath(parent, id string) string {
	if parent == "" {
		parent = defaultCgroupParent
	}
	if parent[len(parent)-1] == '/' {
		return parent + id
	}
	return parent + "/" + id
}

func annotations(in Input) map[string]string {
	a := make(map[string]string, len(in.Config.GetAnnotations())+6)
	for k, v := range in.Config.GetAnnotations() {
		a[k] = v
	}
	a[AnnotationContainerType] = containerTypeContainer
	a[AnnotationContainerName] = in.Config.GetMetadata().GetName()
	a[AnnotationImageName] = in.Config.GetImage().GetImage()
	if md := in.Sandbox.GetMetadata(); md != nil {
		a[AnnotationSandboxName] = md.GetName()
		a[AnnotationSandboxNamespace] = md.GetNamespace()
		a[AnnotationSandboxUID] = md.GetUid()
	}
	return a
}
