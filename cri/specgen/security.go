package specgen

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func applySecurity(s *specs.Spec, in Input, _ nsModes) error {
	sc := in.Config.GetLinux().GetSecurityContext()
	if err := checkSELinux(sc, in.SELinux); err != nil {
		return err
	}
	if err := applyAppArmor(s, sc, in.AppArmor); err != nil {
		return err
	}
	s.Process.NoNewPrivileges = sc.GetNoNewPrivs()
	all := in.AllCaps
	if all == nil {
		all = allCaps
	}
	if sc.GetPrivileged() {
		applyPrivileged(s, all)
		return nil
	}
	// The CRI cannot tell an empty list from an absent one once decoded,
	// so nil keeps the defaults (as containerd); kubelet always sends its
	// own lists, and sends them empty for procMount: Unmasked.
	if sc.GetMaskedPaths() != nil {
		s.Linux.MaskedPaths = slices.Clone(sc.GetMaskedPaths())
	}
	if sc.GetReadonlyPaths() != nil {
		s.Linux.ReadonlyPaths = slices.Clone(sc.GetReadonlyPaths())
	}
	caps, err := capabilities(sc.GetCapabilities(), all)
	if err != nil {
		return err
	}
	s.Process.Capabilities = caps
	seccomp, err := seccompFor(sc.GetSeccomp(), caps.Bounding)
	if err != nil {
		return err
	}
	s.Linux.Seccomp = seccomp
	return nil
}

// applyPrivileged implements the CRI's list for privileged containers:
// all capabilities, nothing masked, sysfs (and cgroupfs) writable, no
// seccomp, no device cgroup restriction. Host devices are not bind-mounted
// into /dev yet.
func applyPrivileged(s *specs.Spec, all []string) {
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: slices.Clone(all), Effective: slices.Clone(all), Permitted: slices.Clone(all),
	}
	s.Linux.MaskedPaths = nil
	s.Linux.ReadonlyPaths = nil
	s.Linux.Seccomp = nil
	s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	for i, m := range s.Mounts {
		if m.Type == "sysfs" || m.Type == "cgroup" {
			s.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" })
			s.Mounts[i].Options = append(s.Mounts[i].Options, "rw")
		}
	}
}

// checkSELinux refuses SELinux labels on a host that enforces SELinux,
// where berth, which cannot apply them, would run the container less
// confined than asked. On a host without SELinux no runtime can label
// anything, so the options are accepted and have no effect, as containerd
// and CRI-O treat them there (kubelet sends them whenever a pod sets
// seLinuxOptions, and pods written for SELinux nodes run elsewhere too).
func checkSELinux(sc *runtime.LinuxContainerSecurityContext, hostSELinux bool) error {
	o := sc.GetSelinuxOptions()
	if !hostSELinux || (o.GetUser() == "" && o.GetRole() == "" && o.GetType() == "" && o.GetLevel() == "") {
		return nil
	}
	return fmt.Errorf("selinux options: SELinux is enabled on this host and berth cannot apply labels: %w", errdefs.ErrNotImplemented)
}

// SELinuxEnabled reports whether the kernel has SELinux enabled: its file
// system is mounted (as opencontainers/selinux decides, without the
// dependency).
func SELinuxEnabled() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}

// capabilities applies add/drop to the default set. "ALL" in add grants
// every capability in all, "ALL" in drop starts from none; specific names then
// apply, adds before drops (containerd's order). As in containerd, added
// capabilities do not enter the inheritable set (CVE-2022-24769); ambient
// capabilities need it, so those go into every set.
func capabilities(c *runtime.Capability, all []string) (*specs.LinuxCapabilities, error) {
	set := slices.Clone(defaultCaps)
	add, err := normalizeCaps(c.GetAddCapabilities())
	if err != nil {
		return nil, err
	}
	drop, err := normalizeCaps(c.GetDropCapabilities())
	if err != nil {
		return nil, err
	}
	ambient, err := normalizeCaps(c.GetAddAmbientCapabilities())
	if err != nil {
		return nil, err
	}
	if slices.Contains(add, "ALL") {
		set = slices.Clone(all)
	}
	if slices.Contains(drop, "ALL") {
		set = nil
	}
	for _, name := range append(slices.Clone(add), ambient...) {
		if name != "ALL" && !slices.Contains(set, name) {
			set = append(set, name)
		}
	}
	set = slices.DeleteFunc(set, func(n string) bool { return slices.Contains(drop, n) })
	ambient = slices.DeleteFunc(ambient, func(n string) bool { return slices.Contains(drop, n) || n == "ALL" })
	caps := &specs.LinuxCapabilities{
		Bounding:  set,
		Effective: slices.Clone(set),
		Permitted: slices.Clone(set),
	}
	if len(ambient) > 0 {
		caps.Inheritable = ambient
		caps.Ambient = slices.Clone(ambient)
	}
	return caps, nil
}

// normalizeCaps upper-cases names and adds the CAP_ prefix kubelet omits.
func normalizeCaps(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.ToUpper(strings.TrimSpace(n))
		if n != "ALL" && !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		if n != "ALL" && !slices.Contains(allCaps, n) {
			return nil, fmt.Errorf("unknown capability %q: %w", n, errdefs.ErrInvalidArgument)
		}
		out = append(out, n)
	}
	return out, nil
}
