package runtime

import (
	"strings"

	"github.com/berth-runtime/berth/shim/api"
)

// SystemdCgroupsPath reports whether the bundle's config.json asks for a
// systemd cgroup ("slice:prefix:name" instead of a path), which runc
// accepts only with --systemd-cgroup. The spec decides, so the shim needs
// no option of its own for the driver: berthd chose it when it wrote the
// spec. An unreadable spec reads as false; create then reports it.
func SystemdCgroupsPath(bundle string) bool {
	p, err := api.ReadCgroupsPath(bundle)
	if err != nil {
		return false
	}
	return !strings.HasPrefix(p, "/") && strings.Count(p, ":") == 2
}
