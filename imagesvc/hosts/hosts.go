// Package hosts owns registry host configuration: the certs.d directory
// layout operators keep for containerd (<dir>/<host>/hosts.toml, with a
// _default fallback), turned into the ordered list of endpoints a pull tries
// (mirrors first, then the upstream server) and an HTTP transport per
// endpoint carrying its TLS settings (ca, client certificate, skip_verify)
// and scheme (plain HTTP when the URL says http://).
package hosts

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
)

// Capabilities say what a host may be used for.
type Capabilities uint8

const (
	// Pull fetches manifests and blobs by digest.
	Pull Capabilities = 1 << iota
	// Resolve turns a tag into a digest.
	Resolve
	// Push uploads (never used by berth, accepted in config).
	Push
)

// Has reports whether c includes all of o.
func (c Capabilities) Has(o Capabilities) bool { return c&o == o }

// Host is one registry endpoint.
type Host struct {
	Scheme       string // "https" or "http"
	Host         string // host[:port] as dialled
	Capabilities Capabilities
	// Mirror is false for the upstream server (the last host).
	Mirror bool
	// Transport reaches this host with its TLS settings, forcing Scheme
	// and adding configured headers.
	Transport http.RoundTripper
}

// URL is scheme://host, what logs and errors name.
func (h Host) URL() string { return h.Scheme + "://" + h.Host }

// Config finds hosts for registries. hosts.toml files are read at each
// lookup, as containerd does, so edits apply without a restart; transports
// are cached by their settings so connections are reused across pulls.
type Config struct {
	dir      string
	insecure map[string]bool
	log      *slog.Logger

	mu         sync.Mutex
	transports map[string]http.RoundTripper // guarded by mu; key: tlsKey
}

// New returns a Config reading dir ("" => no per-host config). insecure
// hosts (host:port) without a hosts.toml are reached over plain HTTP.
func New(dir string, insecure []string, log *slog.Logger) *Config {
	if log == nil {
		log = slog.Default()
	}
	c := &Config{dir: dir, insecure: map[string]bool{}, log: log, transports: map[string]http.RoundTripper{}}
	for _, h := range insecure {
		c.insecure[h] = true
	}
	return c
}

// fileHost is a hosts.toml host table (and the top-level server keys).
type fileHost struct {
	Capabilities []string       `toml:"capabilities"`
	CA           any            `toml:"ca"`
	Client       any            `toml:"client"`
	SkipVerify   *bool          `toml:"skip_verify"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
}

type file struct {
	Server string `toml:"server"`
	fileHost
	Host map[string]fileHost `toml:"host"`
}

// hostHeaderRE finds [host."..."] tables in file order; TOML maps lose the
// order, and the order is the mirror priority.
var hostHeaderRE = regexp.MustCompile(`(?m)^\s*\[\s*host\s*\.\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*\]`)

// DefaultServer is the upstream URL of a registry without config:
// Docker Hub's API lives at registry-1.docker.io.
func DefaultServer(domain string) string {
	if domain == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + domain
}

// Lookup returns the hosts to try for registry domain, in order.
func (c *Config) Lookup(domain string) ([]Host, error) {
	dir, f, err := c.load(domain)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return c.defaults(domain, dir)
	}
	var out []Host
	for _, key := range f.order {
		h, err := c.host(key, f.file.Host[key], dir, true)
		if err != nil {
			return nil, fmt.Errorf("%s: host %q: %w", f.path, key, err)
		}
		out = append(out, h)
	}
	server := f.file.Server
	if server == "" {
		server = DefaultServer(domain)
		if c.insecure[domain] {
			server = "http://" + domain
		}
	}
	h, err := c.host(server, f.file.fileHost, dir, false)
	if err != nil {
		return nil, fmt.Errorf("%s: server %q: %w", f.path, server, err)
	}
	// A server also listed as a host is tried once, where it is listed.
	if !slices.ContainsFunc(out, func(o Host) bool { return o.URL() == h.URL() }) {
		out = append(out, h)
	}
	return out, nil
}

type parsed struct {
	path  string
	file  file
	order []string
}

// load reads the hosts.toml for domain: <dir>/<host>, <dir>/<host with
// ':' as '_'>, then <dir>/_default. It returns the dir found (for
// relative paths and docker-style cert files) and nil when no hosts.toml.
func (c *Config) load(domain string) (string, *parsed, error) {
	if c.dir == "" {
		return "", nil, nil
	}
	for _, name := range []string{domain, strings.ReplaceAll(domain, ":", "_"), "_default"} {
		d := filepath.Join(c.dir, name)
		st, err := os.Stat(d)
		if err != nil || !st.IsDir() {
			continue
		}
		p := filepath.Join(d, "hosts.toml")
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			if name == "_default" {
				continue
			}
			return d, nil, nil // docker-style dir: certificates only
		}
		if err != nil {
			return "", nil, fmt.Errorf("read %s: %w", p, err)
		}
		var f file
		if err := toml.Unmarshal(data, &f); err != nil {
			return "", nil, fmt.Errorf("parse %s: %v: %w", p, err, errdefs.ErrInvalidArgument)
		}
		return d, &parsed{path: p, file: f, order: hostOrder(data, f.Host)}, nil
	}
	return "", nil, nil
}

func hostOrder(data []byte, hosts map[string]fileHost) []string {
	var order []string
	for _, m := range hostHeaderRE.FindAllSubmatch(data, -1) {
		k := string(m[1])
		switch {
		case strings.HasPrefix(k, `"`):
			k = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(k[1 : len(k)-1])
		case strings.HasPrefix(k, `'`):
			k = k[1 : len(k)-1]
		}
		if _, ok := hosts[k]; ok && !slices.Contains(order, k) {
			order = append(order, k)
		}
	}
	var rest []string
	for k := range hosts {
		if !slices.Contains(order, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(order, rest...)
}

// defaults is the upstream alone, with docker-style certificates
// (*.crt CAs, *.cert/*.key client pairs) from dir when there is one.
func (c *Config) defaults(domain, dir string) ([]Host, error) {
	server := DefaultServer(domain)
	if c.insecure[domain] {
		server = "http://" + domain
	}
	fh := fileHost{}
	if dir != "" {
		cas, clients, err := dockerCerts(dir)
		if err != nil {
			return nil, err
		}
		if len(cas) > 0 {
			fh.CA = cas
		}
		if len(clients) > 0 {
			fh.Client = clients
		}
	}
	h, err := c.host(server, fh, dir, false)
	if err != nil {
		return nil, err
	}
	return []Host{h}, nil
}

func dockerCerts(dir string) (cas []any, clients []any, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		n := e.Name()
		switch {
		case strings.HasSuffix(n, ".crt"):
			cas = append(cas, n)
		case strings.HasSuffix(n, ".cert"):
			key := strings.TrimSuffix(n, ".cert") + ".key"
			clients = append(clients, []any{n, key})
		}
	}
	return cas, clients, nil
}

func parseCaps(list []string, def Capabilities) (Capabilities, error) {
	if list == nil {
		return def, nil
	}
	var c Capabilities
	for _, s := range list {
		switch s {
		case "pull":
			c |= Pull
		case "resolve":
			c |= Resolve
		case "push":
			c |= Push
		default:
			return 0, fmt.Errorf("unknown capability %q: %w", s, errdefs.ErrInvalidArgument)
		}
	}
	return c, nil
}

func (c *Config) host(rawURL string, fh fileHost, dir string, mirror bool) (Host, error) {
	if !strings.Contains(rawURL, "://") {
		rawURL = "https://" + rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return Host{}, fmt.Errorf("bad registry URL %q: %w", rawURL, errdefs.ErrInvalidArgument)
	}
	if p := strings.TrimSuffix(u.Path, "/"); p != "" && p != "/v2" {
		// The registry client always speaks /v2/ at the host root.
		return Host{}, fmt.Errorf("registry URL %q: a path other than /v2 is not supported: %w", rawURL, errdefs.ErrNotImplemented)
	}
	caps, err := parseCaps(fh.Capabilities, Pull|Resolve|Push)
	if err != nil {
		return Host{}, err
	}
	ts, err := tlsSettingsOf(fh, dir)
	if err != nil {
		return Host{}, err
	}
	hdr, err := headers(fh.Header)
	if err != nil {
		return Host{}, err
	}
	base, err := c.transport(ts)
	if err != nil {
		return Host{}, err
	}
	return Host{
		Scheme: u.Scheme, Host: u.Host, Capabilities: caps, Mirror: mirror,
		Transport: &hostTransport{base: base, host: u.Host, scheme: u.Scheme, header: hdr},
	}, nil
}

func headers(in map[string]any) (http.Header, error) {
	h := http.Header{}
	for k, v := range in {
		switch v := v.(type) {
		case string:
			h.Add(k, v)
		case []any:
			for _, x := range v {
				s, ok := x.(string)
				if !ok {
					return nil, fmt.Errorf("header %q: values must be strings: %w", k, errdefs.ErrInvalidArgument)
				}
				h.Add(k, s)
			}
		default:
			return nil, fmt.Errorf("header %q: values must be strings: %w", k, errdefs.ErrInvalidArgument)
		}
	}
	return h, nil
}

// tlsSettings are what decides a transport; paths are absolute.
type tlsSettings struct {
	skipVerify bool
	cas        []string
	clients    [][2]string
}

func (t tlsSettings) key() string { return fmt.Sprint(t.skipVerify, t.cas, t.clients) }

func tlsSettingsOf(fh fileHost, dir string) (tlsSettings, error) {
	abs := func(p string) string {
		if filepath.IsAbs(p) || dir == "" {
			return p
		}
		return filepath.Join(dir, p)
	}
	var ts tlsSettings
	if fh.SkipVerify != nil {
		ts.skipVerify = *fh.SkipVerify
	}
	cas, err := stringList(fh.CA)
	if err != nil {
		return ts, fmt.Errorf("ca: %w", err)
	}
	for _, p := range cas {
		ts.cas = append(ts.cas, abs(p))
	}
	// client: "cert" | ["cert", ...] | [["cert", "key"], ...]
	switch v := fh.Client.(type) {
	case nil:
	case string:
		ts.clients = append(ts.clients, [2]string{abs(v), ""})
	case []any:
		for _, x := range v {
			switch x := x.(type) {
			case string:
				ts.clients = append(ts.clients, [2]string{abs(x), ""})
			case []any:
				pair, err := stringList(x)
				if err != nil || len(pair) == 0 || len(pair) > 2 {
					return ts, fmt.Errorf("client: want [cert, key] pairs: %w", errdefs.ErrInvalidArgument)
				}
				cp := [2]string{abs(pair[0]), ""}
				if len(pair) == 2 {
					cp[1] = abs(pair[1])
				}
				ts.clients = append(ts.clients, cp)
			default:
				return ts, fmt.Errorf("client: want paths: %w", errdefs.ErrInvalidArgument)
			}
		}
	default:
		return ts, fmt.Errorf("client: want paths: %w", errdefs.ErrInvalidArgument)
	}
	return ts, nil
}

func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("want a string or a list of strings: %w", errdefs.ErrInvalidArgument)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a string or a list of strings: %w", errdefs.ErrInvalidArgument)
}

// transport returns the cached transport for ts, building it on first use.
func (c *Config) transport(ts tlsSettings) (http.RoundTripper, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.transports[ts.key()]; ok {
		return t, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: ts.skipVerify} //nolint:gosec // skip_verify is the operator's explicit choice
	if len(ts.cas) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for _, p := range ts.cas {
			pem, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("read ca %s: %w", p, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca %s: no PEM certificates: %w", p, errdefs.ErrInvalidArgument)
			}
		}
		cfg.RootCAs = pool
	}
	for _, cp := range ts.clients {
		key := cp[1]
		if key == "" {
			key = cp[0] // a PEM file holding both
		}
		cert, err := tls.LoadX509KeyPair(cp[0], key)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s: %v: %w", cp[0], err, errdefs.ErrInvalidArgument)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       cfg,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
	}
	c.transports[ts.key()] = t
	return t, nil
}

// hostTransport pins the scheme of requests to its host: the registry
// client guesses http for loopback and private addresses and https for the
// rest, but the config's URL decides.
type hostTransport struct {
	base   http.RoundTripper
	host   string
	scheme string
	header http.Header
}

func (t *hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host || (req.URL.Scheme == t.scheme && len(t.header) == 0) {
		return t.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.URL.Scheme = t.scheme
	for k, v := range t.header {
		if r.Header.Get(k) == "" {
			r.Header[k] = v
		}
	}
	return t.base.RoundTrip(r)
}
