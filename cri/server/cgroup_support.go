package server

import (
	"os"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hugetlbUsable reports whether the OCI runtime can apply hugepage limits.
// kubelet sends them for every container, but on a hybrid host the hugetlb
// controller may sit in the v2 mount that runc's v1 manager never uses, and
// runc then fails the container. containerd skips the limits in that case,
// and so does berth.
func hugetlbUsable(cgroupRoot string) bool {
	if _, err := os.Stat(cgroupRoot + "/hugetlb"); err == nil {
		return true
	}
	// Pure v2: the controller is listed at the root.
	data, err := os.ReadFile(cgroupRoot + "/cgroup.controllers")
	return err == nil && strings.Contains(" "+strings.TrimSpace(string(data))+" ", " hugetlb ")
}

// dropUnsupported removes resource settings the host's cgroups cannot take.
func (s *Server) dropUnsupported(r *specs.LinuxResources) {
	if r != nil && !s.hugetlb {
		r.HugepageLimits = nil
	}
}
