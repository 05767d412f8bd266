package testutil

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// TokenIssuer is a Docker registry token server (the Bearer flow of
// distribution's `auth: token`): it checks credentials and issues JWTs
// signed with an RSA key whose self-signed certificate is the registry's
// rootcertbundle. It serves HTTPS on 127.0.0.1 with a certificate for
// "localhost", and Realm names it as localhost: registry clients refuse
// token realms that are loopback IP literals.
type TokenIssuer struct {
	Realm        string // https://localhost:port/token
	Service      string // the registry's name, the tokens' audience
	Issuer       string
	RootCertPath string
	// Username/Password are checked on GET (Basic); RefreshToken on the
	// OAuth2 POST (grant_type=refresh_token), the CRI identity token.
	Username, Password, RefreshToken string

	key  *rsa.PrivateKey
	cert []byte // DER
	srv  *http.Server

	mu       sync.Mutex
	requests int      // guarded by mu
	issued   []string // guarded by mu
}

// StartTokenIssuer serves a token issuer whose TLS certificate comes from
// pki; it writes its signing certificate under pki.Dir.
func StartTokenIssuer(pki *PKI, username, password string) (*TokenIssuer, error) {
	ti := &TokenIssuer{
		Service: "berth-test-registry", Issuer: "berth-test-issuer",
		RootCertPath: filepath.Join(pki.Dir, "token-signer.pem"),
		Username:     username, Password: password, RefreshToken: "refresh-" + randomHex(16),
	}
	var err error
	if ti.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "berth token signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
	}
	if ti.cert, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ti.key.PublicKey, ti.key); err != nil {
		return nil, err
	}
	if err := writePEM(ti.RootCertPath, "CERTIFICATE", ti.cert); err != nil {
		return nil, err
	}
	srvCert, err := pki.Issue("token-issuer", []string{"localhost", "127.0.0.1"}, false)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ti.Realm = "https://localhost:" + port + "/token"
	ti.srv = &http.Server{
		Handler:           http.HandlerFunc(ti.serve),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{srvCert.Cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = ti.srv.ServeTLS(ln, "", "") }()
	return ti, nil
}

// Close stops serving.
func (ti *TokenIssuer) Close() error { return ti.srv.Close() }

// Requests is how many token requests the issuer answered or refused.
func (ti *TokenIssuer) Requests() int {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.requests
}

// Issued lists every token handed out, for "never in a log" checks.
func (ti *TokenIssuer) Issued() []string {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return append([]string(nil), ti.issued...)
}

func (ti *TokenIssuer) serve(w http.ResponseWriter, r *http.Request) {
	ti.mu.Lock()
	ti.requests++
	ti.mu.Unlock()
	var ok bool
	var scopes []string
	switch r.Method {
	case http.MethodGet:
		u, p, has := r.BasicAuth()
		ok = has && u == ti.Username && p == ti.Password
		scopes = r.URL.Query()["scope"]
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		switch r.PostForm.Get("grant_type") {
		case "refresh_token":
			ok = r.PostForm.Get("refresh_token") == ti.RefreshToken
		case "password":
			ok = r.PostForm.Get("username") == ti.Username && r.PostForm.Get("password") == ti.Password
		}
		scopes = strings.Fields(r.PostForm.Get("scope"))
	}
	if !ok {
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
		return
	}
	tok, err := ti.Mint(scopes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": tok, "access_token": tok, "expires_in": 300, "issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}

type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Mint issues a token granting scopes ("repository:lib/app:pull,push"),
// as the issuer does for a client it authenticated; a test hands it to a
// client as the CRI registry token.
func (ti *TokenIssuer) Mint(scopes []string) (string, error) {
	var access []resourceActions
	for _, s := range scopes {
		parts := strings.Split(s, ":")
		if len(parts) < 3 {
			return "", fmt.Errorf("bad scope %q", s)
		}
		access = append(access, resourceActions{
			Type: parts[0], Name: strings.Join(parts[1:len(parts)-1], ":"), Actions: strings.Split(parts[len(parts)-1], ","),
		})
	}
	now := time.Now()
	header := map[string]any{"typ": "JWT", "alg": "RS256", "x5c": []string{base64.StdEncoding.EncodeToString(ti.cert)}}
	claims := map[string]any{
		"iss": ti.Issuer, "sub": ti.Username, "aud": ti.Service,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-10 * time.Second).Unix(), "iat": now.Unix(),
		"jti": randomHex(8), "access": access,
	}
	enc := func(v any) (string, error) {
		b, err := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b), err
	}
	h, err := enc(header)
	if err != nil {
		return "", err
	}
	c, err := enc(claims)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(h + "." + c))
	sig, err := rsa.SignPKCS1v15(rand.Reader, ti.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", errors.New("sign token")
	}
	tok := h + "." + c + "." + base64.RawURLEncoding.EncodeToString(sig)
	ti.mu.Lock()
	ti.issued = append(ti.issued, tok)
	ti.mu.Unlock()
	return tok, nil
}
