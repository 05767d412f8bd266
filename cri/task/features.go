package task

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
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"

	"github.com/berth-runtime/berth/cri/config"
)

// Features is what a runtime handler can do beyond the basics,
// learnt once at startup from `<runtime> features` (OCI runtime features,
// runc >= 1.1) rather than assumed from its name: Debian's runc 1.1.5
// knows neither "rro" nor idmapped mounts, the bundled 1.5.2 knows both.
type Features struct {
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

// Kernel is what the host itself can do of what handlers offer: a runtime
// that supports a feature is no help on a kernel that cannot.
type Kernel struct {
	// IDMap: idmapped mounts under berth's root.
	IDMap bool
	// RecursiveReadOnly: mount_setattr(AT_RECURSIVE) (Linux >= 5.12),
	// which runc's "rro" needs.
	RecursiveReadOnly bool
}

// parseFeatures reads the OCI features document, keeping what kernel can do.
func parseFeatures(data []byte, kernel Kernel) (Features, error) {
	var f features.Features
	if err := json.Unmarshal(data, &f); err != nil {
		return Features{}, fmt.Errorf("decode runtime features: %w", err)
	}
	hf := Features{
		RecursiveReadOnly: kernel.RecursiveReadOnly && slices.Contains(f.MountOptions, "rro"),
		OCIVersion:        ociVersionFor(f.OCIVersionMax),
	}
	if l := f.Linux; l != nil && kernel.IDMap && slices.Contains(l.Namespaces, "user") &&
		l.MountExtensions != nil && l.MountExtensions.IDMap != nil &&
		l.MountExtensions.IDMap.Enabled != nil && *l.MountExtensions.IDMap.Enabled {
		hf.UserNamespaces = true
	}
	return hf, nil
}

// ProbeFeatures asks every configured handler's binary for its features.
// A handler whose binary is missing or too old to answer gets none.
func ProbeFeatures(ctx context.Context, handlers map[string]config.Handler, kernel Kernel, log *slog.Logger) map[string]Features {
	out := make(map[string]Features, len(handlers))
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
			out[name] = Features{OCIVersion: preFeaturesOCIVersion}
			continue
		}
		hf, err := parseFeatures(data, kernel)
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
