package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestDefaultRoundTrips(t *testing.T) {
	def := Default()
	data, err := Marshal(def)
	if err != nil {
		t.Fatal(err)
	}
	got := Default()
	if err := Decode(data, &got); err != nil {
		t.Fatalf("decode of printed defaults: %v\n%s", err, data)
	}
	if got.GRPC.Address != "/run/berth/berth.sock" || got.Root != def.Root || len(got.Runtime.Handlers) != 2 {
		t.Fatalf("round trip changed the defaults: %+v", got)
	}
}

func TestDecodeErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ name, in, key string }{
		{"unknown top key", "bogus = 1\n", "bogus"},
		{"unknown nested key", "[grpc]\nadress = \"/x\"\n", "grpc.adress"},
		{"wrong type", "root = 5\n", "root"},
		{"relative root", "root = \"rel\"\n", "root"},
		{"bad level", "[log]\nlevel = \"loud\"\n", "log.level"},
		{"default handler missing", "[runtime]\ndefault_handler = \"kata\"\n", "runtime.default_handler"},
		{"handler without binary", "[runtime.handlers.x]\nroot = \"/x\"\n", "runtime.handlers.x.binary"},
		{"bad cgroup parent", "cgroup_parent = \"berth\"\n", "cgroup_parent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			err := Decode([]byte(tc.in), &cfg)
			if err == nil {
				t.Fatal("expected an error")
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("error %q does not name key %q", err, tc.key)
			}
		})
	}
}

func TestHandlersReplaceDefaults(t *testing.T) {
	cfg := Default()
	in := "[runtime.handlers.runc]\nbinary = \"/usr/sbin/runc\"\n"
	if err := Decode([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Runtime.Handlers) != 1 || cfg.Runtime.Handlers["runc"].Binary != "/usr/sbin/runc" {
		t.Fatalf("handlers = %+v", cfg.Runtime.Handlers)
	}
	if got := cfg.HandlerRoot("runc"); got != "/run/berth/runc" {
		t.Errorf("HandlerRoot = %q", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.toml"), false); err != nil {
		t.Fatalf("implicit missing file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml"), true); err == nil {
		t.Fatal("explicit missing file must fail")
	}
	p := filepath.Join(dir, "c.toml")
	if err := os.WriteFile(p, []byte("state = \"/tmp/x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p, true)
	if err != nil || cfg.State != "/tmp/x" || cfg.Root != "/var/lib/berth" {
		t.Fatalf("Load = %+v, %v", cfg, err)
	}
}
