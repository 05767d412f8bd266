package imagesvc

// authfile.go reads node-level registry credentials: an auth file in the
// config.json format docker, podman and CRI-O read (CRI-O's
// global_auth_file), with its credential helpers. They are used only for a
// pull whose request carries no credentials, and per registry host: the
// entry for a host goes to that host alone, so a mirror gets the entry
// written for the mirror, never the upstream registry's.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/berth-runtime/berth/imagesvc/hosts"
)

// credHelperTimeout bounds one run of a credential helper.
const credHelperTimeout = 30 * time.Second

// authFile is the part of a docker config.json that holds credentials.
type authFile struct {
	Auths       map[string]authEntry `json:"auths"`
	CredHelpers map[string]string    `json:"credHelpers"`
	CredsStore  string               `json:"credsStore"`
}

// authEntry is one "auths" entry; auth is base64 of user:password.
type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// none reports whether a request carried no credentials: a server
// address alone is none.
func (a *Auth) none() bool {
	return a == nil || *a == (Auth{ServerAddress: a.ServerAddress})
}

// nodeAuth returns the auth file's credentials for host h, nil when the
// file is not configured, missing, or has none for h. The file is read at
// every pull, as hosts.toml is, so an edit needs no restart.
func (s *Service) nodeAuth(ctx context.Context, h hosts.Host) (*Auth, error) {
	if s.authFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(s.authFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read registry auth file: %w", err)
	}
	var f authFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("registry auth file %s: %v: %w", s.authFile, err, errdefs.ErrFailedPrecondition)
	}
	a, err := f.lookup(ctx, h)
	if a != nil {
		a.ServerAddress = h.Host // the host they are for, and only that one
	}
	return a, err
}

// lookup finds h's credentials as docker does: a credHelpers entry for the
// host, else an auths entry, else the credsStore helper.
func (f authFile) lookup(ctx context.Context, h hosts.Host) (*Auth, error) {
	// Sorted, so two keys naming one host (docker.io, index.docker.io)
	// resolve the same way every time.
	for _, key := range slices.Sorted(maps.Keys(f.CredHelpers)) {
		if namesHost(serverHost(key), h) {
			return credHelper(ctx, f.CredHelpers[key], key)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(f.Auths)) {
		if !namesHost(serverHost(key), h) {
			continue
		}
		e := f.Auths[key]
		a := &Auth{Username: e.Username, Password: e.Password, Auth: e.Auth, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
		if *a != (Auth{}) {
			return a, nil
		}
	}
	if f.CredsStore != "" {
		return credHelper(ctx, f.CredsStore, helperServer(h))
	}
	return nil, nil
}

// helperServer is the server name a credential helper files h's
// credentials under: Docker Hub's is its legacy index URL, as docker login
// stores it.
func helperServer(h hosts.Host) string {
	if dockerHub[strings.ToLower(h.Host)] {
		return "https://index.docker.io/v1/"
	}
	return h.Host
}

// credHelper runs docker-credential-<name> get, which reads the server on
// stdin and prints {"ServerURL","Username","Secret"}; Username "<token>"
// marks an identity token. "credentials not found" means none.
func credHelper(ctx context.Context, name, server string) (*Auth, error) {
	if name == "" || strings.ContainsAny(name, "/ ") {
		return nil, fmt.Errorf("credential helper name %q: %w", name, errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(ctx, credHelperTimeout)
	defer cancel()
	bin := "docker-credential-" + name
	cmd := exec.CommandContext(ctx, bin, "get")
	cmd.Stdin = strings.NewReader(server)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if strings.Contains(stdout.String()+stderr.String(), "credentials not found") {
			return nil, nil
		}
		// The helper's output is not quoted: it may hold a secret.
		return nil, fmt.Errorf("credential helper %s for %s: %w: %w", bin, server, err, errdefs.ErrFailedPrecondition)
	}
	var out struct{ Username, Secret string }
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("credential helper %s for %s: output is not JSON: %w", bin, server, errdefs.ErrFailedPrecondition)
	}
	if out.Username == "<token>" {
		return &Auth{IdentityToken: out.Secret}, nil
	}
	if out.Username == "" && out.Secret == "" {
		return nil, nil
	}
	return &Auth{Username: out.Username, Password: out.Secret}, nil
}
