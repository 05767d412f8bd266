package netplugin

import (
	"fmt"
	"math"
	"net"
	"regexp"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"
)

// validID keeps ids usable as file names in the cache dirs.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("sandbox id %q: %w", id, errdefs.ErrInvalidArgument)
	}
	return nil
}

// portMapEntry and bandwidthEntry follow the CNI conventions document for
// the "portMappings" and "bandwidth" capability arguments.
type portMapEntry struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

type bandwidthEntry struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

type dnsEntry struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// capabilityArgs builds what libcni hands to plugins that declare the
// matching capability.
func capabilityArgs(p PodNetwork) (map[string]interface{}, error) {
	args := map[string]interface{}{}
	ports := make([]portMapEntry, 0, len(p.PortMappings))
	for _, pm := range p.PortMappings {
		// A port without a host port is only informational in Kubernetes;
		// kubelet and containerd skip it too.
		if pm.HostPort <= 0 {
			continue
		}
		proto := strings.ToLower(pm.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" && proto != "sctp" {
			return nil, fmt.Errorf("port mapping protocol %q: %w", pm.Protocol, errdefs.ErrInvalidArgument)
		}
		if pm.HostPort > math.MaxUint16 || pm.ContainerPort <= 0 || pm.ContainerPort > math.MaxUint16 {
			return nil, fmt.Errorf("port mapping %d->%d: %w", pm.HostPort, pm.ContainerPort, errdefs.ErrInvalidArgument)
		}
		if pm.HostIP != "" && net.ParseIP(pm.HostIP) == nil {
			return nil, fmt.Errorf("port mapping host ip %q: %w", pm.HostIP, errdefs.ErrInvalidArgument)
		}
		ports = append(ports, portMapEntry{HostPort: pm.HostPort, ContainerPort: pm.ContainerPort, Protocol: proto, HostIP: pm.HostIP})
	}
	if len(ports) > 0 {
		args["portMappings"] = ports
	}
	if p.IngressBandwidth < 0 || p.EgressBandwidth < 0 {
		return nil, fmt.Errorf("negative bandwidth: %w", errdefs.ErrInvalidArgument)
	}
	if p.IngressBandwidth > 0 || p.EgressBandwidth > 0 {
		// Kubernetes has no burst setting; the bandwidth plugin requires
		// one, so use the largest it accepts, as containerd does.
		bw := bandwidthEntry{}
		if p.IngressBandwidth > 0 {
			bw.IngressRate, bw.IngressBurst = uint64(p.IngressBandwidth), math.MaxUint32
		}
		if p.EgressBandwidth > 0 {
			bw.EgressRate, bw.EgressBurst = uint64(p.EgressBandwidth), math.MaxUint32
		}
		args["bandwidth"] = bw
	}
	if p.DNS != nil {
		args["dns"] = dnsEntry{Servers: p.DNS.Servers, Searches: p.DNS.Searches, Options: p.DNS.Options}
	}
	if p.CgroupPath != "" {
		args["cgroupPath"] = p.CgroupPath
	}
	return args, nil
}

func runtimeConf(p PodNetwork, capArgs map[string]interface{}) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ID,
		NetNS:       p.NetNS,
		IfName:      IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ID},
			{"K8S_POD_UID", p.UID},
		},
		CapabilityArgs: capArgs,
	}
}

// netnsForDel returns path when it still is a network namespace, else "".
// The CNI spec lets DEL run without a netns; passing a stale path instead
// makes some plugins fail on a plain file left where the pin was.
func netnsForDel(path string) string {
	if path == "" {
		return ""
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		return ""
	}
	return path
}

// toResult picks the pod's addresses: those on interfaces inside the
// sandbox, or all when the plugin did not say which interface they are on.
func toResult(r types.Result) (Result, error) {
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return Result{}, fmt.Errorf("convert cni result: %w", err)
	}
	var ips []net.IP
	for _, ipc := range res.IPs {
		if ipc == nil {
			continue
		}
		if i := ipc.Interface; i != nil && *i >= 0 && *i < len(res.Interfaces) && res.Interfaces[*i].Sandbox == "" {
			continue
		}
		ip := ipc.Address.IP
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		ips = append(ips, ip)
	}
	if len(ips) == 0 {
		return Result{}, fmt.Errorf("cni result has no pod ip: %w", errdefs.ErrFailedPrecondition)
	}
	sort.SliceStable(ips, func(a, b int) bool { return ips[a].To4() != nil && ips[b].To4() == nil })
	return Result{IPs: ips, Interface: IfName}, nil
}
