package auth

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// SessionCookie is the name of the admin session cookie.
const SessionCookie = "nxmesh_session"

// touchInterval is how stale last_used_at of an API key or admin session may
// get before a request refreshes it: one write per minute, not per request.
const touchInterval = time.Minute

// sessionEntry is what AuthenticateAccessToken caches of an access token:
// its verified claims and its API session's row.
type sessionEntry struct {
	UserID            uuid.UUID
	SessionID         uuid.UUID
	TokenExpiresAt    time.Time
	Email             string
	IsSuperadmin      bool
	EmailCodeVerified bool
	ExpiresAt         time.Time
}

// AuthenticateAccessToken returns the caller of an access JWT. Besides the
// signature and expiry, every request checks that the session is not revoked
// or expired and the user is not disabled, so logging out, refresh-token
// reuse and disabling a user take effect at once: the verified token and the
// answer of one indexed query are cached per replica, keyed by the token,
// until the session or the user changes (see app.Invalidator). Both expiries
// are checked on every request.
func (s *Service) AuthenticateAccessToken(ctx context.Context, token string) (*app.Principal, error) {
	row, err := s.sessions.Load(ctx, token, func(ctx context.Context) (sessionEntry, []string, error) {
		userID, sessionID, expires, err := parseAccessToken(s.jwtKey, token, s.now)
		if err != nil {
			return sessionEntry{}, nil, err
		}
		var row struct {
			Email             string
			IsSuperadmin      bool
			EmailCodeVerified bool
			ExpiresAt         time.Time
		}
		res := s.db.WithContext(ctx).Raw(`
			SELECT u.email, u.is_superadmin, s.email_code_verified, s.expires_at
			FROM auth_sessions s JOIN users u ON u.id = s.user_id
			WHERE s.id = ? AND s.user_id = ? AND s.kind = ? AND s.revoked_at IS NULL
			  AND s.expires_at > ? AND u.disabled_at IS NULL`,
			sessionID, userID, sessionAPI, s.now()).Scan(&row)
		if res.Error != nil {
			return sessionEntry{}, nil, fmt.Errorf("authenticate access token: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return sessionEntry{}, nil, ErrInvalidToken
		}
		return sessionEntry{
			UserID: userID, SessionID: sessionID, TokenExpiresAt: expires,
			Email: row.Email, IsSuperadmin: row.IsSuperadmin, EmailCodeVerified: row.EmailCodeVerified, ExpiresAt: row.ExpiresAt,
		}, []string{app.TagSession + sessionID.String(), app.TagUser + userID.String()}, nil
	})
	if err != nil {
		return nil, err
	}
	if now := s.now(); !row.ExpiresAt.After(now) || !row.TokenExpiresAt.After(now) {
		return nil, ErrInvalidToken
	}
	return &app.Principal{
		UserID: row.UserID, Email: row.Email, Superadmin: row.IsSuperadmin, SessionID: row.SessionID,
		EmailCodeVerified: row.EmailCodeVerified,
		RecheckFunc:       func(ctx context.Context) (*app.Principal, error) { return s.AuthenticateAccessToken(ctx, token) },
	}, nil
}

// CreateWebSession starts an admin session for the user after VerifyPassword
// and returns the cookie value and the session's CSRF token. Only the cookie
// value's hash is stored. It counts as the account's successful login.
func (s *Service) CreateWebSession(ctx context.Context, userID uuid.UUID, ip, userAgent string) (token string, csrf string, err error) {
	return s.createWebSession(ctx, userID, ip, userAgent, false)
}

// CreateEmailCodeWebSession is CreateWebSession after VerifyEmailCode: the
// session counts as confirmed with an emailed code, which organizations with
// require_email_code ask for.
func (s *Service) CreateEmailCodeWebSession(ctx context.Context, userID uuid.UUID, ip, userAgent string) (token string, csrf string, err error) {
	return s.createWebSession(ctx, userID, ip, userAgent, true)
}

func (s *Service) createWebSession(ctx context.Context, userID uuid.UUID, ip, userAgent string, emailCode bool) (token string, csrf string, err error) {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return "", "", fmt.Errorf("create web session: %w", err)
	}
	if u.Disabled {
		return "", "", fmt.Errorf("create web session: %w", ErrUserDisabled)
	}
	token, hash, err := newOpaqueToken()
	if err != nil {
		return "", "", err
	}
	if csrf, _, err = newOpaqueToken(); err != nil {
		return "", "", err
	}
	now := s.now()
	sess := sessionRow{
		ID:         uuid.New(),
		UserID:     userID,
		Kind:       sessionWeb,
		TokenHash:  hash,
		CSRFToken:  csrf,
		IP:         ip,
		UserAgent:  truncate(userAgent, 512),
		CreatedAt:  now,
		LastUsedAt: now,
		ExpiresAt:  now.Add(s.cfg.RefreshTokenTTL),

		EmailCodeVerified: emailCode,
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&sess).Error; err != nil {
			return err
		}
		s.recordAttempt(ctx, tx, u.Email, ip, true)
		return nil
	})
	if err != nil {
		return "", "", fmt.Errorf("create web session: %w", err)
	}
	return token, csrf, nil
}

// WebSessionTTL is how long an admin session lasts (auth.refresh_token_ttl),
// for the cookie's expiry.
func (s *Service) WebSessionTTL() time.Duration { return s.cfg.RefreshTokenTTL }

// RevokeWebSession ends the admin session whose cookie value is token. An
// unknown token is not an error.
func (s *Service) RevokeWebSession(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	err := s.db.WithContext(ctx).Model(&sessionRow{}).
		Where("token_hash = ? AND kind = ? AND revoked_at IS NULL", hashToken(token), sessionWeb).
		Updates(map[string]any{"revoked_at": s.now(), "revoked_reason": "logout"}).Error
	if err := s.synced(ctx, err); err != nil {
		return fmt.Errorf("revoke web session: %w", err)
	}
	return nil
}

// webSessionEntry is what AuthenticateWebSession caches of an admin session.
type webSessionEntry struct {
	ID           uuid.UUID
	UserID       uuid.UUID
	CSRFToken    string `gorm:"column:csrf_token"`
	LastUsedAt   time.Time
	ExpiresAt    time.Time
	Email        string
	IsSuperadmin bool

	EmailCodeVerified bool
}

// AuthenticateWebSession returns the caller of an admin session cookie value,
// with the session's CSRF token. The session's row is cached per replica
// until the session or its user changes (see app.Invalidator).
func (s *Service) AuthenticateWebSession(ctx context.Context, token string) (*app.Principal, error) {
	now := s.now()
	hash := hashToken(token)
	key := string(hash)
	row, err := s.webs.Load(ctx, key, func(ctx context.Context) (webSessionEntry, []string, error) {
		var row webSessionEntry
		res := s.db.WithContext(ctx).Raw(`
			SELECT s.id, s.user_id, s.csrf_token, s.last_used_at, s.expires_at, u.email, u.is_superadmin, s.email_code_verified
			FROM auth_sessions s JOIN users u ON u.id = s.user_id
			WHERE s.token_hash = ? AND s.kind = ? AND s.revoked_at IS NULL
			  AND s.expires_at > ? AND u.disabled_at IS NULL`,
			hash, sessionWeb, now).Scan(&row)
		if res.Error != nil {
			return row, nil, fmt.Errorf("authenticate web session: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return row, nil, ErrInvalidSession
		}
		return row, []string{app.TagSession + row.ID.String(), app.TagUser + row.UserID.String()}, nil
	})
	if err != nil {
		return nil, err
	}
	if !row.ExpiresAt.After(now) {
		return nil, ErrInvalidSession
	}
	if now.Sub(row.LastUsedAt) >= touchInterval {
		if err := s.db.WithContext(ctx).Model(&sessionRow{}).Where("id = ?", row.ID).
			Update("last_used_at", now).Error; err != nil {
			s.logger.WarnContext(ctx, "record session use", "session_id", row.ID, "error", err)
		} else {
			touched := row
			touched.LastUsedAt = now
			s.webs.Replace(key, touched)
		}
	}
	return &app.Principal{
		UserID: row.UserID, Email: row.Email, Superadmin: row.IsSuperadmin,
		SessionID: row.ID, CSRFToken: row.CSRFToken, EmailCodeVerified: row.EmailCodeVerified,
		RecheckFunc: func(ctx context.Context) (*app.Principal, error) { return s.AuthenticateWebSession(ctx, token) },
	}, nil
}

// acceptsQueryToken reports whether path takes the credential in ?token= as
// well: the live-event paths, since browsers cannot set headers on a WebSocket
// or an EventSource.
func acceptsQueryToken(path string) bool {
	return path == "/v1/events" || path == "/v1/events/stream"
}

// authenticateAPI returns the caller of an API request: an API key in X-API-Key
// or as a Bearer value starting with "nxm_", otherwise a Bearer access JWT; on
// the live-event paths only, also either of them in the token query parameter.
// No credential gives nil, nil.
func (s *Service) authenticateAPI(c *fiber.Ctx) (*app.Principal, error) {
	ctx := c.UserContext()
	if key := strings.TrimSpace(c.Get("X-API-Key")); key != "" {
		return s.AuthenticateAPIKey(ctx, key)
	}
	var token string
	if h := strings.TrimSpace(c.Get(fiber.HeaderAuthorization)); h != "" {
		scheme, t, _ := strings.Cut(h, " ")
		token = strings.TrimSpace(t)
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			return nil, ErrInvalidToken
		}
	} else if acceptsQueryToken(c.Path()) {
		token = strings.TrimSpace(c.Query("token"))
	}
	if token == "" {
		return nil, nil
	}
	return s.AuthenticateToken(ctx, token)
}

// AuthenticateToken returns the caller of a bearer value: an API key
// ("nxm_…") or an access JWT. Sockets that receive their credential in a
// message (app.Router.Socket, through Wiring.AuthenticateToken) use it.
func (s *Service) AuthenticateToken(ctx context.Context, token string) (*app.Principal, error) {
	if strings.HasPrefix(token, apiKeyPrefix) {
		return s.AuthenticateAPIKey(ctx, token)
	}
	return s.AuthenticateAccessToken(ctx, token)
}

// authenticateUI returns the caller of an admin request from its session
// cookie; no cookie gives nil, nil.
func (s *Service) authenticateUI(c *fiber.Ctx) (*app.Principal, error) {
	token := c.Cookies(SessionCookie)
	if token == "" {
		return nil, nil
	}
	return s.AuthenticateWebSession(c.UserContext(), token)
}
