package api

import (
	"slices"
	"strconv"
	"strings"
)

// capNames are the capabilities by number (capability(7)), every one up to
// Linux 5.9 (CAP_CHECKPOINT_RESTORE), in kernel order. The daemon writes
// them into a container's spec and the shim checks a restored task's sets
// against that spec: both read the one list.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// Capabilities returns the names of every capability berth knows, in
// kernel order (a name's index is its bit): a copy the caller may keep.
func Capabilities() []string { return slices.Clone(capNames) }

// CapabilitiesOf names the capabilities in mask (a CapEff or CapBnd of
// /proc/<pid>/status), in kernel order; bits past the known ones are left
// out.
func CapabilitiesOf(mask uint64) []string {
	var out []string
	for i, name := range capNames {
		if mask&(1<<uint(i)) != 0 {
			out = append(out, name)
		}
	}
	return out
}

// CapabilityMask is the set of the named capabilities, each named with or
// without its CAP_ prefix in any case; names the list does not know grant
// nothing (a runtime could not grant them either).
func CapabilityMask(names []string) uint64 {
	var m uint64
	for _, n := range names {
		for i, c := range capNames {
			if strings.EqualFold(n, c) || strings.EqualFold("CAP_"+n, c) {
				m |= 1 << i
			}
		}
	}
	return m
}

// CapabilityList names the capabilities in mask for a message, a bit past
// the known ones as "capability N".
func CapabilityList(mask uint64) string {
	var out []string
	for i := 0; i < 64; i++ {
		if mask&(1<<i) == 0 {
			continue
		}
		if i < len(capNames) {
			out = append(out, capNames[i])
		} else {
			out = append(out, "capability "+strconv.Itoa(i))
		}
	}
	return strings.Join(out, ", ")
}
