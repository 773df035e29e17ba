package auth

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
)

// One-time login codes.
const (
	codeDigits      = 6
	codeTTL         = 5 * time.Minute
	codeMaxAttempts = 5
)

// Login throttling counts an attempt before any work is done for it:
//
//  1. reserveAttempt takes transaction-scoped advisory locks on the account
//     (lower-cased email) and on the client IP, so that concurrent attempts
//     for either, on any replica sharing the database, are counted one after
//     the other.
//  2. Under the locks it counts the failures in the login window (for the
//     account, those since its last successful login) and refuses with 429
//     and Retry-After when a budget is used up; a refused attempt is not
//     recorded and costs no password hash.
//  3. Otherwise it stores the attempt as a failure and commits: from then on
//     it counts against both budgets while it is being evaluated.
//  4. Only then is the password hashed (in a hashing slot, see withHashSlot)
//     or the code checked. A wrong guess keeps its failure row; a correct one
//     removes it (releaseAttempt), and the session it leads to records the
//     success that resets the account's count.
//
// So N parallel guesses against one account evaluate at most
// auth.login_attempts_per_account of them, and likewise per IP.
const (
	lockLoginAccount = "nxmesh.auth.login.account"
	lockLoginIP      = "nxmesh.auth.login.ip"
)

// reserveAttempt counts a login step for email and ip (see above) and returns
// the id of its failure row, or a 429 when the account or the IP has used up
// its failed attempts within the login window. Retry-After is when the oldest
// counted failure leaves the window.
func (s *Service) reserveAttempt(ctx context.Context, email, ip string) (int64, error) {
	now := s.now()
	since := now.Add(-s.cfg.LoginWindow)
	var (
		id    int64
		until time.Time
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Always the account before the IP, so two attempts never wait on each
		// other's second lock.
		for _, l := range []struct {
			name, key string
			limit     int
		}{{lockLoginAccount, email, s.cfg.LoginAttemptsPerAccount}, {lockLoginIP, ip, s.cfg.LoginAttemptsPerIP}} {
			if l.key == "" || l.limit <= 0 {
				continue
			}
			if err := tx.Exec(`SELECT pg_advisory_xact_lock(hashtext(?), hashtext(?))`, l.name, l.key).Error; err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		check := func(limit int, query string, args ...any) error {
			if limit <= 0 {
				return nil
			}
			var t time.Time
			err := tx.Raw(query, append(args, limit-1)...).Row().Scan(&t)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return nil
			case err != nil:
				return fmt.Errorf("count failures: %w", err)
			}
			if end := t.Add(s.cfg.LoginWindow); end.After(until) {
				until = end
			}
			return nil
		}
		if email != "" {
			if err := check(s.cfg.LoginAttemptsPerAccount, `
				SELECT created_at FROM login_attempts
				WHERE lower(email) = ? AND NOT success AND created_at > ?
				  AND created_at > coalesce((SELECT max(created_at) FROM login_attempts WHERE lower(email) = ? AND success), '-infinity')
				ORDER BY created_at DESC OFFSET ? LIMIT 1`, email, since, email); err != nil {
				return err
			}
		}
		if ip != "" {
			if err := check(s.cfg.LoginAttemptsPerIP, `
				SELECT created_at FROM login_attempts
				WHERE ip = ? AND NOT success AND created_at > ?
				ORDER BY created_at DESC OFFSET ? LIMIT 1`, ip, since); err != nil {
				return err
			}
		}
		if !until.IsZero() {
			return nil
		}
		row := loginAttemptRow{Email: email, IP: ip, Success: false, CreatedAt: now}
		if err := tx.Create(&row).Error; err != nil {
			return fmt.Errorf("record: %w", err)
		}
		id = row.ID
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count login attempt: %w", err)
	}
	if !until.IsZero() {
		return 0, app.RateLimited(max(int(math.Ceil(until.Sub(now).Seconds())), 1))
	}
	return id, nil
}

// releaseAttempt removes the failure row of an attempt that turned out not to
// be a failed guess (a correct password or code, or one never evaluated). It
// runs even when the request is gone. A failure to remove it is logged: it only
// costs the account one attempt.
func (s *Service) releaseAttempt(ctx context.Context, id int64) {
	ctx = context.WithoutCancel(ctx)
	if err := s.db.WithContext(ctx).Delete(&loginAttemptRow{}, "id = ?", id).Error; err != nil {
		s.logger.ErrorContext(ctx, "release login attempt", "error", err)
	}
}

// recordAttempt stores a successful login step, which resets the account's
// count. A failure to record is logged, not returned.
func (s *Service) recordAttempt(ctx context.Context, db *gorm.DB, email, ip string, success bool) {
	row := loginAttemptRow{Email: email, IP: ip, Success: success, CreatedAt: s.now()}
	if err := db.WithContext(ctx).Create(&row).Error; err != nil {
		s.logger.ErrorContext(ctx, "record login attempt", "error", err)
	}
}

// VerifyPassword checks email and password, throttled per account and per IP
// (429; the attempt is counted before the password is hashed). A wrong
// password and an unknown email both give ErrInvalidCredentials after the same
// amount of work; a disabled account gives ErrUserDisabled. When no hashing
// slot frees up in time it gives ErrPasswordHashingBusy (503), and the attempt
// does not count. It does not check whether the user must also confirm an
// emailed code (see EmailCodeRequired) and starts no session.
func (s *Service) VerifyPassword(ctx context.Context, email, password, ip string) (User, error) {
	email = normalizeEmail(email)
	v := &app.Validator{}
	checkLoginEmail(v, email)
	v.Check(password != "", "password", app.FieldRequired, "is required")
	if err := v.Err(); err != nil {
		return User{}, err
	}
	attempt, err := s.reserveAttempt(ctx, email, ip)
	if err != nil {
		return User{}, err
	}
	var row userRow
	err = s.db.WithContext(ctx).Where("lower(email) = ?", email).Take(&row).Error
	found := err == nil
	if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
		s.releaseAttempt(ctx, attempt)
		return User{}, fmt.Errorf("verify password: find user: %w", err)
	}
	hash := row.PasswordHash
	if !found {
		hash = s.dummyHash()
	}
	var ok bool
	if err := s.withHashSlot(ctx, func() { ok, err = checkPassword(hash, password) }); err != nil {
		s.releaseAttempt(ctx, attempt)
		return User{}, fmt.Errorf("verify password: %w", err)
	}
	if err != nil {
		s.logger.ErrorContext(ctx, "stored password hash is malformed", "user_id", row.ID, "error", err)
		ok = false
	}
	if !found || !ok {
		return User{}, ErrInvalidCredentials
	}
	if row.DisabledAt != nil {
		return User{}, ErrUserDisabled
	}
	s.releaseAttempt(ctx, attempt)
	return row.user(), nil
}

// checkLoginEmail requires an email of plausible length. Its format is not
// checked: any other string is simply an unknown account.
func checkLoginEmail(v *app.Validator, email string) {
	if v.Check(email != "", "email", app.FieldRequired, "is required") {
		v.Check(len(email) <= maxEmailLen, "email", app.FieldTooLong, fmt.Sprintf("must be at most %d characters", maxEmailLen))
	}
}

// EmailCodeRequired reports whether u must confirm an emailed one-time code to
// sign in at all: because auth.require_email_code is set or because the user is
// marked so.
//
// An organization's require_email_code does not count here: one organization's
// policy must not change how its members sign in to the master and to their
// other organizations (nor lock them out when mail is down). Such an
// organization admits only sessions confirmed with an emailed code instead
// (app.Principal.EmailCodeVerified, checked by the orgs module's Role).
func (s *Service) EmailCodeRequired(_ context.Context, u User) (bool, error) {
	return s.cfg.RequireEmailCode || u.EmailCodeRequired, nil
}

// LoginParams are the credentials of a password login.
type LoginParams struct {
	Email     string
	Password  string
	IP        string
	UserAgent string
}

// Login signs in with email and password and returns an access and a refresh
// token. Users who must confirm an emailed code get ErrEmailCodeRequired and
// nothing is sent: they use LoginInit and LoginVerify.
func (s *Service) Login(ctx context.Context, p LoginParams) (TokenPair, error) {
	u, err := s.VerifyPassword(ctx, p.Email, p.Password, p.IP)
	if err != nil {
		return TokenPair{}, fmt.Errorf("login: %w", err)
	}
	required, err := s.EmailCodeRequired(ctx, u)
	if err != nil {
		return TokenPair{}, fmt.Errorf("login: %w", err)
	}
	if required {
		return TokenPair{}, fmt.Errorf("login: %w", ErrEmailCodeRequired)
	}
	return s.issueTokens(ctx, u, p.IP, p.UserAgent, false)
}

// LoginInit is the first step of the two-step login: it checks the password
// and emails a one-time code. It returns the masked address the code went to.
func (s *Service) LoginInit(ctx context.Context, p LoginParams) (maskedEmail string, err error) {
	u, err := s.VerifyPassword(ctx, p.Email, p.Password, p.IP)
	if err != nil {
		return "", fmt.Errorf("login init: %w", err)
	}
	return s.StartEmailCode(ctx, u)
}

// LoginVerifyParams are the second step of the two-step login.
type LoginVerifyParams struct {
	Email     string
	Code      string
	IP        string
	UserAgent string
}

// LoginVerify is the second step of the two-step login: it checks the emailed
// code and returns an access and a refresh token of a session marked as
// confirmed with an emailed code (amr "otp").
func (s *Service) LoginVerify(ctx context.Context, p LoginVerifyParams) (TokenPair, error) {
	u, err := s.VerifyEmailCode(ctx, p.Email, p.Code, p.IP)
	if err != nil {
		return TokenPair{}, fmt.Errorf("login verify: %w", err)
	}
	return s.issueTokens(ctx, u, p.IP, p.UserAgent, true)
}

// StartEmailCode emails u a new one-time code (6 digits, valid 5 minutes,
// single use, 5 attempts) and returns the masked address. Earlier unused codes
// of u stop working. Call it only after VerifyPassword succeeded for u.
func (s *Service) StartEmailCode(ctx context.Context, u User) (maskedEmail string, err error) {
	code, err := randomDigits(codeDigits)
	if err != nil {
		return "", err
	}
	now := s.now()
	row := loginCodeRow{
		ID:        uuid.New(),
		UserID:    u.ID,
		CodeHash:  codeMAC(s.jwtKey, u.ID, code),
		CreatedAt: now,
		ExpiresAt: now.Add(codeTTL),
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&loginCodeRow{}).Where("user_id = ? AND used_at IS NULL", u.ID).
			Update("used_at", now).Error; err != nil {
			return err
		}
		return tx.Create(&row).Error
	})
	if err != nil {
		return "", fmt.Errorf("store login code of user %s: %w", u.ID, err)
	}
	body := fmt.Sprintf("Your NxMesh sign-in code is %s\n\n"+
		"It expires in %d minutes and works once.\n"+
		"If you did not try to sign in, someone knows your password: change it.\n",
		code, int(codeTTL/time.Minute))
	if err := s.mailer.Send(ctx, u.Email, "Your NxMesh sign-in code", body); err != nil {
		s.logger.ErrorContext(ctx, "send login code", "user_id", u.ID, "error", err)
		if derr := s.db.WithContext(ctx).Delete(&loginCodeRow{}, "id = ?", row.ID).Error; derr != nil {
			s.logger.ErrorContext(ctx, "delete unsent login code", "error", derr)
		}
		return "", ErrMailUnavailable
	}
	return MaskEmail(u.Email), nil
}

// VerifyEmailCode checks the one-time code last sent to email, throttled like
// VerifyPassword. A wrong code counts against the code (5 attempts) and against
// the account and IP; any failure gives ErrInvalidCode.
func (s *Service) VerifyEmailCode(ctx context.Context, email, code, ip string) (User, error) {
	email = normalizeEmail(email)
	code = strings.TrimSpace(code)
	v := &app.Validator{}
	checkLoginEmail(v, email)
	v.Check(code != "", "code", app.FieldRequired, "is required")
	if err := v.Err(); err != nil {
		return User{}, err
	}
	attempt, err := s.reserveAttempt(ctx, email, ip)
	if err != nil {
		return User{}, err
	}
	now := s.now()
	var (
		user userRow
		ok   bool
	)
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		err := tx.Where("lower(email) = ?", email).Take(&user).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var lc loginCodeRow
		err = tx.Clauses(clause.Locking{Strength: "UPDATE"}).
			Where("user_id = ? AND used_at IS NULL AND expires_at > ? AND attempts < ?", user.ID, now, codeMaxAttempts).
			Order("created_at DESC").Take(&lc).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare(codeMAC(s.jwtKey, user.ID, code), lc.CodeHash) != 1 {
			return tx.Model(&lc).Update("attempts", gorm.Expr("attempts + 1")).Error
		}
		ok = true
		return tx.Model(&lc).Update("used_at", now).Error
	})
	if err != nil {
		s.releaseAttempt(ctx, attempt)
		return User{}, fmt.Errorf("verify login code: %w", err)
	}
	if !ok {
		return User{}, ErrInvalidCode
	}
	s.releaseAttempt(ctx, attempt)
	if user.DisabledAt != nil {
		return User{}, ErrUserDisabled
	}
	return user.user(), nil
}

// MaskEmail shows enough of an address to recognize it: "a***e@example.com".
func MaskEmail(email string) string {
	local, domain, ok := strings.Cut(email, "@")
	if !ok {
		return "***"
	}
	r := []rune(local)
	switch len(r) {
	case 0:
		return "***@" + domain
	case 1, 2:
		return string(r[0]) + "***@" + domain
	}
	return string(r[0]) + "***" + string(r[len(r)-1]) + "@" + domain
}

// issueTokens starts a refresh-token session for u and returns its first
// access and refresh tokens; emailCode marks the session as confirmed with an
// emailed one-time code. It counts as the account's successful login.
func (s *Service) issueTokens(ctx context.Context, u User, ip, userAgent string, emailCode bool) (TokenPair, error) {
	now := s.now()
	refresh, hash, err := newOpaqueToken()
	if err != nil {
		return TokenPair{}, err
	}
	sess := sessionRow{
		ID:         uuid.New(),
		UserID:     u.ID,
		Kind:       sessionAPI,
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
		if err := tx.Create(&refreshTokenRow{
			ID: uuid.New(), SessionID: sess.ID, TokenHash: hash, CreatedAt: now, ExpiresAt: sess.ExpiresAt,
		}).Error; err != nil {
			return err
		}
		s.recordAttempt(ctx, tx, u.Email, ip, true)
		return nil
	})
	if err != nil {
		return TokenPair{}, fmt.Errorf("start session of user %s: %w", u.ID, err)
	}
	return s.tokenPair(u.ID, sess.ID, emailCode, refresh, now)
}

func (s *Service) tokenPair(userID, sessionID uuid.UUID, emailCode bool, refresh string, now time.Time) (TokenPair, error) {
	access, err := signAccessToken(s.jwtKey, userID, sessionID, emailCode, now, s.cfg.AccessTokenTTL)
	if err != nil {
		return TokenPair{}, err
	}
	return TokenPair{
		AccessToken:  access,
		RefreshToken: refresh,
		ExpiresIn:    int(s.cfg.AccessTokenTTL / time.Second),
		TokenType:    "Bearer",
	}, nil
}

// Refresh exchanges a refresh token for a new access token and a new refresh
// token; the presented one is used up. Presenting a used refresh token again
// means it was copied: the whole session (every refresh token and access
// token of the family) is revoked and the answer is ErrInvalidRefreshToken.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (TokenPair, error) {
	if strings.TrimSpace(refreshToken) == "" {
		return TokenPair{}, app.Invalid("refresh_token", app.FieldRequired, "is required")
	}
	now := s.now()
	next, nextHash, err := newOpaqueToken()
	if err != nil {
		return TokenPair{}, err
	}
	var (
		userID, sessionID uuid.UUID
		emailCode         bool
		outcome           error
	)
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rt refreshTokenRow
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("token_hash = ?", hashToken(refreshToken)).Take(&rt).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			outcome = ErrInvalidRefreshToken
			return nil
		}
		if err != nil {
			return err
		}
		var st struct {
			UserID            uuid.UUID
			ExpiresAt         time.Time
			RevokedAt         *time.Time
			DisabledAt        *time.Time
			EmailCodeVerified bool
		}
		if err := tx.Raw(`
			SELECT s.user_id, s.expires_at, s.revoked_at, u.disabled_at, s.email_code_verified
			FROM auth_sessions s JOIN users u ON u.id = s.user_id
			WHERE s.id = ? FOR UPDATE OF s`, rt.SessionID).Scan(&st).Error; err != nil {
			return err
		}
		if rt.UsedAt != nil {
			outcome = ErrInvalidRefreshToken
			if st.RevokedAt == nil {
				s.logger.WarnContext(ctx, "refresh token reused; revoking its session", "session_id", rt.SessionID, "user_id", st.UserID)
				return tx.Model(&sessionRow{}).Where("id = ?", rt.SessionID).
					Updates(map[string]any{"revoked_at": now, "revoked_reason": "refresh_token_reuse"}).Error
			}
			return nil
		}
		if st.RevokedAt != nil || st.DisabledAt != nil || !st.ExpiresAt.After(now) || !rt.ExpiresAt.After(now) {
			outcome = ErrInvalidRefreshToken
			return nil
		}
		expires := now.Add(s.cfg.RefreshTokenTTL)
		if err := tx.Model(&rt).Update("used_at", now).Error; err != nil {
			return err
		}
		if err := tx.Create(&refreshTokenRow{
			ID: uuid.New(), SessionID: rt.SessionID, TokenHash: nextHash, CreatedAt: now, ExpiresAt: expires,
		}).Error; err != nil {
			return err
		}
		if err := tx.Model(&sessionRow{}).Where("id = ?", rt.SessionID).
			Updates(map[string]any{"last_used_at": now, "expires_at": expires}).Error; err != nil {
			return err
		}
		userID, sessionID, emailCode = st.UserID, rt.SessionID, st.EmailCodeVerified
		return nil
	})
	if err := s.synced(ctx, err); err != nil {
		return TokenPair{}, fmt.Errorf("refresh: %w", err)
	}
	if outcome != nil {
		return TokenPair{}, fmt.Errorf("refresh: %w", outcome)
	}
	return s.tokenPair(userID, sessionID, emailCode, next, now)
}

// Logout ends the caller's session: every access token and refresh token issued
// from it stops working. A refresh token, when given, ends its session too if it
// belongs to the caller. API key callers have no session to end.
func (s *Service) Logout(ctx context.Context, p *app.Principal, refreshToken string) error {
	if p == nil || p.APIKey != nil {
		return nil
	}
	now := s.now()
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		ids := []uuid.UUID{}
		if p.SessionID != uuid.Nil {
			ids = append(ids, p.SessionID)
		}
		if refreshToken != "" {
			var sid uuid.UUID
			err := tx.Raw(`SELECT session_id FROM refresh_tokens WHERE token_hash = ?`, hashToken(refreshToken)).Row().Scan(&sid)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if err == nil {
				ids = append(ids, sid)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		return tx.Model(&sessionRow{}).Where("id IN ? AND user_id = ? AND revoked_at IS NULL", ids, p.UserID).
			Updates(map[string]any{"revoked_at": now, "revoked_reason": "logout"}).Error
	})
	if err := s.synced(ctx, err); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
