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
	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func seccompFor(p *runtime.SecurityProfile, caps []string) (*specs.LinuxSeccomp, error) {
	if p == nil {
		// CRI: no profile given is identical with unconfined.
		return nil, nil
	}
	switch p.GetProfileType() {
	case runtime.SecurityProfile_Unconfined:
		return nil, nil
	case runtime.SecurityProfile_RuntimeDefault:
		return RuntimeDefaultSeccomp(caps)
	case runtime.SecurityProfile_Localhost:
		return LoadSeccompProfile(p.GetLocalhostRef())
	}
	return nil, fmt.Errorf("unknown seccomp profile type %d: %w", p.GetProfileType(), errdefs.ErrInvalidArgument)
}

// RuntimeDefaultSeccomp returns berth's RuntimeDefault profile for a
// container whose bounding set is caps: Docker's default profile, as
// containerd and CRI-O apply it, from the maintained
// github.com/moby/profiles/seccomp module. It is an allow-list: a syscall
// it does not name fails with EPERM (runc answers numbers above any the
// profile names with ENOSYS, so libc falls back from syscalls of newer
// kernels). Rules are added by the container's capabilities and the host's
// kernel version, and clone/clone3 namespace flags, personality and socket
// families are filtered by argument.
func RuntimeDefaultSeccomp(caps []string) (*specs.LinuxSeccomp, error) {
	// The module decides cap-gated rules from the spec's bounding set only.
	rs := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: slices.Clone(caps)}}}
	p, err := mobyseccomp.GetDefaultProfile(rs)
	if err != nil {
		return nil, fmt.Errorf("build RuntimeDefault seccomp profile: %w", err)
	}
	return p, nil
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
