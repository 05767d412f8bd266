package e2e

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// privateRegistry is an in-process registry behind Basic auth whose blob
// GETs wait for release, so a test can hold a pull in flight.
type privateRegistry struct {
	inner      http.Handler
	user, pass string
	started    chan struct{}
	release    chan struct{}
	once       sync.Once
}

func (p *privateRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, pw, ok := r.BasicAuth(); !ok || u != p.user || pw != p.pass {
		w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
		p.once.Do(func() { close(p.started) })
		<-p.release
	}
	p.inner.ServeHTTP(w, r)
}

// recordingMirror wants credentials of its own (which nobody has) and
// records every Authorization header it is sent.
type recordingMirror struct {
	mu   sync.Mutex
	seen []string
}

func (m *recordingMirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.seen = append(m.seen, r.Header.Get("Authorization"))
	m.mu.Unlock()
	w.Header().Set("WWW-Authenticate", `Basic realm="mirror"`)
	w.WriteHeader(http.StatusUnauthorized)
}

// privateBehindMirror starts a privateRegistry whose blob GETs pass freely
// until the caller replaces release, and a recordingMirror; Cleanup stops
// both.
func privateBehindMirror(t *testing.T, user, pass string) (priv *privateRegistry, mirror *recordingMirror, upHost, mirrorHost string) {
	t.Helper()
	priv = &privateRegistry{
		inner: registry.New(registry.Logger(log.New(io.Discard, "", 0))), user: user, pass: pass,
		started: make(chan struct{}), release: make(chan struct{}),
	}
	close(priv.release) // the push passes freely
	up := httptest.NewServer(priv)
	t.Cleanup(up.Close)
	mirror = &recordingMirror{}
	ms := httptest.NewServer(mirror)
	t.Cleanup(ms.Close)
	return priv, mirror, strings.TrimPrefix(up.URL, "http://"), strings.TrimPrefix(ms.URL, "http://")
}

// assertNoCredentials fails when the mirror was sent any Authorization
// header, or was never asked at all.
func (m *recordingMirror) assertNoCredentials(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.seen {
		if h != "" {
			t.Errorf("the mirror was sent credentials: %.12s...", h)
		}
	}
	if len(m.seen) == 0 {
		t.Error("the mirror was never asked: the check proves nothing")
	}
}

// TestPullPrivateImageCredentials pulls a private image through the CRI
// twice at once, with and without credentials, via a registry whose
// hosts.toml lists a mirror first: the pull without credentials must not
// ride on the other, and the mirror must never see the credentials.
func TestPullPrivateImageCredentials(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	const user, pass = "puller", "e2e-private-pw"
	priv, mirror, upHost, mirrorHost := privateBehindMirror(t, user, pass)

	img, err := testutil.NewImage(testutil.ImageSpec{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := testutil.PushTo(context.Background(), upHost+"/team/private:1", img, http.DefaultTransport,
		&authn.Basic{Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	priv.release = make(chan struct{})
	d, certs := hostsDaemon(t)
	writeHostsTOML(t, certs, upHost, fmt.Sprintf("server = \"http://%s\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", upHost, mirrorHost))

	type result struct {
		ref  string
		code codes.Code
		err  error
	}
	withAuth := make(chan result, 1)
	go func() {
		ref, code, err := pullCode(t, d, p.Ref, &runtimeapi.AuthConfig{Username: user, Password: pass, ServerAddress: upHost})
		withAuth <- result{ref, code, err}
	}()
	select {
	case <-priv.started:
	case r := <-withAuth:
		t.Fatalf("pull with credentials ended before its first blob: %v", r.err)
	}
	anonymous := make(chan result, 1)
	go func() {
		ref, code, err := pullCode(t, d, p.Ref, nil)
		anonymous <- result{ref, code, err}
	}()
	// long enough for the anonymous pull to join the one in flight.
	time.Sleep(300 * time.Millisecond)
	close(priv.release)

	if r := <-withAuth; r.err != nil || r.ref != p.ConfigDigest.String() {
		t.Fatalf("pull with credentials: %q, %v", r.ref, r.err)
	}
	if r := <-anonymous; r.err == nil {
		t.Error("a pull without credentials got the private image by joining one with them")
	} else if r.code != codes.Unauthenticated {
		t.Errorf("pull without credentials: code %v, want Unauthenticated: %v", r.code, r.err)
	}
	mirror.assertNoCredentials(t)
	assertNoSecrets(t, d, pass, basicAuth(user, pass))
	removeImage(t, d, p.Ref)
	testutil.AssertNoLeaks(t, d)
}
