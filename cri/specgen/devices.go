package specgen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// applyDevices adds the devices the container asks for (CRI devices,
// each a node or a directory of nodes) and, for a privileged container,
// every device of the host, as containerd does. runc creates the nodes;
// the device cgroup lets each through with the asked permissions.
func applyDevices(s *specs.Spec, in Input, _ nsModes) error {
	if in.Config.GetLinux().GetSecurityContext().GetPrivileged() {
		devs, err := hostDevices(in.devRoot())
		if err != nil {
			return err
		}
		s.Linux.Devices = append(s.Linux.Devices, devs...)
	}
	for _, d := range in.Config.GetDevices() {
		devs, rules, err := criDevice(d)
		if err != nil {
			return err
		}
		s.Linux.Devices = append(s.Linux.Devices, devs...)
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, rules...)
	}
	return nil
}

func (in Input) devRoot() string {
	if in.DevRoot != "" {
		return in.DevRoot
	}
	return "/dev"
}

// criDevice resolves one CRI device: a node, or a directory whose nodes
// are all added below container_path.
func criDevice(d *runtime.Device) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	host, ctr, perms := d.GetHostPath(), d.GetContainerPath(), d.GetPermissions()
	if perms == "" {
		perms = "rwm"
	}
	if strings.Trim(perms, "rwm") != "" {
		return nil, nil, fmt.Errorf("device %q permissions %q: %w", host, perms, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(host) || (ctr != "" && !path.IsAbs(ctr)) {
		return nil, nil, fmt.Errorf("device paths %q -> %q must be absolute: %w", host, ctr, errdefs.ErrInvalidArgument)
	}
	if ctr == "" {
		ctr = host
	}
	st, err := os.Stat(host)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("device %q: %w", host, errdefs.ErrInvalidArgument)
		}
		return nil, nil, fmt.Errorf("stat device %q: %w", host, err)
	}
	var devs []specs.LinuxDevice
	if st.IsDir() {
		all, err := hostDevices(host)
		if err != nil {
			return nil, nil, err
		}
		for _, dev := range all {
			rel, err := filepath.Rel(host, dev.Path)
			if err != nil {
				return nil, nil, fmt.Errorf("device %q below %q: %w", dev.Path, host, err)
			}
			dev.Path = path.Join(ctr, rel)
			devs = append(devs, dev)
		}
	} else {
		dev, err := deviceFromPath(host)
		if err != nil {
			return nil, nil, err
		}
		dev.Path = ctr
		devs = append(devs, dev)
	}
	rules := make([]specs.LinuxDeviceCgroup, 0, len(devs))
	for _, dev := range devs {
		major, minor := dev.Major, dev.Minor
		rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: dev.Type, Major: &major, Minor: &minor, Access: perms})
	}
	return devs, rules, nil
}

// deviceFromPath describes the device node at p (symlinks followed).
func deviceFromPath(p string) (specs.LinuxDevice, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return specs.LinuxDevice{}, fmt.Errorf("stat device %q: %w", p, err)
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, fmt.Errorf("%q is not a device node: %w", p, errdefs.ErrInvalidArgument)
	}
	mode := fs.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	return specs.LinuxDevice{
		Path: p, Type: typ,
		Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
		FileMode: &mode, UID: &uid, GID: &gid,
	}, nil
}

// hostDevices lists the device nodes below root, skipping what the
// runtime mounts itself (pts, shm, mqueue) and the console, as containerd
// does for privileged containers.
func hostDevices(root string) ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil
		}
		if de.IsDir() {
			switch de.Name() {
			case "pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev":
				if p != root {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if de.Name() == "console" || de.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 {
			return nil
		}
		dev, err := deviceFromPath(p)
		if err != nil {
			return nil // gone or replaced meanwhile
		}
		out = append(out, dev)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list host devices in %s: %w", root, err)
	}
	return out, nil
}
