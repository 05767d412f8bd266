package cgroups

import (
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/containerd/errdefs"
)

// Driver names, as config's cgroup_driver and kubelet's cgroupDriver
// spell them.
const (
	DriverCgroupfs = "cgroupfs"
	DriverSystemd  = "systemd"
)

// SystemdPrefix is the unit prefix of container scopes under the systemd
// driver: a container's scope is "berth-<id>.scope" in its pod's slice.
const SystemdPrefix = "berth"

// SystemdSlice returns the slice a pod's containers go in under the systemd
// driver. kubelet sends the expanded slice path
// ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice"),
// of which runc wants the last name; a bare slice name is taken as is; a
// cgroupfs path (config's default cgroup_parent "/berth") becomes the slice
// systemd would nest at that place, "/a/b" => "a-b.slice", with dashes
// inside a component escaped to underscores as kubelet does.
func SystemdSlice(parent string) (string, error) {
	if strings.ContainsAny(parent, ": \n") {
		return "", fmt.Errorf("cgroup parent %q is not a slice or a path: %w", parent, errdefs.ErrInvalidArgument)
	}
	if base := path.Base(parent); strings.HasSuffix(base, ".slice") && base != ".slice" {
		return base, nil
	}
	if !strings.HasPrefix(parent, "/") {
		return "", fmt.Errorf("cgroup parent %q is neither a .slice nor an absolute path: %w", parent, errdefs.ErrInvalidArgument)
	}
	var parts []string
	for _, c := range strings.Split(strings.Trim(path.Clean(parent), "/"), "/") {
		if c != "" {
			parts = append(parts, strings.ReplaceAll(c, "-", "_"))
		}
	}
	if len(parts) == 0 {
		return "-.slice", nil
	}
	return strings.Join(parts, "-") + ".slice", nil
}

// SystemdCgroupsPath is the OCI cgroupsPath of container id under the
// systemd driver, runc's "slice:prefix:name" form.
func SystemdCgroupsPath(parent, id string) (string, error) {
	slice, err := SystemdSlice(parent)
	if err != nil {
		return "", err
	}
	return slice + ":" + SystemdPrefix + ":" + id, nil
}

// SystemdSlicePath is the cgroup (below the hierarchy root) of the slice
// SystemdSlice names for parent, nested as systemd nests it: kubelet's
// expanded path comes back as it was sent, "/berth" becomes
// "/berth.slice". The root slice "-.slice" is "/".
func SystemdSlicePath(parent string) (string, error) {
	slice, err := SystemdSlice(parent)
	if err != nil {
		return "", err
	}
	return path.Join("/", expandSlice(slice)), nil
}

// SystemdBooted reports whether systemd runs as the init system, the way
// sd_booted(3) tells: it creates /run/systemd/system early at boot.
func SystemdBooted() bool { return systemdBootedAt("/run/systemd/system") }

func systemdBootedAt(dir string) bool {
	fi, err := os.Lstat(dir)
	return err == nil && fi.IsDir()
}
