package apptest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

func TestSelfSignedCert(t *testing.T) {
	certPEM, keyPEM := SelfSignedCert(t, "example.test", "127.0.0.1")
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatalf("certificate and key do not match: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("example.test"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if d := time.Until(leaf.NotAfter); d < 89*24*time.Hour || d > 91*24*time.Hour {
		t.Errorf("valid for %v, want about 90 days", d)
	}
}
