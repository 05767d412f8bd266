package specgen

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// CDIInjector applies the edits of fully qualified CDI devices
// ("vendor.com/class=name") to a spec. Unknown devices are
// errdefs.ErrNotFound; the error names them.
type CDIInjector interface {
	InjectDevices(s *specs.Spec, devices []string) error
}

// CDIDevices returns the CDI devices a container asks for: its
// cdi_devices (DRA, device plugins on newer kubelets), then the devices of
// its cdi.k8s.io/* annotations (device plugins that annotate), in key
// order, each once. A name that is not fully qualified is
// errdefs.ErrInvalidArgument.
func CDIDevices(cfg *runtime.ContainerConfig) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(name, from string) error {
		if !parser.IsQualifiedName(name) {
			return fmt.Errorf("CDI device %q (%s) is not a qualified vendor/class=name: %w", name, from, errdefs.ErrInvalidArgument)
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
		return nil
	}
	for _, d := range cfg.GetCDIDevices() {
		if err := add(d.GetName(), "cdi_devices"); err != nil {
			return nil, err
		}
	}
	ann := cfg.GetAnnotations()
	for _, k := range slices.Sorted(maps.Keys(ann)) {
		if !strings.HasPrefix(k, cdi.AnnotationPrefix) {
			continue
		}
		for _, d := range strings.Split(ann[k], ",") {
			if err := add(strings.TrimSpace(d), "annotation "+k); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func applyCDI(s *specs.Spec, in Input) error {
	devices, err := CDIDevices(in.Config)
	if err != nil || len(devices) == 0 {
		return err
	}
	if in.CDI == nil {
		return fmt.Errorf("CDI devices %s: no CDI registry configured: %w", strings.Join(devices, ", "), errdefs.ErrFailedPrecondition)
	}
	return in.CDI.InjectDevices(s, devices)
}

// CDIRegistry resolves CDI devices from spec files in a list of
// directories (JSON or YAML, as the CDI specification defines them; a
// later directory's device of the same name wins). It rescans the
// directories on each injection instead of watching them: containers that
// ask for CDI devices are few, and no inotify watch or goroutine is held
// for a feature most nodes never use.
type CDIRegistry struct {
	cache *cdi.Cache
}

var _ CDIInjector = (*CDIRegistry)(nil)

// NewCDIRegistry returns a registry over dirs; missing directories are
// fine (they hold no devices until created).
func NewCDIRegistry(dirs []string) *CDIRegistry {
	// NewCache's error is always nil (kept for API compatibility).
	c, _ := cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(false))
	return &CDIRegistry{cache: c}
}

// InjectDevices rescans the spec directories and applies the devices'
// edits (device nodes with their cgroup rules, mounts, environment, hooks,
// extra groups) to s. A spec file that does not parse only matters when
// the device asked for is missing: its error is then part of the message.
func (r *CDIRegistry) InjectDevices(s *specs.Spec, devices []string) error {
	specErrs := r.cache.Refresh()
	unresolved, err := r.cache.InjectDevices(s, devices...)
	switch {
	case len(unresolved) > 0:
		msg := fmt.Sprintf("CDI devices %s not found in %s", strings.Join(unresolved, ", "), strings.Join(r.cache.GetSpecDirectories(), ", "))
		if specErrs != nil {
			msg += fmt.Sprintf(" (spec errors: %s)", strings.ReplaceAll(specErrs.Error(), "\n", "; "))
		}
		return fmt.Errorf("%s: %w", msg, errdefs.ErrNotFound)
	case err != nil:
		// The device is known but its edits cannot apply: a host device
		// node that is missing, a malformed hook.
		return fmt.Errorf("inject CDI devices %s: %v: %w", strings.Join(devices, ", "), err, errdefs.ErrFailedPrecondition)
	}
	return nil
}
