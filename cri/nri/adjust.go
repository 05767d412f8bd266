package nri

import (
	"fmt"
	"sort"

	"github.com/containerd/errdefs"
	"github.com/containerd/nri/pkg/api"
	nrigen "github.com/containerd/nri/pkg/runtime-tools/generate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	rgen "github.com/opencontainers/runtime-tools/generate"
	"google.golang.org/protobuf/proto"
)

// adjustSpec applies a merged plugin adjustment to spec in place, through
// the NRI project's own generator, so every field the NRI version can
// adjust is applied as containerd applies it. cdi resolves CDI devices;
// nil refuses them.
func adjustSpec(spec *specs.Spec, adj *api.ContainerAdjustment, cdi func(*specs.Spec, []string) error) error {
	if cdi == nil {
		cdi = func(_ *specs.Spec, devs []string) error {
			if len(devs) == 0 {
				return nil
			}
			return fmt.Errorf("CDI devices %v: no CDI registry: %w", devs, errdefs.ErrNotImplemented)
		}
	}
	g := rgen.NewFromSpec(spec)
	// berth writes the spec's env itself; the generator must not sort or
	// rebuild it beyond what the adjustment says.
	g.HostSpecific = false
	ng := nrigen.SpecGenerator(&g,
		nrigen.WithCDIDeviceInjector(cdi),
		nrigen.WithResourceChecker(func(*specs.LinuxResources) error { return nil }),
	)
	if err := ng.Adjust(adj); err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	*spec = *g.Config
	return nil
}

// describe names what an adjustment changes, for the log line that says
// what plugins did to a container.
func describe(adj *api.ContainerAdjustment) []string {
	var what []string
	add := func(ok bool, name string) {
		if ok {
			what = append(what, name)
		}
	}
	// The adaptation hands back a merged adjustment whose messages exist
	// empty; only what holds something was adjusted.
	set := func(m proto.Message) bool { return m != nil && proto.Size(m) > 0 }
	add(len(adj.GetAnnotations()) > 0, "annotations")
	add(len(adj.GetMounts()) > 0, "mounts")
	add(len(adj.GetEnv()) > 0, "env")
	add(len(adj.GetArgs()) > 0, "args")
	add(set(adj.GetHooks()), "hooks")
	add(len(adj.GetRlimits()) > 0, "rlimits")
	add(len(adj.GetCDIDevices()) > 0, "cdi_devices")
	l := adj.GetLinux()
	add(len(l.GetDevices()) > 0, "devices")
	add(set(l.GetResources()), "resources")
	add(l.GetCgroupsPath() != "", "cgroups_path")
	add(set(l.GetOomScoreAdj()), "oom_score_adj")
	add(set(l.GetIoPriority()), "io_priority")
	add(set(l.GetSeccompPolicy()), "seccomp")
	add(len(l.GetNamespaces()) > 0, "namespaces")
	add(len(l.GetSysctl()) > 0, "sysctl")
	add(len(l.GetNetDevices()) > 0, "net_devices")
	add(set(l.GetScheduler()), "scheduler")
	add(set(l.GetMemoryPolicy()), "memory_policy")
	add(set(l.GetRdt()), "rdt")
	sort.Strings(what)
	return what
}
