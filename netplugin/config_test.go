package netplugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

const goodList = `{"cniVersion":"1.0.0","name":"good","plugins":[{"type":"bdump"}]}`

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		wantFile string // chosen file; "" when none
		wantErr  []string
	}{
		{name: "empty", wantErr: []string{"no network config found"}},
		{name: "lexical order", files: map[string]string{
			"20-b.conflist": goodList, "10-a.conflist": strings.Replace(goodList, "good", "first", 1),
		}, wantFile: "10-a.conflist"},
		{name: "single conf upconverted", files: map[string]string{
			"10-one.conf": `{"cniVersion":"1.0.0","name":"one","type":"bdump"}`,
		}, wantFile: "10-one.conf"},
		{name: "json extension", files: map[string]string{
			"10-one.json": `{"cniVersion":"0.4.0","name":"one","type":"bdump"}`, "README.md": "x",
		}, wantFile: "10-one.json"},
		{name: "invalid skipped", files: map[string]string{
			"00-bad.conflist": "{", "10-good.conflist": goodList,
		}, wantFile: "10-good.conflist"},
		{name: "only invalid", files: map[string]string{"00-bad.conflist": "{"}, wantErr: []string{"00-bad.conflist"}},
		{name: "no plugins", files: map[string]string{
			"00-empty.conflist": `{"cniVersion":"1.0.0","name":"e","plugins":[]}`,
		}, wantErr: []string{"00-empty.conflist"}},
		{name: "missing binary", files: map[string]string{
			"00-x.conflist": `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"nosuchplugin"}]}`,
		}, wantErr: []string{"00-x.conflist", `plugin "nosuchplugin" not found`}},
	}
	binDir := t.TempDir()
	dumpPlugin(t, binDir, t.TempDir(), "1.0.0")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				writeFile(t, filepath.Join(dir, name), content, 0o600)
			}
			cfg, err := loadConfig(dir, []string{binDir})
			if tc.wantFile != "" {
				if err != nil || filepath.Base(cfg.file) != tc.wantFile {
					t.Fatalf("loadConfig = %v, %v; want %s", cfg, err, tc.wantFile)
				}
				if !cfg.list.LoadOnlyInlinedPlugins || len(cfg.list.Plugins) != 1 {
					t.Errorf("config not inlined: %s", cfg.list.Bytes)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("loadConfig error %v, want failed precondition", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// Plugins listed in <confdir>/<name>/*.conf are part of the network; the
// inlined bytes (what the cache keeps) must hold them.
func TestLoadConfigSubdirPlugins(t *testing.T) {
	binDir, dir := t.TempDir(), t.TempDir()
	dumpPlugin(t, binDir, t.TempDir(), "1.0.0")
	writeFile(t, filepath.Join(dir, "10-n.conflist"), `{"cniVersion":"1.0.0","name":"n"}`, 0o600)
	if err := os.Mkdir(filepath.Join(dir, "n"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "n", "a.conf"), `{"type":"bdump","x":1}`, 0o600)
	cfg, err := loadConfig(dir, []string{binDir})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.list.Plugins) != 1 || !strings.Contains(string(cfg.list.Bytes), `"x":1`) {
		t.Errorf("subdir plugin not inlined: %s", cfg.list.Bytes)
	}
}

func TestStatusFollowsConfDir(t *testing.T) {
	binDir, confDir := t.TempDir(), filepath.Join(t.TempDir(), "net.d")
	dumpPlugin(t, binDir, t.TempDir(), "1.0.0")
	m := newManager(t, Options{ConfDir: confDir, BinDirs: []string{binDir}})
	if err := m.Status(); err == nil || !strings.Contains(err.Error(), "no network config found") {
		t.Fatalf("Status with no conf dir = %v", err)
	}
	if _, err := m.Setup(context.Background(), PodNetwork{ID: "x", NetNS: "/nonexistent"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Setup without config: %v, want failed precondition", err)
	}
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(confDir, "05-bad.conflist"), "{not json", 0o600)
	if !waitFor(3*time.Second, func() bool { err := m.Status(); return err != nil && strings.Contains(err.Error(), "05-bad.conflist") }) {
		t.Fatalf("Status does not name the invalid file: %v", m.Status())
	}
	writeFile(t, filepath.Join(confDir, "10-good.conflist"), goodList, 0o600)
	if !waitFor(3*time.Second, func() bool { return m.Status() == nil }) {
		t.Fatalf("Status still %v after a valid config appeared", m.Status())
	}
	if err := os.Remove(filepath.Join(confDir, "10-good.conflist")); err != nil {
		t.Fatal(err)
	}
	if !waitFor(3*time.Second, func() bool { return m.Status() != nil }) {
		t.Fatal("Status stays ready after the config was removed")
	}
}

func TestNewRejectsRelativeDirs(t *testing.T) {
	if _, err := New(context.Background(), Options{ConfDir: "rel"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("New with relative conf dir: %v", err)
	}
}
