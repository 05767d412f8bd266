package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// berthDaemon runs bin/berthd on its own root, state, socket and cgroup
// parent, with the bench's CNI conf dir and registry.
type berthDaemon struct {
	binDir   string
	dir      string
	env      *env
	registry string // host:port of the bench registry (plain HTTP)
	certsDir string
	logLevel string
	// crun adds a "crun" handler (the -berth-handler crun experiment).
	crun bool
	// metricsAddr is berthd's /metrics endpoint on loopback (the pleg
	// scenario reads its request counters).
	metricsAddr string
	proc        *process
	log         *slog.Logger
}

func (b *berthDaemon) Name() string { return "berth" }

func (b *berthDaemon) config() string {
	return fmt.Sprintf(`root = %q
state = %q
cgroup_parent = %q

[grpc]
address = %q

[log]
level = %q

[metrics]
address = %q

[runtime]
shim_path = %q
pause_path = %q

[runtime.handlers.runc]
binary = %q

%s
[registry]
config_path = %q
insecure_hosts = [%q]

[cni]
conf_dir = %q
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
`, filepath.Join(b.dir, "root"), filepath.Join(b.dir, "run"), b.env.Cgroup+"/berth-default",
		b.socket(), b.logLevel, b.metricsAddr,
		filepath.Join(b.binDir, "berth-shim"), filepath.Join(b.binDir, "berth-pause"),
		b.env.Runc, b.crunHandler(), b.certsDir, b.registry, b.env.ConfDir)
}

func (b *berthDaemon) crunHandler() string {
	if !b.crun {
		return ""
	}
	return "[runtime.handlers.crun]\nbinary = \"/usr/bin/crun\"\n"
}

func (b *berthDaemon) socket() string { return filepath.Join(b.dir, "berth.sock") }

func (b *berthDaemon) Start(ctx context.Context) (string, error) {
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return "", fmt.Errorf("make berth dir: %w", err)
	}
	if b.metricsAddr == "" {
		port, err := freePort()
		if err != nil {
			return "", fmt.Errorf("metrics port: %w", err)
		}
		b.metricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	}
	cfg := filepath.Join(b.dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(b.config()), 0o600); err != nil {
		return "", fmt.Errorf("write berth config: %w", err)
	}
	p, err := startProcess(filepath.Join(b.binDir, "berthd"), []string{"--config", cfg}, filepath.Join(b.dir, "berthd.log"))
	if err != nil {
		return "", err
	}
	b.proc = p
	if err := waitSocket(ctx, p, b.socket(), listenWait); err != nil {
		return "", fmt.Errorf("berthd: %w (log %s)", err, filepath.Join(b.dir, "berthd.log"))
	}
	return "unix://" + b.socket(), nil
}

func (b *berthDaemon) Pid() int { return b.proc.pid() }

func (b *berthDaemon) Procs() []int {
	return runtimeProcs(b.Pid(), b.dir, "berth-shim", "berth-pause")
}

func (b *berthDaemon) Kill() { b.proc.kill() }

func (b *berthDaemon) MetaDB() string { return filepath.Join(b.dir, "root", "meta.db") }

func (b *berthDaemon) Stop() {
	b.proc.stop(15 * time.Second)
	// What berthd should have removed, were every pod removed through it.
	killProcsNaming(b.dir)
	runcDeleteAll(b.env.Runc, filepath.Join(b.dir, "run", "runc"), b.log)
	if b.crun {
		runcDeleteAll("/usr/bin/crun", filepath.Join(b.dir, "run", "crun"), b.log)
	}
	unmountUnder(b.dir, b.log)
}
