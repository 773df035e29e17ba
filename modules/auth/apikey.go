package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
)

// API key format: "nxm_" followed by 40 base62 characters (about 238 bits).
const (
	apiKeyPrefix     = "nxm_"
	apiKeyRandomLen  = 40
	apiKeyDisplayLen = 12
	maxAPIKeyNameLen = 100
)

// ObjectAPIKey is the Casbin object of API keys, for the routes that manage them.
const ObjectAPIKey = "auth.apikey"

// newAPIKeySecret returns a new secret, its stored hash and its display prefix.
func newAPIKeySecret() (secret string, hash []byte, prefix string, err error) {
	r, err := randomBase62(apiKeyRandomLen)
	if err != nil {
		return "", nil, "", err
	}
	secret = apiKeyPrefix + r
	return secret, hashToken(secret), secret[:apiKeyDisplayLen], nil
}

// CreateAPIKeyParams describes a new API key.
type CreateAPIKeyParams struct {
	OrgID uuid.UUID
	// WorkspaceID limits the key to one workspace of OrgID; uuid.Nil means the
	// whole organization.
	WorkspaceID uuid.UUID
	Name        string
	// Role is the key's role in its scope (authz.Role*).
	Role string
	// ExpiresAt, when set, must be in the future.
	ExpiresAt *time.Time
	// CreatedBy is the user the key acts for; disabling that user revokes it,
	// and the key never acts with more than that user's current role in OrgID.
	CreatedBy uuid.UUID
}

// CreateAPIKey creates a key and returns it with its secret, which is shown only
// this once: only a SHA-256 of it is stored. Limiting the role to what the
// creator may grant is the caller's job.
func (s *Service) CreateAPIKey(ctx context.Context, p CreateAPIKeyParams) (APIKey, string, error) {
	name := strings.TrimSpace(p.Name)
	now := s.now()
	v := &app.Validator{}
	if v.Check(name != "", "name", app.FieldRequired, "is required") {
		v.Check(utf8.RuneCountInString(name) <= maxAPIKeyNameLen, "name", app.FieldTooLong,
			fmt.Sprintf("must be at most %d characters", maxAPIKeyNameLen))
	}
	if v.Check(p.Role != "", "role", app.FieldRequired, "is required") {
		v.Check(authz.ValidRole(p.Role), "role", app.FieldInvalidValue, "must be one of "+strings.Join(authz.Roles, ", "))
	}
	if p.ExpiresAt != nil {
		v.Check(p.ExpiresAt.After(now), "expires_at", app.FieldInvalidValue, "must be in the future")
	}
	if p.OrgID == uuid.Nil {
		return APIKey{}, "", fmt.Errorf("create api key: %w: no organization", app.ErrNotFound)
	}
	if p.CreatedBy == uuid.Nil {
		return APIKey{}, "", errors.New("create api key: no creator")
	}
	secret, hash, prefix, err := newAPIKeySecret()
	if err != nil {
		return APIKey{}, "", err
	}
	row := apiKeyRow{
		ID:             uuid.New(),
		OrganizationID: p.OrgID,
		Name:           name,
		Prefix:         prefix,
		KeyHash:        hash,
		Role:           p.Role,
		CreatedBy:      &p.CreatedBy,
		CreatedAt:      now,
	}
	if p.ExpiresAt != nil {
		t := p.ExpiresAt.UTC().Truncate(time.Microsecond)
		row.ExpiresAt = &t
	}
	if p.WorkspaceID != uuid.Nil {
		row.WorkspaceID = &p.WorkspaceID
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if p.WorkspaceID != uuid.Nil {
			var n int64
			if err := tx.Table("workspaces").Where("id = ? AND organization_id = ?", p.WorkspaceID, p.OrgID).Count(&n).Error; err != nil {
				return err
			}
			v.Check(n == 1, "workspace_id", app.FieldNotFound, "no such workspace in this organization")
		}
		if err := v.Err(); err != nil {
			return err
		}
		if err := tx.Create(&row).Error; err != nil {
			if app.IsForeignKeyViolation(err) {
				return fmt.Errorf("%w: organization or creator not found", app.ErrNotFound)
			}
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: p.OrgID, WorkspaceID: p.WorkspaceID,
			Action: "apikey.create", ObjectType: "apikey", ObjectID: row.ID.String(), After: row.apiKey(),
		})
	})
	if err != nil {
		return APIKey{}, "", fmt.Errorf("create api key %q: %w", name, err)
	}
	return row.apiKey(), secret, nil
}

// ListAPIKeys returns a page of the organization's keys (revoked ones too),
// newest first, and the total count.
func (s *Service) ListAPIKeys(ctx context.Context, orgID uuid.UUID, page app.Page) ([]APIKey, int64, error) {
	q := s.db.WithContext(ctx).Model(&apiKeyRow{}).Where("organization_id = ?", orgID)
	rows, total, err := app.FindPage[apiKeyRow](q, page, "created_at DESC, id")
	if err != nil {
		return nil, 0, fmt.Errorf("list api keys: %w", err)
	}
	out := make([]APIKey, len(rows))
	for i, r := range rows {
		out[i] = r.apiKey()
	}
	return out, total, nil
}

// GetAPIKey returns the organization's key with keyID.
func (s *Service) GetAPIKey(ctx context.Context, orgID, keyID uuid.UUID) (APIKey, error) {
	var row apiKeyRow
	err := s.db.WithContext(ctx).Where("id = ? AND organization_id = ?", keyID, orgID).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return APIKey{}, ErrAPIKeyNotFound
	}
	if err != nil {
		return APIKey{}, fmt.Errorf("get api key %s: %w", keyID, err)
	}
	return row.apiKey(), nil
}

// lockAPIKey reads the organization's key with keyID for update in tx.
func lockAPIKey(tx *gorm.DB, orgID, keyID uuid.UUID) (apiKeyRow, error) {
	var row apiKeyRow
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ? AND organization_id = ?", keyID, orgID).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, ErrAPIKeyNotFound
	}
	return row, err
}

// RevokeAPIKey revokes the organization's key with keyID; requests with it get
// 401 from then on. Revoking a revoked key changes nothing.
func (s *Service) RevokeAPIKey(ctx context.Context, orgID, keyID uuid.UUID) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		row, err := lockAPIKey(tx, orgID, keyID)
		if err != nil {
			return err
		}
		if row.RevokedAt != nil {
			return nil
		}
		before := row.apiKey()
		now := s.now()
		row.RevokedAt = &now
		if err := tx.Model(&row).Update("revoked_at", now).Error; err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: derefUUID(row.WorkspaceID),
			Action: "apikey.revoke", ObjectType: "apikey", ObjectID: keyID.String(), Before: before, After: row.apiKey(),
		})
	})
	if err := s.synced(ctx, err); err != nil {
		return fmt.Errorf("revoke api key %s: %w", keyID, err)
	}
	return nil
}

// RotateAPIKey replaces the secret of the organization's key with keyID, keeping
// its id, name, scope, role and expiry. The old secret stops working at once;
// the new one is returned this once.
func (s *Service) RotateAPIKey(ctx context.Context, orgID, keyID uuid.UUID) (APIKey, string, error) {
	secret, hash, prefix, err := newAPIKeySecret()
	if err != nil {
		return APIKey{}, "", err
	}
	var out APIKey
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		row, err := lockAPIKey(tx, orgID, keyID)
		if err != nil {
			return err
		}
		if row.RevokedAt != nil {
			return ErrAPIKeyRevoked
		}
		before := row.apiKey()
		row.KeyHash, row.Prefix, row.LastUsedAt = hash, prefix, nil
		if err := tx.Model(&row).Updates(map[string]any{"key_hash": hash, "prefix": prefix, "last_used_at": nil}).Error; err != nil {
			return err
		}
		out = row.apiKey()
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: derefUUID(row.WorkspaceID),
			Action: "apikey.rotate", ObjectType: "apikey", ObjectID: keyID.String(), Before: before, After: out,
		})
	})
	if err := s.synced(ctx, err); err != nil {
		return APIKey{}, "", fmt.Errorf("rotate api key %s: %w", keyID, err)
	}
	return out, secret, nil
}

// apiKeyEntry is what AuthenticateAPIKey caches of a key, with its creator's
// state and current role in the key's organization.
type apiKeyEntry struct {
	ID             uuid.UUID
	OrganizationID uuid.UUID
	WorkspaceID    *uuid.UUID
	Role           string
	CreatedBy      uuid.UUID
	LastUsedAt     *time.Time
	ExpiresAt      *time.Time
	Email          string
	IsSuperadmin   bool
	CreatorRole    *string
}

// AuthenticateAPIKey returns the caller of an API key: its scope and role, and
// the creating user (for audit). Revoked and expired keys and keys of a
// disabled creator are refused. last_used_at is written at most once a minute
// per key.
//
// A key never acts with more than its creator may do now: its role is the
// lower of the key's role and the creator's current role in the key's
// organization (memberships, read in the same query). The query's answer is
// cached per replica until the key, its creator or the creator's membership
// changes (see app.Invalidator). A creator who is no
// longer a member makes the key invalid (401), also for keys that outlived a
// removal from before removals revoked keys (RevokeMemberAPIKeys). A creator
// who is a superadmin counts as owner, as superadmins do everywhere, so their
// keys keep the role they were given while they stay superadmin; once they
// lose it, their membership decides as for anybody.
func (s *Service) AuthenticateAPIKey(ctx context.Context, key string) (*app.Principal, error) {
	if !strings.HasPrefix(key, apiKeyPrefix) || len(key) != len(apiKeyPrefix)+apiKeyRandomLen {
		return nil, ErrInvalidAPIKey
	}
	now := s.now()
	hash := hashToken(key)
	cacheKey := string(hash)
	row, err := s.apiKeys.Load(ctx, cacheKey, func(ctx context.Context) (apiKeyEntry, []string, error) {
		var row apiKeyEntry
		res := s.db.WithContext(ctx).Raw(`
			SELECT k.id, k.organization_id, k.workspace_id, k.role, k.created_by, k.last_used_at, k.expires_at, u.email,
			       u.is_superadmin, m.role AS creator_role
			FROM api_keys k JOIN users u ON u.id = k.created_by
			LEFT JOIN memberships m ON m.organization_id = k.organization_id AND m.user_id = k.created_by
			WHERE k.key_hash = ? AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ?)
			  AND u.disabled_at IS NULL`, hash, now).Scan(&row)
		if res.Error != nil {
			return row, nil, fmt.Errorf("authenticate api key: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return row, nil, ErrInvalidAPIKey
		}
		return row, []string{
			app.TagAPIKey + row.ID.String(), app.TagUser + row.CreatedBy.String(),
			app.TagMember + row.OrganizationID.String() + ":" + row.CreatedBy.String(),
		}, nil
	})
	if err != nil {
		return nil, err
	}
	if row.ExpiresAt != nil && !row.ExpiresAt.After(now) {
		return nil, ErrInvalidAPIKey
	}
	role := row.Role
	if !row.IsSuperadmin {
		if row.CreatorRole == nil || !authz.ValidRole(*row.CreatorRole) {
			return nil, ErrInvalidAPIKey
		}
		if authz.RoleRank(*row.CreatorRole) < authz.RoleRank(role) {
			role = *row.CreatorRole
		}
	}
	if row.LastUsedAt == nil || now.Sub(*row.LastUsedAt) >= touchInterval {
		// The condition keeps concurrent requests on several replicas to one write.
		if err := s.db.WithContext(ctx).Model(&apiKeyRow{}).
			Where("id = ? AND (last_used_at IS NULL OR last_used_at <= ?)", row.ID, now.Add(-touchInterval)).
			Update("last_used_at", now).Error; err != nil {
			s.logger.WarnContext(ctx, "record api key use", "api_key_id", row.ID, "error", err)
		} else {
			touched := row
			touched.LastUsedAt = &now
			s.apiKeys.Replace(cacheKey, touched)
		}
	}
	p := &app.Principal{
		UserID: row.CreatedBy,
		Email:  row.Email,
		APIKey: &app.APIKeyScope{ID: row.ID, OrgID: row.OrganizationID, WorkspaceID: derefUUID(row.WorkspaceID), Role: role},
	}
	p.RecheckFunc = func(ctx context.Context) (*app.Principal, error) { return s.AuthenticateAPIKey(ctx, key) }
	return p, nil
}

// RevokeMemberAPIKeys revokes, in tx, every unrevoked key that userID created
// in the organization, with an apikey.revoke audit row each. The orgs module
// calls it in the transaction that removes the member, so the keys stop working
// when the membership ends.
func (s *Service) RevokeMemberAPIKeys(ctx context.Context, tx *gorm.DB, orgID, userID uuid.UUID) error {
	var rows []apiKeyRow
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
		Where("organization_id = ? AND created_by = ? AND revoked_at IS NULL", orgID, userID).
		Order("created_at, id").Find(&rows).Error
	if err != nil {
		return fmt.Errorf("revoke api keys of user %s in organization %s: %w", userID, orgID, err)
	}
	now := s.now()
	for _, row := range rows {
		before := row.apiKey()
		row.RevokedAt = &now
		if err := tx.Model(&apiKeyRow{}).Where("id = ?", row.ID).Update("revoked_at", now).Error; err != nil {
			return fmt.Errorf("revoke api key %s: %w", row.ID, err)
		}
		if err := app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: derefUUID(row.WorkspaceID),
			Action: "apikey.revoke", ObjectType: "apikey", ObjectID: row.ID.String(), Before: before, After: row.apiKey(),
		}); err != nil {
			return err
		}
	}
	return nil
}
