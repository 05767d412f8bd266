package testutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throwaway certificate authority for TLS tests: its CA and the
// certificates it issues are PEM files in Dir.
type PKI struct {
	Dir    string
	CAPath string // the CA certificate, what hosts.toml `ca` names
	Pool   *x509.CertPool

	caCert *x509.Certificate
	caKey  crypto.Signer
}

// NewPKI creates a CA in dir.
func NewPKI(dir string) (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "berth test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAPath: filepath.Join(dir, "ca.pem"), Pool: x509.NewCertPool(), caCert: cert, caKey: key}
	p.Pool.AddCert(cert)
	if err := writePEM(p.CAPath, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return p, nil
}

// Issued is a certificate the PKI issued, with its key.
type Issued struct {
	CertPath, KeyPath string
	Cert              tls.Certificate
}

// Issue writes <name>.crt and <name>.key: a server certificate for hosts
// (IP addresses or DNS names), or a client certificate when client is set.
func (p *PKI) Issue(name string, hosts []string, client bool) (Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Issued{}, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return Issued{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		return Issued{}, fmt.Errorf("issue %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Issued{}, err
	}
	is := Issued{CertPath: filepath.Join(p.Dir, name+".crt"), KeyPath: filepath.Join(p.Dir, name+".key")}
	if err := writePEM(is.CertPath, "CERTIFICATE", der); err != nil {
		return Issued{}, err
	}
	if err := writePEM(is.KeyPath, "PRIVATE KEY", keyDER); err != nil {
		return Issued{}, err
	}
	is.Cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return is, nil
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Transport trusts the CA and presents client (when not nil), for a test
// pushing to a registry the PKI secures.
func (p *PKI) Transport(client *Issued) http.RoundTripper {
	cfg := &tls.Config{RootCAs: p.Pool, MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{client.Cert}
	}
	return &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
}
