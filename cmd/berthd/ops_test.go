package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-runtime/berth/cri/config"
)

func TestChangedKeys(t *testing.T) {
	base := config.Default()
	for _, tc := range []struct {
		name   string
		change func(c *config.Config)
		want   []string
	}{
		{"none", func(*config.Config) {}, nil},
		{"level", func(c *config.Config) { c.Log.Level = "debug" }, []string{"log.level"}},
		{"cni and root", func(c *config.Config) { c.CNI.BinDirs = []string{"/x"}; c.Root = "/r" }, []string{"cni.bin_dirs", "root"}},
		{"handler added", func(c *config.Config) {
			// Keep the defaults as they are on this machine (the runc
			// binary depends on whether the bundled runc is installed).
			hs := map[string]config.Handler{"kata": {Binary: "kata"}}
			for name, h := range c.Runtime.Handlers {
				hs[name] = h
			}
			c.Runtime.Handlers = hs
		}, []string{"runtime.handlers.kata.binary", "runtime.handlers.kata.root"}},
		{"metrics", func(c *config.Config) { c.Metrics.Address = "127.0.0.1:9000" }, []string{"metrics.address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := config.Default()
			tc.change(&next)
			got, err := changedKeys(base, next)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("changed keys = %v, want %v", got, tc.want)
			}
		})
	}
}

// testOps returns ops over a config file in a temp dir and the buffer its
// log goes to.
func testOps(t *testing.T, initial string) (*ops, string, *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(initial)
	cfg, err := config.Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, level := newLogger(cfg.Log, &buf)
	o := newOps(configSource{path: path, explicit: true}, cfg, level, log)
	t.Cleanup(func() { close(o.sigs) })
	return o, path, &buf
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	confA, confB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{confA, confB} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	base := "state = \"" + state + "\"\n[cni]\nconf_dir = \"" + confA + "\"\n[log]\nlevel = \"info\"\n"
	o, path, buf := testOps(t, base)
	ctx := context.Background()
	netw, err := newSwappableNetwork(ctx, netOptions(o.cfg, o.log))
	if err != nil {
		t.Fatal(err)
	}
	defer netw.Close()
	o.network = netw
	first := netw.cur

	if o.log.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("debug enabled at level info")
	}
	next := strings.Replace(base, `level = "info"`, `level = "debug"`, 1)
	next = strings.Replace(next, confA, confB, 1)
	next = strings.Replace(next, "state = ", "root = \"/elsewhere\"\nstate = ", 1)
	if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	applied, skipped := o.reload(ctx)
	if want := []string{"cni.conf_dir", "log.level"}; !slices.Equal(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
	if want := []string{"root"}; !slices.Equal(skipped, want) {
		t.Errorf("not applied %v, want %v", skipped, want)
	}
	if !o.log.Enabled(ctx, slog.LevelDebug) {
		t.Error("log level not changed to debug")
	}
	if err := netw.Status(); netw.cur == first || err == nil || !strings.Contains(err.Error(), confB) {
		t.Errorf("network manager not swapped for the new conf dir: status %v", err)
	}
	if o.cfg.Root != config.Default().Root || o.cfg.CNI.ConfDir != confB {
		t.Errorf("running config root %q conf dir %q: want the old root and the new conf dir", o.cfg.Root, o.cfg.CNI.ConfDir)
	}
	if !strings.Contains(buf.String(), "config reloaded") || !strings.Contains(buf.String(), "not_applied_restart_needed=[root]") {
		t.Errorf("reload log does not say what it did not apply:\n%s", buf)
	}

	// A second SIGHUP with nothing new still reports the pending restart.
	if applied, skipped := o.reload(ctx); len(applied) != 0 || !slices.Equal(skipped, []string{"root"}) {
		t.Errorf("second reload applied %v, skipped %v; want nothing and [root]", applied, skipped)
	}

	// A broken file changes nothing.
	if err := os.WriteFile(path, []byte("[log]\nlevel = \"loud\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if applied, skipped := o.reload(ctx); applied != nil || skipped != nil {
		t.Errorf("bad file applied %v, skipped %v", applied, skipped)
	}
	if !o.log.Enabled(ctx, slog.LevelDebug) || !strings.Contains(buf.String(), "config reload failed") {
		t.Errorf("a bad file changed the level or was not reported:\n%s", buf)
	}
}

func TestDumpGoroutines(t *testing.T) {
	logDir := filepath.Join(t.TempDir(), "logs")
	o, _, _ := testOps(t, "[log]\ndir = \""+logDir+"\"\n")
	block := make(chan struct{})
	go func() { <-block }() // a goroutine the dump must show
	defer close(block)
	path, err := o.dumpGoroutines()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(path) != logDir {
		t.Errorf("dump at %s, want in %s", path, logDir)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("goroutine ")) || !bytes.Contains(data, []byte("TestDumpGoroutines")) {
		t.Errorf("dump lacks goroutine stacks:\n%.2000s", data)
	}
	// Two dumps never overwrite each other.
	time.Sleep(time.Microsecond)
	path2, err := o.dumpGoroutines()
	if err != nil || path2 == path {
		t.Errorf("second dump %q, %v; want a new file", path2, err)
	}
}
