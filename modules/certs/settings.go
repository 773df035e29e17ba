package certs

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
)

// ACMESettings are an organization's ACME settings as the API shows them:
// the EAB HMAC is write-only (HasEABHMAC says whether one is stored).
type ACMESettings struct {
	OrganizationID uuid.UUID `json:"organization_id"`
	Email          string    `json:"email" doc:"ACME account contact; acme.email when empty"`
	EABKID         string    `json:"eab_kid" doc:"External account binding key id (ZeroSSL, custom directories)"`
	HasEABHMAC     bool      `json:"has_eab_hmac" doc:"Whether an EAB HMAC is stored (it is never returned)"`
	DirectoryURL   string    `json:"directory_url" doc:"The directory of provider custom (https)"`
	Fallback       []string  `json:"fallback" doc:"Issuers tried in order after the requested one fails"`
}

// acmeSettings is the decrypted form the issuance job uses.
type acmeSettings struct {
	ACMESettings
	eabHMAC string
}

type acmeSettingsRow struct {
	OrganizationID uuid.UUID             `gorm:"column:organization_id;type:uuid;primaryKey"`
	Email          string                `gorm:"column:email;not null"`
	EABKID         string                `gorm:"column:eab_kid;not null"`
	EABHMACSealed  []byte                `gorm:"column:eab_hmac_sealed"`
	DirectoryURL   string                `gorm:"column:directory_url;not null"`
	Fallback       app.JSONSlice[string] `gorm:"column:fallback;type:jsonb;not null"`
	UpdatedAt      time.Time             `gorm:"column:updated_at;not null"`
}

// TableName is acme_settings.
func (acmeSettingsRow) TableName() string { return "acme_settings" }

// ACMESettingsParams are the inputs of SetACMESettings. A nil EABHMAC keeps
// the stored one; an empty one removes it.
type ACMESettingsParams struct {
	Email        string   `json:"email"`
	EABKID       string   `json:"eab_kid"`
	EABHMAC      *string  `json:"eab_hmac" doc:"Write-only"`
	DirectoryURL string   `json:"directory_url"`
	Fallback     []string `json:"fallback"`
}

// GetACMESettings returns an organization's ACME settings (empty when never set).
func (s *Service) GetACMESettings(ctx context.Context, orgID uuid.UUID) (ACMESettings, error) {
	st, err := s.acmeSettings(ctx, orgID)
	return st.ACMESettings, err
}

func (s *Service) acmeSettings(ctx context.Context, orgID uuid.UUID) (acmeSettings, error) {
	var r acmeSettingsRow
	err := s.db.WithContext(ctx).Take(&r, "organization_id = ?", orgID).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return acmeSettings{ACMESettings: ACMESettings{OrganizationID: orgID, Fallback: []string{}}}, nil
	}
	if err != nil {
		return acmeSettings{}, fmt.Errorf("read ACME settings of organization %s: %w", orgID, err)
	}
	st := acmeSettings{ACMESettings: ACMESettings{OrganizationID: orgID, Email: r.Email, EABKID: r.EABKID,
		HasEABHMAC: len(r.EABHMACSealed) > 0, DirectoryURL: r.DirectoryURL, Fallback: append([]string{}, r.Fallback...)}}
	if len(r.EABHMACSealed) > 0 {
		b, err := s.secrets.Open(r.EABHMACSealed)
		if err != nil {
			return acmeSettings{}, fmt.Errorf("open EAB HMAC of organization %s: %w", orgID, err)
		}
		st.eabHMAC = string(b)
	}
	return st, nil
}

// SetACMESettings validates and stores an organization's ACME settings, with
// an audit row (the HMAC never in it).
func (s *Service) SetACMESettings(ctx context.Context, orgID uuid.UUID, p ACMESettingsParams) (ACMESettings, error) {
	v := &app.Validator{}
	p.Email = strings.TrimSpace(p.Email)
	if p.Email != "" {
		_, err := mail.ParseAddress(p.Email)
		v.Check(err == nil && !strings.ContainsAny(p.Email, "<> "), "email", app.FieldInvalidFormat, "must be an e-mail address")
	}
	v.Check(len(p.EABKID) <= 256, "eab_kid", app.FieldTooLong, "must be at most 256 characters")
	if p.EABHMAC != nil {
		v.Check(len(*p.EABHMAC) <= 512, "eab_hmac", app.FieldTooLong, "must be at most 512 characters")
	}
	if p.DirectoryURL != "" {
		u, err := url.Parse(p.DirectoryURL)
		v.Check(err == nil && u.Scheme == "https" && u.Host != "", "directory_url", app.FieldInvalidFormat, "must be an https URL")
	}
	for i, f := range p.Fallback {
		v.Check(slices.Contains(acmeProviders, f), fmt.Sprintf("fallback[%d]", i), app.FieldInvalidValue,
			"must be one of "+strings.Join(acmeProviders, ", "))
	}
	if err := v.Err(); err != nil {
		return ACMESettings{}, err
	}
	var out ACMESettings
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var old acmeSettingsRow
		err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).Take(&old, "organization_id = ?", orgID).Error
		if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("read ACME settings: %w", err)
		}
		row := acmeSettingsRow{OrganizationID: orgID, Email: p.Email, EABKID: p.EABKID, EABHMACSealed: old.EABHMACSealed,
			DirectoryURL: p.DirectoryURL, Fallback: append(app.JSONSlice[string]{}, p.Fallback...), UpdatedAt: s.now()}
		if p.EABHMAC != nil {
			row.EABHMACSealed = nil
			if *p.EABHMAC != "" {
				if row.EABHMACSealed, err = s.secrets.Seal([]byte(*p.EABHMAC)); err != nil {
					return fmt.Errorf("seal EAB HMAC: %w", err)
				}
			}
		}
		if err := tx.Save(&row).Error; err != nil {
			return fmt.Errorf("store ACME settings of organization %s: %w", orgID, err)
		}
		out = ACMESettings{OrganizationID: orgID, Email: row.Email, EABKID: row.EABKID, HasEABHMAC: len(row.EABHMACSealed) > 0,
			DirectoryURL: row.DirectoryURL, Fallback: append([]string{}, row.Fallback...)}
		return app.Audit(ctx, tx, app.AuditParams{OrgID: orgID, Action: "acme_settings.update",
			ObjectType: "acme_settings", ObjectID: orgID.String(), After: out})
	})
	return out, err
}
