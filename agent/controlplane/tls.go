package controlplane

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// ParseFingerprint parses "sha256:<64 hex>" (colons between hex pairs are
// accepted too) into the 32-byte SHA-256 of a certificate's DER.
func ParseFingerprint(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	if !ok {
		return nil, fmt.Errorf("CA fingerprint %q: want sha256:<64 hex digits>", s)
	}
	fp, err := hex.DecodeString(strings.ReplaceAll(rest, ":", ""))
	if err != nil || len(fp) != sha256.Size {
		return nil, fmt.Errorf("CA fingerprint %q: want sha256:<64 hex digits>", s)
	}
	return fp, nil
}

// Fingerprint returns the "sha256:<hex>" fingerprint of a certificate.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// tlsConfig builds the client TLS configuration. The master is trusted,
// in this order, through the CA stored at registration, the CA file, or the
// pinned CA fingerprint. With an identity, the client certificate is
// presented (mutual TLS).
func (c *Client) tlsConfig(id *Identity) (*tls.Config, error) {
	master := c.master()
	host, _, err := net.SplitHostPort(master)
	if err != nil {
		return nil, fmt.Errorf("master address %q: %w", master, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if id != nil {
		cfg.Certificates = []tls.Certificate{id.Certificate}
	}
	switch {
	case id != nil && len(id.CAPEM) > 0:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(id.CAPEM) {
			return nil, errors.New("stored master CA holds no PEM certificate")
		}
		cfg.RootCAs = pool
	case c.opts.CAFile != "":
		pem, err := os.ReadFile(c.opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", c.opts.CAFile)
		}
		cfg.RootCAs = pool
	case c.opts.CAFingerprint != "":
		fp, err := ParseFingerprint(c.opts.CAFingerprint)
		if err != nil {
			return nil, err
		}
		// Go's own verification needs a root pool, which the agent does
		// not have yet: it is replaced by verifyPinned, which checks the
		// chain and the host name itself.
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = verifyPinned(fp, host)
	default:
		return nil, errors.New("no way to trust the master: set a CA file or a CA fingerprint")
	}
	return cfg, nil
}

// verifyPinned accepts a server chain when one of its certificates has the
// pinned SHA-256 fingerprint and the leaf verifies against that
// certificate as the only root, for host and server authentication.
func verifyPinned(fp []byte, host string) func([][]byte, [][]*x509.Certificate) error {
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return errors.New("master presented no certificate")
		}
		certs := make([]*x509.Certificate, 0, len(rawCerts))
		for _, raw := range rawCerts {
			cert, err := x509.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("parse master certificate: %w", err)
			}
			certs = append(certs, cert)
		}
		roots := x509.NewCertPool()
		pinned := false
		for _, cert := range certs {
			sum := sha256.Sum256(cert.Raw)
			if bytes.Equal(sum[:], fp) {
				roots.AddCert(cert)
				pinned = true
			}
		}
		if !pinned {
			return errors.New("no certificate in the master's chain matches the pinned CA fingerprint")
		}
		intermediates := x509.NewCertPool()
		for _, cert := range certs[1:] {
			intermediates.AddCert(cert)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: intermediates,
			DNSName:       host,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			return fmt.Errorf("verify master certificate against the pinned CA: %w", err)
		}
		return nil
	}
}
