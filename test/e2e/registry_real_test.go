package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-runtime/berth/test/testutil"
)

// These tests pull from Debian's docker-registry (distribution v2), a real
// separate server, where the in-process registry cannot stand in: TLS with
// a client certificate requirement, htpasswd and token auth, and a server
// process that dies in the middle of a blob.

// hostsDaemon starts a berthd whose certs.d is a fresh dir, returned.
func hostsDaemon(t *testing.T, insecure ...string) (*testutil.Daemon, string) {
	t.Helper()
	certs := t.TempDir()
	d := testutil.PrepareDaemon(t, testutil.DaemonOptions{Binaries: bins, InsecureHosts: insecure})
	if err := d.SetRegistryConfigPath(certs); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatalf("start berthd: %v\n%s", err, d.LogTail(32<<10))
	}
	return d, certs
}

func writeHostsTOML(t *testing.T, certs, host, body string) {
	t.Helper()
	dir := filepath.Join(certs, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pullCode pulls ref with auth over the raw gRPC client; it returns the
// image ref (when OK) and the status code.
func pullCode(t *testing.T, d *testutil.Daemon, ref string, auth *runtimeapi.AuthConfig) (string, codes.Code, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := d.ImageClient.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Auth: auth})
	return resp.GetImageRef(), status.Code(err), err
}

func removeImage(t *testing.T, d *testutil.Daemon, ref string) {
	t.Helper()
	if _, err := d.ImageClient.RemoveImage(context.Background(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatalf("RemoveImage(%s): %v", ref, err)
	}
}

// assertNoSecrets fails when any secret appears in berthd's log.
func assertNoSecrets(t *testing.T, d *testutil.Daemon, secrets ...string) {
	t.Helper()
	log, err := os.ReadFile(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) == 0 {
		t.Fatal("berthd log is empty: the check would prove nothing")
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(string(log), s) {
			t.Errorf("a credential (%.6s...) is in berthd's log", s)
		}
	}
}

func basicAuth(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }

func TestRealRegistryTLSClientCertBasicAuth(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	pki, err := testutil.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := pki.Issue("registry", []string{"127.0.0.1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pki.Issue("client", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	reg := testutil.StartDistribution(t, testutil.DistributionOptions{TLS: &srvCert, ClientCA: pki.CAPath, Htpasswd: true})
	img, err := testutil.NewImage(testutil.ImageSpec{Env: []string{"REG=tls"}})
	if err != nil {
		t.Fatal(err)
	}
	user, pass := testutil.DistributionUser, testutil.DistributionPassword
	p, err := testutil.PushTo(context.Background(), reg.Host+"/lib/app:1", img, pki.Transport(&client),
		authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}))
	if err != nil {
		t.Fatal(err)
	}
	d, certs := hostsDaemon(t)
	withCA := fmt.Sprintf("server = %q\nca = %q\n", "https://"+reg.Host, pki.CAPath)
	withClient := fmt.Sprintf("client = [[%q, %q]]\n", client.CertPath, client.KeyPath)
	good := &runtimeapi.AuthConfig{Username: user, Password: pass}
	tests := []struct {
		name, hosts string
		auth        *runtimeapi.AuthConfig
		want        codes.Code // OK, Unauthenticated, or Unknown for "any failure"
	}{
		{"no ca", fmt.Sprintf("server = %q\n", "https://"+reg.Host) + withClient, good, codes.Unknown},
		{"no client cert", withCA, good, codes.Unknown},
		{"anonymous", withCA + withClient, nil, codes.Unauthenticated},
		{"wrong password", withCA + withClient, &runtimeapi.AuthConfig{Username: user, Password: "wrong"}, codes.Unauthenticated},
		{"username and password", withCA + withClient, good, codes.OK},
		{"auth field", withCA + withClient, &runtimeapi.AuthConfig{Auth: basicAuth(user, pass)}, codes.OK},
		{"server address of this registry", withCA + withClient,
			&runtimeapi.AuthConfig{Username: user, Password: pass, ServerAddress: "https://" + reg.Host}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// hosts.toml is read at each pull: no restart between cases.
			writeHostsTOML(t, certs, reg.Host, tt.hosts)
			ref, code, err := pullCode(t, d, p.Ref, tt.auth)
			switch {
			case tt.want == codes.OK:
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				if ref != p.ConfigDigest.String() {
					t.Errorf("image ref %s, want %s", ref, p.ConfigDigest)
				}
				removeImage(t, d, p.Ref)
			case err == nil:
				removeImage(t, d, p.Ref)
				t.Fatal("pull succeeded")
			case tt.want != codes.Unknown && code != tt.want:
				t.Errorf("code %v, want %v: %v", code, tt.want, err)
			default:
				t.Logf("refused as expected: %v", err)
			}
		})
	}
	assertNoSecrets(t, d, pass, basicAuth(user, pass))
	testutil.AssertNoLeaks(t, d)
}

func TestRealRegistryTokenAuth(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	pki, err := testutil.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := pki.Issue("registry", []string{"127.0.0.1"}, false)
	if err != nil {
		t.Fatal(err)
	}
	user, pass := "tokenuser", "token-Secret-pw2"
	ti, err := testutil.StartTokenIssuer(pki, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	defer ti.Close()
	reg := testutil.StartDistribution(t, testutil.DistributionOptions{TLS: &srvCert, Token: ti})
	img, err := testutil.NewImage(testutil.ImageSpec{Env: []string{"REG=token"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := testutil.PushTo(context.Background(), reg.Host+"/lib/app:1", img, pki.Transport(nil),
		authn.FromConfig(authn.AuthConfig{Username: user, Password: pass}))
	if err != nil {
		t.Fatal(err)
	}
	d, certs := hostsDaemon(t)
	writeHostsTOML(t, certs, reg.Host, fmt.Sprintf("server = %q\nca = %q\n", "https://"+reg.Host, pki.CAPath))

	registryToken, err := ti.Mint([]string{"repository:lib/app:pull"})
	if err != nil {
		t.Fatal(err)
	}
	otherRepoToken, err := ti.Mint([]string{"repository:lib/other:pull"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		auth *runtimeapi.AuthConfig
		ok   bool
		// issuerAsked: whether berth must go to the token issuer.
		issuerAsked bool
	}{
		{"anonymous", nil, false, true},
		{"wrong password", &runtimeapi.AuthConfig{Username: user, Password: "nope"}, false, true},
		{"username and password", &runtimeapi.AuthConfig{Username: user, Password: pass}, true, true},
		{"auth field", &runtimeapi.AuthConfig{Auth: basicAuth(user, pass)}, true, true},
		{"identity token", &runtimeapi.AuthConfig{IdentityToken: ti.RefreshToken}, true, true},
		{"wrong identity token", &runtimeapi.AuthConfig{IdentityToken: "refresh-bogus"}, false, true},
		{"registry token", &runtimeapi.AuthConfig{RegistryToken: registryToken}, true, false},
		{"registry token for another repository", &runtimeapi.AuthConfig{RegistryToken: otherRepoToken}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ti.Requests()
			ref, code, err := pullCode(t, d, p.Ref, tt.auth)
			asked := ti.Requests() > before
			if asked != tt.issuerAsked {
				t.Errorf("token issuer asked = %v, want %v", asked, tt.issuerAsked)
			}
			if !tt.ok {
				if err == nil {
					removeImage(t, d, p.Ref)
					t.Fatal("pull succeeded")
				}
				if code != codes.Unauthenticated && code != codes.PermissionDenied {
					t.Errorf("code %v, want Unauthenticated or PermissionDenied: %v", code, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			if ref != p.ConfigDigest.String() {
				t.Errorf("image ref %s, want %s", ref, p.ConfigDigest)
			}
			removeImage(t, d, p.Ref)
		})
	}
	if len(ti.Issued()) < 5 {
		t.Errorf("issuer handed out %d tokens: the flows did not go through it", len(ti.Issued()))
	}
	assertNoSecrets(t, d, append([]string{pass, basicAuth(user, pass), ti.RefreshToken}, ti.Issued()...)...)
	testutil.AssertNoLeaks(t, d)
}

// killingProxy forwards to a registry; the first cuts GETs of blob victim
// are answered half, then the registry process is SIGKILLed and the
// connection cut. With restart set the registry is started again at once.
type killingProxy struct {
	reg     *testutil.Distribution
	fwd     *httputil.ReverseProxy
	victim  string
	restart bool

	mu         sync.Mutex
	cuts, gets int     // guarded by mu
	errs       []error // guarded by mu: restart failures
}

func (k *killingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+k.victim) {
		k.fwd.ServeHTTP(w, r)
		return
	}
	k.mu.Lock()
	k.gets++
	cut := k.cuts > 0
	if cut {
		k.cuts--
	}
	k.mu.Unlock()
	if !cut {
		k.fwd.ServeHTTP(w, r)
		return
	}
	resp, err := http.Get("http://" + k.reg.Host + r.URL.Path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Length", resp.Header.Get("Content-Length"))
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.CopyN(w, resp.Body, resp.ContentLength/2)
	w.(http.Flusher).Flush()
	k.reg.Kill()
	if k.restart {
		if err := k.reg.Start(); err != nil {
			k.mu.Lock()
			k.errs = append(k.errs, err)
			k.mu.Unlock()
		}
	}
	panic(http.ErrAbortHandler) // cut the client's connection mid-body
}

// layerState lists unpacked layer dirs and what a pull left half-made
// (temp layer dirs, content ingest files).
func layerState(t *testing.T, d *testutil.Daemon) (layers, partial []string) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(d.Root, "layers"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			partial = append(partial, "layers/"+e.Name())
		} else {
			layers = append(layers, e.Name())
		}
	}
	ingest, _ := os.ReadDir(filepath.Join(d.Root, "content", "ingest"))
	for _, e := range ingest {
		partial = append(partial, "ingest/"+e.Name())
	}
	return layers, partial
}

func TestRealRegistryDiesMidPull(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	reg := testutil.StartDistribution(t, testutil.DistributionOptions{})
	big, err := random.Layer(6<<20, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testutil.NewImage(testutil.ImageSpec{Extra: []v1.Layer{big}})
	if err != nil {
		t.Fatal(err)
	}
	victim, err := big.Digest()
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse("http://" + reg.Host)
	fwd := httputil.NewSingleHostReverseProxy(target)
	fwd.ErrorLog = log.New(io.Discard, "", 0) // "connection refused" while the registry is down is the point
	kp := &killingProxy{reg: reg, fwd: fwd, victim: victim.String(), restart: true}
	proxy := httptest.NewServer(kp)
	defer proxy.Close()
	host := strings.TrimPrefix(proxy.URL, "http://")
	p, err := testutil.PushTo(context.Background(), reg.Host+"/lib/big:1", img, http.DefaultTransport, authn.Anonymous)
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/lib/big:1"
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Binaries: bins, InsecureHosts: []string{host}})

	// killed once mid-blob and restarted: the layer's retry succeeds.
	kp.cuts = 1
	got, _, err := pullCode(t, d, ref, nil)
	if err != nil {
		t.Fatalf("pull across a registry restart: %v", err)
	}
	if got != p.ConfigDigest.String() {
		t.Errorf("image ref %s, want %s", got, p.ConfigDigest)
	}
	if kp.gets != 2 || len(kp.errs) != 0 {
		t.Errorf("victim blob fetched %d times (want 2), restart errors %v", kp.gets, kp.errs)
	}
	layers, partial := layerState(t, d)
	if len(layers) != 2 || len(partial) != 0 {
		t.Errorf("after the pull: layers %v, partial %v", layers, partial)
	}
	if !strings.Contains(d.LogTail(1<<20), "retrying") {
		t.Error("berthd did not log the retry")
	}

	// killed and left down: the pull fails and leaves nothing half-made;
	// once the registry is back, the pull works.
	removeImage(t, d, ref)
	if layers, _ := layerState(t, d); len(layers) != 0 {
		t.Errorf("layers left after RemoveImage: %v", layers)
	}
	kp.mu.Lock()
	kp.cuts, kp.gets, kp.restart = 1, 0, false
	kp.mu.Unlock()
	if _, code, err := pullCode(t, d, ref, nil); err == nil {
		t.Fatal("pull succeeded with the registry down")
	} else if code != codes.Unavailable {
		t.Errorf("pull with the registry down: code %v, want Unavailable: %v", code, err)
	}
	if st, err := d.Images.ImageStatus(context.Background(), &runtimeapi.ImageSpec{Image: ref}, false); err != nil || st.GetImage() != nil {
		t.Errorf("image recorded after a failed pull: %v %v", st.GetImage(), err)
	}
	if _, partial := layerState(t, d); len(partial) != 0 {
		t.Errorf("failed pull left %v", partial)
	}
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pullCode(t, d, ref, nil); err != nil {
		t.Fatalf("pull after the registry came back: %v", err)
	}
	if layers, partial := layerState(t, d); len(layers) != 2 || len(partial) != 0 {
		t.Errorf("after recovery: layers %v, partial %v", layers, partial)
	}
	testutil.AssertNoLeaks(t, d)
}
