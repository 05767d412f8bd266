package specgen

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// AppArmor is the host's AppArmor as spec generation needs it; cri wires
// the real one (cri/apparmor), tests a fake.
type AppArmor interface {
	// Enabled reports whether the kernel enforces AppArmor.
	Enabled() bool
	// DefaultProfile returns the name of berth's RuntimeDefault profile,
	// loading it first when the kernel does not have it; an error wraps
	// errdefs.ErrFailedPrecondition when it cannot be loaded.
	DefaultProfile() (string, error)
	// Loaded reports whether a profile named name is loaded.
	Loaded(name string) (bool, error)
}

// Values of the deprecated apparmor_profile string field.
const (
	apparmorRuntimeDefault = "runtime/default"
	apparmorUnconfined     = "unconfined"
	apparmorLocalhost      = "localhost/"
)

// applyAppArmor sets the container's AppArmor profile as containerd and
// CRI-O do. With AppArmor enforced: no profile asked for or RuntimeDefault
// get berth's default profile (none for a privileged container),
// Localhost a loaded profile by name (an unloaded one is refused),
// Unconfined none. Without AppArmor on the host nothing can confine, so
// only a Localhost profile, which names a specific confinement, is
// refused; RuntimeDefault runs without a profile, as CRI-O does.
func applyAppArmor(s *specs.Spec, sc *runtime.LinuxContainerSecurityContext, aa AppArmor) error {
	p, err := apparmorRequest(sc)
	if err != nil {
		return err
	}
	if aa == nil || !aa.Enabled() {
		if p.GetProfileType() == runtime.SecurityProfile_Localhost {
			return fmt.Errorf("apparmor profile %q: AppArmor is not enabled on this host: %w", p.GetLocalhostRef(), errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	if p == nil {
		// Kubernetes #51746: the default profile applies when none is set.
		p = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}
	}
	switch p.GetProfileType() {
	case runtime.SecurityProfile_Unconfined:
		return nil
	case runtime.SecurityProfile_RuntimeDefault:
		if sc.GetPrivileged() {
			return nil
		}
		name, err := aa.DefaultProfile()
		if err != nil {
			return fmt.Errorf("apparmor RuntimeDefault profile: %w", err)
		}
		s.Process.ApparmorProfile = name
		return nil
	case runtime.SecurityProfile_Localhost:
		name := p.GetLocalhostRef()
		loaded, err := aa.Loaded(name)
		if err != nil {
			return fmt.Errorf("apparmor profile %q: %w", name, err)
		}
		if !loaded {
			return fmt.Errorf("apparmor profile %q is not loaded on this host: %w", name, errdefs.ErrFailedPrecondition)
		}
		s.Process.ApparmorProfile = name
		return nil
	}
	return fmt.Errorf("unknown apparmor profile type %d: %w", p.GetProfileType(), errdefs.ErrInvalidArgument)
}

// apparmorRequest returns the profile the request asks for, from the
// apparmor field or the deprecated apparmor_profile string; nil when it
// asks for none. A Localhost reference comes back without "localhost/".
func apparmorRequest(sc *runtime.LinuxContainerSecurityContext) (*runtime.SecurityProfile, error) {
	if p := sc.GetApparmor(); p != nil {
		ref := p.GetLocalhostRef()
		if p.GetProfileType() != runtime.SecurityProfile_Localhost {
			if ref != "" {
				return nil, fmt.Errorf("apparmor localhost_ref %q with profile type %s: %w", ref, p.GetProfileType(), errdefs.ErrInvalidArgument)
			}
			return p, nil
		}
		ref = strings.TrimPrefix(ref, apparmorLocalhost)
		if ref == "" {
			return nil, fmt.Errorf("apparmor Localhost profile without a name: %w", errdefs.ErrInvalidArgument)
		}
		return &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: ref}, nil
	}
	switch old := sc.GetApparmorProfile(); { //nolint:staticcheck // the deprecated field older kubelets send, honoured when the new one is unset
	case old == "":
		return nil, nil
	case old == apparmorRuntimeDefault:
		return &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}, nil
	case old == apparmorUnconfined:
		return &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}, nil
	case strings.HasPrefix(old, apparmorLocalhost) && len(old) > len(apparmorLocalhost):
		return &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: old[len(apparmorLocalhost):]}, nil
	default:
		return nil, fmt.Errorf("apparmor profile %q: want %q, %q or %q<name>: %w",
			old, apparmorRuntimeDefault, apparmorUnconfined, apparmorLocalhost, errdefs.ErrInvalidArgument)
	}
}
