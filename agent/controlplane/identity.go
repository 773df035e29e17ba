package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Files of the identity directory (<data-dir>/identity).
const (
	identityKeyFile  = "agent.key" // ECDSA P-256 private key, mode 0600
	identityCertFile = "agent.crt" // client certificate signed by the master's CA
	identityCAFile   = "ca.crt"    // the master's agent CA
	identityIDFile   = "agent_id"
)

// Identity is the agent's credential after registration.
type Identity struct {
	AgentID string
	// Certificate is the client certificate with its private key.
	Certificate tls.Certificate
	// CAPEM is the master's CA certificate; empty when the master sent none.
	CAPEM []byte
}

// identityDir returns <dataDir>/identity.
func identityDir(dataDir string) string {
	return filepath.Join(dataDir, "identity")
}

// LoadIdentity reads the identity stored under dataDir. It returns
// (nil, nil) when the agent has not registered yet.
func LoadIdentity(dataDir string) (*Identity, error) {
	dir := identityDir(dataDir)
	certPEM, err := os.ReadFile(filepath.Join(dir, identityCertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, identityKeyFile))
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load identity key pair: %w", err)
	}
	id := &Identity{Certificate: cert}
	if cert.Leaf != nil {
		id.AgentID = cert.Leaf.Subject.CommonName
	}
	if data, err := os.ReadFile(filepath.Join(dir, identityIDFile)); err == nil && len(strings.TrimSpace(string(data))) > 0 {
		id.AgentID = strings.TrimSpace(string(data))
	}
	if ca, err := os.ReadFile(filepath.Join(dir, identityCAFile)); err == nil {
		id.CAPEM = ca
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read identity CA: %w", err)
	}
	return id, nil
}

// saveIdentity stores a new identity: key (0600), certificate, CA and id,
// each replaced atomically, the certificate last so that LoadIdentity
// never sees a certificate without its key.
func saveIdentity(dataDir, agentID string, keyPEM, certPEM, caPEM []byte) (*Identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate from the master does not match the key: %w", err)
	}
	dir := identityDir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create identity directory: %w", err)
	}
	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	files := []file{{identityKeyFile, keyPEM, 0o600}, {identityIDFile, []byte(agentID + "\n"), 0o644}}
	if len(caPEM) > 0 {
		files = append(files, file{identityCAFile, caPEM, 0o644})
	}
	files = append(files, file{identityCertFile, certPEM, 0o644})
	for _, f := range files {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return &Identity{AgentID: agentID, Certificate: cert, CAPEM: caPEM}, nil
}

// writeAtomic writes data to a temporary file with mode and renames it over
// path.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	tmp := path + ".tmp-" + hex.EncodeToString(suffix[:])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// newCSR generates a fresh ECDSA P-256 key and a CSR for it. The master
// sets the certificate's subject itself; the CSR's common name is only a
// hint.
func newCSR(commonName string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate agent key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode agent key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
