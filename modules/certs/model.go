package certs

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// Providers.
const (
	// ProviderUpload marks a certificate uploaded with its key.
	ProviderUpload = "upload"
)

// Statuses of a certificate: pending → active → expiring → expired, or failed.
const (
	// StatusPending: issuance requested, no certificate yet (ACME).
	StatusPending = "pending"
	// StatusActive: valid, and not yet due for renewal (see statusAt).
	StatusActive = "active"
	// StatusExpiring: inside the renewal window (ACME) or valid for less than
	// ExpiringWindow (uploads).
	StatusExpiring = "expiring"
	// StatusExpired: past the leaf's NotAfter.
	StatusExpired = "expired"
	// StatusFailed: issuance failed; Error says why (ACME).
	StatusFailed = "failed"
)

// ExpiringWindow is how long before NotAfter an uploaded certificate counts as
// expiring.
const ExpiringWindow = 30 * 24 * time.Hour

// statusAt is the status at time now of a certificate with material expiring
// at notAfter. renewAt is an ACME certificate's renewal time (issue.go: inside
// the CA's ARI window, else at one third of the lifetime left, with jitter):
// from then on it is expiring. Without one (uploads) the 30-day rule holds.
func statusAt(notAfter time.Time, renewAt *time.Time, now time.Time) string {
	switch {
	case !now.Before(notAfter):
		return StatusExpired
	case renewAt != nil:
		if !now.Before(*renewAt) {
			return StatusExpiring
		}
	case notAfter.Sub(now) < ExpiringWindow:
		return StatusExpiring
	}
	return StatusActive
}

// Certificate is a workspace's certificate as the API, the admin pages, the
// audit log and other modules see it. Its JSON form is the API's certificate
// object plus name, san, issuer, serial, fingerprint_sha256, error and
// updated_at. It has no field for the private key or the chain; Material hands
// those to the config push.
type Certificate struct {
	ID          uuid.UUID `json:"id"`
	WorkspaceID uuid.UUID `json:"workspace_id"`
	// Name is a label for people; the domain when none was given.
	Name string `json:"name"`
	// Domain is the leaf's first DNS subjectAltName, else its common name.
	Domain string `json:"domain" doc:"The leaf's first DNS subjectAltName, else its common name"`
	// SAN lists the leaf's subjectAltNames (DNS names and IP addresses).
	SAN []string `json:"san" doc:"The leaf's subjectAltNames: DNS names and IP addresses"`
	// IsWildcard is true when Domain starts with "*.".
	IsWildcard bool `json:"is_wildcard"`
	// Provider is "upload", or an ACME provider (later).
	Provider string `json:"provider" doc:"upload, or the ACME provider: letsencrypt, letsencrypt_staging, zerossl or custom"`
	// Status is pending, active, expiring, expired or failed, as of the time the
	// certificate was read.
	Status    string     `json:"status" doc:"pending, active, expiring (ACME: inside the renewal window, one third of the lifetime left or the CA's ARI window; uploads: less than 30 days left), expired or failed, as of the request"`
	IssuedAt  *time.Time `json:"issued_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	AutoRenew bool       `json:"auto_renew"`
	// Issuer is the leaf's issuer distinguished name.
	Issuer string `json:"issuer"`
	// Serial is the leaf's serial number in lowercase hexadecimal.
	Serial string `json:"serial" doc:"The leaf's serial number, lowercase hexadecimal"`
	// FingerprintSHA256 is the SHA-256 of the leaf's DER, lowercase hexadecimal.
	FingerprintSHA256 string `json:"fingerprint_sha256" doc:"SHA-256 of the leaf's DER encoding, lowercase hexadecimal"`
	// Error is the last issuance or renewal error (ACME), empty when none.
	Error string `json:"error" doc:"The last issuance or renewal error; empty when none"`
	// NextAttemptAt is when a failed order is tried again; nil when none is scheduled.
	NextAttemptAt *time.Time `json:"next_attempt_at" doc:"When a failed issuance or renewal is tried again; null when none is scheduled"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// MarshalJSON writes timestamps as RFC 3339 UTC seconds (app.Time) and san as
// [] when empty.
func (c Certificate) MarshalJSON() ([]byte, error) {
	type plain Certificate
	p := plain(c)
	if p.SAN == nil {
		p.SAN = []string{}
	}
	return json.Marshal(struct {
		plain
		IssuedAt      *app.Time `json:"issued_at"`
		ExpiresAt     *app.Time `json:"expires_at"`
		NextAttemptAt *app.Time `json:"next_attempt_at"`
		CreatedAt     app.Time  `json:"created_at"`
		UpdatedAt     app.Time  `json:"updated_at"`
	}{p, app.TimePtr(c.IssuedAt), app.TimePtr(c.ExpiresAt), app.TimePtr(c.NextAttemptAt), app.Time{Time: c.CreatedAt}, app.Time{Time: c.UpdatedAt}})
}

// ObjectCertificate is the audit object type of certificates.
const ObjectCertificate = "certificate"

// certificateRow is the certificates table. Only the service reads and writes it;
// the sealed key and the chain never leave through it.
type certificateRow struct {
	ID                uuid.UUID             `gorm:"column:id;type:uuid;primaryKey;default:gen_random_uuid()"`
	WorkspaceID       uuid.UUID             `gorm:"column:workspace_id;type:uuid;not null"`
	Name              string                `gorm:"column:name;not null"`
	Domain            string                `gorm:"column:domain;not null"`
	SAN               app.JSONSlice[string] `gorm:"column:san;type:jsonb;not null"`
	IsWildcard        bool                  `gorm:"column:is_wildcard;not null"`
	Provider          string                `gorm:"column:provider;not null"`
	Status            string                `gorm:"column:status;not null"`
	AutoRenew         bool                  `gorm:"column:auto_renew;not null"`
	CertificatePEM    string                `gorm:"column:certificate_pem;not null"`
	PrivateKeySealed  []byte                `gorm:"column:private_key_sealed"`
	Issuer            string                `gorm:"column:issuer;not null"`
	Serial            string                `gorm:"column:serial;not null"`
	FingerprintSHA256 string                `gorm:"column:fingerprint_sha256;not null"`
	IssuedAt          *time.Time            `gorm:"column:issued_at"`
	ExpiresAt         *time.Time            `gorm:"column:expires_at"`
	// RenewAt is when an ACME certificate is due for renewal (nil for uploads).
	RenewAt *time.Time `gorm:"column:renew_at"`
	// NextAttemptAt is when a failed order is tried again.
	NextAttemptAt *time.Time `gorm:"column:next_attempt_at"`
	Error         string     `gorm:"column:error;not null"`
	CreatedAt     time.Time  `gorm:"column:created_at;not null"`
	UpdatedAt     time.Time  `gorm:"column:updated_at;not null"`
}

// TableName is the certificates table.
func (certificateRow) TableName() string { return "certificates" }

// publicColumns are the columns Certificate is made of: everything but the
// chain and the sealed key.
var publicColumns = []string{
	"id", "workspace_id", "name", "domain", "san", "is_wildcard", "provider", "status",
	"auto_renew", "issuer", "serial", "fingerprint_sha256", "issued_at", "expires_at",
	"renew_at", "next_attempt_at", "error", "created_at", "updated_at",
}

// certificate is r's public form, with the status as of now.
func (r certificateRow) certificate(now time.Time) Certificate {
	c := Certificate{
		ID:                r.ID,
		WorkspaceID:       r.WorkspaceID,
		Name:              r.Name,
		Domain:            r.Domain,
		SAN:               append([]string{}, r.SAN...),
		IsWildcard:        r.IsWildcard,
		Provider:          r.Provider,
		Status:            r.Status,
		AutoRenew:         r.AutoRenew,
		Issuer:            r.Issuer,
		Serial:            r.Serial,
		FingerprintSHA256: r.FingerprintSHA256,
		Error:             r.Error,
		CreatedAt:         r.CreatedAt,
		UpdatedAt:         r.UpdatedAt,
	}
	if r.NextAttemptAt != nil {
		t := r.NextAttemptAt.UTC()
		c.NextAttemptAt = &t
	}
	if r.IssuedAt != nil {
		t := r.IssuedAt.UTC()
		c.IssuedAt = &t
	}
	if r.ExpiresAt != nil {
		t := r.ExpiresAt.UTC()
		c.ExpiresAt = &t
		if hasMaterial(r.Status) {
			c.Status = statusAt(t, r.renewAt(), now)
		}
	}
	return c
}

// hasMaterial reports whether a certificate in status has a chain and a key.
func hasMaterial(status string) bool {
	return status == StatusActive || status == StatusExpiring || status == StatusExpired
}

// renewAt is the renewal time statusAt counts from: an ACME certificate's
// renew_at; nil for uploads.
func (r certificateRow) renewAt() *time.Time {
	if r.Provider == ProviderUpload {
		return nil
	}
	return r.RenewAt
}
