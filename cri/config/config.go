// Package config owns berthd's configuration: the TOML schema, its embedded
// defaults and their validation. Every key has a default, so berthd runs with
// no file at all; an unknown key or a bad value stops startup with a message
// naming the key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"

	"github.com/berth-runtime/berth/imagesvc/reference"
)

// DefaultPath is where berthd looks for its config when --config is not given.
const DefaultPath = "/etc/berth/config.toml"

// Config is the whole of berthd's configuration.
type Config struct {
	// Root holds persistent data: meta.db, content, layers, writable layers.
	Root string `toml:"root" comment:"persistent data: metadata, image content, layers, writable layers"`
	// State holds what lives until reboot: sockets, netns pins, bundles.
	State string `toml:"state" comment:"runtime state kept until reboot: shim sockets, netns pins, bundles"`
	// CgroupParent is used for containers of pods that name no cgroup parent.
	CgroupParent string `toml:"cgroup_parent" comment:"cgroup parent for pods whose config names none (cgroupfs path; with cgroup_driver systemd a .slice, or a path turned into one: /berth becomes berth.slice)"`
	// CgroupDriver is how container cgroups are named and made: cgroupfs
	// paths, or systemd scopes in slices (runc --systemd-cgroup).
	CgroupDriver string `toml:"cgroup_driver" comment:"cgroupfs or systemd; must match kubelet's cgroupDriver (systemd needs systemd running as init)"`

	GRPC      GRPC      `toml:"grpc"`
	Log       Log       `toml:"log"`
	Runtime   Runtime   `toml:"runtime"`
	Registry  Registry  `toml:"registry"`
	CNI       CNI       `toml:"cni"`
	Streaming Streaming `toml:"streaming"`
	Metrics   Metrics   `toml:"metrics"`
	CDI       CDI       `toml:"cdi"`
	NRI       NRI       `toml:"nri"`
	Tracing   Tracing   `toml:"tracing"`

	// Files are the files this config was read from, the main file then
	// its drop-ins in merge order; set by Load, shown by verbose Status
	// (crictl info), never read from TOML.
	Files []string `toml:"-" json:"files,omitempty"`
}

// Tracing configures OpenTelemetry tracing: a span per CRI call, with
// child spans for its steps, exported over OTLP. The keys follow
// containerd's otlp and tracing plugins and CRI-O's [crio.tracing].
type Tracing struct {
	Enabled  bool   `toml:"enabled" comment:"trace every CRI call and its steps (image pull, layer fetch and unpack, CNI ADD and DEL, shim spawn and calls) and export the spans over OTLP; off: no tracer is set up at all"`
	Endpoint string `toml:"endpoint" comment:"host:port of the OTLP receiver (an OpenTelemetry Collector or agent); its usual ports are 4317 for grpc, 4318 for http/protobuf"`
	Protocol string `toml:"protocol" comment:"OTLP transport: grpc or http/protobuf"`
	Insecure bool   `toml:"insecure" comment:"send in plain text (keep the endpoint on loopback or a node-internal address then); false: TLS, verified with the system's roots"`
	// SamplingRatePerMillion is CRI-O's key; a parent's decision wins so
	// kubelet's sampled traces are complete.
	SamplingRatePerMillion int    `toml:"sampling_rate_per_million" comment:"CRI calls traced per million (1000000: all); a call that carries kubelet's trace context (W3C traceparent) follows kubelet's sampling decision instead"`
	ServiceName            string `toml:"service_name" comment:"service.name resource attribute of berthd's spans"`
}

// CDI configures Container Device Interface devices.
type CDI struct {
	SpecDirs []string `toml:"spec_dirs" comment:"directories of CDI specs (JSON or YAML), read when a container asks for CDI devices; a later directory wins over an earlier one"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Address string `toml:"address" comment:"host:port of the Prometheus /metrics endpoint; empty: off (keep it on loopback or a node-internal address)"`
}

// Streaming configures the exec/attach/port-forward server whose URLs the
// Exec, Attach and PortForward RPCs return.
type Streaming struct {
	Address string `toml:"address" comment:"host:port the streaming server listens on; port 0 picks a free one"`
	TLSCert string `toml:"tls_cert" comment:"PEM certificate for TLS; empty: plain HTTP (keep the address on loopback then)"`
	TLSKey  string `toml:"tls_key" comment:"PEM key for tls_cert"`
}

// GRPC configures the CRI endpoint.
type GRPC struct {
	Address string `toml:"address" comment:"unix socket path of the CRI endpoint (mode 0660)"`
}

// Log configures berthd's own log.
type Log struct {
	Level  string `toml:"level" comment:"debug, info, warn or error"`
	Format string `toml:"format" comment:"text or json"`
	// Dir receives what berthd writes on request, like SIGUSR1 goroutine
	// dumps; berthd's own log goes to stderr (journald under systemd).
	Dir string `toml:"dir" comment:"directory for SIGUSR1 goroutine dumps; empty: <state>/logs"`
}

// Runtime configures the shims and OCI runtimes.
type Runtime struct {
	DefaultHandler string `toml:"default_handler" comment:"runtime handler used when a pod names none"`
	// RestrictOOMScoreAdj clamps requested oom_score_adj values to berthd's
	// own, as containerd's restrict_oom_score_adj does: without
	// CAP_SYS_RESOURCE the kernel refuses to lower a score. Unset (nil),
	// berthd decides when it starts, on the node it runs on (RestrictOOM),
	// so a config written elsewhere (make install's `berthd config
	// default`) does not carry the build machine's answer.
	RestrictOOMScoreAdj *bool              `toml:"restrict_oom_score_adj,omitempty" comment:"never set a container's oom_score_adj below berthd's own (default: on when CAP_SYS_RESOURCE is missing)"`
	ShimPath            string             `toml:"shim_path" comment:"berth-shim binary; empty: next to berthd, else in PATH"`
	PausePath           string             `toml:"pause_path" comment:"berth-pause binary; empty: next to berthd, else in PATH"`
	HooksDir            []string           `toml:"hooks_dir" comment:"directories of OCI hook files (*.json, oci-hooks(5) version 1.0.0, as CRI-O's and podman's hooks_dir), read at each CreateContainer; hooks whose conditions match are added to the container's spec; a file in a later directory replaces one of the same name in an earlier one; a missing directory is skipped, a bad file is logged and skipped"`
	Handlers            map[string]Handler `toml:"handlers" comment:"runtime handlers (Kubernetes RuntimeClass) by name"`
	CriuPath            string             `toml:"criu_path" comment:"CRIU binary for checkpoint and restore; empty: /usr/local/sbin/criu, then PATH. berthd uses it only once it has dumped and restored a throwaway process with it (Status condition CheckpointRestoreReady)"`
	// CheckpointTimeout is a Go duration string: TOML has no duration type.
	CheckpointTimeout string `toml:"checkpoint_timeout" comment:"bound on each CRIU checkpoint or restore (CheckpointContainer, CheckpointPod, StartContainer of a restored container) and on berthd's CRIU probe (Go duration); a request's shorter timeout wins; CRIU still running then is killed, the container thawed, and the call fails DeadlineExceeded"`
	// RestoreFromImages and RestoreImageRegistries gate restoring from
	// checkpoint images: a checkpoint is a process's whole state, chosen
	// by whoever publishes the image, so a node takes them only from
	// registries its operator names.
	RestoreFromImages      bool     `toml:"restore_from_images" comment:"restore a container whose image is a checkpoint image (an OCI image with the checkpoint annotation) pulled from one of restore_image_registries; off: CreateContainer refuses such an image (FailedPrecondition). Archive paths on the node are not affected"`
	RestoreImageRegistries []string `toml:"restore_image_registries" comment:"registry hosts (host[:port], as in image references: docker.io, 127.0.0.1:5000) whose checkpoint images may be restored, and from which their base images must come; empty: none (PermissionDenied)"`
}

// CheckpointTimeoutDuration is CheckpointTimeout parsed; Validate
// guarantees it parses.
func (r Runtime) CheckpointTimeoutDuration() time.Duration {
	d, _ := time.ParseDuration(r.CheckpointTimeout)
	return d
}

// Handler maps a RuntimeClass handler name to an OCI runtime binary.
type Handler struct {
	Binary string `toml:"binary" comment:"runc-compatible CLI; a bare name is looked up in PATH"`
	Root   string `toml:"root" comment:"the runtime's --root state dir; empty: <state>/<handler name>"`
}

// Registry configures image pulls.
type Registry struct {
	ConfigPath    string   `toml:"config_path" comment:"certs.d directory: <host>/hosts.toml per registry (mirrors, TLS, plain HTTP), as containerd reads it"`
	InsecureHosts []string `toml:"insecure_hosts" comment:"registry hosts (host:port) reached over plain HTTP"`
	AuthFile      string   `toml:"auth_file" comment:"node-level registry credentials for pulls whose request carries none: a config.json as docker, podman and CRI-O (global_auth_file) read, with auths, credHelpers and credsStore (docker-credential-<name> in PATH); each entry goes only to the registry host it names; read at every pull; empty: none"`
	// SignaturePolicy names a containers-policy.json, as CRI-O's
	// signature_policy does.
	SignaturePolicy string   `toml:"signature_policy" comment:"image signature policy every registry pull must satisfy, in the containers-policy.json format CRI-O and podman read: per registry, namespace or repository scope, insecureAcceptAnything, reject or sigstoreSigned (cosign signatures, found under the sha256-<digest>.sig tag, verified with keyPath/keyData public keys); checked before any layer is fetched, a refusal is PermissionDenied; read at every pull and at start-up (an invalid file stops berthd); empty: no signature checks"`
	PinnedImages    []string `toml:"pinned_images" comment:"image references (tag or digest) reported pinned to kubelet, whose image GC then never removes them; RemoveImage still removes them, as in containerd"`
	// The bounds below keep one image or registry from taking the node:
	// berthd's memory is the node's (OOMScoreAdjust=-999), its download
	// slots are shared by every pull, its disk holds every image.
	PullProgressTimeout string `toml:"pull_progress_timeout" comment:"a registry request that receives under 32 KiB in this long is cancelled and the pull fails, freeing its download slot (Go duration, as containerd's image_pull_progress_timeout; \"0s\": never)"`
	MaxLayers           int    `toml:"max_layers" comment:"images with more layers are refused before anything is downloaded"`
	MaxManifestSize     int64  `toml:"max_manifest_size" comment:"largest manifest or index read into memory, in bytes (4 MiB, as containerd and the distribution registry)"`
	MaxConfigSize       int64  `toml:"max_config_size" comment:"largest image config read into memory, in bytes (8 MiB)"`
	MaxZstdWindow       int64  `toml:"max_zstd_window" comment:"largest window (history kept in memory) a zstd layer may ask for, in bytes (128 MiB, the zstd CLI's own limit)"`
	MaxUnpackedSize     int64  `toml:"max_unpacked_size" comment:"most one pull may unpack onto disk, in bytes: file sizes plus 512 per tar entry, over all layers it unpacks (64 GiB)"`
}

// ProgressTimeout is PullProgressTimeout parsed (0: none); Validate
// guarantees it parses.
func (r Registry) ProgressTimeout() time.Duration {
	d, _ := time.ParseDuration(r.PullProgressTimeout)
	return d
}

// CNI configures pod networking.
type CNI struct {
	ConfDir string   `toml:"conf_dir" comment:"directory of CNI network configs; the first in lexical order is used"`
	BinDirs []string `toml:"bin_dirs" comment:"directories searched for CNI plugin binaries"`
	// PluginTimeout is a Go duration string: TOML has no duration type.
	PluginTimeout string `toml:"plugin_timeout" comment:"bound on each CNI ADD, DEL, CHECK or GC of the whole plugin chain (Go duration, e.g. \"2m\"); a plugin still running then is killed"`
}

// Timeout is PluginTimeout parsed; Validate guarantees it parses.
func (c CNI) Timeout() time.Duration {
	d, _ := time.ParseDuration(c.PluginTimeout)
	return d
}

// Default returns the embedded defaults.
func Default() Config {
	return Config{
		Root:         "/var/lib/berth",
		State:        "/run/berth",
		CgroupParent: "/berth",
		CgroupDriver: "cgroupfs",
		GRPC:         GRPC{Address: "/run/berth/berth.sock"},
		Log:          Log{Level: "info", Format: "text"},
		Runtime: Runtime{
			DefaultHandler: "runc",
			Handlers: map[string]Handler{
				"runc": {Binary: defaultRunc()},
				"crun": {Binary: "crun"},
			},
			CheckpointTimeout:      "5m",
			RestoreImageRegistries: []string{},
			HooksDir:               []string{"/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d"},
		},
		Registry: Registry{
			ConfigPath: "/etc/berth/certs.d", InsecureHosts: []string{}, PinnedImages: []string{},
			PullProgressTimeout: "5m", MaxLayers: 128, MaxManifestSize: 4 << 20, MaxConfigSize: 8 << 20,
			MaxZstdWindow: 128 << 20, MaxUnpackedSize: 64 << 30,
		},
		Streaming: Streaming{Address: "127.0.0.1:0"},
		CNI: CNI{
			ConfDir:       "/etc/cni/net.d",
			BinDirs:       []string{"/opt/cni/bin", "/usr/lib/cni"},
			PluginTimeout: "2m",
		},
		CDI: CDI{SpecDirs: []string{"/etc/cdi", "/var/run/cdi"}},
		NRI: defaultNRI(),
		Tracing: Tracing{
			Endpoint: "127.0.0.1:4317", Protocol: "grpc", Insecure: true,
			SamplingRatePerMillion: 1_000_000, ServiceName: "berthd",
		},
	}
}

// BundledRunc is where `make setup` installs the runc berth is tested
// with (1.5.2): Debian 12's runc 1.1.5 has neither the "rro" mount option
// nor idmapped mounts, which recursive read-only volumes and user
// namespaces need.
const BundledRunc = "/usr/local/lib/berth/runc"

// defaultRunc is BundledRunc when it is installed, else runc from PATH.
// Status asks the binary what it supports, so either choice is reported
// truthfully.
func defaultRunc() string {
	if unix.Access(BundledRunc, unix.X_OK) == nil {
		return BundledRunc
	}
	return "runc"
}

// Load reads path, then its drop-ins (DropInDir), over the defaults. A
// missing file at the default path is not an error (berthd runs on
// defaults and whatever drop-ins there are); a missing file named
// explicitly is.
func Load(path string, explicit bool) (Config, error) {
	files := []string{path}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && !explicit {
		files = nil
	}
	more, err := dropIns(DropInDir(path))
	if err != nil {
		return Default(), err
	}
	files = append(files, more...)
	if len(files) == 0 {
		cfg := Default()
		return cfg, cfg.Validate()
	}
	return loadMerged(files)
}

// Decode parses data over cfg strictly and validates the result.
func Decode(data []byte, cfg *Config) error {
	if err := decodeStrict(data, cfg); err != nil {
		return err
	}
	return cfg.Validate()
}

// decodeStrict parses data over cfg, refusing unknown keys and wrong
// types, without validating values.
func decodeStrict(data []byte, cfg *Config) error {
	// Handlers named in the file replace the default set rather than merge
	// into it, so an operator can drop crun by not listing it.
	var probe struct {
		Runtime struct {
			Handlers map[string]any `toml:"handlers"`
		} `toml:"runtime"`
	}
	if err := toml.Unmarshal(data, &probe); err == nil && probe.Runtime.Handlers != nil {
		cfg.Runtime.Handlers = map[string]Handler{}
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			keys := make([]string, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return fmt.Errorf("unknown key %s: %w", strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			return fmt.Errorf("key %s: %s: %w", strings.Join(de.Key(), "."), de.Error(), errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Validate checks every value; the error names the offending key.
func (c *Config) Validate() error {
	bad := func(key, why string) error {
		return fmt.Errorf("key %s: %s: %w", key, why, errdefs.ErrInvalidArgument)
	}
	for key, p := range map[string]string{"root": c.Root, "state": c.State, "grpc.address": c.GRPC.Address, "cni.conf_dir": c.CNI.ConfDir} {
		if !filepath.IsAbs(p) {
			return bad(key, fmt.Sprintf("%q is not an absolute path", p))
		}
	}
	if len(c.GRPC.Address) >= 108 {
		return bad("grpc.address", "unix socket path longer than 107 bytes")
	}
	if err := c.validateCgroups(); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return bad("log.format", fmt.Sprintf("%q is not one of text, json", c.Log.Format))
	}
	if c.Registry.AuthFile != "" && !filepath.IsAbs(c.Registry.AuthFile) {
		return bad("registry.auth_file", fmt.Sprintf("%q is not an absolute path", c.Registry.AuthFile))
	}
	if c.Registry.SignaturePolicy != "" && !filepath.IsAbs(c.Registry.SignaturePolicy) {
		return bad("registry.signature_policy", fmt.Sprintf("%q is not an absolute path", c.Registry.SignaturePolicy))
	}
	if !filepath.IsAbs(c.Registry.ConfigPath) {
		return bad("registry.config_path", fmt.Sprintf("%q is not an absolute path", c.Registry.ConfigPath))
	}
	if _, _, err := net.SplitHostPort(c.Streaming.Address); err != nil {
		return bad("streaming.address", fmt.Sprintf("%q is not host:port", c.Streaming.Address))
	}
	if c.Metrics.Address != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Address); err != nil {
			return bad("metrics.address", fmt.Sprintf("%q is not host:port", c.Metrics.Address))
		}
	}
	if c.Log.Dir != "" && !filepath.IsAbs(c.Log.Dir) {
		return bad("log.dir", fmt.Sprintf("%q is not an absolute path", c.Log.Dir))
	}
	if (c.Streaming.TLSCert == "") != (c.Streaming.TLSKey == "") {
		return bad("streaming.tls_cert", "tls_cert and tls_key go together")
	}
	if len(c.Runtime.Handlers) == 0 {
		return bad("runtime.handlers", "at least one handler is required")
	}
	for name, h := range c.Runtime.Handlers {
		if name == "" || strings.ContainsAny(name, "/ ") {
			return bad("runtime.handlers", fmt.Sprintf("handler name %q is not valid", name))
		}
		if h.Binary == "" {
			return bad("runtime.handlers."+name+".binary", "is required")
		}
		if h.Root != "" && !filepath.IsAbs(h.Root) {
			return bad("runtime.handlers."+name+".root", fmt.Sprintf("%q is not an absolute path", h.Root))
		}
	}
	if _, ok := c.Runtime.Handlers[c.Runtime.DefaultHandler]; !ok {
		return bad("runtime.default_handler", fmt.Sprintf("%q names no configured handler", c.Runtime.DefaultHandler))
	}
	for _, h := range c.Registry.InsecureHosts {
		if h == "" || strings.ContainsAny(h, "/ ") {
			return bad("registry.insecure_hosts", fmt.Sprintf("%q is not a host[:port]", h))
		}
	}
	for _, h := range c.Runtime.RestoreImageRegistries {
		if h == "" || strings.ContainsAny(h, "/ @") {
			return bad("runtime.restore_image_registries", fmt.Sprintf("%q is not a registry host[:port]", h))
		}
	}
	for _, ref := range c.Registry.PinnedImages {
		if _, err := reference.Parse(ref); err != nil {
			return bad("registry.pinned_images", fmt.Sprintf("%q is not an image reference", ref))
		}
	}
	if err := c.Registry.validateLimits(bad); err != nil {
		return err
	}
	for _, d := range c.CNI.BinDirs {
		if !filepath.IsAbs(d) {
			return bad("cni.bin_dirs", fmt.Sprintf("%q is not an absolute path", d))
		}
	}
	if c.Runtime.CriuPath != "" && strings.ContainsRune(c.Runtime.CriuPath, '/') && !filepath.IsAbs(c.Runtime.CriuPath) {
		return bad("runtime.criu_path", fmt.Sprintf("%q is neither an absolute path nor a name looked up in PATH", c.Runtime.CriuPath))
	}
	if d, err := time.ParseDuration(c.Runtime.CheckpointTimeout); err != nil || d <= 0 {
		return bad("runtime.checkpoint_timeout", fmt.Sprintf("%q is not a positive duration", c.Runtime.CheckpointTimeout))
	}
	if d, err := time.ParseDuration(c.CNI.PluginTimeout); err != nil || d <= 0 {
		return bad("cni.plugin_timeout", fmt.Sprintf("%q is not a positive duration", c.CNI.PluginTimeout))
	}
	for _, d := range c.CDI.SpecDirs {
		if !filepath.IsAbs(d) {
			return bad("cdi.spec_dirs", fmt.Sprintf("%q is not an absolute path", d))
		}
	}
	if err := c.NRI.validate(bad); err != nil {
		return err
	}
	if err := validateHooksDirs(c.Runtime.HooksDir, bad); err != nil {
		return err
	}
	return c.Tracing.validate(bad)
}

func (t Tracing) validate(bad func(key, why string) error) error {
	if _, _, err := net.SplitHostPort(t.Endpoint); err != nil {
		return bad("tracing.endpoint", fmt.Sprintf("%q is not host:port", t.Endpoint))
	}
	switch t.Protocol {
	case "grpc", "http/protobuf":
	default:
		return bad("tracing.protocol", fmt.Sprintf("%q is not one of grpc, http/protobuf", t.Protocol))
	}
	if t.SamplingRatePerMillion < 0 || t.SamplingRatePerMillion > 1_000_000 {
		return bad("tracing.sampling_rate_per_million", fmt.Sprintf("%d is not between 0 and 1000000", t.SamplingRatePerMillion))
	}
	if t.ServiceName == "" {
		return bad("tracing.service_name", "is required")
	}
	return nil
}

// HandlerRoot is the --root the OCI runtime of handler name keeps its state in.
func (c *Config) HandlerRoot(name string) string {
	if h := c.Runtime.Handlers[name]; h.Root != "" {
		return h.Root
	}
	return filepath.Join(c.State, name)
}

// LogDir is where berthd writes goroutine dumps.
func (c *Config) LogDir() string {
	if c.Log.Dir != "" {
		return c.Log.Dir
	}
	return filepath.Join(c.State, "logs")
}

// Marshal renders cfg as TOML with comments (what `berthd config default` prints).
func Marshal(cfg Config) ([]byte, error) {
	return toml.Marshal(cfg)
}

// RestrictOOM is restrict_oom_score_adj as set, or when unset whether
// this process lacks CAP_SYS_RESOURCE.
func (r Runtime) RestrictOOM() bool {
	if r.RestrictOOMScoreAdj != nil {
		return *r.RestrictOOMScoreAdj
	}
	return !hasCapSysResource()
}

// hasCapSysResource reports whether this process may lower oom_score_adj.
func hasCapSysResource() bool {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	const bit = unix.CAP_SYS_RESOURCE
	return data[bit/32].Effective&(1<<(bit%32)) != 0
}

// zstdMinWindow and zstdMaxWindow are the format's bounds on a window.
const (
	zstdMinWindow = 1 << 10
	zstdMaxWindow = 1<<41 + 7<<38
)

func (r Registry) validateLimits(bad func(key, why string) error) error {
	if d, err := time.ParseDuration(r.PullProgressTimeout); err != nil || d < 0 {
		return bad("registry.pull_progress_timeout", fmt.Sprintf("%q is not a duration of 0s or more", r.PullProgressTimeout))
	}
	if r.MaxLayers <= 0 {
		return bad("registry.max_layers", fmt.Sprintf("%d is not a positive number of layers", r.MaxLayers))
	}
	for _, kv := range []struct {
		key string
		v   int64
	}{
		{"registry.max_manifest_size", r.MaxManifestSize},
		{"registry.max_config_size", r.MaxConfigSize},
		{"registry.max_unpacked_size", r.MaxUnpackedSize},
	} {
		if kv.v <= 0 {
			return bad(kv.key, fmt.Sprintf("%d is not a positive number of bytes", kv.v))
		}
	}
	if r.MaxZstdWindow < zstdMinWindow || r.MaxZstdWindow > zstdMaxWindow {
		return bad("registry.max_zstd_window", fmt.Sprintf("%d is outside zstd's window sizes (%d to %d bytes)", r.MaxZstdWindow, int64(zstdMinWindow), int64(zstdMaxWindow)))
	}
	return nil
}
