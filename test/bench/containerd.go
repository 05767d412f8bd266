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

// containerdDaemon runs Debian's containerd 1.6 (config version 2), or a
// containerd 2.x built from the Go module proxy (config version 3, name
// "containerd2"), with the CRI plugin on its own root, state, sockets and
// runc root, with the bench's CNI conf dir and a certs.d mirror tree that
// sends every registry to the bench registry.
type containerdDaemon struct {
	name string
	bin  string
	// v3 writes containerd 2.x's config (version 3: the CRI plugin split
	// into images, runtime and grpc parts).
	v3           bool
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

func (c *containerdDaemon) Name() string { return c.name }

func (c *containerdDaemon) socket() string { return filepath.Join(c.dir, "c.sock") }

func (c *containerdDaemon) config() string {
	if c.v3 {
		return c.configV3()
	}
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

// configV3 is the same setup in containerd 2.x's schema. NRI is disabled:
// its default socket (/var/run/nri/nri.sock) is host-wide, and the bench must
// not take it from a containerd the node runs.
func (c *containerdDaemon) configV3() string {
	return fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs", "io.containerd.nri.v1.nri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %q

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %q
        Root = %q
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %q
    max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.socket(), c.socket()+".ttrpc",
		c.logLevel, filepath.Join(c.dir, "opt"), c.sandboxImage, c.certsDir, c.env.Runc, c.runcRoot(), c.env.ConfDir)
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
	if c.netnsBefore == nil {
		// Only before the first start: a restart (the recovery
		// scenario) must not adopt the pins of its own pods.
		c.netnsBefore = listNetns()
	}
	logPath := filepath.Join(c.dir, "containerd.log")
	// containerd finds its shim on PATH first, then beside its own binary:
	// a containerd 2.x next to Debian's 1.6 must not start 1.6's shim.
	env := []string{"PATH=" + filepath.Dir(c.bin) + string(os.PathListSeparator) + os.Getenv("PATH")}
	p, err := startProcess(c.bin, []string{"--config", cfg}, logPath, env...)
	if err != nil {
		return "", err
	}
	c.proc = p
	if err := waitSocket(ctx, p, c.socket(), listenWait); err != nil {
		return "", fmt.Errorf("containerd: %w (log %s)", err, logPath)
	}
	return "unix://" + c.socket(), nil
}

func (c *containerdDaemon) Pid() int { return c.proc.pid() }

func (c *containerdDaemon) Procs() []int {
	return runtimeProcs(c.Pid(), c.dir, "containerd-shim", "pause")
}

func (c *containerdDaemon) Kill() { c.proc.kill() }

func (c *containerdDaemon) MetaDB() string {
	return filepath.Join(c.dir, "root", "io.containerd.metadata.v1.bolt", "meta.db")
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
			// mountinfo names the pin by its real path (/run/netns on
			// Debian, where /var/run is a link to /run).
			if real, err := filepath.EvalSymlinks(p); err == nil {
				p = real
			}
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
