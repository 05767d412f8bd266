package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// DistributionBinary is Debian's distribution (registry v2) server, from
// the docker-registry package (`make setup` installs it).
const DistributionBinary = "/usr/bin/docker-registry"

// The one account of a registry with htpasswd auth. The hash is bcrypt
// (cost 4, the only scheme distribution's htpasswd accepts) of the
// password, computed once with golang.org/x/crypto/bcrypt so the tests need
// no bcrypt code.
const (
	DistributionUser     = "berth"
	DistributionPassword = "berth-Secret-pw1"
	distributionHtpasswd = "berth:$2a$04$wtPI9zTXmcBko/u5dSE96uG269vXTlzWCd0f9SWlKWvMnL7YtnmKG\n"
)

// DistributionOptions configure a registry server.
type DistributionOptions struct {
	// TLS serves HTTPS with this certificate (for 127.0.0.1); nil: plain HTTP.
	TLS *Issued
	// ClientCA, with TLS, makes the server require a client certificate
	// signed by this CA.
	ClientCA string
	// Htpasswd turns on Basic auth for DistributionUser.
	Htpasswd bool
	// Token turns on Bearer token auth with this issuer.
	Token *TokenIssuer
}

// Distribution is a docker-registry process serving on 127.0.0.1 with its
// own config and storage in a temp dir; it can be killed and started again
// on the same port, storage kept.
type Distribution struct {
	Host    string // 127.0.0.1:port
	Dir     string
	LogPath string

	cmd    *exec.Cmd
	exited chan struct{}
}

// StartDistribution starts a registry; it skips t when the server is not
// installed. Cleanup kills it and checks it is gone.
func StartDistribution(t testing.TB, opts DistributionOptions) *Distribution {
	t.Helper()
	if _, err := os.Stat(DistributionBinary); err != nil {
		t.Skipf("%s not installed (Debian package docker-registry; make setup installs it)", DistributionBinary)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	_ = ln.Close()
	d := &Distribution{Host: host, Dir: dir, LogPath: filepath.Join(dir, "registry.log")}
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(d.config(opts)), 0o600); err != nil {
		t.Fatal(err)
	}
	if opts.Htpasswd {
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(distributionHtpasswd), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		pid := 0
		if d.cmd != nil {
			pid = d.cmd.Process.Pid
		}
		d.Kill()
		if pid != 0 && syscall.Kill(pid, 0) == nil {
			t.Errorf("registry process %d still alive", pid)
		}
		if t.Failed() {
			if b, err := os.ReadFile(d.LogPath); err == nil {
				t.Logf("registry log tail:\n%s", tail(string(b), 4<<10))
			}
		}
	})
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return d
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (d *Distribution) config(o DistributionOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
`, filepath.Join(d.Dir, "data"), d.Host, randomHex(16))
	if o.TLS != nil {
		fmt.Fprintf(&b, "  tls:\n    certificate: %s\n    key: %s\n", o.TLS.CertPath, o.TLS.KeyPath)
		if o.ClientCA != "" {
			fmt.Fprintf(&b, "    clientcas:\n      - %s\n", o.ClientCA)
		}
	}
	switch {
	case o.Htpasswd:
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: berth-test\n    path: %s\n", filepath.Join(d.Dir, "htpasswd"))
	case o.Token != nil:
		fmt.Fprintf(&b, "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			o.Token.Realm, o.Token.Service, o.Token.Issuer, o.Token.RootCertPath)
	}
	return b.String()
}

// Start runs the server (again) and waits until it accepts connections.
func (d *Distribution) Start() error {
	if d.Running() {
		return errors.New("registry is already running")
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(DistributionBinary, "serve", filepath.Join(d.Dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start registry: %w", err)
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	go func(c *exec.Cmd, exited chan struct{}) {
		_ = c.Wait()
		close(exited)
	}(cmd, d.exited)
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-d.exited:
			b, _ := os.ReadFile(d.LogPath)
			return fmt.Errorf("registry exited at start:\n%s", tail(string(b), 2<<10))
		default:
		}
		if c, err := net.DialTimeout("tcp", d.Host, time.Second); err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			d.Kill()
			return fmt.Errorf("registry did not listen on %s within 15s", d.Host)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Running reports whether the server process is alive.
func (d *Distribution) Running() bool {
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the process to be reaped.
func (d *Distribution) Kill() {
	if !d.Running() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// PushTo writes img as ref (host/repo:tag) with the given transport and
// credentials, for registries that need TLS material or auth.
func PushTo(ctx context.Context, ref string, img v1.Image, tr http.RoundTripper, auth authn.Authenticator) (Pushed, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return Pushed{}, fmt.Errorf("parse %q: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx), remote.WithTransport(tr), remote.WithAuth(auth)); err != nil {
		return Pushed{}, fmt.Errorf("push %q: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return Pushed{}, err
	}
	cd, err := img.ConfigName()
	if err != nil {
		return Pushed{}, err
	}
	repo := r.Context().Name()
	return Pushed{Ref: r.Name(), Repo: repo, Digest: d, DigestRef: repo + "@" + d.String(), ConfigDigest: cd, Image: img}, nil
}
