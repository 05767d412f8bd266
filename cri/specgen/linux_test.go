package specgen

import (
	"errors"
	"maps"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func nsMap(s *specs.Spec) map[specs.LinuxNamespaceType]string {
	out := map[specs.LinuxNamespaceType]string{}
	for _, n := range s.Linux.Namespaces {
		out[n.Type] = n.Path
	}
	return out
}

func TestNamespaces(t *testing.T) {
	const targetPID = "/proc/42/ns/pid"
	podNS := SandboxNamespaces{Net: "/n", IPC: "/i", UTS: "/u", PID: "/p"}
	tests := []struct {
		name     string
		opts     *runtime.NamespaceOption // container's and pod's
		ns       SandboxNamespaces
		want     map[specs.LinuxNamespaceType]string
		hostname string
		wantErr  error
	}{
		{name: "pid container", opts: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER}, ns: podNS,
			want: map[specs.LinuxNamespaceType]string{"mount": "", "network": "/n", "uts": "/u", "ipc": "/i", "pid": ""}, hostname: "pod-host"},
		{name: "pid pod", opts: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_POD}, ns: podNS,
			want: map[specs.LinuxNamespaceType]string{"mount": "", "network": "/n", "uts": "/u", "ipc": "/i", "pid": "/p"}, hostname: "pod-host"},
		{name: "pid node", opts: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_NODE}, ns: podNS,
			want: map[specs.LinuxNamespaceType]string{"mount": "", "network": "/n", "uts": "/u", "ipc": "/i"}, hostname: "pod-host"},
		{name: "pid target", opts: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET, TargetId: "c0"},
			ns:   SandboxNamespaces{Net: "/n", IPC: "/i", UTS: "/u", PID: targetPID},
			want: map[specs.LinuxNamespaceType]string{"mount": "", "network": "/n", "uts": "/u", "ipc": "/i", "pid": targetPID}, hostname: "pod-host"},
		{name: "pid target without path", opts: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_TARGET}, wantErr: errdefs.ErrInvalidArgument},
		{name: "host network omits net and uts", opts: &runtime.NamespaceOption{Network: runtime.NamespaceMode_NODE, Pid: runtime.NamespaceMode_CONTAINER}, ns: podNS,
			want: map[specs.LinuxNamespaceType]string{"mount": "", "ipc": "/i", "pid": ""}},
		{name: "host ipc", opts: &runtime.NamespaceOption{Ipc: runtime.NamespaceMode_NODE, Pid: runtime.NamespaceMode_CONTAINER}, ns: podNS,
			want: map[specs.LinuxNamespaceType]string{"mount": "", "network": "/n", "uts": "/u", "pid": ""}, hostname: "pod-host"},
		{name: "no paths => all new", opts: &runtime.NamespaceOption{Pid: runtime.NamespaceMode_POD},
			want: map[specs.LinuxNamespaceType]string{"mount": "", "network": "", "uts": "", "ipc": "", "pid": ""}, hostname: "pod-host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			sc(in).NamespaceOptions = tt.opts
			in.Sandbox.Linux.SecurityContext.NamespaceOptions = tt.opts
			in.Namespaces = tt.ns
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
			if got := nsMap(s); !maps.Equal(got, tt.want) || len(s.Linux.Namespaces) != len(tt.want) {
				t.Fatalf("namespaces = %v, want %v", s.Linux.Namespaces, tt.want)
			}
			if s.Hostname != tt.hostname {
				t.Fatalf("hostname = %q, want %q", s.Hostname, tt.hostname)
			}
		})
	}
}

func TestResources(t *testing.T) {
	intp := func(v int) *int { return &v }
	tests := []struct {
		name    string
		res     *runtime.LinuxContainerResources
		min     *int
		check   func(t *testing.T, s *specs.Spec)
		wantErr error
	}{
		{name: "none", check: func(t *testing.T, s *specs.Spec) {
			if s.Linux.Resources.CPU != nil || s.Linux.Resources.Memory != nil || s.Process.OOMScoreAdj != nil {
				t.Fatalf("resources = %+v", s.Linux.Resources)
			}
		}},
		{name: "cpu and memory", res: &runtime.LinuxContainerResources{
			CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, CpusetCpus: "0-1", CpusetMems: "0",
			MemoryLimitInBytes: 64 << 20, OomScoreAdj: 999,
			HugepageLimits: []*runtime.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}},
			Unified:        map[string]string{"memory.high": "1000"},
		}, check: func(t *testing.T, s *specs.Spec) {
			r := s.Linux.Resources
			if *r.CPU.Shares != 512 || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || r.CPU.Cpus != "0-1" || r.CPU.Mems != "0" {
				t.Fatalf("cpu = %+v", r.CPU)
			}
			if *r.Memory.Limit != 64<<20 || r.Memory.Swap != nil {
				t.Fatalf("memory = %+v", r.Memory)
			}
			if len(r.HugepageLimits) != 1 || r.HugepageLimits[0].Pagesize != "2MB" || r.Unified["memory.high"] != "1000" {
				t.Fatalf("hugepages %+v unified %v", r.HugepageLimits, r.Unified)
			}
			if *s.Process.OOMScoreAdj != 999 {
				t.Fatalf("oom = %d", *s.Process.OOMScoreAdj)
			}
		}},
		{name: "swap when given", res: &runtime.LinuxContainerResources{MemoryLimitInBytes: 100, MemorySwapLimitInBytes: 200},
			check: func(t *testing.T, s *specs.Spec) {
				if *s.Linux.Resources.Memory.Swap != 200 {
					t.Fatalf("swap = %d", *s.Linux.Resources.Memory.Swap)
				}
			}},
		{name: "oom clamped", res: &runtime.LinuxContainerResources{OomScoreAdj: -998}, min: intp(-500),
			check: func(t *testing.T, s *specs.Spec) {
				if *s.Process.OOMScoreAdj != -500 {
					t.Fatalf("oom = %d, want -500", *s.Process.OOMScoreAdj)
				}
			}},
		{name: "oom above min kept", res: &runtime.LinuxContainerResources{OomScoreAdj: 1000}, min: intp(-500),
			check: func(t *testing.T, s *specs.Spec) {
				if *s.Process.OOMScoreAdj != 1000 {
					t.Fatalf("oom = %d", *s.Process.OOMScoreAdj)
				}
			}},
		{name: "oom unrestricted", res: &runtime.LinuxContainerResources{OomScoreAdj: -998},
			check: func(t *testing.T, s *specs.Spec) {
				if *s.Process.OOMScoreAdj != -998 {
					t.Fatalf("oom = %d", *s.Process.OOMScoreAdj)
				}
			}},
		{name: "hugepage without size", res: &runtime.LinuxContainerResources{HugepageLimits: []*runtime.HugepageLimit{{Limit: 1}}}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			in.Config.Linux.Resources = tt.res
			in.OOMScoreAdjMin = tt.min
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
			tt.check(t, s)
		})
	}
}

func TestSysctls(t *testing.T) {
	tests := []struct {
		name     string
		sysctls  map[string]string
		hostNet  bool
		hostIPC  bool
		want     map[string]string
		errMatch string
	}{
		{name: "namespaced", sysctls: map[string]string{"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "kernel.sem": "1 2 3 4", "fs.mqueue.msg_max": "10", "kernel.msgmax": "8"},
			want: map[string]string{"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "kernel.sem": "1 2 3 4", "fs.mqueue.msg_max": "10", "kernel.msgmax": "8"}},
		{name: "slash form", sysctls: map[string]string{"net/ipv4/ping_group_range": "0 0"}, want: map[string]string{"net.ipv4.ping_group_range": "0 0"}},
		{name: "node sysctl", sysctls: map[string]string{"vm.swappiness": "1"}, errMatch: "vm.swappiness"},
		{name: "kernel non-ipc", sysctls: map[string]string{"kernel.pid_max": "1"}, errMatch: "kernel.pid_max"},
		{name: "net with host network", sysctls: map[string]string{"net.core.somaxconn": "1"}, hostNet: true, errMatch: "net.core.somaxconn"},
		{name: "ipc with host ipc", sysctls: map[string]string{"kernel.shmall": "1"}, hostIPC: true, errMatch: "kernel.shmall"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			in.Sandbox.Linux.Sysctls = tt.sysctls
			opts := &runtime.NamespaceOption{Pid: runtime.NamespaceMode_CONTAINER}
			if tt.hostNet {
				opts.Network = runtime.NamespaceMode_NODE
			}
			if tt.hostIPC {
				opts.Ipc = runtime.NamespaceMode_NODE
			}
			in.Sandbox.Linux.SecurityContext.NamespaceOptions = opts
			s, err := Generate(in)
			if tt.errMatch != "" {
				if !errors.Is(err, errdefs.ErrInvalidArgument) || !containsStr(err.Error(), tt.errMatch) {
					t.Fatalf("err = %v, want invalid argument naming %q", err, tt.errMatch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(s.Linux.Sysctl, tt.want) {
				t.Fatalf("sysctl = %v, want %v", s.Linux.Sysctl, tt.want)
			}
		})
	}
}
