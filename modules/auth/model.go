package auth

import (
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// The GORM rows of the auth tables (migrations 00002 and 00004). They stay
// inside the package: callers get User and APIKey, which carry no hashes and
// marshal timestamps as app.Time.

type userRow struct {
	ID                uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Email             string
	Name              string
	PasswordHash      string
	IsSuperadmin      bool
	EmailCodeRequired bool
	DisabledAt        *time.Time
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

func (userRow) TableName() string { return "users" }

// Session kinds.
const (
	sessionAPI = "api" // a refresh-token family
	sessionWeb = "web" // an admin cookie session
)

type sessionRow struct {
	ID            uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	UserID        uuid.UUID `gorm:"type:uuid"`
	Kind          string
	TokenHash     []byte
	CSRFToken     string `gorm:"column:csrf_token"`
	IP            string `gorm:"column:ip"`
	UserAgent     string
	CreatedAt     time.Time
	LastUsedAt    time.Time
	ExpiresAt     time.Time
	RevokedAt     *time.Time
	RevokedReason string
	// EmailCodeVerified: the session was started with an emailed one-time code.
	EmailCodeVerified bool
}

func (sessionRow) TableName() string { return "auth_sessions" }

type refreshTokenRow struct {
	ID        uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	SessionID uuid.UUID `gorm:"type:uuid"`
	TokenHash []byte
	UsedAt    *time.Time
	CreatedAt time.Time
	ExpiresAt time.Time
}

func (refreshTokenRow) TableName() string { return "refresh_tokens" }

type loginCodeRow struct {
	ID        uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	UserID    uuid.UUID `gorm:"type:uuid"`
	CodeHash  []byte
	Attempts  int
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    *time.Time
}

func (loginCodeRow) TableName() string { return "login_codes" }

type loginAttemptRow struct {
	ID        int64 `gorm:"primaryKey"`
	Email     string
	IP        string `gorm:"column:ip"`
	Success   bool
	CreatedAt time.Time
}

func (loginAttemptRow) TableName() string { return "login_attempts" }

type apiKeyRow struct {
	ID             uuid.UUID  `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	OrganizationID uuid.UUID  `gorm:"type:uuid"`
	WorkspaceID    *uuid.UUID `gorm:"type:uuid"`
	Name           string
	Prefix         string
	KeyHash        []byte
	Role           string
	CreatedBy      *uuid.UUID `gorm:"type:uuid"`
	CreatedAt      time.Time
	LastUsedAt     *time.Time
	ExpiresAt      *time.Time
	RevokedAt      *time.Time
}

func (apiKeyRow) TableName() string { return "api_keys" }

// User is an account as the API shows it.
type User struct {
	ID                uuid.UUID `json:"id"`
	Email             string    `json:"email"`
	Name              string    `json:"name"`
	IsSuperadmin      bool      `json:"is_superadmin"`
	EmailCodeRequired bool      `json:"email_code_required"`
	Disabled          bool      `json:"disabled"`
	DisabledAt        *app.Time `json:"disabled_at"`
	CreatedAt         app.Time  `json:"created_at"`
	UpdatedAt         app.Time  `json:"updated_at"`
}

func (r userRow) user() User {
	return User{
		ID:                r.ID,
		Email:             r.Email,
		Name:              r.Name,
		IsSuperadmin:      r.IsSuperadmin,
		EmailCodeRequired: r.EmailCodeRequired,
		Disabled:          r.DisabledAt != nil,
		DisabledAt:        app.TimePtr(r.DisabledAt),
		CreatedAt:         app.Time{Time: r.CreatedAt},
		UpdatedAt:         app.Time{Time: r.UpdatedAt},
	}
}

// APIKey is an API key as the API shows it: never its hash, never its secret.
type APIKey struct {
	ID             uuid.UUID  `json:"id"`
	OrganizationID uuid.UUID  `json:"organization_id"`
	WorkspaceID    *uuid.UUID `json:"workspace_id"`
	Name           string     `json:"name"`
	// Prefix is the secret's first characters, to tell keys apart.
	Prefix     string     `json:"prefix"`
	Role       string     `json:"role"`
	CreatedBy  *uuid.UUID `json:"created_by"`
	CreatedAt  app.Time   `json:"created_at"`
	LastUsedAt *app.Time  `json:"last_used_at"`
	ExpiresAt  *app.Time  `json:"expires_at"`
	RevokedAt  *app.Time  `json:"revoked_at"`
}

// APIKeyWithSecret is the answer to creating or rotating a key: the only time
// the secret is shown.
type APIKeyWithSecret struct {
	APIKey
	Key string `json:"key"`
}

func (r apiKeyRow) apiKey() APIKey {
	return APIKey{
		ID:             r.ID,
		OrganizationID: r.OrganizationID,
		WorkspaceID:    r.WorkspaceID,
		Name:           r.Name,
		Prefix:         r.Prefix,
		Role:           r.Role,
		CreatedBy:      r.CreatedBy,
		CreatedAt:      app.Time{Time: r.CreatedAt},
		LastUsedAt:     app.TimePtr(r.LastUsedAt),
		ExpiresAt:      app.TimePtr(r.ExpiresAt),
		RevokedAt:      app.TimePtr(r.RevokedAt),
	}
}

// TokenPair is the answer to a login or a refresh (docs/API.md, Authentication).
type TokenPair struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	// ExpiresIn is the access token's lifetime in seconds.
	ExpiresIn int    `json:"expires_in"`
	TokenType string `json:"token_type"`
}
