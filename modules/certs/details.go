package certs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// ACMEDetails are the ACME options and the renewal schedule of a
// certificate, as the admin page shows them. They carry the names of the DNS
// credentials, never their values.
type ACMEDetails struct {
	Challenge   string
	KeyType     string
	Profile     string
	DNSProvider string
	// DNSCredentialKeys are the names of the stored DNS credentials, sorted.
	DNSCredentialKeys []string
	// IssuedBy is the issuer that signed the current material (a fallback
	// issuer when the requested one failed).
	IssuedBy      string
	Failures      int
	NextAttemptAt *time.Time
	RenewAt       *time.Time
	// OrderInFlight is set while an issuance job holds the certificate.
	OrderInFlight bool
}

// Details returns the ACME options and schedule of the certificate with id
// (all empty for an uploaded certificate).
func (s *Service) Details(ctx context.Context, id uuid.UUID) (ACMEDetails, error) {
	var r acmeColumns
	err := s.db.WithContext(ctx).Model(&certificateRow{}).
		Select("challenge, key_type, profile, dns_provider, dns_credential_keys, issued_by, order_started_at, next_attempt_at, failures, renew_at").
		Where("id = ?", id).Take(&r).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ACMEDetails{}, ErrCertificateNotFound
	}
	if err != nil {
		return ACMEDetails{}, fmt.Errorf("read ACME details of certificate %s: %w", id, err)
	}
	d := ACMEDetails{Challenge: r.Challenge, KeyType: r.KeyType, Profile: r.Profile, DNSProvider: r.DNSProvider,
		DNSCredentialKeys: append([]string{}, r.DNSCredentialKeys...), IssuedBy: r.IssuedBy, Failures: r.Failures,
		OrderInFlight: r.OrderStartedAt != nil}
	if r.NextAttemptAt != nil {
		t := r.NextAttemptAt.UTC()
		d.NextAttemptAt = &t
	}
	if r.RenewAt != nil {
		t := r.RenewAt.UTC()
		d.RenewAt = &t
	}
	return d, nil
}
