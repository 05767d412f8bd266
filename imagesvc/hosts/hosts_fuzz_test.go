package hosts

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLookup parses arbitrary hosts.toml files: Lookup must never panic or
// hang, and every host it returns has a scheme and a host, and a path
// confined to the registry API.
func FuzzLookup(f *testing.F) {
	for _, s := range []string{
		"server = \"https://registry.example\"\n",
		"server = \"https://r.example\"\n[host.\"https://mirror.example\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
		"[host.\"http://127.0.0.1:5000\"]\nskip_verify = true\nca = \"ca.pem\"\n[host.\"http://127.0.0.1:5000\".header]\nx = [\"a\", \"b\"]\n",
		"[host.\"https://m\"]\nclient = [[\"c.pem\", \"k.pem\"]]\nca = [\"../../../etc/ssl/x\"]\n",
		"server = 5\n", "[[[", "",
		"[host.\"::\"]\n", "[host.\"https://m/v2/../..\"]\noverride_path = true\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		dir := t.TempDir()
		d := filepath.Join(dir, "registry.example")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		c := New(dir, nil, slog.New(slog.DiscardHandler))
		hosts, err := c.Lookup("registry.example")
		if err != nil {
			return
		}
		for _, h := range hosts {
			if (h.Scheme != "http" && h.Scheme != "https") || h.Host == "" || strings.ContainsAny(h.Host, "/ ") {
				t.Fatalf("Lookup returned host %+v", h)
			}
		}
	})
}
