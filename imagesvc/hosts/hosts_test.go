package hosts

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
)

func write(t *testing.T, dir, host, body string) {
	t.Helper()
	d := filepath.Join(dir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if body != "" {
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type want struct {
	url    string
	caps   Capabilities
	mirror bool
}

func urls(hs []Host) []want {
	var out []want
	for _, h := range hs {
		out = append(out, want{h.URL(), h.Capabilities, h.Mirror})
	}
	return out
}

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "docker.io", `
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]

[host."https://zz-mirror.example:8443"]
  capabilities = ["pull"]
  skip_verify = true

[host.'https://aa-mirror.example']
  capabilities = ["resolve"]
`)
	write(t, dir, "quay.io", `server = "http://127.0.0.1:5000"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
`)
	write(t, dir, "_default", `[host."https://fallback.example"]
`)
	write(t, dir, "ghcr.io", "") // docker-style dir without hosts.toml
	write(t, dir, "reg.example_5000", `server = "https://reg.example:5000"`)
	all := Pull | Resolve | Push
	tests := []struct {
		domain string
		want   []want
	}{
		{"docker.io", []want{
			{"http://127.0.0.1:5000", Pull | Resolve, true},
			{"https://zz-mirror.example:8443", Pull, true},
			{"https://aa-mirror.example", Resolve, true},
			{"https://registry-1.docker.io", all, false},
		}},
		// server listed as a host too is tried once.
		{"quay.io", []want{{"http://127.0.0.1:5000", Pull | Resolve, true}}},
		{"registry.k8s.io", []want{{"https://fallback.example", all, true}, {"https://registry.k8s.io", all, false}}},
		{"ghcr.io", []want{{"https://ghcr.io", all, false}}},
		{"reg.example:5000", []want{{"https://reg.example:5000", all, false}}},
		{"insecure.example:80", []want{{"https://fallback.example", all, true}, {"http://insecure.example:80", all, false}}},
	}
	c := New(dir, []string{"insecure.example:80"}, nil)
	for _, tt := range tests {
		hs, err := c.Lookup(tt.domain)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", tt.domain, err)
		}
		if got := urls(hs); !slices.Equal(got, tt.want) {
			t.Errorf("Lookup(%s) = %v, want %v", tt.domain, got, tt.want)
		}
	}
	// no config dir at all: the upstream, docker.io mapped to its API host.
	hs, err := New("", []string{"127.0.0.1:1"}, nil).Lookup("docker.io")
	if err != nil || len(hs) != 1 || hs[0].URL() != "https://registry-1.docker.io" {
		t.Errorf("no config: %v %v", urls(hs), err)
	}
	hs, _ = New("", []string{"127.0.0.1:1"}, nil).Lookup("127.0.0.1:1")
	if len(hs) != 1 || hs[0].URL() != "http://127.0.0.1:1" {
		t.Errorf("insecure host: %v", urls(hs))
	}
}

func TestLookupErrors(t *testing.T) {
	tests := map[string]string{
		"syntax":     `server = `,
		"capability": `[host."https://m"]` + "\ncapabilities = [\"fly\"]",
		"scheme":     `server = "ftp://x"`,
		"path":       `server = "https://x/some/prefix"`,
		"ca missing": `ca = "/nonexistent/ca.pem"`,
		"ca garbage": `ca = "hosts.toml"`,
		"client":     `client = [["/nonexistent/c.pem", "/nonexistent/k.pem"]]`,
		"header":     `[header]` + "\nx = 1",
	}
	for name, body := range tests {
		dir := t.TempDir()
		write(t, dir, "r.example", body)
		_, err := New(dir, nil, nil).Lookup("r.example")
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if !errdefs.IsInvalidArgument(err) && !errdefs.IsNotImplemented(err) && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: error class of %v", name, err)
		}
	}
}

func TestHostTransportForcesSchemeAndHeaders(t *testing.T) {
	var got *http.Request
	ht := &hostTransport{
		base: rtFunc(func(r *http.Request) (*http.Response, error) {
			got = r
			return &http.Response{StatusCode: http.StatusOK}, nil
		}),
		host: "127.0.0.1:9", scheme: "https", header: http.Header{"X-Mirror": {"1"}},
	}
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:9/v2/", nil)
	if _, err := ht.RoundTrip(req); err != nil { //nolint:bodyclose // the fake transport's response has no body
		t.Fatal(err)
	}
	if got.URL.Scheme != "https" || got.Header.Get("X-Mirror") != "1" || req.URL.Scheme != "http" {
		t.Errorf("request sent as %s with %v (original now %s)", got.URL, got.Header, req.URL)
	}
	other, _ := http.NewRequest(http.MethodGet, "http://auth.example/token", nil)
	ht.RoundTrip(other) //nolint:bodyclose // the fake transport's response has no body
	if got.URL.String() != "http://auth.example/token" || got.Header.Get("X-Mirror") != "" {
		t.Errorf("other host's request changed: %s %v", got.URL, got.Header)
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
