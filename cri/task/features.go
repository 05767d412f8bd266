package task

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"time"

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
}

// parseFeatures reads the OCI features document. kernelIDMap says whether
// the host can make idmapped mounts under berth's root: a runtime that
// supports them is no help on a kernel that cannot.
func parseFeatures(data []byte, kernelIDMap bool) (Features, error) {
	var f features.Features
	if err := json.Unmarshal(data, &f); err != nil {
		return Features{}, fmt.Errorf("decode runtime features: %w", err)
	}
	hf := Features{RecursiveReadOnly: slices.Contains(f.MountOptions, "rro")}
	if l := f.Linux; l != nil && kernelIDMap && slices.Contains(l.Namespaces, "user") &&
		l.MountExtensions != nil && l.MountExtensions.IDMap != nil &&
		l.MountExtensions.IDMap.Enabled != nil && *l.MountExtensions.IDMap.Enabled {
		hf.UserNamespaces = true
	}
	return hf, nil
}

// ProbeFeatures asks every configured handler's binary for its features.
// A handler whose binary is missing or too old to answer gets none.
func ProbeFeatures(ctx context.Context, handlers map[string]config.Handler, kernelIDMap bool, log *slog.Logger) map[string]Features {
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
			log.Info("runtime handler does not report features", "handler", name, "binary", bin, "error", err)
			continue
		}
		hf, err := parseFeatures(data, kernelIDMap)
		if err != nil {
			log.Warn("runtime handler features unreadable", "handler", name, "binary", bin, "error", err)
			continue
		}
		log.Info("runtime handler features", "handler", name, "binary", bin,
			"recursive_read_only", hf.RecursiveReadOnly, "user_namespaces", hf.UserNamespaces)
		out[name] = hf
	}
	return out
}
