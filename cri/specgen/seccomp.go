package specgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	errnoEPERM  uint = 1
	errnoENOSYS uint = 38
)

// seccompDeny is one block of the RuntimeDefault denylist: the syscalls
// are refused with EPERM unless the container holds one of liftedBy.
type seccompDeny struct {
	names    []string
	liftedBy []string
}

// runtimeDefaultDeny lists what Docker's default profile keeps from
// unprivileged containers. NOTE: berth's RuntimeDefault is a denylist on a
// default-allow profile, weaker than Docker's allowlist (new syscalls are
// allowed until listed here) but small enough to audit. personality() is
// not filtered by argument yet.
var runtimeDefaultDeny = []seccompDeny{
	{names: []string{
		"add_key", "keyctl", "request_key", // the keyring is not namespaced
		"create_module", "get_kernel_syms", "query_module", "nfsservctl",
		"sysfs", "_sysctl", "uselib", "ustat", "vm86", "vm86old", "userfaultfd",
	}},
	{names: []string{
		"mount", "umount", "umount2", "unshare", "setns", "pivot_root",
		"swapon", "swapoff", "name_to_handle_at", "quotactl", "quotactl_fd",
		"lookup_dcookie", "fsopen", "fsconfig", "fsmount", "fspick",
		"move_mount", "open_tree", "mount_setattr",
	}, liftedBy: []string{"CAP_SYS_ADMIN"}},
	{names: []string{"bpf"}, liftedBy: []string{"CAP_SYS_ADMIN", "CAP_BPF"}},
	{names: []string{"perf_event_open"}, liftedBy: []string{"CAP_SYS_ADMIN", "CAP_PERFMON"}},
	{names: []string{"reboot", "kexec_load", "kexec_file_load"}, liftedBy: []string{"CAP_SYS_BOOT"}},
	{names: []string{"init_module", "finit_module", "delete_module"}, liftedBy: []string{"CAP_SYS_MODULE"}},
	{names: []string{"acct"}, liftedBy: []string{"CAP_SYS_PACCT"}},
	{names: []string{"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"}, liftedBy: []string{"CAP_SYS_PTRACE"}},
	{names: []string{"iopl", "ioperm"}, liftedBy: []string{"CAP_SYS_RAWIO"}},
	{names: []string{"settimeofday", "stime", "clock_settime", "clock_adjtime"}, liftedBy: []string{"CAP_SYS_TIME"}},
	{names: []string{"get_mempolicy", "set_mempolicy", "mbind", "move_pages"}, liftedBy: []string{"CAP_SYS_NICE"}},
	{names: []string{"open_by_handle_at"}, liftedBy: []string{"CAP_DAC_READ_SEARCH"}},
}

// cloneNamespaceFlags are the clone(2) flags that create namespaces;
// unshare is denied above, clone must be filtered by argument.
var cloneNamespaceFlags = []uint64{
	0x00020000, // CLONE_NEWNS
	0x02000000, // CLONE_NEWCGROUP
	0x04000000, // CLONE_NEWUTS
	0x08000000, // CLONE_NEWIPC
	0x10000000, // CLONE_NEWUSER
	0x20000000, // CLONE_NEWPID
	0x40000000, // CLONE_NEWNET
}

func seccompFor(p *runtime.SecurityProfile, caps []string) (*specs.LinuxSeccomp, error) {
	if p == nil {
		// CRI: no profile given is identical with unconfined.
		return nil, nil
	}
	switch p.GetProfileType() {
	case runtime.SecurityProfile_Unconfined:
		return nil, nil
	case runtime.SecurityProfile_RuntimeDefault:
		return RuntimeDefaultSeccomp(caps), nil
	case runtime.SecurityProfile_Localhost:
		return LoadSeccompProfile(p.GetLocalhostRef())
	}
	return nil, fmt.Errorf("unknown seccomp profile type %d: %w", p.GetProfileType(), errdefs.ErrInvalidArgument)
}

// RuntimeDefaultSeccomp returns berth's RuntimeDefault profile for a
// container whose bounding set is caps.
func RuntimeDefaultSeccomp(caps []string) *specs.LinuxSeccomp {
	eperm, enosys := errnoEPERM, errnoENOSYS
	has := func(lift []string) bool {
		return slices.ContainsFunc(lift, func(c string) bool { return slices.Contains(caps, c) })
	}
	s := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
	}
	for _, d := range runtimeDefaultDeny {
		if len(d.liftedBy) > 0 && has(d.liftedBy) {
			continue
		}
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
			Names: slices.Clone(d.names), Action: specs.ActErrno, ErrnoRet: &eperm,
		})
	}
	if has([]string{"CAP_SYS_ADMIN"}) {
		return s
	}
	for _, f := range cloneNamespaceFlags {
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
			Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: f, ValueTwo: f, Op: specs.OpMaskedEqual}},
		})
	}
	// clone3 passes its flags in memory seccomp cannot read; ENOSYS makes
	// libc fall back to clone, which is filtered (Docker does the same).
	s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
		Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys,
	})
	return s
}

// maxProfileSize bounds a localhost profile; real ones are a few dozen KiB.
const maxProfileSize = 1 << 20

// LoadSeccompProfile reads a Localhost profile: the absolute path kubelet
// resolved under its seccomp directory, holding an OCI LinuxSeccomp object
// or a Docker-format profile (whose archMap lists the architectures, and
// whose includes/excludes conditions berth does not evaluate: such rules
// are refused rather than applied unconditionally).
func LoadSeccompProfile(path string) (*specs.LinuxSeccomp, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("localhost seccomp profile %q is not an absolute path: %w", path, errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("localhost seccomp profile %q: %w", path, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("open localhost seccomp profile: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxProfileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read localhost seccomp profile %q: %w", path, err)
	}
	if len(data) > maxProfileSize {
		return nil, fmt.Errorf("localhost seccomp profile %q is larger than %d bytes: %w", path, maxProfileSize, errdefs.ErrInvalidArgument)
	}
	return parseSeccompProfile(data)
}

type dockerProfile struct {
	specs.LinuxSeccomp
	ArchMap []struct {
		Arch      specs.Arch   `json:"architecture"`
		SubArches []specs.Arch `json:"subArchitectures"`
	} `json:"archMap"`
	Syscalls []struct {
		specs.LinuxSyscall
		Name     string         `json:"name"`
		Includes map[string]any `json:"includes"`
		Excludes map[string]any `json:"excludes"`
	} `json:"syscalls"`
}

func parseSeccompProfile(data []byte) (*specs.LinuxSeccomp, error) {
	var p dockerProfile
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("decode seccomp profile: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if p.DefaultAction == "" {
		return nil, fmt.Errorf("seccomp profile has no defaultAction: %w", errdefs.ErrInvalidArgument)
	}
	out := p.LinuxSeccomp
	for _, a := range p.ArchMap {
		out.Architectures = append(out.Architectures, a.Arch)
		out.Architectures = append(out.Architectures, a.SubArches...)
	}
	out.Syscalls = nil
	for _, sc := range p.Syscalls {
		if len(sc.Includes) > 0 || len(sc.Excludes) > 0 {
			return nil, fmt.Errorf("seccomp profile rule for %v uses includes/excludes: %w", sc.Names, errdefs.ErrNotImplemented)
		}
		if sc.Name != "" {
			sc.Names = append(sc.Names, sc.Name)
		}
		if len(sc.Names) == 0 || sc.Action == "" {
			return nil, fmt.Errorf("seccomp profile rule without names or action: %w", errdefs.ErrInvalidArgument)
		}
		out.Syscalls = append(out.Syscalls, sc.LinuxSyscall)
	}
	return &out, nil
}
