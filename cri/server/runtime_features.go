package server

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/cri/config"
	"github.com/berth-runtime/berth/cri/specgen"
)

// handlerFeatures is what a runtime handler can do beyond the basics,
// learnt once at startup from `<runtime> features` (OCI runtime features,
// runc >= 1.1) rather than assumed from its name: Debian's runc 1.1.5
// knows neither "rro" nor idmapped mounts, the bundled 1.5.2 knows both.
type handlerFeatures struct {
	// RecursiveReadOnly: the "rro" mount option.
	RecursiveReadOnly bool
	// UserNamespaces: user namespaces with idmapped mounts, both in the
	// runtime and, for the rootfs and volumes, in the kernel and the
	// filesystem under berth's root.
	UserNamespaces bool
	// OCIVersion is the ociVersion to write in this handler's bundles when
	// the runtime does not take berth's own (specs.Version); "" writes
	// specs.Version. Runtimes check the field, not the fields it implies:
	// Debian 12's crun 1.8.1 refuses anything past 1.1.x ("unknown
	// version specified") and parses the rest of berth's spec all the same.
	OCIVersion string
}

// preFeaturesOCIVersion is written for a runtime that has no `features`
// command: the features document came with runtime-spec v1.1.0, so such a
// runtime predates it (crun 1.8.1 takes 1.0.x and 1.1.x).
const preFeaturesOCIVersion = "1.0.2"

// ociVersionFor is the ociVersion for a runtime that reports maxVersion as its
// ociVersionMax: maxVersion when it is older than specs.Version, else "" (berth's
// own). An unreadable max is taken as no limit.
func ociVersionFor(maxVersion string) string {
	m, ok := parseSemver(maxVersion)
	own, _ := parseSemver(specs.Version)
	if ok && slices.Compare(m[:], own[:]) < 0 {
		return maxVersion
	}
	return ""
}

// parseSemver reads "MAJOR.MINOR.PATCH" with an optional "-suffix".
func parseSemver(v string) ([3]int, bool) {
	var out [3]int
	v, _, _ = strings.Cut(v, "-")
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

// parseFeatures reads the OCI features document. kernelIDMap says whether
// the host can make idmapped mounts under berth's root: a runtime that
// supports them is no help on a kernel that cannot.
func parseFeatures(data []byte, kernelIDMap bool) (handlerFeatures, error) {
	var f features.Features
	if err := json.Unmarshal(data, &f); err != nil {
		return handlerFeatures{}, fmt.Errorf("decode runtime features: %w", err)
	}
	hf := handlerFeatures{RecursiveReadOnly: slices.Contains(f.MountOptions, "rro"), OCIVersion: ociVersionFor(f.OCIVersionMax)}
	if l := f.Linux; l != nil && kernelIDMap && slices.Contains(l.Namespaces, "user") &&
		l.MountExtensions != nil && l.MountExtensions.IDMap != nil &&
		l.MountExtensions.IDMap.Enabled != nil && *l.MountExtensions.IDMap.Enabled {
		hf.UserNamespaces = true
	}
	return hf, nil
}

// probeHandlers asks every configured handler's binary for its features.
// A handler whose binary is missing or too old to answer gets none.
func probeHandlers(ctx context.Context, handlers map[string]config.Handler, kernelIDMap bool, log *slog.Logger) map[string]handlerFeatures {
	out := make(map[string]handlerFeatures, len(handlers))
	for name, h := range handlers {
		bin, err := exec.LookPath(h.Binary)
		if err != nil {
			log.Info("runtime handler binary not found; no optional features", "handler", name, "binary", h.Binary)
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		data, err := exec.CommandContext(pctx, bin, "features").Output()
		cancel()
		if err != nil {
			log.Info("runtime handler does not report features; bundles say ociVersion "+preFeaturesOCIVersion, "handler", name, "binary", bin, "error", err)
			out[name] = handlerFeatures{OCIVersion: preFeaturesOCIVersion}
			continue
		}
		hf, err := parseFeatures(data, kernelIDMap)
		if err != nil {
			log.Warn("runtime handler features unreadable", "handler", name, "binary", bin, "error", err)
			continue
		}
		log.Info("runtime handler features", "handler", name, "binary", bin,
			"recursive_read_only", hf.RecursiveReadOnly, "user_namespaces", hf.UserNamespaces, "oci_version", cmp.Or(hf.OCIVersion, specs.Version))
		out[name] = hf
	}
	return out
}

// runtimeHandlers is Status's list of handlers with what each supports.
func (s *Server) runtimeHandlers() []*runtime.RuntimeHandler {
	names := make([]string, 0, len(s.cfg.Runtime.Handlers))
	for name := range s.cfg.Runtime.Handlers {
		names = append(names, name)
	}
	slices.Sort(names)
	// The default handler is listed under "" too, as containerd does:
	// kubelet and critest look features up by the RuntimeClass handler
	// name, which is "" for pods that name none.
	if _, ok := s.cfg.Runtime.Handlers[s.cfg.Runtime.DefaultHandler]; ok {
		names = append([]string{""}, names...)
	}
	out := make([]*runtime.RuntimeHandler, 0, len(names))
	for _, name := range names {
		f := s.features[name]
		if name == "" {
			f = s.features[s.cfg.Runtime.DefaultHandler]
		}
		out = append(out, &runtime.RuntimeHandler{
			Name:     name,
			Features: &runtime.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: f.RecursiveReadOnly, UserNamespaces: f.UserNamespaces},
		})
	}
	return out
}

// checkPodUserns refuses a pod whose user namespace request is malformed
// (InvalidArgument, as critest expects from RunPodSandbox) or that asks
// for one the handler cannot make.
func (s *Server) checkPodUserns(cfg *runtime.PodSandboxConfig, handler string) error {
	u := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions()
	if err := specgen.ValidateUserns(u); err != nil {
		return err
	}
	if _, ok := specgen.PodUserns(cfg); !ok {
		return nil
	}
	if !s.features[handler].UserNamespaces {
		return fmt.Errorf("runtime handler %q does not support user namespaces: %w", handler, errdefs.ErrInvalidArgument)
	}
	return nil
}

// infraIDMaps converts a pod's mappings for the sandbox controller, which
// puts a shared-PID pod's infra process in the pod's user namespace.
func infraIDMaps(cfg *runtime.PodSandboxConfig) (uids, gids []syscall.SysProcIDMap) {
	m, ok := specgen.PodUserns(cfg)
	if !ok {
		return nil, nil
	}
	return infraIDMapsOf(m)
}

func infraIDMapsOf(m specgen.IDMappings) (uids, gids []syscall.SysProcIDMap) {
	conv := func(in []specs.LinuxIDMapping) []syscall.SysProcIDMap {
		out := make([]syscall.SysProcIDMap, 0, len(in))
		for _, x := range in {
			out = append(out, syscall.SysProcIDMap{ContainerID: int(x.ContainerID), HostID: int(x.HostID), Size: int(x.Size)})
		}
		return out
	}
	return conv(m.UIDs), conv(m.GIDs)
}
