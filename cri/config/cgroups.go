package config

import (
	"fmt"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/cri/cgroups"
)

// validateCgroups checks cgroup_driver and that cgroup_parent fits it.
func (c *Config) validateCgroups() error {
	switch c.CgroupDriver {
	case cgroups.DriverCgroupfs:
		if !strings.HasPrefix(c.CgroupParent, "/") {
			return fmt.Errorf("key cgroup_parent: %q must start with /: %w", c.CgroupParent, errdefs.ErrInvalidArgument)
		}
	case cgroups.DriverSystemd:
		if _, err := cgroups.SystemdSlice(c.CgroupParent); err != nil {
			return fmt.Errorf("key cgroup_parent: %q is neither a .slice nor an absolute path (cgroup_driver systemd): %w", c.CgroupParent, errdefs.ErrInvalidArgument)
		}
	default:
		return fmt.Errorf("key cgroup_driver: %q is not one of cgroupfs, systemd: %w", c.CgroupDriver, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CheckHost checks what the config needs of the machine berthd starts on,
// beyond what Validate can see in the file: the systemd driver needs
// systemd as init, since runc creates every container's scope over its
// D-Bus API. `berthd config check` does not run it, so a config can be
// checked on another machine than the node.
func (c *Config) CheckHost() error {
	return c.checkHost(cgroups.SystemdBooted)
}

func (c *Config) checkHost(systemdBooted func() bool) error {
	if c.CgroupDriver == cgroups.DriverSystemd && !systemdBooted() {
		return fmt.Errorf("key cgroup_driver: %q needs systemd running as init, and this host was not booted with systemd (no /run/systemd/system); use \"cgroupfs\": %w",
			c.CgroupDriver, errdefs.ErrFailedPrecondition)
	}
	return nil
}
