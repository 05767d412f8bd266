package main

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/pelletier/go-toml/v2"

	"github.com/berth-runtime/berth/cri/config"
)

func testEnv() *env {
	return &env{Dir: "/tmp/bbX", ID: "abc123", Cgroup: "/berth-bench-abc123", Bridge: "bbenchabc123",
		Subnet: "10.235.0.0/24", ConfDir: "/tmp/bbX/cni", Runc: "/usr/sbin/runc", log: slog.Default()}
}

func TestConflistIsValidCNI(t *testing.T) {
	e := testEnv()
	list, err := libcni.ConfListFromBytes(fmt.Appendf(nil, conflist, e.network(), e.Bridge, e.Subnet, "/tmp/bbX/ipam"))
	if err != nil {
		t.Fatalf("conflist does not parse: %v", err)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	if got := strings.Join(types, ","); got != "bridge,portmap" {
		t.Errorf("plugins = %s, want berth's default chain", got)
	}
	if !strings.Contains(string(list.Plugins[0].Bytes), `"bbenchabc123"`) {
		t.Errorf("bridge name missing: %s", list.Plugins[0].Bytes)
	}
}

// berthd refuses unknown keys, so its own decoder is the test of the
// config the bench writes.
func TestBerthConfigDecodes(t *testing.T) {
	b := &berthDaemon{binDir: "/opt/b", dir: "/tmp/bbX/berth", env: testEnv(), registry: "127.0.0.1:5999",
		certsDir: "/tmp/bbX/certs.d", logLevel: "info"}
	cfg := config.Default()
	if err := config.Decode([]byte(b.config()), &cfg); err != nil {
		t.Fatalf("berthd rejects the bench config: %v\n%s", err, b.config())
	}
	b.crun = true
	withCrun := config.Default()
	if err := config.Decode([]byte(b.config()), &withCrun); err != nil {
		t.Fatalf("berthd rejects the bench config with crun: %v", err)
	}
	if withCrun.Runtime.Handlers["crun"].Binary != "/usr/bin/crun" {
		t.Errorf("crun handler missing: %+v", withCrun.Runtime.Handlers)
	}
	if cfg.GRPC.Address != "/tmp/bbX/berth/berth.sock" || cfg.Registry.InsecureHosts[0] != "127.0.0.1:5999" ||
		cfg.CNI.ConfDir != "/tmp/bbX/cni" || cfg.Runtime.Handlers["runc"].Binary != "/usr/sbin/runc" {
		t.Errorf("config decoded to %+v", cfg)
	}
}

func TestContainerdConfig(t *testing.T) {
	c := &containerdDaemon{dir: "/tmp/bbX/containerd", env: testEnv(), certsDir: "/tmp/bbX/certs.d",
		sandboxImage: "registry.k8s.io/pause:3.10", logLevel: "info"}
	var doc map[string]any
	if err := toml.Unmarshal([]byte(c.config()), &doc); err != nil {
		t.Fatalf("containerd config is not TOML: %v\n%s", err, c.config())
	}
	cri := doc["plugins"].(map[string]any)["io.containerd.grpc.v1.cri"].(map[string]any)
	if cri["restrict_oom_score_adj"] != true {
		t.Errorf("restrict_oom_score_adj not set: every sandbox fails without CAP_SYS_RESOURCE")
	}
	opts := cri["containerd"].(map[string]any)["runtimes"].(map[string]any)["runc"].(map[string]any)["options"].(map[string]any)
	if opts["SystemdCgroup"] != false || opts["Root"] != "/tmp/bbX/containerd/runc" || opts["BinaryName"] != "/usr/sbin/runc" {
		t.Errorf("runc options = %v", opts)
	}
	if got := cri["registry"].(map[string]any)["config_path"]; got != "/tmp/bbX/certs.d" {
		t.Errorf("registry config_path = %v", got)
	}
}

func TestContainerd2Config(t *testing.T) {
	c := &containerdDaemon{name: "containerd2", v3: true, dir: "/tmp/bbX/containerd2", env: testEnv(),
		certsDir: "/tmp/bbX/certs.d", sandboxImage: "registry.k8s.io/pause:3.10", logLevel: "info"}
	var doc map[string]any
	if err := toml.Unmarshal([]byte(c.config()), &doc); err != nil {
		t.Fatalf("containerd 2 config is not TOML: %v\n%s", err, c.config())
	}
	if doc["version"] != int64(3) {
		t.Fatalf("version = %v, want 3", doc["version"])
	}
	plugins := doc["plugins"].(map[string]any)
	images := plugins["io.containerd.cri.v1.images"].(map[string]any)
	if got := images["pinned_images"].(map[string]any)["sandbox"]; got != "registry.k8s.io/pause:3.10" {
		t.Errorf("sandbox image = %v", got)
	}
	if got := images["registry"].(map[string]any)["config_path"]; got != "/tmp/bbX/certs.d" {
		t.Errorf("registry config_path = %v", got)
	}
	rt := plugins["io.containerd.cri.v1.runtime"].(map[string]any)
	if rt["restrict_oom_score_adj"] != true {
		t.Errorf("restrict_oom_score_adj not set: every sandbox fails without CAP_SYS_RESOURCE")
	}
	opts := rt["containerd"].(map[string]any)["runtimes"].(map[string]any)["runc"].(map[string]any)["options"].(map[string]any)
	if opts["SystemdCgroup"] != false || opts["Root"] != "/tmp/bbX/containerd2/runc" || opts["BinaryName"] != "/usr/sbin/runc" {
		t.Errorf("runc options = %v", opts)
	}
	if got := rt["cni"].(map[string]any)["conf_dir"]; got != "/tmp/bbX/cni" {
		t.Errorf("cni conf_dir = %v", got)
	}
}
