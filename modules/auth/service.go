package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
)

// DefaultAdminEmail is the first superadmin's email when admin.email is empty.
const DefaultAdminEmail = "admin@localhost"

// Limits of user input.
const (
	maxNameLen  = 100
	maxEmailLen = 254
	// generatedPasswordLen is the length of a generated first-admin password.
	generatedPasswordLen = 20
)

// Service holds the auth domain logic: users, passwords, the emailed second
// factor, refresh-token sessions, admin cookie sessions, API keys and login
// throttling. The API handlers and the admin pages call the same methods.
type Service struct {
	db     *gorm.DB
	cfg    app.AuthConfig
	jwtKey []byte
	mailer *Mailer
	logger *slog.Logger
	argon  argonParams

	dummyOnce sync.Once
	dummy     string

	// hashSlots holds one token per password hash in progress (see withHashSlot).
	hashSlots chan struct{}
	// hashWait is how long a caller waits for a hashing slot (hashSlotWait).
	hashWait time.Duration
	// hashHook, when set (tests), observes each hash: it counts what runs at once.
	hashHook func(hashEvent)

	// clock is d.Clock; tests move time through app.Deps.Clock.
	clock app.Clock

	// inval keeps the credential caches consistent on every replica; the
	// methods that revoke call its Sync after their transaction commits.
	inval    *app.Invalidator
	sessions *app.Cache[sessionEntry]
	webs     *app.Cache[webSessionEntry]
	apiKeys  *app.Cache[apiKeyEntry]
}

// NewService returns the auth service over d's database and secrets. Zero
// durations and limits in d.Config.Auth take app.DefaultConfig's values. The
// auth module uses no other module, so opts is empty.
func NewService(d app.Deps, _ Options) *Service {
	cfg := d.Config.Auth
	def := app.DefaultConfig().Auth
	if cfg.AccessTokenTTL <= 0 {
		cfg.AccessTokenTTL = def.AccessTokenTTL
	}
	if cfg.RefreshTokenTTL <= 0 {
		cfg.RefreshTokenTTL = def.RefreshTokenTTL
	}
	if cfg.LoginWindow <= 0 {
		cfg.LoginWindow = def.LoginWindow
	}
	s := &Service{
		db:     d.DB,
		cfg:    cfg,
		jwtKey: d.Secrets.JWTKey,
		mailer: NewMailer(d.Config.SMTP),
		logger: d.Logger.With("module", "auth"),
		argon:  owaspArgon2id,
		clock:  d.Clock,

		hashSlots: make(chan struct{}, hashSlotsFor(cfg.PasswordHashConcurrency)),
		hashWait:  hashSlotWait,

		inval:    d.Invalidator,
		sessions: app.NewCache[sessionEntry](d.Invalidator, 0),
		webs:     app.NewCache[webSessionEntry](d.Invalidator, 0),
		apiKeys:  app.NewCache[apiKeyEntry](d.Invalidator, 0),
	}
	// Computed now, so that not even the first unknown email answers faster.
	s.dummyHash()
	return s
}

// synced returns err; after a committed change (err nil) it first waits until
// this replica's credential caches have seen it (Invalidator.Sync).
func (s *Service) synced(ctx context.Context, err error) error {
	if err == nil {
		s.inval.Sync(ctx)
	}
	return err
}

// now is the service clock in UTC at PostgreSQL's precision.
func (s *Service) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }

// dummyHash is compared against when an email is unknown, so that a login takes
// as long as with a known email.
func (s *Service) dummyHash() string {
	s.dummyOnce.Do(func() {
		pw, err := randomBase62(24)
		if err == nil {
			s.dummy, err = hashPassword(pw, s.argon)
		}
		if err != nil {
			s.logger.Error("create dummy password hash", "error", err)
			s.dummy = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
		}
	})
	return s.dummy
}

func normalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// validEmail accepts a bare address (local@domain) as RFC 5322 parses it.
func validEmail(e string) bool {
	if e == "" || len(e) > maxEmailLen || strings.ContainsAny(e, " \t\r\n<>") {
		return false
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return false
	}
	local, domain, ok := strings.Cut(e, "@")
	return ok && local != "" && domain != "" && !strings.Contains(domain, "@")
}

func checkName(v *app.Validator, field, name string) {
	v.Check(utf8.RuneCountInString(name) <= maxNameLen, field, app.FieldTooLong,
		fmt.Sprintf("must be at most %d characters", maxNameLen))
}

// CreateUserParams describes a new account.
type CreateUserParams struct {
	Email    string
	Password string
	Name     string
	// Superadmin may manage users and acts as owner of every organization.
	Superadmin bool
}

// prepare validates p, normalizes the email and hashes the password.
func (s *Service) prepareUser(ctx context.Context, p CreateUserParams) (userRow, error) {
	email := normalizeEmail(p.Email)
	name := strings.TrimSpace(p.Name)
	v := &app.Validator{}
	if v.Check(email != "", "email", app.FieldRequired, "is required") {
		v.Check(validEmail(email), "email", app.FieldInvalidFormat, "must be an email address")
	}
	checkPasswordPolicy(v, "password", p.Password, email)
	checkName(v, "name", name)
	if err := v.Err(); err != nil {
		return userRow{}, err
	}
	hash, err := s.newPasswordHash(ctx, p.Password)
	if err != nil {
		return userRow{}, fmt.Errorf("create user %q: %w", email, err)
	}
	now := s.now()
	return userRow{
		ID:           uuid.New(),
		Email:        email,
		Name:         name,
		PasswordHash: hash,
		IsSuperadmin: p.Superadmin,
		CreatedAt:    now,
		UpdatedAt:    now,
	}, nil
}

// insertUser stores row and its audit entry in tx.
func insertUser(ctx context.Context, tx *gorm.DB, row userRow) (User, error) {
	if err := tx.WithContext(ctx).Create(&row).Error; err != nil {
		if app.IsUniqueViolation(err) {
			return User{}, fmt.Errorf("create user %q: %w", row.Email, ErrEmailTaken)
		}
		return User{}, fmt.Errorf("create user %q: %w", row.Email, err)
	}
	u := row.user()
	if err := app.Audit(ctx, tx, app.AuditParams{Action: "user.create", ObjectType: "user", ObjectID: u.ID.String(), After: u}); err != nil {
		return User{}, err
	}
	return u, nil
}

// CreateUser creates an account. The email is lowercased and must be unique
// (ErrEmailTaken); the password must pass the password policy (see
// checkPasswordPolicy), or the answer is a validation error naming "password".
func (s *Service) CreateUser(ctx context.Context, p CreateUserParams) (User, error) {
	row, err := s.prepareUser(ctx, p)
	if err != nil {
		return User{}, err
	}
	var u User
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		u, err = insertUser(ctx, tx, row)
		return err
	})
	return u, err
}

// EnsureFirstAdmin creates the first superadmin when there are no users at all,
// from email and password, defaulting to admin@localhost and a generated
// 20-character password that is returned once (only its hash is stored). A
// given password must pass the password policy: a weak one is an error that
// names the configuration, so the master does not start. When users exist it
// does nothing. Concurrent calls from several replicas create
// at most one user: the check and the insert run under a transaction-scoped
// advisory lock.
func (s *Service) EnsureFirstAdmin(ctx context.Context, email, password string) (created bool, generatedPassword string, err error) {
	var exists bool
	if err := s.db.WithContext(ctx).Raw(`SELECT EXISTS (SELECT 1 FROM users)`).Scan(&exists).Error; err != nil {
		return false, "", fmt.Errorf("ensure first admin: count users: %w", err)
	}
	if exists {
		return false, "", nil
	}
	if strings.TrimSpace(email) == "" {
		email = DefaultAdminEmail
	}
	if password == "" {
		if generatedPassword, err = s.generatePassword(email); err != nil {
			return false, "", fmt.Errorf("ensure first admin: %w", err)
		}
		password = generatedPassword
	}
	row, err := s.prepareUser(ctx, CreateUserParams{Email: email, Password: password, Name: "Administrator", Superadmin: true})
	if errors.Is(err, app.ErrInvalid) {
		return false, "", fmt.Errorf("ensure first admin: the configured admin.email/admin.password "+
			"(NXMESH_ADMIN_EMAIL, NXMESH_ADMIN_PASSWORD) cannot be used; set a valid address and a stronger password, "+
			"or leave the password empty to have one generated: %w", err)
	}
	if err != nil {
		return false, "", fmt.Errorf("ensure first admin: %w", err)
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec(`SELECT pg_advisory_xact_lock(hashtext('nxmesh.auth.first_admin'))`).Error; err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if err := tx.Raw(`SELECT EXISTS (SELECT 1 FROM users)`).Scan(&exists).Error; err != nil {
			return fmt.Errorf("count users: %w", err)
		}
		if exists {
			return nil
		}
		if _, err := insertUser(ctx, tx, row); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return false, "", fmt.Errorf("ensure first admin: %w", err)
	}
	if !created {
		return false, "", nil
	}
	return true, generatedPassword, nil
}

// generatePassword returns a random password of generatedPasswordLen letters
// and digits that passes the password policy for email.
func (s *Service) generatePassword(email string) (string, error) {
	for {
		pw, err := randomBase62(generatedPasswordLen)
		if err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
		if _, _, weak := passwordWeakness(pw, email); !weak {
			return pw, nil
		}
	}
}

// GetUser returns the user with id.
func (s *Service) GetUser(ctx context.Context, id uuid.UUID) (User, error) {
	var row userRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return User{}, ErrUserNotFound
		}
		return User{}, fmt.Errorf("get user %s: %w", id, err)
	}
	return row.user(), nil
}

// UserByEmail returns the user with email (case-insensitive).
func (s *Service) UserByEmail(ctx context.Context, email string) (User, error) {
	var row userRow
	if err := s.db.WithContext(ctx).Where("lower(email) = ?", normalizeEmail(email)).Take(&row).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return User{}, ErrUserNotFound
		}
		return User{}, fmt.Errorf("get user by email: %w", err)
	}
	return row.user(), nil
}

// ListUsers returns a page of users, oldest first, and the total count.
func (s *Service) ListUsers(ctx context.Context, page app.Page) ([]User, int64, error) {
	db := s.db.WithContext(ctx)
	rows, total, err := app.FindPage[userRow](db.Model(&userRow{}), page, "created_at, id")
	if err != nil {
		return nil, 0, fmt.Errorf("list users: %w", err)
	}
	out := make([]User, len(rows))
	for i, r := range rows {
		out[i] = r.user()
	}
	return out, total, nil
}

// UpdateUserParams changes an account; nil fields stay as they are.
type UpdateUserParams struct {
	Name              *string
	Disabled          *bool
	IsSuperadmin      *bool
	EmailCodeRequired *bool
}

// UpdateUser changes the user with id. Disabling revokes, at once, every
// session and refresh token of the user and every API key the user created;
// re-enabling does not bring them back. The caller in ctx cannot disable
// themselves. Removing the flag of, or disabling, the last active (not
// disabled) superadmin is refused with ErrLastSuperadmin and changes nothing.
func (s *Service) UpdateUser(ctx context.Context, id uuid.UUID, p UpdateUserParams) (User, error) {
	v := &app.Validator{}
	if p.Name != nil {
		name := strings.TrimSpace(*p.Name)
		p.Name = &name
		checkName(v, "name", name)
	}
	if p.Disabled != nil && *p.Disabled {
		if actor := app.PrincipalFrom(ctx); actor != nil && actor.UserID == id {
			v.Add("disabled", app.FieldInvalidValue, "you cannot disable your own account")
		}
	}
	if err := v.Err(); err != nil {
		return User{}, err
	}
	// Changes that can take a superadmin away run one at a time (on every
	// replica), so two of them cannot each leave the other as the last one.
	mayDemote := (p.IsSuperadmin != nil && !*p.IsSuperadmin) || (p.Disabled != nil && *p.Disabled)
	var after User
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if mayDemote {
			if err := tx.Exec(`SELECT pg_advisory_xact_lock(hashtext('nxmesh.auth.superadmins'))`).Error; err != nil {
				return fmt.Errorf("lock superadmins: %w", err)
			}
		}
		var row userRow
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", id).Take(&row).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return ErrUserNotFound
			}
			return err
		}
		before := row.user()
		now := s.now()
		action := "user.update"
		if p.Name != nil {
			row.Name = *p.Name
		}
		if p.IsSuperadmin != nil {
			row.IsSuperadmin = *p.IsSuperadmin
		}
		if p.EmailCodeRequired != nil {
			row.EmailCodeRequired = *p.EmailCodeRequired
		}
		if p.Disabled != nil {
			switch {
			case *p.Disabled && row.DisabledAt == nil:
				row.DisabledAt = &now
				action = "user.disable"
				if err := s.revokeUserCredentials(ctx, tx, id, "user_disabled", now); err != nil {
					return err
				}
			case !*p.Disabled && row.DisabledAt != nil:
				row.DisabledAt = nil
				action = "user.enable"
			}
		}
		if before.IsSuperadmin && !before.Disabled && (!row.IsSuperadmin || row.DisabledAt != nil) {
			var others int64
			if err := tx.Model(&userRow{}).Where("is_superadmin AND disabled_at IS NULL AND id <> ?", id).
				Count(&others).Error; err != nil {
				return fmt.Errorf("count superadmins: %w", err)
			}
			if others == 0 {
				return ErrLastSuperadmin
			}
		}
		row.UpdatedAt = now
		if err := tx.Model(&userRow{}).Where("id = ?", id).Updates(map[string]any{
			"name":                row.Name,
			"is_superadmin":       row.IsSuperadmin,
			"email_code_required": row.EmailCodeRequired,
			"disabled_at":         row.DisabledAt,
			"updated_at":          row.UpdatedAt,
		}).Error; err != nil {
			return err
		}
		after = row.user()
		return app.Audit(ctx, tx, app.AuditParams{Action: action, ObjectType: "user", ObjectID: id.String(), Before: before, After: after})
	})
	if err := s.synced(ctx, err); err != nil {
		return User{}, fmt.Errorf("update user %s: %w", id, err)
	}
	return after, nil
}

// SetUserDisabled disables or re-enables the user with id (see UpdateUser).
func (s *Service) SetUserDisabled(ctx context.Context, userID uuid.UUID, disabled bool) error {
	_, err := s.UpdateUser(ctx, userID, UpdateUserParams{Disabled: &disabled})
	return err
}

// SetPassword replaces the user's password, which must pass the password
// policy, and signs the user out everywhere (sessions and refresh tokens; API
// keys stay valid).
func (s *Service) SetPassword(ctx context.Context, userID uuid.UUID, password string) error {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	v := &app.Validator{}
	checkPasswordPolicy(v, "password", password, u.Email)
	if err := v.Err(); err != nil {
		return err
	}
	hash, err := s.newPasswordHash(ctx, password)
	if err != nil {
		return fmt.Errorf("set password of user %s: %w", userID, err)
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := s.now()
		res := tx.Model(&userRow{}).Where("id = ?", userID).Updates(map[string]any{"password_hash": hash, "updated_at": now})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrUserNotFound
		}
		if err := tx.Model(&sessionRow{}).Where("user_id = ? AND revoked_at IS NULL", userID).
			Updates(map[string]any{"revoked_at": now, "revoked_reason": "password_changed"}).Error; err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{Action: "user.password", ObjectType: "user", ObjectID: userID.String()})
	})
	if err := s.synced(ctx, err); err != nil {
		return fmt.Errorf("set password of user %s: %w", userID, err)
	}
	return nil
}

// revokeUserCredentials ends every session (and so every refresh token and
// access token issued from it) of the user and revokes the API keys the user
// created, with one audit entry per key in its organization.
func (s *Service) revokeUserCredentials(ctx context.Context, tx *gorm.DB, userID uuid.UUID, reason string, now time.Time) error {
	if err := tx.Model(&sessionRow{}).Where("user_id = ? AND revoked_at IS NULL", userID).
		Updates(map[string]any{"revoked_at": now, "revoked_reason": reason}).Error; err != nil {
		return fmt.Errorf("revoke sessions: %w", err)
	}
	var keys []apiKeyRow
	if err := tx.Clauses(clause.Returning{}).Model(&keys).
		Where("created_by = ? AND revoked_at IS NULL", userID).
		Update("revoked_at", now).Error; err != nil {
		return fmt.Errorf("revoke api keys: %w", err)
	}
	for _, k := range keys {
		before := k.apiKey()
		before.RevokedAt = nil
		if err := app.Audit(ctx, tx, app.AuditParams{
			OrgID: k.OrganizationID, WorkspaceID: derefUUID(k.WorkspaceID),
			Action: "apikey.revoke", ObjectType: "apikey", ObjectID: k.ID.String(),
			Before: before, After: k.apiKey(),
		}); err != nil {
			return err
		}
	}
	return nil
}

func derefUUID(id *uuid.UUID) uuid.UUID {
	if id == nil {
		return uuid.Nil
	}
	return *id
}
