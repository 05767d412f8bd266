package imagesvc

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/berth-runtime/berth/imagesvc/hosts"
)

// authenticator returns a's credentials for host h of a pull from registry
// domain, or anonymous access. Credentials go only to the host they name:
// ServerAddress when set, else the image's registry (as containerd reads
// an AuthConfig without a server address). A mirror, including a
// third-party _default one, is another party and gets none of them, even
// when it mirrors the very registry they are for.
func authenticator(a *Auth, domain string, h hosts.Host) authn.Authenticator {
	if a == nil || *a == (Auth{}) {
		return authn.Anonymous
	}
	named := domain
	if a.ServerAddress != "" {
		named = serverHost(a.ServerAddress)
	}
	if !namesHost(named, h) {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: a.Username, Password: a.Password, Auth: a.Auth,
		IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
	})
}

// serverHost is the host[:port] of a server address: kubelet passes the
// key of a docker config ("https://index.docker.io/v1/", "reg:5000").
func serverHost(addr string) string {
	if strings.Contains(addr, "://") {
		if u, err := url.Parse(addr); err == nil {
			return strings.ToLower(u.Host)
		}
		return ""
	}
	host, _, _ := strings.Cut(addr, "/")
	return strings.ToLower(host)
}

// dockerHub are the names Docker Hub's one registry goes by: image
// references say docker.io, docker configs index.docker.io, and the API
// lives at registry-1.docker.io.
var dockerHub = map[string]bool{"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true}

// namesHost reports whether named (a host[:port]) is h, allowing for the
// scheme's default port being written or left out.
func namesHost(named string, h hosts.Host) bool {
	host := strings.ToLower(h.Host)
	if named == "" {
		return false
	}
	if named == host || (dockerHub[named] && dockerHub[host]) {
		return true
	}
	port := ":443"
	if h.Scheme == "http" {
		port = ":80"
	}
	return named+port == host || named == host+port
}

// key identifies a's credentials among concurrent pulls without keeping
// them readable in memory: "" for anonymous, else a SHA-256 of every field.
func (a *Auth) key() string {
	if a == nil || *a == (Auth{}) {
		return ""
	}
	h := sha256.New()
	for _, f := range []string{a.Username, a.Password, a.Auth, a.IdentityToken, a.RegistryToken, a.ServerAddress} {
		// length-prefixed, so no two different Auths encode alike.
		fmt.Fprintf(h, "%d:%s", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}
