package certs_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// pki is a test certificate authority: a self-signed root and an intermediate
// signed by it. Leaves come from issue. Its values are never modified, so
// parallel subtests share one.
type pki struct {
	root, inter       *x509.Certificate
	rootKey, interKey crypto.Signer
}

func testPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{rootKey: ecKey(t, elliptic.P384()), interKey: ecKey(t, elliptic.P256())}
	now := time.Now()
	p.root = apptest.CreateCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "NxMesh Test Root", Organization: []string{"NxMesh Test"}},
		NotBefore:             now.Add(-48 * time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, p.rootKey, nil)
	p.inter = apptest.CreateCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "NxMesh Test Intermediate", Organization: []string{"NxMesh Test"}},
		NotBefore:             now.Add(-48 * time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, p.root, p.interKey, p.rootKey)
	return p
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatalf("generate ECDSA key: %v", err)
	}
	return k
}

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatalf("generate RSA key: %v", err)
	}
	return k
}

// leafSpec describes a leaf certificate.
type leafSpec struct {
	cn        string
	dns       []string
	notBefore time.Time
	notAfter  time.Time
	key       crypto.Signer // ECDSA P-256 when nil
	extUsage  []x509.ExtKeyUsage
}

// issue returns a leaf for spec signed by the intermediate (selfSigned: by its
// own key) and its key.
func (p *pki) issue(t testing.TB, spec leafSpec, selfSigned bool) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := spec.key
	if key == nil {
		key = ecKey(t, elliptic.P256())
	}
	if spec.notBefore.IsZero() {
		spec.notBefore = time.Now().Add(-time.Hour)
	}
	if spec.notAfter.IsZero() {
		spec.notAfter = time.Now().Add(90 * 24 * time.Hour)
	}
	if spec.extUsage == nil {
		spec.extUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: spec.cn},
		DNSNames:    spec.dns,
		NotBefore:   spec.notBefore,
		NotAfter:    spec.notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: spec.extUsage,
	}
	if selfSigned {
		return apptest.CreateCert(t, tmpl, nil, key, nil), key
	}
	return apptest.CreateCert(t, tmpl, p.inter, key, p.interKey), key
}

// certsPEM encodes certificates as consecutive CERTIFICATE blocks.
func certsPEM(cs ...*x509.Certificate) string {
	var b strings.Builder
	for _, c := range cs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.String()
}

// keyPEM encodes key as PKCS#8 ("PRIVATE KEY").
func keyPEM(t testing.TB, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// rsaKeyPKCS1PEM encodes an RSA key as PKCS#1 ("RSA PRIVATE KEY").
func rsaKeyPKCS1PEM(key *rsa.PrivateKey) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}

// ecKeySEC1PEM encodes an ECDSA key as SEC 1 ("EC PRIVATE KEY").
func ecKeySEC1PEM(t testing.TB, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("marshal EC key: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
}

func ed25519Key(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate Ed25519 key: %v", err)
	}
	return k
}
