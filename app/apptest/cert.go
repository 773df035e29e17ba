package apptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// SelfSignedCert returns a self-signed ECDSA P-256 certificate for names (DNS
// names or IP addresses; the first is the common name), valid from an hour ago
// for 90 days, and its PKCS#8 private key, both PEM-encoded.
func SelfSignedCert(t testing.TB, names ...string) (certPEM, keyPEM string) {
	t.Helper()
	return SelfSignedCertUntil(t, time.Now().Add(90*24*time.Hour), names...)
}

// SelfSignedCertUntil is SelfSignedCert with the given expiry.
func SelfSignedCertUntil(t testing.TB, notAfter time.Time, names ...string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(names) > 0 {
		tmpl.Subject = pkix.Name{CommonName: names[0]}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der := CreateCert(t, tmpl, nil, key, nil).Raw
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
}

// CA is a test certificate authority: a self-signed ECDSA P-256 root, valid
// from an hour ago for a day, that signs certificates for other keys.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// DER and PEM are Cert's encodings.
	DER []byte
	PEM []byte
}

// NewCA returns a certificate authority whose common name is name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	cert := CreateCert(t, tmpl, nil, key, nil)
	return &CA{Cert: cert, Key: key, DER: cert.Raw, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}
}

// Sign signs tmpl for pub and returns the certificate's DER. A zero serial
// number becomes a random one, a zero NotBefore an hour ago and a zero NotAfter
// the CA's own expiry.
func (ca *CA) Sign(t testing.TB, tmpl *x509.Certificate, pub any) []byte {
	t.Helper()
	der, err := ca.TrySign(tmpl, pub)
	if err != nil {
		t.Fatalf("sign certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	return der
}

// TrySign is Sign for code that reports errors rather than failing a test (a
// stand-in master signing an agent's CSR on its own goroutine).
func (ca *CA) TrySign(tmpl *x509.Certificate, pub any) ([]byte, error) {
	if tmpl.SerialNumber == nil {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = n
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 127)

func randomSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		t.Fatalf("serial: %v", err)
	}
	return n
}

// CreateCert signs tmpl for key's public key with parentKey as parent
// (self-signed with key when parent is nil) and returns the certificate: the
// primitive for chains the helpers above do not build (other key types, an
// intermediate, odd validity or usages). A nil serial number becomes a random
// one.
func CreateCert(t testing.TB, tmpl, parent *x509.Certificate, key, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = randomSerial(t)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("create certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c
}
