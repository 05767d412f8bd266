package imagesvc

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/imagesvc/hosts"
)

// writeAuthFile writes a docker config.json and returns its path.
func writeAuthFile(t *testing.T, f authFile) string {
	t.Helper()
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "auth.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// credHelperScript installs docker-credential-<name> in a dir put first in
// PATH: it answers with user and pass for server (and "credentials not
// found" for any other), and records each server it was asked for in the
// returned file.
func credHelperScript(t *testing.T, name, server, user, pass string) (asked string) {
	t.Helper()
	dir := t.TempDir()
	asked = filepath.Join(dir, "asked")
	script := fmt.Sprintf(`#!/bin/sh
[ "$1" = get ] || exit 2
read -r server || true
echo "$server" >> %q
if [ "$server" = %q ]; then
  printf '{"ServerURL":"%%s","Username":%q,"Secret":%q}' "$server"
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
`, asked, server, user, pass)
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return asked
}

func b64(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }

// TestAuthFileEntriesGoToTheirHostOnly pulls without request credentials
// through a mirror, with an auth file holding an entry for each: each host
// gets its own entry and never the other's.
func TestAuthFileEntriesGoToTheirHostOnly(t *testing.T) {
	up, upHost := authServer(t, "u", "up-pw")
	mirror, mirrorHost := authServer(t, "m", "mirror-pw")
	pushWithAuth(t, upHost, "lib/app:1", testImage(t), "u", "up-pw")
	pushWithAuth(t, mirrorHost, "lib/app:1", testImage(t), "m", "mirror-pw")
	dir := t.TempDir()
	writeHosts(t, dir, upHost, fmt.Sprintf("server = \"http://%s\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", upHost, mirrorHost))
	for _, tc := range []struct {
		name        string
		file        authFile
		mirrorFirst bool // the mirror has its own entry, so it serves the pull
	}{
		{"upstream entry only", authFile{Auths: map[string]authEntry{"http://" + upHost + "/v2/": {Auth: b64("u", "up-pw")}}}, false},
		{"both entries", authFile{Auths: map[string]authEntry{upHost: {Username: "u", Password: "up-pw"}, mirrorHost: {Auth: b64("m", "mirror-pw")}}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up.seenAuth, mirror.seenAuth = nil, nil
			e := envWith(t, func(o *Options) { o.HostsDir = dir; o.AuthFile = writeAuthFile(t, tc.file) })
			if _, err := e.svc.Pull(ctx, upHost+"/lib/app:1", nil); err != nil {
				t.Fatalf("pull: %v", err)
			}
			if mirror.sawSecret(b64("u", "up-pw")) {
				t.Error("the mirror was sent the upstream registry's credentials")
			}
			if up.sawSecret(b64("m", "mirror-pw")) {
				t.Error("the upstream was sent the mirror's credentials")
			}
			if tc.mirrorFirst != mirror.sawSecret(b64("m", "mirror-pw")) {
				t.Errorf("mirror saw its own credentials: %v, want %v", !tc.mirrorFirst, tc.mirrorFirst)
			}
		})
	}
}

func TestAuthFileCredentialHelpers(t *testing.T) {
	_, host := authServer(t, "u", "helper-pw")
	pushWithAuth(t, host, "lib/app:1", testImage(t), "u", "helper-pw")
	ref := host + "/lib/app:1"
	t.Run("credHelpers", func(t *testing.T) {
		asked := credHelperScript(t, "berthtest", host, "u", "helper-pw")
		e := envWith(t, func(o *Options) {
			o.InsecureHosts = []string{host}
			o.AuthFile = writeAuthFile(t, authFile{CredHelpers: map[string]string{host: "berthtest"}, Auths: map[string]authEntry{host: {Auth: b64("u", "wrong")}}})
		})
		if _, err := e.svc.Pull(ctx, ref, nil); err != nil {
			t.Fatalf("pull with a credential helper: %v", err)
		}
		if data, _ := os.ReadFile(asked); !strings.Contains(string(data), host) {
			t.Errorf("helper was asked for %q, want %s", data, host)
		}
	})
	t.Run("credsStore", func(t *testing.T) {
		credHelperScript(t, "berthstore", host, "u", "helper-pw")
		e := envWith(t, func(o *Options) {
			o.InsecureHosts = []string{host}
			o.AuthFile = writeAuthFile(t, authFile{CredsStore: "berthstore"})
		})
		if _, err := e.svc.Pull(ctx, ref, nil); err != nil {
			t.Fatalf("pull with a default credential store: %v", err)
		}
	})
	t.Run("not found is anonymous", func(t *testing.T) {
		credHelperScript(t, "berthnone", "other.example", "u", "helper-pw")
		e := envWith(t, func(o *Options) {
			o.InsecureHosts = []string{host}
			o.AuthFile = writeAuthFile(t, authFile{CredsStore: "berthnone"})
		})
		if _, err := e.svc.Pull(ctx, ref, nil); !errdefs.IsUnauthorized(err) {
			t.Fatalf("pull with no credentials in the store: %v, want Unauthenticated", err)
		}
	})
	t.Run("a server address alone is no credentials", func(t *testing.T) {
		e := envWith(t, func(o *Options) {
			o.InsecureHosts = []string{host}
			o.AuthFile = writeAuthFile(t, authFile{Auths: map[string]authEntry{host: {Auth: b64("u", "helper-pw")}}})
		})
		if _, err := e.svc.Pull(ctx, ref, &Auth{ServerAddress: host}); err != nil {
			t.Fatalf("pull with an empty request auth: %v", err)
		}
	})
	t.Run("request credentials win", func(t *testing.T) {
		e := envWith(t, func(o *Options) {
			o.InsecureHosts = []string{host}
			o.AuthFile = writeAuthFile(t, authFile{Auths: map[string]authEntry{host: {Auth: b64("u", "helper-pw")}}})
		})
		if _, err := e.svc.Pull(ctx, ref, &Auth{Username: "u", Password: "wrong"}); !errdefs.IsUnauthorized(err) {
			t.Fatalf("pull with wrong request credentials: %v, want Unauthenticated (the file is for requests without any)", err)
		}
	})
	t.Run("broken helper fails the pull", func(t *testing.T) {
		e := envWith(t, func(o *Options) {
			o.InsecureHosts = []string{host}
			o.AuthFile = writeAuthFile(t, authFile{CredsStore: "berth-missing-helper"})
		})
		if _, err := e.svc.Pull(ctx, ref, nil); !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("pull with a missing helper: %v, want FailedPrecondition", err)
		}
	})
}

func TestAuthFileBadOrMissing(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "auth.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := hosts.Host{Scheme: "https", Host: "reg.example"}
	s := &Service{authFile: bad}
	if _, err := s.nodeAuth(ctx, h); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("bad auth file: %v, want FailedPrecondition", err)
	}
	s.authFile = filepath.Join(t.TempDir(), "missing.json")
	if a, err := s.nodeAuth(ctx, h); a != nil || err != nil {
		t.Errorf("missing auth file: %v, %v, want no credentials", a, err)
	}
}

func TestAuthFileLookup(t *testing.T) {
	hub := hosts.Host{Scheme: "https", Host: "registry-1.docker.io"}
	f := authFile{Auths: map[string]authEntry{
		"https://index.docker.io/v1/": {Auth: b64("hub", "pw")},
		"reg.example:5000":            {Username: "r", Password: "pw"},
		"empty.example":               {},
	}}
	for _, tc := range []struct {
		host hosts.Host
		user string // "" for none
	}{
		{hub, ""}, // Auth field, not Username
		{hosts.Host{Scheme: "https", Host: "reg.example:5000"}, "r"},
		{hosts.Host{Scheme: "https", Host: "reg.example"}, "-"},
		{hosts.Host{Scheme: "https", Host: "empty.example"}, "-"},
	} {
		a, err := f.lookup(ctx, tc.host)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tc.user == "-" && a != nil:
			t.Errorf("%s: credentials %v, want none", tc.host.Host, a)
		case tc.user != "-" && (a == nil || a.Username != tc.user):
			t.Errorf("%s: credentials %v, want user %q", tc.host.Host, a, tc.user)
		}
	}
	if a, _ := f.lookup(ctx, hub); a == nil || a.Auth != b64("hub", "pw") {
		t.Errorf("docker hub: %v, want the index.docker.io entry", a)
	}
}
