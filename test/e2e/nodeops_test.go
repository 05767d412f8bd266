package e2e

// What operators of containerd and CRI-O rely on (issue 22): config
// drop-ins, systemd readiness, node-level registry credentials, and image
// import into a running berthd.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-runtime/berth/test/testutil"
)

// TestConfigDropIns starts berthd with drop-ins in config.d beside its
// config: verbose Status shows the merged config and the files it came
// from, config check lists them, and SIGHUP re-reads them.
func TestConfigDropIns(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{Binaries: bins})
	dir := filepath.Join(d.Dir, "config.d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("20-timeout.toml", "[cni]\nplugin_timeout = \"77s\"\n")
	write("10-pinned.toml", "[registry]\npinned_images = [\"example.test/pinned:1\"]\n[cni]\nplugin_timeout = \"55s\"\n")

	out, err := exec.Command(bins.Berthd, "config", "check", d.ConfigPath).CombinedOutput()
	if err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	for _, f := range []string{d.ConfigPath, "10-pinned.toml: ok", "20-timeout.toml: ok"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("config check output does not list %q:\n%s", f, out)
		}
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(16<<10))
	}
	resp, err := d.Runtime.Status(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Files    []string `json:"files"`
		CNI      struct{ PluginTimeout string }
		Registry struct{ PinnedImages, InsecureHosts []string }
		Root     string
	}
	if err := json.Unmarshal([]byte(resp.GetInfo()["config"]), &cfg); err != nil {
		t.Fatalf("verbose Status config: %v\n%s", err, resp.GetInfo()["config"])
	}
	if cfg.CNI.PluginTimeout != "77s" {
		t.Errorf("cni.plugin_timeout = %q, want the last drop-in's 77s", cfg.CNI.PluginTimeout)
	}
	if !slices.Equal(cfg.Registry.PinnedImages, []string{"example.test/pinned:1"}) || cfg.Root != d.Root {
		t.Errorf("merged config lost keys: pinned %v root %q", cfg.Registry.PinnedImages, cfg.Root)
	}
	want := []string{d.ConfigPath, filepath.Join(dir, "10-pinned.toml"), filepath.Join(dir, "20-timeout.toml")}
	if !slices.Equal(cfg.Files, want) {
		t.Errorf("config files = %v, want %v", cfg.Files, want)
	}

	// A drop-in written later is read by SIGHUP like the main file.
	write("30-level.toml", "[log]\nlevel = \"info\"\n")
	off := logLen(t, d)
	if err := syscall.Kill(d.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line := waitLog(t, d, off, regexp.MustCompile(`(config reloaded.*)`), 10*time.Second)
	if !strings.Contains(line, "applied=[log.level]") {
		t.Errorf("reload did not apply the drop-in's log.level: %s", line)
	}
}
