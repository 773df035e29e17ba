package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nxmesh/nxmesh/app"
)

// Upload limits.
const (
	// MaxCertificatePEMBytes bounds certificate_pem.
	MaxCertificatePEMBytes = 256 << 10
	// MaxPrivateKeyPEMBytes bounds private_key_pem.
	MaxPrivateKeyPEMBytes = 32 << 10
	// MaxChainLength is the most certificates a chain may hold.
	MaxChainLength = 10
	// MinRSABits and MaxRSABits bound RSA key sizes.
	MinRSABits = 2048
	MaxRSABits = 8192
	// ClockSkew is how far in the future a leaf's NotBefore may be.
	ClockSkew = 5 * time.Minute
)

// Field names of the upload, as the API names them in 422 details.
const (
	fieldCertificatePEM = "certificate_pem"
	fieldPrivateKeyPEM  = "private_key_pem"
)

// upload is a validated chain with its private key.
type upload struct {
	// chainPEM is the chain re-encoded: CERTIFICATE blocks only, leaf first.
	chainPEM string
	// keyPEM is the key's one block re-encoded without headers or other text.
	// It is secret: it goes to Seal and nowhere else.
	keyPEM []byte

	domain            string
	san               []string
	wildcard          bool
	issuer            string
	serial            string
	fingerprintSHA256 string
	notBefore         time.Time
	notAfter          time.Time
}

// parseUpload validates an uploaded chain and key at time now. Every failure is a
// *app.ValidationError naming certificate_pem or private_key_pem. Messages
// describe what is wrong without quoting the input: the key must not appear in
// a response, and neither must a key pasted into the wrong field.
func parseUpload(certPEM, keyPEM string, now time.Time) (upload, error) {
	v := &app.Validator{}
	chain, certProblem := parseChain(certPEM)
	if certProblem != nil {
		v.Add(fieldCertificatePEM, certProblem.code, certProblem.msg)
	}
	key, keyBlock, keyProblem := parseKey(keyPEM)
	if keyProblem != nil {
		v.Add(fieldPrivateKeyPEM, keyProblem.code, keyProblem.msg)
	}
	if err := v.Err(); err != nil {
		return upload{}, err
	}

	keyOf := slices.IndexFunc(chain, func(c *x509.Certificate) bool { return publicKeyMatches(c.PublicKey, key.Public()) })
	misplaced := func() error {
		return app.Invalid(fieldCertificatePEM, app.FieldInvalidValue, fmt.Sprintf(
			"the private key belongs to certificate %d, not to the first one: list the leaf first, then each issuing certificate in order", keyOf+1))
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			if keyOf > 0 {
				return upload{}, misplaced()
			}
			return upload{}, app.Invalid(fieldCertificatePEM, app.FieldInvalidValue, fmt.Sprintf(
				"certificate %d (%s) is not signed by certificate %d (%s) (%v): list the leaf first, then each issuing certificate in order",
				i+1, describe(chain[i]), i+2, describe(chain[i+1]), err))
		}
	}
	switch {
	case keyOf > 0:
		return upload{}, misplaced()
	case keyOf < 0:
		return upload{}, app.Invalid(fieldPrivateKeyPEM, app.FieldInvalidValue, "does not match the public key of the certificate (the first one in certificate_pem)")
	}

	leaf := chain[0]
	switch {
	case !now.Before(leaf.NotAfter):
		return upload{}, app.Invalid(fieldCertificatePEM, app.FieldInvalidValue, fmt.Sprintf(
			"the certificate expired on %s", leaf.NotAfter.UTC().Format(time.RFC3339)))
	case leaf.NotBefore.After(now.Add(ClockSkew)):
		return upload{}, app.Invalid(fieldCertificatePEM, app.FieldInvalidValue, fmt.Sprintf(
			"the certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339)))
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return upload{}, app.Invalid(fieldCertificatePEM, app.FieldInvalidValue, "the certificate is not valid for TLS servers (its extended key usage lacks serverAuth)")
	}

	domain, ok := leafDomain(leaf)
	if !ok {
		return upload{}, app.Invalid(fieldCertificatePEM, app.FieldInvalidValue,
			"the certificate names no host: its first DNS subjectAltName (or, without any, its common name) must be a DNS name")
	}

	var buf bytes.Buffer
	for _, c := range chain {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	san := make([]string, 0, len(leaf.DNSNames)+len(leaf.IPAddresses))
	for _, n := range leaf.DNSNames {
		san = append(san, normalizeName(n))
	}
	for _, ip := range leaf.IPAddresses {
		san = append(san, ip.String())
	}
	sum := sha256.Sum256(leaf.Raw)
	return upload{
		chainPEM:          buf.String(),
		keyPEM:            pem.EncodeToMemory(&pem.Block{Type: keyBlock.Type, Bytes: keyBlock.Bytes}),
		domain:            domain,
		san:               san,
		wildcard:          strings.HasPrefix(domain, "*."),
		issuer:            leaf.Issuer.String(),
		serial:            leaf.SerialNumber.Text(16),
		fingerprintSHA256: hex.EncodeToString(sum[:]),
		notBefore:         leaf.NotBefore.UTC(),
		notAfter:          leaf.NotAfter.UTC(),
	}, nil
}

// problem is what is wrong with a field: a field error code and a message.
type problem struct {
	code string
	msg  string
}

func required(msg string) *problem  { return &problem{app.FieldRequired, msg} }
func badFormat(msg string) *problem { return &problem{app.FieldInvalidFormat, msg} }
func badValue(msg string) *problem  { return &problem{app.FieldInvalidValue, msg} }
func tooLong(limit int) *problem {
	return &problem{app.FieldTooLong, fmt.Sprintf("must be at most %d bytes", limit)}
}

// nextBlock returns the next PEM block of data and the rest. Only whitespace may
// surround blocks. done is true at the end of data.
func nextBlock(data []byte) (block *pem.Block, rest []byte, done bool, p *problem) {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 {
		return nil, nil, true, nil
	}
	if !bytes.HasPrefix(data, []byte("-----BEGIN ")) {
		return nil, nil, false, badFormat("must contain only PEM blocks: found text outside them")
	}
	block, rest = pem.Decode(data)
	if block == nil {
		return nil, nil, false, badFormat("contains a malformed PEM block")
	}
	return block, rest, false, nil
}

// parseChain reads certificate_pem: one or more CERTIFICATE blocks and nothing
// else.
func parseChain(s string) ([]*x509.Certificate, *problem) {
	switch {
	case strings.TrimSpace(s) == "":
		return nil, required("is required: the certificate and its chain as PEM, leaf first")
	case len(s) > MaxCertificatePEMBytes:
		return nil, tooLong(MaxCertificatePEMBytes)
	}
	var chain []*x509.Certificate
	data := []byte(s)
	for {
		block, rest, done, p := nextBlock(data)
		if p != nil {
			return nil, p
		}
		if done {
			break
		}
		data = rest
		if block.Type != "CERTIFICATE" {
			if strings.Contains(block.Type, "PRIVATE") {
				return nil, badFormat("must contain only CERTIFICATE blocks: found a private key, which belongs in private_key_pem")
			}
			return nil, badFormat("must contain only CERTIFICATE blocks")
		}
		if len(chain) == MaxChainLength {
			return nil, badValue(fmt.Sprintf("must hold at most %d certificates", MaxChainLength))
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, badFormat(fmt.Sprintf("certificate %d cannot be parsed: %v", len(chain)+1, err))
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, badFormat("must contain at least one CERTIFICATE block")
	}
	return chain, nil
}

// parseKey reads private_key_pem: exactly one PKCS#1, PKCS#8 or SEC 1 (EC)
// block, unencrypted; an EC PARAMETERS block as written by `openssl ecparam
// -genkey` is ignored. RSA keys need MinRSABits to MaxRSABits bits, ECDSA keys
// P-256 or P-384; Ed25519 is accepted. Problems never quote the key.
func parseKey(s string) (crypto.Signer, *pem.Block, *problem) {
	const kinds = "one PEM-encoded private key (PKCS#1, PKCS#8 or SEC 1/EC), unencrypted"
	switch {
	case strings.TrimSpace(s) == "":
		return nil, nil, required("is required: " + kinds)
	case len(s) > MaxPrivateKeyPEMBytes:
		return nil, nil, tooLong(MaxPrivateKeyPEMBytes)
	}
	var block *pem.Block
	data := []byte(s)
	for {
		b, rest, done, p := nextBlock(data)
		if p != nil {
			return nil, nil, p
		}
		if done {
			break
		}
		data = rest
		switch {
		case b.Type == "EC PARAMETERS":
			continue
		case b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED"):
			return nil, nil, badFormat("is encrypted: upload the key without a passphrase (for example the output of `openssl pkey`)")
		case b.Type == "CERTIFICATE":
			return nil, nil, badFormat("must be " + kinds + ": found a certificate, which belongs in certificate_pem")
		case b.Type != "RSA PRIVATE KEY" && b.Type != "PRIVATE KEY" && b.Type != "EC PRIVATE KEY":
			return nil, nil, badFormat("must be " + kinds)
		}
		if block != nil {
			return nil, nil, badFormat("must contain exactly one private key")
		}
		block = b
	}
	if block == nil {
		return nil, nil, badFormat("must be " + kinds)
	}

	var parsed any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		// The parser's message is not shown: it may describe the key's bytes.
		return nil, nil, badFormat("cannot be parsed as " + kinds)
	}
	switch k := parsed.(type) {
	case *rsa.PrivateKey:
		bits := k.N.BitLen()
		if bits < MinRSABits {
			return nil, nil, badValue(fmt.Sprintf("is a %d-bit RSA key: RSA keys must have at least %d bits", bits, MinRSABits))
		}
		if bits > MaxRSABits {
			return nil, nil, badValue(fmt.Sprintf("is a %d-bit RSA key: RSA keys must have at most %d bits", bits, MaxRSABits))
		}
		return k, block, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, nil, badValue(fmt.Sprintf("is an ECDSA key on %s: ECDSA keys must use P-256 or P-384", k.Curve.Params().Name))
		}
		return k, block, nil
	case ed25519.PrivateKey:
		return k, block, nil
	}
	return nil, nil, badValue("must be an RSA, ECDSA (P-256, P-384) or Ed25519 key")
}

// publicKeyMatches reports whether a certificate's public key is pub.
func publicKeyMatches(certKey, pub crypto.PublicKey) bool {
	k, ok := certKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}

// describe names a certificate in messages by its subject.
func describe(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	return "no subject"
}

// hostPattern is a DNS name, optionally a wildcard ("*.example.com"). Labels
// may hold underscores, as some internal names do.
var hostPattern = regexp.MustCompile(`^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$`)

// leafDomain is the leaf's first DNS subjectAltName, else its common name,
// lowercased without a trailing dot; ok is false when that is not a DNS name.
func leafDomain(leaf *x509.Certificate) (string, bool) {
	name := leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	name = normalizeName(name)
	return name, len(name) <= 253 && hostPattern.MatchString(name)
}

func normalizeName(n string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
}
