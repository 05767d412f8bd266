package netplugin

import (
	"log/slog"
	"net"
	"time"
)

// PortMapping is one host port forwarded into the pod (capability
// "portMappings").
type PortMapping struct {
	Protocol      string // tcp, udp or sctp; empty means tcp
	ContainerPort int32
	HostPort      int32
	HostIP        string
}

// DNS is passed to plugins as the "dns" capability argument.
type DNS struct {
	Servers, Searches, Options []string
}

// PodNetwork identifies one pod's attachment and carries what plugins need.
type PodNetwork struct {
	ID        string // sandbox id, the CNI container id
	Name      string // pod name
	Namespace string // pod namespace
	UID       string // pod uid
	// NetNS is the pinned network namespace path. Teardown tolerates a path
	// that no longer exists.
	NetNS        string
	PortMappings []PortMapping
	// IngressBandwidth and EgressBandwidth are bits per second from the
	// kubernetes.io/{ingress,egress}-bandwidth annotations; 0 means no limit.
	IngressBandwidth, EgressBandwidth int64
	DNS                               *DNS
	CgroupPath                        string // capability "cgroupPath", optional
}

// Result is what a successful Setup gives the pod.
type Result struct {
	// IPs are the pod's addresses; the first is the primary one. IPv4
	// addresses come before IPv6 ones so dual-stack pods report IPv4 first.
	IPs       []net.IP
	Interface string
}

// Options configure a Manager. Zero values take the defaults below.
type Options struct {
	ConfDir  string   // default DefaultConfDir
	BinDirs  []string // default DefaultBinDirs()
	CacheDir string   // libcni results cache and berth's pending records; default DefaultCacheDir
	Logger   *slog.Logger
	// PluginTimeout bounds each ADD, DEL, CHECK or GC of a whole plugin
	// chain; default DefaultPluginTimeout.
	PluginTimeout time.Duration
	// PollInterval is how often ConfDir is re-read; default 2s.
	PollInterval time.Duration
}

// Defaults, as kubelet and other runtimes use them.
const (
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultCacheDir = "/var/lib/berth/cni-cache"
	// DefaultPluginTimeout stays below kubelet's 4 minute RunPodSandbox
	// deadline so a hung plugin is undone before kubelet gives up.
	DefaultPluginTimeout = 2 * time.Minute
	defaultPollInterval  = 2 * time.Second
	// IfName is the interface every pod gets.
	IfName = "eth0"
)

// DefaultBinDirs returns the directories searched for plugin binaries, in
// order, when Options.BinDirs is empty.
func DefaultBinDirs() []string { return []string{"/opt/cni/bin", "/usr/lib/cni"} }

func (o Options) withDefaults() Options {
	if o.ConfDir == "" {
		o.ConfDir = DefaultConfDir
	}
	if len(o.BinDirs) == 0 {
		o.BinDirs = DefaultBinDirs()
	}
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PluginTimeout <= 0 {
		o.PluginTimeout = DefaultPluginTimeout
	}
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	return o
}
