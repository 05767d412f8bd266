package specgen

import (
	"fmt"

	"github.com/berth-runtime/berth/cri/cgroups"
)

// cgroupsPathFor is the container's OCI cgroupsPath: a path below the pod's
// cgroup parent (cgroupfs driver), or "<pod slice>:berth:<id>", which runc
// run with --systemd-cgroup makes into the scope berth-<id>.scope.
func cgroupsPathFor(in Input) (string, error) {
	if !in.SystemdCgroup {
		return cgroupsPath(in.CgroupParent, in.ID), nil
	}
	parent := in.CgroupParent
	if parent == "" {
		parent = defaultCgroupParent
	}
	p, err := cgroups.SystemdCgroupsPath(parent, in.ID)
	if err != nil {
		return "", fmt.Errorf("cgroup parent of container %q: %w", in.ID, err)
	}
	return p, nil
}
