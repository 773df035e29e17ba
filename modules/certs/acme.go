package certs

// ACME accounts and clients (lego v4). An organization has one account per
// directory URL; its key is an ECDSA P-256 key sealed with the master's
// encryption key like certificates' private keys, its contact the
// organization's ACME settings e-mail, else acme.email.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/registration"
	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// ACME providers (issuers).
const (
	ProviderLetsEncrypt        = "letsencrypt"
	ProviderLetsEncryptStaging = "letsencrypt_staging"
	ProviderZeroSSL            = "zerossl"
	// ProviderCustom is the organization's own directory (acme-settings directory_url).
	ProviderCustom = "custom"
)

// acmeProviders are the issuers a request or a fallback list may name.
var acmeProviders = []string{ProviderLetsEncrypt, ProviderLetsEncryptStaging, ProviderZeroSSL, ProviderCustom}

// keyTypes maps the API's key_type to lego's.
var keyTypes = map[string]certcrypto.KeyType{
	"ec256": certcrypto.EC256, "ec384": certcrypto.EC384, "rsa2048": certcrypto.RSA2048, "rsa4096": certcrypto.RSA4096,
}

// acmeUser is lego's registration.User for an organization's account.
type acmeUser struct {
	email string
	reg   *registration.Resource
	key   crypto.PrivateKey
}

func (u *acmeUser) GetEmail() string                        { return u.email }
func (u *acmeUser) GetRegistration() *registration.Resource { return u.reg }
func (u *acmeUser) GetPrivateKey() crypto.PrivateKey        { return u.key }

// acmeAccountRow is the acme_accounts table.
type acmeAccountRow struct {
	OrganizationID uuid.UUID `gorm:"column:organization_id;type:uuid;primaryKey"`
	DirectoryURL   string    `gorm:"column:directory_url;primaryKey"`
	Email          string    `gorm:"column:email;not null"`
	URI            string    `gorm:"column:uri;not null"`
	KeySealed      []byte    `gorm:"column:key_sealed;not null"`
	CreatedAt      time.Time `gorm:"column:created_at;not null"`
}

// TableName is acme_accounts.
func (acmeAccountRow) TableName() string { return "acme_accounts" }

// directory is where an issuer's ACME server is and how to bind an account there.
type directory struct {
	issuer          string
	url             string
	eabKID, eabHMAC string
}

// directoryOf resolves an issuer name with the organization's settings.
func (s *Service) directoryOf(issuer string, st acmeSettings) (directory, error) {
	d := directory{issuer: issuer, eabKID: st.EABKID, eabHMAC: st.eabHMAC}
	switch issuer {
	case ProviderLetsEncrypt:
		d.url = s.acme.cfg.LetsEncryptURL
	case ProviderLetsEncryptStaging:
		d.url = s.acme.cfg.LetsEncryptStagingURL
	case ProviderZeroSSL:
		d.url = s.acme.cfg.ZeroSSLURL
		if d.eabKID == "" {
			return d, errors.New("zerossl needs external account binding: set eab_kid and eab_hmac in the organization's ACME settings")
		}
	case ProviderCustom:
		d.url = st.DirectoryURL
		if d.url == "" {
			return d, errors.New("the organization's ACME settings have no directory_url")
		}
	default:
		return d, fmt.Errorf("unknown ACME provider %q", issuer)
	}
	if issuer == ProviderLetsEncrypt || issuer == ProviderLetsEncryptStaging {
		d.eabKID, d.eabHMAC = "", ""
	}
	return d, nil
}

// acmeHTTPClient trusts the system roots plus acme.ca_file.
func (s *Service) acmeHTTPClient() (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if f := s.acme.cfg.CAFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read acme.ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("acme.ca_file %s holds no PEM certificate", f)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// legoClient returns a client of dir for the organization's account, creating
// and registering the account on first use. Its Retry-After answers are
// recorded in ra.
func (s *Service) legoClient(ctx context.Context, orgID uuid.UUID, dir directory, email string, keyType certcrypto.KeyType, ra *retryAfter) (*lego.Client, error) {
	hc, err := s.acmeHTTPClient()
	if err != nil {
		return nil, err
	}
	hc.Transport = ra.wrap(hc.Transport)
	var acc acmeAccountRow
	err = s.db.WithContext(ctx).Take(&acc, "organization_id = ? AND directory_url = ?", orgID, dir.url).Error
	user := &acmeUser{email: email}
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate ACME account key: %w", err)
		}
		user.key = key
	case err != nil:
		return nil, fmt.Errorf("read ACME account: %w", err)
	default:
		raw, err := s.secrets.Open(acc.KeySealed)
		if err != nil {
			return nil, fmt.Errorf("open ACME account key: %w", err)
		}
		blk, _ := pem.Decode(raw)
		if blk == nil {
			return nil, errors.New("ACME account key is not PEM")
		}
		key, err := x509.ParseECPrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse ACME account key: %w", err)
		}
		user.key = key
		if acc.URI != "" {
			user.reg = &registration.Resource{URI: acc.URI}
		}
	}
	cfg := lego.NewConfig(user)
	cfg.CADirURL = dir.url
	cfg.HTTPClient = hc
	cfg.UserAgent = "nxmesh"
	cfg.Certificate.KeyType = keyType
	client, err := lego.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to ACME directory %s: %w", dir.url, err)
	}
	if user.reg != nil {
		return client, nil
	}
	var reg *registration.Resource
	if dir.eabKID != "" {
		reg, err = client.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{TermsOfServiceAgreed: true, Kid: dir.eabKID, HmacEncoded: dir.eabHMAC})
	} else {
		reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	}
	if err != nil {
		return nil, fmt.Errorf("register ACME account at %s: %w", dir.url, err)
	}
	user.reg = reg
	der, err := x509.MarshalECPrivateKey(user.key.(*ecdsa.PrivateKey))
	if err != nil {
		return nil, fmt.Errorf("encode ACME account key: %w", err)
	}
	sealed, err := s.secrets.Seal(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, fmt.Errorf("seal ACME account key: %w", err)
	}
	row := acmeAccountRow{OrganizationID: orgID, DirectoryURL: dir.url, Email: email, URI: reg.URI, KeySealed: sealed, CreatedAt: s.now()}
	res := s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&row)
	if res.Error != nil {
		return nil, fmt.Errorf("store ACME account: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		// A concurrent order (this replica or another) stored its account
		// first: use that one, so every certificate of the organization at
		// this directory belongs to one account (renewals may only replace
		// certificates their account ordered).
		return s.legoClient(ctx, orgID, dir, email, keyType, ra)
	}
	return client, nil
}

// blockedAddr reports whether ip is link-local or a cloud metadata address,
// which endpoints named in DNS credentials may not reach.
func blockedAddr(ip net.IP) bool {
	return ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.Equal(net.ParseIP("fd00:ec2::254"))
}

// guardedHTTPClient dials only addresses blockedAddr allows (a dialer Control
// check, so DNS answers cannot point around it).
func guardedHTTPClient() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		if ip := net.ParseIP(host); ip == nil || blockedAddr(ip) {
			return fmt.Errorf("refusing to dial %s: link-local and metadata addresses are not allowed", address)
		}
		return nil
	}}
	tr := &http.Transport{DialContext: d.DialContext, TLSHandshakeTimeout: 10 * time.Second, ForceAttemptHTTP2: true, Proxy: nil}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
