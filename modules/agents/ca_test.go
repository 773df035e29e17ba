package agents

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestService_LoadCA(t *testing.T) {
	t.Parallel()

	t.Run("CreatesOnceAndReloads", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "agents-ca")
		ca, err := LoadCA(CAFiles{Dir: dir}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, mode := range map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil || fi.Mode().Perm() != mode {
				t.Fatalf("%s: %v %v, want mode %o", name, fi.Mode(), err, mode)
			}
		}
		if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
			t.Fatalf("directory mode %o", fi.Mode().Perm())
		}
		again, err := LoadCA(CAFiles{Dir: dir}, nil)
		if err != nil || again.Fingerprint() != ca.Fingerprint() {
			t.Fatalf("reload: %v, fingerprint %s vs %s", err, again.Fingerprint(), ca.Fingerprint())
		}
		block, _ := pem.Decode([]byte(ca.CertificatePEM()))
		sum := sha256.Sum256(block.Bytes)
		if ca.Fingerprint() != "sha256:"+hex.EncodeToString(sum[:]) {
			t.Fatalf("fingerprint %s is not the SHA-256 of the DER", ca.Fingerprint())
		}
		cert, _ := x509.ParseCertificate(block.Bytes)
		if !cert.IsCA || cert.PublicKeyAlgorithm != x509.ECDSA || cert.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
			t.Fatalf("CA certificate: CA %v, key %v", cert.IsCA, cert.PublicKeyAlgorithm)
		}
	})

	t.Run("LoadsConfiguredFiles", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		ca, err := LoadCA(CAFiles{Dir: dir}, nil)
		if err != nil {
			t.Fatal(err)
		}
		other, err := LoadCA(CAFiles{Dir: t.TempDir(), CertFile: filepath.Join(dir, "ca.crt"), KeyFile: filepath.Join(dir, "ca.key")}, nil)
		if err != nil || other.Fingerprint() != ca.Fingerprint() {
			t.Fatalf("configured files: %v", err)
		}
		if _, err := LoadCA(CAFiles{Dir: dir, CertFile: filepath.Join(dir, "ca.crt")}, nil); err == nil {
			t.Fatalf("a certificate without a key was accepted")
		}
		if _, err := LoadCA(CAFiles{CertFile: filepath.Join(dir, "missing.crt"), KeyFile: filepath.Join(dir, "ca.key")}, nil); err == nil {
			t.Fatalf("a missing file was accepted")
		}
	})

	t.Run("RefusesHalfACA", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(CAFiles{Dir: dir}, nil); err == nil || !strings.Contains(err.Error(), "only one of") {
			t.Fatalf("half a CA: %v", err)
		}
	})

	t.Run("RefusesAKeyOfAnotherCertificate", func(t *testing.T) {
		t.Parallel()
		a, b := t.TempDir(), t.TempDir()
		for _, d := range []string{a, b} {
			if _, err := LoadCA(CAFiles{Dir: d}, nil); err != nil {
				t.Fatal(err)
			}
		}
		_, err := LoadCA(CAFiles{CertFile: filepath.Join(a, "ca.crt"), KeyFile: filepath.Join(b, "ca.key")}, nil)
		if err == nil || !strings.Contains(err.Error(), "does not belong") {
			t.Fatalf("mismatched key: %v", err)
		}
	})
}

func TestService_CAServerCertificate(t *testing.T) {
	t.Parallel()
	ca, err := LoadCA(CAFiles{Dir: t.TempDir()}, []string{"nxmesh.example.com", " 10.0.0.5 ", ""})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c, err := ca.serverCertificate(now)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 {
		t.Fatalf("chain of %d certificates, want leaf and CA", len(c.Certificate))
	}
	leaf := c.Leaf
	for _, name := range []string{"localhost", "nxmesh.example.com"} {
		if !slices.Contains(leaf.DNSNames, name) {
			t.Fatalf("DNS names %v lack %s", leaf.DNSNames, name)
		}
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.0.0.5"} {
		if !slices.ContainsFunc(leaf.IPAddresses, func(a net.IP) bool { return a.Equal(net.ParseIP(ip)) }) {
			t.Fatalf("IP addresses %v lack %s", leaf.IPAddresses, ip)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "nxmesh.example.com"}); err != nil {
		t.Fatalf("server certificate does not verify: %v", err)
	}
	if again, _ := ca.serverCertificate(now.Add(time.Hour)); again != c {
		t.Fatalf("server certificate not reused")
	}
	if renewed, _ := ca.serverCertificate(now.Add(250 * 24 * time.Hour)); renewed == c {
		t.Fatalf("server certificate not renewed after two thirds of its life")
	}
}

func TestService_CASignAgentCSR(t *testing.T) {
	t.Parallel()
	ca, err := LoadCA(CAFiles{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr := func(t *testing.T, key any) string {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "whatever"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}

	t.Run("SignsAClientCertificateNamingTheAgent", func(t *testing.T) {
		t.Parallel()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		id := uuid.New()
		certPEM, serial, notAfter, err := ca.SignAgentCSR(csr(t, key), id, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(certPEM))
		cert, _ := x509.ParseCertificate(block.Bytes)
		if cert.Subject.CommonName != id.String() || serialHex(cert.SerialNumber) != serial || !cert.NotAfter.Equal(notAfter) ||
			!slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Fatalf("certificate = CN %s serial %s, EKU %v", cert.Subject.CommonName, serial, cert.ExtKeyUsage)
		}
	})

	t.Run("RefusesOtherKeysAndGarbage", func(t *testing.T) {
		t.Parallel()
		rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		for name, in := range map[string]string{
			"RSA": csr(t, rsaKey), "P384": csr(t, p384), "Empty": "", "NotPEM": "hello",
			"Certificate": ca.CertificatePEM(),
		} {
			if _, _, _, err := ca.SignAgentCSR(in, uuid.New(), time.Now()); err == nil {
				t.Fatalf("%s CSR signed", name)
			}
		}
	})
}

func TestService_CAIssueAgentKey(t *testing.T) {
	t.Parallel()
	ca, err := LoadCA(CAFiles{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	certPEM, keyPEM, serial, notAfter, err := ca.IssueAgentKey(id, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatalf("certificate and key are not a pair: %v", err)
	}
	if k, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want ECDSA P-256", pair.PrivateKey)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != id.String() || serialHex(cert.SerialNumber) != serial || !cert.NotAfter.Equal(notAfter) ||
		!slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("certificate = CN %s serial %s, EKU %v", cert.Subject.CommonName, serial, cert.ExtKeyUsage)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("certificate does not verify against the CA: %v", err)
	}
	_, keyPEM2, _, _, err := ca.IssueAgentKey(id, time.Now())
	if err != nil || keyPEM2 == keyPEM {
		t.Fatalf("a second issue reused the key (%v)", err)
	}
}
