package specgen

import (
	"errors"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCapabilities(t *testing.T) {
	tests := []struct {
		name        string
		caps        *runtime.Capability
		has, hasNot []string
		count       int // 0 => not checked
		ambient     []string
	}{
		{name: "add without prefix", caps: &runtime.Capability{AddCapabilities: []string{"net_admin", "CAP_SYS_TIME"}},
			has: []string{"CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_CHOWN"}, count: len(defaultCaps) + 2},
		{name: "drop", caps: &runtime.Capability{DropCapabilities: []string{"NET_RAW", "CAP_CHOWN"}},
			hasNot: []string{"CAP_NET_RAW", "CAP_CHOWN"}, count: len(defaultCaps) - 2},
		{name: "drop all add one", caps: &runtime.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}},
			has: []string{"CAP_NET_BIND_SERVICE"}, count: 1},
		{name: "add all drop one", caps: &runtime.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"SYS_ADMIN"}},
			has: []string{"CAP_SYS_MODULE", "CAP_BPF"}, hasNot: []string{"CAP_SYS_ADMIN"}, count: len(allCaps) - 1},
		{name: "drop all", caps: &runtime.Capability{DropCapabilities: []string{"all"}}, hasNot: []string{"CAP_CHOWN"}, count: -1},
		{name: "ambient", caps: &runtime.Capability{AddAmbientCapabilities: []string{"NET_ADMIN"}},
			has: []string{"CAP_NET_ADMIN"}, ambient: []string{"CAP_NET_ADMIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			sc(in).Capabilities = tt.caps
			c := mustGenerate(t, in).Process.Capabilities
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted} {
				for _, h := range tt.has {
					if !slices.Contains(set, h) {
						t.Fatalf("%s missing from %q", h, set)
					}
				}
				for _, h := range tt.hasNot {
					if slices.Contains(set, h) {
						t.Fatalf("%s present in %q", h, set)
					}
				}
				if tt.count > 0 && len(set) != tt.count || tt.count < 0 && len(set) != 0 {
					t.Fatalf("%d caps, want %d: %q", len(set), tt.count, set)
				}
			}
			if !slices.Equal(c.Ambient, tt.ambient) || !slices.Equal(c.Inheritable, tt.ambient) {
				t.Fatalf("ambient %q inheritable %q, want %q", c.Ambient, c.Inheritable, tt.ambient)
			}
		})
	}
}

func TestPrivileged(t *testing.T) {
	in := baseInput()
	in.Sandbox.Linux.SecurityContext.Privileged = true
	sc(in).Privileged = true
	sc(in).MaskedPaths = []string{"/proc/kcore"}
	sc(in).Seccomp = &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}
	sc(in).Capabilities = &runtime.Capability{DropCapabilities: []string{"ALL"}}
	s := mustGenerate(t, in)
	if !slices.Equal(s.Process.Capabilities.Bounding, allCaps) || !slices.Equal(s.Process.Capabilities.Effective, allCaps) {
		t.Fatalf("caps = %q", s.Process.Capabilities.Bounding)
	}
	if len(s.Linux.MaskedPaths) != 0 || len(s.Linux.ReadonlyPaths) != 0 || s.Linux.Seccomp != nil {
		t.Fatalf("masked %q readonly %q seccomp %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Seccomp)
	}
	for _, dst := range []string{"/sys", "/sys/fs/cgroup"} {
		if m, _ := findMount(s, dst); slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "rw") {
			t.Fatalf("%s = %+v, want rw", dst, m)
		}
	}
	if d := s.Linux.Resources.Devices; len(d) != 1 || !d[0].Allow {
		t.Fatalf("devices = %+v, want allow all", d)
	}
	// The default mounts must not be changed for later specs.
	if m := defaultMounts()[4]; m.Destination != "/sys" || !slices.Contains(m.Options, "ro") {
		t.Fatalf("default /sys mount changed: %+v", m)
	}
}

func TestMaskedPathsOverride(t *testing.T) {
	in := baseInput()
	sc(in).MaskedPaths = []string{}
	sc(in).ReadonlyPaths = []string{"/proc/sys"}
	sc(in).NoNewPrivs = true
	s := mustGenerate(t, in)
	if len(s.Linux.MaskedPaths) != 0 || !slices.Equal(s.Linux.ReadonlyPaths, []string{"/proc/sys"}) || !s.Process.NoNewPrivileges {
		t.Fatalf("masked %q readonly %q nnp %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Process.NoNewPrivileges)
	}
}

// seccompRules sorts the rules naming syscall into those allowing it
// whatever the arguments, those allowing it for some arguments only, and
// the errno of an unconditional errno rule (0: none).
func seccompRules(p *specs.LinuxSeccomp, syscall string) (always bool, filtered []specs.LinuxSyscall, errno uint) {
	for _, r := range p.Syscalls {
		if !slices.Contains(r.Names, syscall) {
			continue
		}
		switch {
		case r.Action == specs.ActAllow && len(r.Args) == 0:
			always = true
		case r.Action == specs.ActAllow:
			filtered = append(filtered, r)
		case r.Action == specs.ActErrno && len(r.Args) == 0 && r.ErrnoRet != nil:
			errno = *r.ErrnoRet
		}
	}
	return always, filtered, errno
}

// allowedWithArg reports whether a filtered rule allows syscall when its
// argument index holds v.
func allowedWithArg(rules []specs.LinuxSyscall, index uint, v uint64) bool {
	for _, r := range rules {
		ok := true
		for _, a := range r.Args {
			if a.Index != index {
				continue
			}
			switch a.Op {
			case specs.OpEqualTo:
				ok = ok && v == a.Value
			case specs.OpLessThan:
				ok = ok && v < a.Value
			case specs.OpMaskedEqual:
				ok = ok && v&a.Value == a.ValueTwo
			default:
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func TestSeccompProfileTypes(t *testing.T) {
	for _, tt := range []struct {
		name    string
		profile *runtime.SecurityProfile
		wantErr error
	}{
		{name: "nil is unconfined"},
		{name: "unconfined", profile: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Unconfined}},
		{name: "localhost missing", profile: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "/nonexistent/p.json"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "localhost relative", profile: &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_Localhost, LocalhostRef: "p.json"}, wantErr: errdefs.ErrInvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			sc(in).Seccomp = tt.profile
			s, err := Generate(in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Linux.Seccomp != nil {
				t.Fatalf("seccomp = %+v, want none", s.Linux.Seccomp)
			}
		})
	}
}

// RuntimeDefault is an allow-list: unlisted syscalls fail with EPERM,
// io_uring and namespace-creating calls are not listed, personality,
// socket and clone are allowed for some arguments only, and capabilities
// add what they make safe.
func TestSeccompRuntimeDefault(t *testing.T) {
	const (
		cloneNewUser  = 0x10000000
		cloneNewNS    = 0x00020000
		afInet        = 2
		afAlg         = 38
		afVsock       = 40
		addrNoRandom  = 0x0040000
		perLinux32    = 0x0008
		personaQuery  = 0xffffffff
		errnoEPERM    = 1
		errnoENOSYS   = 38
		cloneSigchild = 17
	)
	rd := &runtime.SecurityProfile{ProfileType: runtime.SecurityProfile_RuntimeDefault}
	gen := func(t *testing.T, add ...string) *specs.LinuxSeccomp {
		t.Helper()
		in := baseInput()
		sc(in).Seccomp = rd
		sc(in).Capabilities = &runtime.Capability{AddCapabilities: add}
		p := mustGenerate(t, in).Linux.Seccomp
		if p == nil {
			t.Fatal("no seccomp profile for RuntimeDefault")
		}
		return p
	}
	p := gen(t)
	if p.DefaultAction != specs.ActErrno || p.DefaultErrnoRet == nil || *p.DefaultErrnoRet != errnoEPERM {
		t.Fatalf("default action %s errno %v, want SCMP_ACT_ERRNO with EPERM", p.DefaultAction, p.DefaultErrnoRet)
	}
	if !slices.Contains(p.Architectures, specs.ArchX86_64) {
		t.Errorf("architectures %v lack x86_64", p.Architectures)
	}
	for _, name := range []string{"read", "write", "openat", "execve", "exit_group", "futex", "mmap"} {
		if always, _, _ := seccompRules(p, name); !always {
			t.Errorf("%s is not allowed", name)
		}
	}
	for _, name := range []string{
		"io_uring_setup", "io_uring_enter", "io_uring_register", "mount", "umount2", "unshare", "setns",
		"pivot_root", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "kexec_load", "reboot",
		"init_module", "open_by_handle_at", "userfaultfd", "kcmp", "pidfd_getfd", "berth_future_syscall",
	} {
		if always, filtered, _ := seccompRules(p, name); always || len(filtered) > 0 {
			t.Errorf("%s is allowed without capabilities", name)
		}
	}
	always, pers, _ := seccompRules(p, "personality")
	if always || !allowedWithArg(pers, 0, 0) || !allowedWithArg(pers, 0, perLinux32) || !allowedWithArg(pers, 0, personaQuery) {
		t.Errorf("personality: always %v, filtered %+v; want PER_LINUX, PER_LINUX32 and the query only", always, pers)
	}
	if allowedWithArg(pers, 0, addrNoRandom) {
		t.Error("personality(ADDR_NO_RANDOMIZE) is allowed: it turns ASLR off")
	}
	always, sock, _ := seccompRules(p, "socket")
	if always || !allowedWithArg(sock, 0, afInet) || allowedWithArg(sock, 0, afAlg) || allowedWithArg(sock, 0, afVsock) {
		t.Errorf("socket: always %v, AF_INET %v AF_ALG %v AF_VSOCK %v; want AF_INET only", always,
			allowedWithArg(sock, 0, afInet), allowedWithArg(sock, 0, afAlg), allowedWithArg(sock, 0, afVsock))
	}
	always, clone, _ := seccompRules(p, "clone")
	if always || !allowedWithArg(clone, 0, cloneSigchild) || allowedWithArg(clone, 0, cloneSigchild|cloneNewUser) ||
		allowedWithArg(clone, 0, cloneNewNS) {
		t.Errorf("clone: always %v, rules %+v; want namespace flags refused", always, clone)
	}
	// clone3 passes its flags in memory seccomp cannot read: ENOSYS makes
	// libc fall back to the filtered clone.
	if always, _, errno := seccompRules(p, "clone3"); always || errno != errnoENOSYS {
		t.Errorf("clone3: always %v errno %d, want ENOSYS", always, errno)
	}

	admin := gen(t, "SYS_ADMIN")
	for _, name := range []string{"mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf", "perf_event_open"} {
		if always, _, _ := seccompRules(admin, name); !always {
			t.Errorf("with CAP_SYS_ADMIN %s is not allowed", name)
		}
	}
	for _, name := range []string{"io_uring_setup", "keyctl", "kexec_load", "reboot", "init_module"} {
		if always, filtered, _ := seccompRules(admin, name); always || len(filtered) > 0 {
			t.Errorf("with CAP_SYS_ADMIN %s is allowed", name)
		}
	}
	for cap, names := range map[string][]string{
		"SYS_BOOT":   {"reboot"},
		"SYS_MODULE": {"init_module", "finit_module", "delete_module"},
		"SYS_TIME":   {"settimeofday", "clock_settime"},
		"SYS_PTRACE": {"kcmp", "pidfd_getfd"},
	} {
		ps := gen(t, cap)
		for _, name := range names {
			if always, _, _ := seccompRules(ps, name); !always {
				t.Errorf("with CAP_%s %s is not allowed", cap, name)
			}
		}
	}
}

func TestAllCaps(t *testing.T) {
	in := baseInput()
	in.AllCaps = []string{"CAP_CHOWN", "CAP_KILL"}
	sc(in).Capabilities = &runtime.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"ALL"}}
	if c := mustGenerate(t, in).Process.Capabilities; len(c.Bounding) != 0 {
		t.Fatalf("drop ALL after add ALL: %q", c.Bounding)
	}
	sc(in).Capabilities = &runtime.Capability{AddCapabilities: []string{"ALL"}}
	if c := mustGenerate(t, in).Process.Capabilities; !slices.Equal(c.Bounding, in.AllCaps) {
		t.Fatalf("add ALL = %q, want AllCaps", c.Bounding)
	}
	in.Sandbox.Linux.SecurityContext.Privileged = true
	sc(in).Privileged = true
	if c := mustGenerate(t, in).Process.Capabilities; !slices.Equal(c.Effective, in.AllCaps) {
		t.Fatalf("privileged = %q, want AllCaps", c.Effective)
	}
}

// TestSELinuxOptionsWithoutSELinux: kubelet passes a pod's seLinuxOptions
// (the node e2e suite's emptyDir and container-metrics pods set a level);
// on a host without SELinux they are accepted and label nothing, as in
// containerd and CRI-O, instead of failing CreateContainer.
func TestSELinuxOptionsWithoutSELinux(t *testing.T) {
	in := baseInput()
	sc(in).SelinuxOptions = &runtime.SELinuxOption{Level: "s0:c0,c1", Type: "container_t"}
	s, err := Generate(in)
	if err != nil {
		t.Fatalf("Generate with SELinux options on a host without SELinux: %v", err)
	}
	if s.Process.SelinuxLabel != "" || s.Linux.MountLabel != "" {
		t.Fatalf("labels set on a host without SELinux: process %q, mount %q", s.Process.SelinuxLabel, s.Linux.MountLabel)
	}
	in.SELinux = true
	if _, err := Generate(in); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Fatalf("SELinux options on an SELinux host: err = %v, want not implemented", err)
	}
}
