package specgen

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// userMountOptions are the extra options a CRI mount may carry
// (mount_options): per-mount flags only, nothing that changes the source.
var userMountOptions = map[string]bool{
	"noexec": true, "exec": true, "nodev": true, "dev": true,
	"nosuid": true, "suid": true, "noatime": true, "nodiratime": true,
	"relatime": true, "strictatime": true,
}

func applyMounts(s *specs.Spec, in Input, _ nsModes) error {
	user, err := criMounts(in.Config.GetMounts(), in.ExtraMounts, in.RecursiveReadOnly)
	if err != nil {
		return err
	}
	pod := podFileMounts(in.PodFiles, in.Config.GetLinux().GetSecurityContext().GetReadonlyRootfs())
	extra := user
	for _, m := range in.ExtraMounts {
		// image volumes replace their CRI mount; declared volumes yield to one.
		if !hasDest(extra, m.Destination) {
			extra = append(extra, m)
		}
	}
	for _, m := range pod {
		// User mounts win over pod files at the same path.
		if !hasDest(user, m.Destination) {
			extra = append(extra, m)
		}
	}
	if !hasDest(extra, "/dev/shm") {
		extra = append(extra, defaultShmMount())
	}
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if !overridden(extra, m.Destination) {
			mounts = append(mounts, m)
		}
	}
	mounts = append(mounts, extra...)
	// Parents before children, as containerd sorts: a stable sort by path
	// depth keeps the given order among siblings.
	slices.SortStableFunc(mounts, func(a, b specs.Mount) int {
		return depth(a.Destination) - depth(b.Destination)
	})
	s.Mounts = mounts
	s.Linux.RootfsPropagation = rootfsPropagation(user)
	return nil
}

func criMounts(in []*runtime.Mount, prepared []specs.Mount, rro bool) ([]specs.Mount, error) {
	out := make([]specs.Mount, 0, len(in))
	for _, m := range in {
		dst, src := m.GetContainerPath(), m.GetHostPath()
		switch {
		case m.GetImage() != nil && src == "" && path.IsAbs(dst) && hasDest(prepared, path.Clean(dst)):
			continue // an image volume cri mounted: in prepared
		case m.GetImage() != nil && src == "":
			return nil, fmt.Errorf("image volume mount at %q: %w", dst, errdefs.ErrNotImplemented)
		case len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0:
			return nil, fmt.Errorf("id-mapped mount at %q: %w", dst, errdefs.ErrNotImplemented)
		case !path.IsAbs(dst) || path.Clean(dst) == "/":
			return nil, fmt.Errorf("mount container_path %q must be absolute and not /: %w", dst, errdefs.ErrInvalidArgument)
		case !path.IsAbs(src):
			return nil, fmt.Errorf("mount host_path %q for %q must be absolute: %w", src, dst, errdefs.ErrInvalidArgument)
		}
		prop, err := propagationOption(m.GetPropagation())
		if err != nil {
			return nil, fmt.Errorf("mount at %q: %w", dst, err)
		}
		opts := []string{"rbind", prop, rwOption(m.GetReadonly())}
		if m.GetRecursiveReadOnly() {
			if err := checkRRO(m, rro); err != nil {
				return nil, err
			}
			opts[2] = "rro"
		}
		for _, o := range m.GetMountOptions() {
			if !userMountOptions[o] {
				return nil, fmt.Errorf("mount option %q at %q: %w", o, dst, errdefs.ErrInvalidArgument)
			}
			opts = append(opts, o)
		}
		out = append(out, specs.Mount{Destination: path.Clean(dst), Type: "bind", Source: src, Options: opts})
	}
	return out, nil
}

func propagationOption(p runtime.MountPropagation) (string, error) {
	switch p {
	case runtime.MountPropagation_PROPAGATION_PRIVATE:
		return "rprivate", nil
	case runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		return "rslave", nil
	case runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		return "rshared", nil
	}
	return "", fmt.Errorf("unknown propagation %d: %w", p, errdefs.ErrInvalidArgument)
}

// rootfsPropagation makes the container's root a slave or shared mount
// when a volume needs propagation, since a private parent would cut it
// off (containerd does the same). The host side of such volumes must be
// a shared mount; cri checks that, as it needs I/O.
func rootfsPropagation(mounts []specs.Mount) string {
	prop := ""
	for _, m := range mounts {
		switch {
		case slices.Contains(m.Options, "rshared"):
			return "rshared"
		case slices.Contains(m.Options, "rslave"):
			prop = "rslave"
		}
	}
	return prop
}

func podFileMounts(f PodFiles, readonly bool) []specs.Mount {
	var out []specs.Mount
	add := func(dst, src string, ro bool) {
		if src != "" {
			out = append(out, specs.Mount{
				Destination: dst, Type: "bind", Source: src,
				Options: []string{"rbind", "rprivate", rwOption(ro)},
			})
		}
	}
	// As in containerd: the files are writable unless the rootfs is
	// read-only, because some images rewrite /etc/hosts at start.
	add("/etc/hostname", f.Hostname, readonly)
	add("/etc/hosts", f.Hosts, readonly)
	add("/etc/resolv.conf", f.Resolv, readonly)
	add("/dev/shm", f.Shm, false)
	if len(out) > 0 && f.Shm != "" {
		out[len(out)-1].Options = append(out[len(out)-1].Options, "nosuid", "nodev", "noexec")
	}
	return out
}

func rwOption(ro bool) string {
	if ro {
		return "ro"
	}
	return "rw"
}

func hasDest(ms []specs.Mount, dst string) bool {
	for _, m := range ms {
		if m.Destination == dst {
			return true
		}
	}
	return false
}

// overridden reports whether a default mount at dst is replaced by an
// extra mount at dst or at one of its parents (a user /dev replaces
// /dev/pts too).
func overridden(extra []specs.Mount, dst string) bool {
	for _, m := range extra {
		if m.Destination == dst || strings.HasPrefix(dst, strings.TrimSuffix(m.Destination, "/")+"/") {
			return true
		}
	}
	return false
}

func depth(p string) int {
	p = path.Clean(p)
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}
