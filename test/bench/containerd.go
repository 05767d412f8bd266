package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// containerdDaemon runs Debian's containerd 1.6 with the CRI plugin on its
// own root, state, sockets and runc root, with the bench's CNI conf dir and
// a certs.d mirror tree that sends every registry to the bench registry.
type containerdDaemon struct {
	bin          string
	dir          string
	env          *env
	certsDir     string
	sandboxImage string
	logLevel     string
	proc         *process
	log          *slog.Logger
	// netnsBefore are the /var/run/netns entries that existed before
	// containerd started: containerd 1.6 pins pod namespaces there, not
	// under its state dir, so leftovers are told apart by this snapshot.
	netnsBefore map[string]bool
}

func (c *containerdDaemon) Name() string { return "containerd" }

func (c *containerdDaemon) socket() string { return filepath.Join(c.dir, "c.sock") }

func (c *containerdDaemon) config() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = %q
        Root = %q
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.socket(), c.socket()+".ttrpc",
		c.logLevel, filepath.Join(c.dir, "opt"), c.sandboxImage, c.env.Runc, c.runcRoot(), c.env.ConfDir, c.certsDir)
}

func (c *containerdDaemon) runcRoot() string { return filepath.Join(c.dir, "runc") }

func (c *containerdDaemon) Start(ctx context.Context) (string, error) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return "", fmt.Errorf("make containerd dir: %w", err)
	}
	cfg := filepath.Join(c.dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(c.config()), 0o600); err != nil {
		return "", fmt.Errorf("write containerd config: %w", err)
	}
	c.netnsBefore = listNetns()
	logPath := filepath.Join(c.dir, "containerd.log")
	p, err := startProcess(c.bin, []string{"--config", cfg}, logPath)
	if err != nil {
		return "", err
	}
	c.proc = p
	if err := waitSocket(ctx, p, c.socket(), 30*time.Second); err != nil {
		return "", fmt.Errorf("containerd: %w (log %s)", err, logPath)
	}
	return "unix://" + c.socket(), nil
}

func (c *containerdDaemon) Pid() int { return c.proc.pid() }

func (c *containerdDaemon) Procs() []int {
	return runtimeProcs(c.Pid(), c.dir, "containerd-shim", "pause")
}

func (c *containerdDaemon) Stop() {
	c.proc.stop(15 * time.Second)
	killProcsNaming(c.dir)
	ents, _ := os.ReadDir(c.runcRoot())
	for _, e := range ents {
		runcDeleteAll(c.env.Runc, filepath.Join(c.runcRoot(), e.Name()), c.log)
	}
	unmountUnder(c.dir, c.log)
	if c.netnsBefore != nil {
		for name := range listNetns() {
			if c.netnsBefore[name] || !strings.HasPrefix(name, "cni-") {
				continue
			}
			p := filepath.Join("/var/run/netns", name)
			unmountUnder(p, c.log)
			if err := os.Remove(p); err != nil {
				c.log.Warn("remove netns pin", "path", p, "err", err)
			}
		}
	}
}

func listNetns() map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		out[e.Name()] = true
	}
	return out
}
