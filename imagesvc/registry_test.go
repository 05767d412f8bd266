package imagesvc

import (
	"archive/tar"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	bolt "go.etcd.io/bbolt"
)

// envWith is newEnv with options changed by mod (the test registry is not
// made insecure: mod decides how it is reached).
func envWith(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	root := t.TempDir()
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	o := Options{Root: filepath.Join(root, "berth"), DB: db}
	mod(&o)
	svc, err := New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, root: o.Root, db: db}
}

func writeHosts(t *testing.T, dir, host, body string) {
	t.Helper()
	d := filepath.Join(dir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// assertClean checks that a failed or retried pull left no temp or partial state.
func assertClean(t *testing.T, root string) {
	t.Helper()
	if left := files(t, filepath.Join(root, "content", "ingest")); len(left) != 0 {
		t.Errorf("ingest files left: %v", left)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "layers"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temp layer dir left: %s", e.Name())
		}
	}
}

func testImage(t *testing.T) v1.Image {
	return image(t, v1.Config{Cmd: []string{"/x"}},
		layer(t, ent{name: "etc/", typ: tar.TypeDir}, ent{name: "etc/a", body: "a"}),
		layer(t, ent{name: "b", body: strings.Repeat("b", 1<<16)}))
}

func TestMirrorFallthrough(t *testing.T) {
	reg := newRegistry(t)
	md := reg.push(t, "lib/app:1", testImage(t))
	dead := deadAddr(t)
	dir := t.TempDir()
	// the "upstream" registry.example is the test registry's mirror tree:
	// a dead mirror first, then the working one, then an unreachable server.
	writeHosts(t, dir, "registry.example", fmt.Sprintf(`server = "https://%s"
[host."http://%s"]
  capabilities = ["pull", "resolve"]
[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, dead, dead, reg.host))
	e := envWith(t, func(o *Options) { o.HostsDir = dir })
	img, err := e.svc.Pull(ctx, "registry.example/lib/app:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "registry.example/lib/app@" + md.String(); len(img.RepoDigests) != 1 || img.RepoDigests[0] != want {
		t.Errorf("RepoDigests = %v, want the name asked for, not the mirror's", img.RepoDigests)
	}

	// every host down: the error names each one.
	writeHosts(t, dir, "down.example", fmt.Sprintf(`server = "http://%s"
[host."http://%s"]
`, dead, deadAddr(t)))
	_, err = e.svc.Pull(ctx, "down.example/lib/app:1", nil)
	if err == nil || !errdefs.IsUnavailable(err) {
		t.Fatalf("pull with all hosts down: %v, want Unavailable", err)
	}
	if !strings.Contains(err.Error(), "all 2 hosts failed") || strings.Count(err.Error(), dead) < 1 {
		t.Errorf("error does not list the hosts tried: %v", err)
	}
	assertClean(t, e.root)
}

func TestMirrorCapabilities(t *testing.T) {
	// resolve-only host A has the tag; pull-only host B serves content by
	// digest; the server is down.
	a, b := newRegistry(t), newRegistry(t)
	img := testImage(t)
	a.push(t, "lib/app:1", img)
	b.push(t, "lib/app:other", img)
	dir := t.TempDir()
	writeHosts(t, dir, "cap.example", fmt.Sprintf(`server = "http://%s"
[host."http://%s"]
  capabilities = ["pull"]
[host."http://%s"]
  capabilities = ["resolve"]
`, deadAddr(t), b.host, a.host))
	e := envWith(t, func(o *Options) { o.HostsDir = dir })
	if _, err := e.svc.Pull(ctx, "cap.example/lib/app:1", nil); err != nil {
		t.Fatal(err)
	}
	if a.totalGets() != 0 || b.totalGets() == 0 {
		t.Errorf("blob GETs: resolve-only host %d, pull host %d", a.totalGets(), b.totalGets())
	}
}

// tlsFiles makes a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in dir.
type tlsFiles struct {
	dir                       string
	ca, clientCert, clientKey string
	serverCert                tls.Certificate
	pool                      *x509.CertPool
}

func newTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	f := tlsFiles{dir: dir, ca: filepath.Join(dir, "ca.pem"), clientCert: filepath.Join(dir, "client.cert"), clientKey: filepath.Join(dir, "client.key")}
	sc, sk := issue("127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cc, ck := issue("client", x509.ExtKeyUsageClientAuth, nil)
	for p, b := range map[string][]byte{f.ca: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), f.clientCert: cc, f.clientKey: ck} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if f.serverCert, err = tls.X509KeyPair(sc, sk); err != nil {
		t.Fatal(err)
	}
	f.pool = x509.NewCertPool()
	f.pool.AddCert(caCert)
	return f
}

func quietRegistry() http.Handler { return registry.New(registry.Logger(log.New(io.Discard, "", 0))) }

func TestTLSRegistryWithClientCert(t *testing.T) {
	tf := newTLSFiles(t)
	srv := httptest.NewUnstartedServer(quietRegistry())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{tf.serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: tf.pool}
	srv.StartTLS()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	pushTLS(t, tf, host, "lib/app:1", testImage(t))

	tests := []struct {
		name, hosts string
		ok          bool
	}{
		{"ca and client cert", fmt.Sprintf(`server = "https://%s"
ca = %q
client = [[%q, %q]]`, host, tf.ca, tf.clientCert, tf.clientKey), true},
		// relative paths are relative to the host's directory.
		{"docker-style relative files", fmt.Sprintf(`server = "https://%s"
ca = "ca.pem"
client = [["client.cert", "client.key"]]`, host), true},
		{"no ca", fmt.Sprintf(`server = "https://%s"
client = [[%q, %q]]`, host, tf.clientCert, tf.clientKey), false},
		{"no client cert", fmt.Sprintf(`server = "https://%s"
ca = %q`, host, tf.ca), false},
		{"skip_verify with client cert", fmt.Sprintf(`server = "https://%s"
skip_verify = true
client = [[%q, %q]]`, host, tf.clientCert, tf.clientKey), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeHosts(t, dir, "tls.example", tt.hosts)
			for _, f := range []string{"ca.pem", "client.cert", "client.key"} {
				b, _ := os.ReadFile(filepath.Join(tf.dir, f))
				os.WriteFile(filepath.Join(dir, "tls.example", f), b, 0o600)
			}
			e := envWith(t, func(o *Options) { o.HostsDir = dir })
			_, err := e.svc.Pull(ctx, "tls.example/lib/app:1", nil)
			if tt.ok && err != nil {
				t.Fatalf("pull: %v", err)
			}
			if !tt.ok && err == nil {
				t.Fatal("pull succeeded without the TLS material it needs")
			}
		})
	}
}

func pushTLS(t *testing.T, tf tlsFiles, host, repoTag string, img v1.Image) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(tf.clientCert, tf.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: tf.pool, Certificates: []tls.Certificate{cert}}}
	pushWith(t, &forceHTTPS{tr}, host, repoTag, img)
}

// forceHTTPS sends everything over TLS (ggcr guesses http for loopback).
type forceHTTPS struct{ base http.RoundTripper }

func (f *forceHTTPS) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme = "https"
	return f.base.RoundTrip(r)
}

func pushWith(t *testing.T, tr http.RoundTripper, host, repoTag string, img v1.Image, opts ...remote.Option) {
	t.Helper()
	ref, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, append(opts, remote.WithTransport(tr))...); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
}

func pushWithAuth(t *testing.T, host, repoTag string, img v1.Image, user, pass string) {
	t.Helper()
	pushWith(t, http.DefaultTransport, host, repoTag, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
}

// authRegistry wraps a registry with Basic or Bearer token auth.
type authRegistry struct {
	inner      http.Handler
	mode       string // "basic" or "bearer"
	user, pass string
	mu         sync.Mutex
	tokens     int
	seenAuth   []string
}

const testToken = "t0k3n-for-tests"

func (a *authRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/token" {
		a.mu.Lock()
		a.tokens++
		a.mu.Unlock()
		// identity token: POST with refresh_token; else Basic or anonymous.
		if r.Method == http.MethodPost {
			r.ParseForm()
			if r.Form.Get("refresh_token") != "refresh-"+a.pass {
				http.Error(w, "bad refresh token", http.StatusUnauthorized)
				return
			}
		} else if u, p, ok := r.BasicAuth(); !ok || u != a.user || p != a.pass {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"token": testToken, "access_token": testToken})
		return
	}
	h := r.Header.Get("Authorization")
	a.mu.Lock()
	a.seenAuth = append(a.seenAuth, h)
	a.mu.Unlock()
	switch a.mode {
	case "basic":
		if u, p, ok := r.BasicAuth(); ok && u == a.user && p == a.pass {
			a.inner.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
	default:
		if h == "Bearer "+testToken {
			a.inner.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, r.Host))
	}
	w.WriteHeader(http.StatusUnauthorized)
}

func TestAuth(t *testing.T) {
	basic := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	tests := []struct {
		name string
		mode string
		auth *Auth
		ok   bool
	}{
		{"basic user/password", "basic", &Auth{Username: "u", Password: "secret-pw"}, true},
		{"basic auth field", "basic", &Auth{Auth: basic("u", "secret-pw")}, true},
		{"basic wrong password", "basic", &Auth{Username: "u", Password: "nope"}, false},
		{"basic anonymous", "basic", nil, false},
		{"bearer user/password", "bearer", &Auth{Username: "u", Password: "secret-pw"}, true},
		{"bearer identity token", "bearer", &Auth{IdentityToken: "refresh-secret-pw"}, true},
		{"bearer registry token", "bearer", &Auth{RegistryToken: testToken}, true},
		{"bearer anonymous", "bearer", nil, false},
		{"credentials for another server", "basic", &Auth{Username: "u", Password: "secret-pw", ServerAddress: "other.example"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ar := &authRegistry{inner: quietRegistry(), mode: tt.mode, user: "u", pass: "secret-pw"}
			srv := httptest.NewServer(ar)
			defer srv.Close()
			host := strings.TrimPrefix(srv.URL, "http://")
			pushWithAuth(t, host, "lib/app:1", testImage(t), "u", "secret-pw")
			var logs bytes.Buffer
			e := envWith(t, func(o *Options) {
				o.InsecureHosts = []string{host}
				o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			_, err := e.svc.Pull(ctx, host+"/lib/app:1", tt.auth)
			if tt.ok && err != nil {
				t.Fatalf("pull: %v", err)
			}
			if !tt.ok {
				if err == nil {
					t.Fatal("pull succeeded without valid credentials")
				}
				if !errdefs.IsUnauthorized(err) && !errdefs.IsPermissionDenied(err) && !errdefs.IsNotFound(err) {
					t.Errorf("error class: %v", err)
				}
			}
			for _, secret := range []string{"secret-pw", basic("u", "secret-pw"), testToken} {
				if strings.Contains(logs.String(), secret) || (err != nil && strings.Contains(err.Error(), secret)) {
					t.Errorf("a credential reached the log or error:\n%s\n%v", logs.String(), err)
				}
			}
		})
	}
	if s := fmt.Sprint(Auth{Username: "u", Password: "pw", IdentityToken: "it"}); strings.Contains(s, "pw") || strings.Contains(s, "it\"") {
		t.Errorf("Auth prints secrets: %s", s)
	}
}

// dropOnce cuts the first GET of blob victim half way through.
type dropOnce struct {
	inner  http.Handler
	victim string
	mu     sync.Mutex
	cut    int
	gets   int
}

func (d *dropOnce) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.victim) {
		d.inner.ServeHTTP(w, r)
		return
	}
	d.mu.Lock()
	d.gets++
	cut := d.cut > 0
	if cut {
		d.cut--
	}
	d.mu.Unlock()
	if !cut {
		d.inner.ServeHTTP(w, r)
		return
	}
	body := startBody(w, r, d.inner)
	w.Write(body[:len(body)/2])
	w.(http.Flusher).Flush()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestRegistryDiesMidPull(t *testing.T) {
	img := testImage(t)
	ls, _ := img.Layers()
	victim := layerDigest(t, ls[1]).String()
	d := &dropOnce{inner: quietRegistry(), victim: victim}
	srv := httptest.NewServer(d)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	pushWith(t, http.DefaultTransport, host, "lib/app:1", img)
	e := envWith(t, func(o *Options) { o.InsecureHosts = []string{host} })

	// cut once: the layer is retried within the pull.
	d.cut = 1
	got, err := e.svc.Pull(ctx, host+"/lib/app:1", nil)
	if err != nil {
		t.Fatalf("pull with one cut connection: %v", err)
	}
	if d.gets != 2 {
		t.Errorf("layer fetched %d times, want 2", d.gets)
	}
	if b, err := os.ReadFile(filepath.Join(e.svc.layers.Dir(got.ChainIDs[1]), "b")); err != nil || len(b) != 1<<16 {
		t.Errorf("layer content after retry: %d bytes, %v", len(b), err)
	}
	assertClean(t, e.root)

	// cut on every try: the pull fails and leaves nothing; a later pull works.
	if err := e.svc.Remove(ctx, got.ID); err != nil {
		t.Fatal(err)
	}
	d.cut = layerAttempts
	if _, err := e.svc.Pull(ctx, host+"/lib/app:1", nil); err == nil {
		t.Fatal("pull succeeded with every try cut")
	}
	assertClean(t, e.root)
	if _, err := e.svc.Get(ctx, host+"/lib/app:1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("image recorded after failed pull: %v", err)
	}
	if e.svc.layers.Exists(got.ChainIDs[1]) {
		t.Error("cut layer committed")
	}
	if _, err := e.svc.Pull(ctx, host+"/lib/app:1", nil); err != nil {
		t.Fatalf("pull after the registry recovered: %v", err)
	}
}

func TestProgressLogged(t *testing.T) {
	reg := newRegistry(t)
	reg.push(t, "lib/app:1", testImage(t))
	reg.setDelay(300 * time.Millisecond)
	var mu sync.Mutex
	var logs bytes.Buffer
	e := envWith(t, func(o *Options) {
		o.InsecureHosts = []string{reg.host}
		o.ProgressInterval = 50 * time.Millisecond
		o.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil))
	})
	if _, err := e.svc.Pull(ctx, reg.host+"/lib/app:1", nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var n int
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "pull progress" {
			continue
		}
		done, _ := rec["bytes_done"].(float64)
		total, _ := rec["bytes_total"].(float64)
		if done > total || rec["ref"] != reg.host+"/lib/app:1" {
			t.Errorf("progress line %v", rec)
		}
		if total > 0 && rec["layers_total"].(float64) == 2 {
			n++
		}
	}
	if n < 2 {
		t.Errorf("%d progress lines, want several:\n%s", n, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
