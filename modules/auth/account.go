package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// maxUserSearchLen bounds the search text of the users list.
const maxUserSearchLen = 100

// SearchUsers returns a page of the users whose email or name contains query
// (case-insensitive; all users when query is empty), oldest first, and the
// total count.
func (s *Service) SearchUsers(ctx context.Context, query string, page app.Page) ([]User, int64, error) {
	query = strings.TrimSpace(query)
	v := &app.Validator{}
	v.Check(len(query) <= maxUserSearchLen, "q", app.FieldTooLong, fmt.Sprintf("must be at most %d characters", maxUserSearchLen))
	if err := v.Err(); err != nil {
		return nil, 0, err
	}
	q := s.db.WithContext(ctx).Model(&userRow{})
	if query != "" {
		like := "%" + escapeLike(strings.ToLower(query)) + "%"
		q = q.Where(`lower(email) LIKE ? ESCAPE '\' OR lower(name) LIKE ? ESCAPE '\'`, like, like)
	}
	rows, total, err := app.FindPage[userRow](q, page, "created_at, id")
	if err != nil {
		return nil, 0, fmt.Errorf("search users: %w", err)
	}
	out := make([]User, len(rows))
	for i, r := range rows {
		out[i] = r.user()
	}
	return out, total, nil
}

// escapeLike escapes the wildcards of a LIKE pattern.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// ChangePasswordParams are a user's change of their own password.
type ChangePasswordParams struct {
	UserID uuid.UUID
	// KeepSessionID is the session the change is made from; it stays signed
	// in. uuid.Nil (an API key) keeps none.
	KeepSessionID   uuid.UUID
	CurrentPassword string
	NewPassword     string
}

// ChangePassword replaces the user's own password after checking the current
// one (a wrong one is a validation error naming current_password). The new
// password must pass the password policy (new_password). Every other session
// of the user, with its refresh tokens, is revoked; the one the change is made
// from is kept. API keys stay valid.
func (s *Service) ChangePassword(ctx context.Context, p ChangePasswordParams) error {
	v := &app.Validator{}
	v.Check(p.CurrentPassword != "", "current_password", app.FieldRequired, "is required")
	if v.Check(p.NewPassword != "", "new_password", app.FieldRequired, "is required") {
		v.Check(p.NewPassword != p.CurrentPassword || p.CurrentPassword == "", "new_password", app.FieldInvalidValue,
			"must differ from the current password")
	}
	if err := v.Err(); err != nil {
		return err
	}
	var row userRow
	if err := s.db.WithContext(ctx).Where("id = ?", p.UserID).Take(&row).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrUserNotFound
		}
		return fmt.Errorf("change password: %w", err)
	}
	checkPasswordPolicy(v, "new_password", p.NewPassword, row.Email)
	if err := v.Err(); err != nil {
		return err
	}
	var ok bool
	var cerr error
	if err := s.withHashSlot(ctx, func() { ok, cerr = checkPassword(row.PasswordHash, p.CurrentPassword) }); err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	if cerr != nil || !ok {
		v.Add("current_password", app.FieldInvalidValue, "is not your current password")
		return v.Err()
	}
	hash, err := s.newPasswordHash(ctx, p.NewPassword)
	if err != nil {
		return fmt.Errorf("change password of user %s: %w", p.UserID, err)
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := s.now()
		res := tx.Model(&userRow{}).Where("id = ?", p.UserID).Updates(map[string]any{"password_hash": hash, "updated_at": now})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrUserNotFound
		}
		if err := tx.Model(&sessionRow{}).Where("user_id = ? AND revoked_at IS NULL AND id <> ?", p.UserID, p.KeepSessionID).
			Updates(map[string]any{"revoked_at": now, "revoked_reason": "password_changed"}).Error; err != nil {
			return err
		}
		u := row.user()
		return app.Audit(ctx, tx, app.AuditParams{Action: "user.password", ObjectType: "user", ObjectID: p.UserID.String(), After: u})
	})
	// The other sessions end on this replica before the answer (and on the
	// others as their caches hear of it).
	if err := s.synced(ctx, err); err != nil {
		return fmt.Errorf("change password of user %s: %w", p.UserID, err)
	}
	return nil
}

// CreateUserIn is CreateUser inside the caller's transaction tx, for a change
// that creates the account together with something else (an accepted
// invitation and its membership). The password is checked and hashed first.
func (s *Service) CreateUserIn(ctx context.Context, tx *gorm.DB, p CreateUserParams) (User, error) {
	row, err := s.prepareUser(ctx, p)
	if err != nil {
		return User{}, err
	}
	return insertUser(ctx, tx, row)
}

// CheckNewPassword returns the validation error, under field, of a password
// the account with email could not have (the password policy).
func CheckNewPassword(field, password, email string) error {
	v := &app.Validator{}
	checkPasswordPolicy(v, field, password, email)
	return v.Err()
}
