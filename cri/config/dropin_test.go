package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeConfig writes the main file and drop-ins (name -> content) under a
// fresh dir and returns the main file's path.
func writeConfig(t *testing.T, main string, dropIns map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if main != "" {
		if err := os.WriteFile(path, []byte(main), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if len(dropIns) > 0 {
		if err := os.Mkdir(DropInDir(path), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range dropIns {
		if err := os.WriteFile(filepath.Join(DropInDir(path), name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestDropInsMerge(t *testing.T) {
	main := `state = "/run/main"
[log]
level = "warn"
format = "json"
[registry]
insecure_hosts = ["a:5000", "b:5000"]
[runtime.handlers.runc]
binary = "/usr/sbin/runc"
`
	path := writeConfig(t, main, map[string]string{
		// lexical order: 10 before 20, whatever the write order.
		"20-late.toml": "[log]\nlevel = \"error\"\n",
		"10-early.toml": `[log]
level = "debug"
[registry]
insecure_hosts = ["c:5000"]
[runtime.handlers.runc]
root = "/run/runc-root"
[runtime.handlers.kata]
binary = "kata-runtime"
`,
		"notes.txt":    "not toml = [",
		".hidden.toml": "bogus = 1\n",
	})
	cfg, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "error" {
		t.Errorf("log.level = %q, want the last drop-in's error", cfg.Log.Level)
	}
	if cfg.Log.Format != "json" || cfg.State != "/run/main" {
		t.Errorf("keys a drop-in does not name changed: format %q state %q", cfg.Log.Format, cfg.State)
	}
	if !slices.Equal(cfg.Registry.InsecureHosts, []string{"c:5000"}) {
		t.Errorf("insecure_hosts = %v, want the drop-in's array replacing the main file's", cfg.Registry.InsecureHosts)
	}
	runc := cfg.Runtime.Handlers["runc"]
	if runc.Binary != "/usr/sbin/runc" || runc.Root != "/run/runc-root" {
		t.Errorf("runc handler = %+v, want binary from the main file and root from the drop-in", runc)
	}
	if _, ok := cfg.Runtime.Handlers["kata"]; !ok || len(cfg.Runtime.Handlers) != 2 {
		t.Errorf("handlers = %v, want runc and kata (the files' handlers replace the defaults)", cfg.Runtime.Handlers)
	}
	want := []string{path, filepath.Join(DropInDir(path), "10-early.toml"), filepath.Join(DropInDir(path), "20-late.toml")}
	if !slices.Equal(cfg.Files, want) {
		t.Errorf("Files = %v, want %v", cfg.Files, want)
	}
}

func TestDropInsWithoutMainFile(t *testing.T) {
	path := writeConfig(t, "", map[string]string{"50-level.toml": "[log]\nlevel = \"debug\"\n"})
	cfg, err := Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "debug" || cfg.Root != "/var/lib/berth" {
		t.Errorf("config = level %q root %q, want the drop-in over the defaults", cfg.Log.Level, cfg.Root)
	}
	if _, err := Load(path, true); err == nil {
		t.Error("an explicit main file that is missing must fail even with drop-ins")
	}
}

func TestDropInErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		dropIns map[string]string
		want    []string // in the error
	}{
		{"unknown key names the file", map[string]string{"10-x.toml": "[grpc]\nadress = \"/x\"\n"}, []string{"10-x.toml", "grpc.adress"}},
		{"wrong type names the file", map[string]string{"10-x.toml": "root = 5\n"}, []string{"10-x.toml", "root"}},
		{"syntax", map[string]string{"10-x.toml": "[log\n"}, []string{"10-x.toml"}},
		{"bad merged value names the key", map[string]string{"10-x.toml": "[runtime]\ndefault_handler = \"kata\"\n"}, []string{"runtime.default_handler", "10-x.toml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, "", tc.dropIns), false)
			if err == nil {
				t.Fatal("expected an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestDropInNamesHandlerOfAnother: validation runs on the merged config,
// so a drop-in may pick a default handler another drop-in defines.
func TestDropInNamesHandlerOfAnother(t *testing.T) {
	path := writeConfig(t, "", map[string]string{
		"10-kata.toml":    "[runtime.handlers.kata]\nbinary = \"kata-runtime\"\n[runtime.handlers.runc]\nbinary = \"runc\"\n",
		"20-default.toml": "[runtime]\ndefault_handler = \"kata\"\n",
	})
	cfg, err := Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runtime.DefaultHandler != "kata" {
		t.Errorf("default handler = %q", cfg.Runtime.DefaultHandler)
	}
}
