package agents

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Lifetimes of the certificates the CA issues.
const (
	caLifetime     = 10 * 365 * 24 * time.Hour
	serverLifetime = 365 * 24 * time.Hour
	// AgentCertLifetime is the validity of an agent's client certificate.
	AgentCertLifetime = 365 * 24 * time.Hour
	// clockSkew backdates certificates so agents with a slightly late clock
	// accept them.
	clockSkew = 5 * time.Minute
)

// CA is the master's small certificate authority for agents: an ECDSA P-256
// key and a self-signed certificate. It signs the gRPC listener's certificate
// and each agent's client certificate (from the CSR sent at registration, or
// for a key it generates when the agent sent none).
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	hosts   []string

	mu     sync.Mutex
	server *tls.Certificate
}

// CAFiles say where the CA lives: CertFile and KeyFile when both are set
// (they must exist), else Dir/ca.crt and Dir/ca.key, generated when missing.
type CAFiles struct {
	Dir      string
	CertFile string
	KeyFile  string
}

// LoadCA loads the CA, creating it in files.Dir on first use (directory 0700,
// ca.crt 0644, ca.key 0600). hosts are added to the server certificate's SANs
// besides localhost, 127.0.0.1, ::1 and the machine's hostname.
func LoadCA(files CAFiles, hosts []string) (*CA, error) {
	certFile, keyFile := files.CertFile, files.KeyFile
	switch {
	case certFile != "" && keyFile != "":
	case certFile != "" || keyFile != "":
		return nil, errors.New("load agents CA: grpc.ca_cert_file and grpc.ca_key_file must be set together")
	default:
		certFile, keyFile = filepath.Join(files.Dir, "ca.crt"), filepath.Join(files.Dir, "ca.key")
		if err := ensureCA(files.Dir, certFile, keyFile); err != nil {
			return nil, err
		}
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load agents CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load agents CA: %w", err)
	}
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load agents CA from %s: %w", certFile, err)
	}
	ca.hosts = serverHosts(hosts)
	return ca, nil
}

// ensureCA generates the CA into dir unless both files exist.
func ensureCA(dir, certFile, keyFile string) error {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	switch {
	case certErr == nil && keyErr == nil:
		return nil
	case certErr == nil || keyErr == nil:
		return fmt.Errorf("load agents CA: only one of %s and %s exists", certFile, keyFile)
	case !errors.Is(certErr, fs.ErrNotExist):
		return fmt.Errorf("load agents CA: %w", certErr)
	case !errors.Is(keyErr, fs.ErrNotExist):
		return fmt.Errorf("load agents CA: %w", keyErr)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create agents CA directory: %w", err)
	}
	certPEM, keyPEM, err := newCA(time.Now())
	if err != nil {
		return err
	}
	// The key first, exclusively: of two processes starting at once, one
	// creates the CA and the other fails here and is restarted.
	if err := writeExclusive(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return writeExclusive(certFile, certPEM, 0o644)
}

func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// newCA returns a fresh self-signed CA certificate and its key, PEM-encoded.
func newCA(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate agents CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "NxMesh agents CA", Organization: []string{"NxMesh"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign agents CA: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode agents CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), nil
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE block in the CA certificate file")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("the CA certificate is not a CA")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("no PEM block in the CA key file")
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		return nil, fmt.Errorf("unsupported CA key block %q", kb.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("the CA key cannot sign")
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, errors.New("the CA key does not belong to the CA certificate")
	}
	return &CA{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), key: signer}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// serverHosts is the SAN list of the listener's certificate.
func serverHosts(extra []string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	for _, h := range extra {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// CertificatePEM is the CA certificate, PEM-encoded (sent to agents at
// registration).
func (ca *CA) CertificatePEM() string { return string(ca.certPEM) }

// Fingerprint is "sha256:" and the hex SHA-256 of the CA certificate's DER, the
// value of the agent's --ca-fingerprint.
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Pool is a certificate pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ServerTLSConfig is the gRPC listener's TLS configuration: a server
// certificate signed by the CA (renewed when two thirds of its life are over;
// the chain includes the CA so agents can pin its fingerprint), and client
// certificates verified against the CA when given — agents present theirs once
// registered, and register without one.
func (ca *CA) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  ca.Pool(),
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return ca.serverCertificate(time.Now())
		},
	}
}

func (ca *CA) serverCertificate(now time.Time) (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c := ca.server; c != nil && now.Before(c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)*2/3)) {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate gRPC server key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "nxmesh master", Organization: []string{"NxMesh"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(serverLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range ca.hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign gRPC server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse gRPC server certificate: %w", err)
	}
	ca.server = &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
	return ca.server, nil
}

// Errors of SignAgentCSR; their text is sent to the agent.
var (
	errBadCSR = errors.New("invalid certificate signing request")
)

// SignAgentCSR checks a PEM CSR (signature valid, ECDSA P-256 key) and signs a
// client certificate for the agent: CN = agent id, URI SAN
// urn:nxmesh:agent:<id>, client authentication only, valid AgentCertLifetime.
// It returns the certificate PEM, its serial (lower-case hex) and expiry.
func (ca *CA) SignAgentCSR(csrPEM string, agentID uuid.UUID, now time.Time) (certPEM, serial string, notAfter time.Time, err error) {
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return "", "", time.Time{}, fmt.Errorf("%w: no CERTIFICATE REQUEST block", errBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("%w: %v", errBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return "", "", time.Time{}, fmt.Errorf("%w: %v", errBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return "", "", time.Time{}, fmt.Errorf("%w: the key must be ECDSA P-256", errBadCSR)
	}
	return ca.signAgentKey(pub, agentID, now)
}

// IssueAgentKey generates a fresh ECDSA P-256 key for an agent that
// registered without a CSR and signs a client certificate for it exactly as
// SignAgentCSR does. It returns the certificate PEM, the private key PEM
// (PKCS#8, for the agent only: the master must not keep it), the serial and
// the expiry.
func (ca *CA) IssueAgentKey(agentID uuid.UUID, now time.Time) (certPEM, keyPEM, serial string, notAfter time.Time, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", time.Time{}, fmt.Errorf("generate key of agent %s: %w", agentID, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", "", time.Time{}, fmt.Errorf("encode key of agent %s: %w", agentID, err)
	}
	certPEM, serial, notAfter, err = ca.signAgentKey(&key.PublicKey, agentID, now)
	if err != nil {
		return "", "", "", time.Time{}, err
	}
	return certPEM, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})), serial, notAfter, nil
}

// signAgentKey signs the client certificate of an agent's public key.
func (ca *CA) signAgentKey(pub *ecdsa.PublicKey, agentID uuid.UUID, now time.Time) (certPEM, serial string, notAfter time.Time, err error) {
	sn, err := randomSerial()
	if err != nil {
		return "", "", time.Time{}, err
	}
	notAfter = now.Add(AgentCertLifetime).UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: agentID.String(), Organization: []string{"NxMesh agents"}},
		URIs:         []*url.URL{{Scheme: "urn", Opaque: "nxmesh:agent:" + agentID.String()}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("sign client certificate of agent %s: %w", agentID, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), serialHex(sn), notAfter, nil
}

// serialHex is the stored form of a certificate serial.
func serialHex(n *big.Int) string { return hex.EncodeToString(n.Bytes()) }

// randomSerial is a positive 127-bit serial number.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate certificate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
