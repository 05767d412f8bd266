package imagesvc

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/imagesvc/hosts"
)

// authServer starts an authRegistry on loopback and returns it with its host.
func authServer(t *testing.T, user, pass string) (*authRegistry, string) {
	t.Helper()
	ar := &authRegistry{inner: quietRegistry(), mode: "basic", user: user, pass: pass}
	srv := httptest.NewServer(ar)
	t.Cleanup(srv.Close)
	return ar, strings.TrimPrefix(srv.URL, "http://")
}

func (a *authRegistry) sawSecret(secret string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range a.seenAuth {
		if strings.Contains(h, secret) {
			return true
		}
	}
	return false
}

func TestCredentialsNeverReachMirrors(t *testing.T) {
	basic := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	upSecret, mirrorSecret := basic("u", "up-pw"), basic("m", "mirror-pw")
	for _, tc := range []struct {
		name       string
		defaultDir bool // mirror configured in _default, not for the registry
		server     func(up, mirror string) string
		fromMirror bool // the credentials are the mirror's own
	}{
		{"server address names the upstream", false, func(up, _ string) string { return up }, false},
		{"server address as a URL", false, func(up, _ string) string { return "http://" + up + "/v2/" }, false},
		{"no server address", false, func(string, string) string { return "" }, false},
		{"third-party _default mirror", true, func(string, string) string { return "" }, false},
		{"credentials naming the mirror", false, func(_, mirror string) string { return mirror }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, upHost := authServer(t, "u", "up-pw")
			mirror, mirrorHost := authServer(t, "m", "mirror-pw")
			pushWithAuth(t, upHost, "lib/app:1", testImage(t), "u", "up-pw")
			pushWithAuth(t, mirrorHost, "lib/app:1", testImage(t), "m", "mirror-pw")
			dir := t.TempDir()
			hostsDir := upHost
			if tc.defaultDir {
				hostsDir = "_default"
			}
			writeHosts(t, dir, hostsDir, fmt.Sprintf("server = \"http://%s\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", upHost, mirrorHost))
			e := envWith(t, func(o *Options) { o.HostsDir = dir })
			auth := &Auth{Username: "u", Password: "up-pw", ServerAddress: tc.server(upHost, mirrorHost)}
			if tc.fromMirror {
				auth.Username, auth.Password = "m", "mirror-pw"
			}
			if _, err := e.svc.Pull(ctx, upHost+"/lib/app:1", auth); err != nil {
				t.Fatalf("pull: %v", err)
			}
			if mirror.sawSecret(upSecret) {
				t.Error("the mirror was sent the upstream registry's credentials")
			}
			if up.sawSecret(mirrorSecret) {
				t.Error("the upstream was sent the mirror's credentials")
			}
			if tc.fromMirror && !mirror.sawSecret(mirrorSecret) {
				t.Error("credentials naming the mirror did not reach it")
			}
			if !tc.fromMirror && !up.sawSecret(upSecret) {
				t.Error("the upstream's credentials did not reach it")
			}
		})
	}
}

func TestNamesHost(t *testing.T) {
	h := func(scheme, host string) hosts.Host { return hosts.Host{Scheme: scheme, Host: host} }
	for _, tc := range []struct {
		server string
		host   hosts.Host
		want   bool
	}{
		{"https://index.docker.io/v1/", h("https", "registry-1.docker.io"), true},
		{"docker.io", h("https", "registry-1.docker.io"), true},
		{"docker.io", h("https", "mirror.gcr.io"), false},
		{"Reg.Example", h("https", "reg.example:443"), true},
		{"reg.example:80", h("http", "reg.example"), true},
		{"reg.example:443", h("http", "reg.example"), false},
		{"reg.example:5000/path", h("https", "reg.example:5000"), true},
		{"reg.example", h("https", "reg.example.evil"), false},
		{"", h("https", "reg.example"), false},
	} {
		if got := namesHost(serverHost(tc.server), tc.host); got != tc.want {
			t.Errorf("credentials for %q sent to %s: %v, want %v", tc.server, tc.host.URL(), got, tc.want)
		}
	}
}

// gate holds every blob GET until release is closed, signalling the first.
type gate struct {
	inner   http.Handler
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		g.once.Do(func() { close(g.started) })
		<-g.release
	}
	g.inner.ServeHTTP(w, r)
}

func TestJoinedPullNeedsOwnCredentials(t *testing.T) {
	g := &gate{inner: quietRegistry(), started: make(chan struct{}), release: make(chan struct{})}
	ar := &authRegistry{inner: g, mode: "basic", user: "u", pass: "secret-pw"}
	srv := httptest.NewServer(ar)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	close(g.release)
	pushWithAuth(t, host, "lib/private:1", testImage(t), "u", "secret-pw")
	g.release = make(chan struct{})
	e := envWith(t, func(o *Options) { o.InsecureHosts = []string{host} })

	ref := host + "/lib/private:1"
	errs := make(chan error, 1)
	go func() {
		_, err := e.svc.Pull(ctx, ref, &Auth{Username: "u", Password: "secret-pw"})
		errs <- err
	}()
	<-g.started // the private pull is under way, holding its first blob
	anon := make(chan error, 1)
	go func() {
		_, err := e.svc.Pull(ctx, ref, nil)
		anon <- err
	}()
	// long enough for an anonymous caller to join the pull in flight.
	time.Sleep(200 * time.Millisecond)
	close(g.release)
	if err := <-errs; err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
	err := <-anon
	if err == nil {
		t.Fatal("a pull without credentials succeeded by joining one with them")
	}
	if !errdefs.IsUnauthorized(err) {
		t.Errorf("pull without credentials: %v, want Unauthenticated", err)
	}
}
