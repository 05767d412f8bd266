package specgen

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-runtime/berth/shim/api"
)

// defaultCaps is the capability set containerd and Docker grant to
// unprivileged containers.
var defaultCaps = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_NET_RAW",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// allCaps is every capability berth knows, in kernel order; runc warns
// about and skips names it does not know.
var allCaps = api.Capabilities()

// defaultMaskedPaths and defaultReadonlyPaths are containerd's defaults;
// kubelet normally sends its own (equal) lists in the security context.
var defaultMaskedPaths = []string{
	"/proc/acpi",
	"/proc/asound",
	"/proc/kcore",
	"/proc/keys",
	"/proc/latency_stats",
	"/proc/timer_list",
	"/proc/timer_stats",
	"/proc/sched_debug",
	"/proc/scsi",
	"/sys/firmware",
	"/sys/devices/virtual/powercap",
}

var defaultReadonlyPaths = []string{
	"/proc/bus",
	"/proc/fs",
	"/proc/irq",
	"/proc/sys",
	"/proc/sysrq-trigger",
}

func defaultMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
}

// defaultShmMount is used when the pod has no shm directory of its own.
func defaultShmMount() specs.Mount {
	return specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}
}

// defaultDeviceRules denies every device node, then allows the ones runc
// creates in /dev plus ptys and tun, as containerd's WithDefaultUnixDevices.
func defaultDeviceRules() []specs.LinuxDeviceCgroup {
	dev := func(typ string, major, minor int64) specs.LinuxDeviceCgroup {
		r := specs.LinuxDeviceCgroup{Allow: true, Type: typ, Access: "rwm"}
		if major >= 0 {
			r.Major = &major
		}
		if minor >= 0 {
			r.Minor = &minor
		}
		return r
	}
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		dev("c", 1, 3),    // /dev/null
		dev("c", 1, 8),    // /dev/random
		dev("c", 1, 7),    // /dev/full
		dev("c", 5, 0),    // /dev/tty
		dev("c", 1, 5),    // /dev/zero
		dev("c", 1, 9),    // /dev/urandom
		dev("c", 136, -1), // /dev/pts/*
		dev("c", 5, 2),    // /dev/ptmx
		dev("c", 10, 200), // /dev/net/tun
	}
}

// defaultSpec mirrors containerd's populateDefaultUnixSpec. Unlike
// containerd's ctr default it sets no RLIMIT_NOFILE: containerd's CRI
// plugin leaves rlimits to what the runtime inherits, and so does berth.
func defaultSpec() *specs.Spec {
	caps := func() []string { return append([]string(nil), defaultCaps...) }
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{},
		Process: &specs.Process{
			Cwd: "/",
			Env: []string{defaultPathEnv},
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps(),
				Effective: caps(),
				Permitted: caps(),
			},
		},
		Mounts: defaultMounts(),
		Linux: &specs.Linux{
			MaskedPaths:   append([]string(nil), defaultMaskedPaths...),
			ReadonlyPaths: append([]string(nil), defaultReadonlyPaths...),
			Resources:     &specs.LinuxResources{Devices: defaultDeviceRules()},
		},
	}
}
