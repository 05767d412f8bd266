package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/berth-runtime/berth/cri/config"
)

func TestConfigCmdDropIns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte("[log]\nlevel = \"warn\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(config.DropInDir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(config.DropInDir(path), "10-debug.toml")
	if err := os.WriteFile(dropIn, []byte("[log]\nlevel = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"config", "check", path}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if want := path + ": ok\n" + dropIn + ": ok\n"; out.String() != want {
		t.Errorf("config check printed %q, want %q", out.String(), want)
	}
	out.Reset()
	if err := run([]string{"config", "show", path}, &out, &out); err != nil {
		t.Fatal(err)
	}
	var shown struct{ Log struct{ Level string } }
	if err := toml.Unmarshal(out.Bytes(), &shown); err != nil {
		t.Fatalf("config show is not TOML: %v\n%s", err, out.String())
	}
	if shown.Log.Level != "debug" || !strings.Contains(out.String(), dropIn) {
		t.Errorf("config show: level %q, want the drop-in's debug, and the files named:\n%s", shown.Log.Level, out.String())
	}

	if err := os.WriteFile(dropIn, []byte("[log]\nlevle = \"debug\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"config", "check", path}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "10-debug.toml") || !strings.Contains(err.Error(), "log.levle") {
		t.Errorf("config check of a bad drop-in: %v, want the file and key named", err)
	}
}

// TestConfigDefaultDecodes: the header make install writes with the
// defaults is TOML comments, and the whole round-trips.
func TestConfigDefaultDecodes(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"config", "default"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	if err := config.Decode(out.Bytes(), &cfg); err != nil {
		t.Fatalf("config default does not decode: %v", err)
	}
	if !strings.Contains(out.String(), "config.d") {
		t.Error("config default does not mention the drop-in dir")
	}
}

// TestConfigCheckSignaturePolicy: config check reads the signature policy
// the config names, as start-up does.
func TestConfigCheckSignaturePolicy(t *testing.T) {
	dir := t.TempDir()
	path, policy := filepath.Join(dir, "config.toml"), filepath.Join(dir, "policy.json")
	if err := os.WriteFile(path, fmt.Appendf(nil, "[registry]\nsignature_policy = %q\n", policy), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ policy, want string }{
		{`{"default": [{"type": "insecureAcceptAnything"}]}`, policy + ": ok (signature policy)\n"},
		{`{"default": [{"type": "sigstoreSigned", "fulcio": {}}]}`, "not supported yet"},
		{``, "registry.signature_policy"},
	} {
		if err := os.WriteFile(policy, []byte(tc.policy), 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err := run([]string{"config", "check", path}, &out, &out)
		if got := out.String() + fmt.Sprint(err); !strings.Contains(got, tc.want) {
			t.Errorf("config check with policy %q: %s, want %q", tc.policy, got, tc.want)
		}
	}
}
