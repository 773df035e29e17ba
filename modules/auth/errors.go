package auth

import (
	"fmt"
	"net/http"

	"github.com/nxmesh/nxmesh/app"
)

// Errors of the auth module. Each wraps an app category, which decides the HTTP
// status; the text after the category is the public message.
var (
	// ErrInvalidCredentials is the one answer to a wrong password and an unknown
	// email alike, so a login does not tell which accounts exist.
	ErrInvalidCredentials = fmt.Errorf("%w: invalid email or password", app.ErrUnauthorized)
	// ErrEmailCodeRequired answers a password login of a user who must also
	// confirm a one-time code sent by email (/v1/auth/login/init).
	ErrEmailCodeRequired = fmt.Errorf("%w: a one-time code sent by email is required; use /v1/auth/login/init", app.ErrUnauthorized)
	// ErrInvalidCode answers a wrong, expired, used or exhausted one-time code.
	ErrInvalidCode = fmt.Errorf("%w: invalid or expired code", app.ErrUnauthorized)
	// ErrUserDisabled answers a correct password of a disabled account.
	ErrUserDisabled = fmt.Errorf("%w: account is disabled", app.ErrUnauthorized)
	// ErrInvalidToken answers a malformed, tampered or expired access token, or one
	// whose session was revoked.
	ErrInvalidToken = fmt.Errorf("%w: invalid or expired access token", app.ErrUnauthorized)
	// ErrInvalidRefreshToken answers an unknown, used, expired or revoked refresh token.
	ErrInvalidRefreshToken = fmt.Errorf("%w: invalid or expired refresh token", app.ErrUnauthorized)
	// ErrInvalidAPIKey answers an unknown, revoked or expired API key, or one whose
	// creator is disabled or no longer a member of the key's organization.
	ErrInvalidAPIKey = fmt.Errorf("%w: invalid, revoked or expired API key", app.ErrUnauthorized)
	// ErrInvalidSession answers an unknown, expired or revoked admin session cookie.
	ErrInvalidSession = fmt.Errorf("%w: session expired; sign in again", app.ErrUnauthorized)

	// ErrSuperadminRequired refuses user management to everyone but superadmins.
	ErrSuperadminRequired = fmt.Errorf("%w: only superadmins may manage users", app.ErrForbidden)

	// ErrEmailTaken refuses a second account with the same email.
	ErrEmailTaken = fmt.Errorf("%w: email already in use", app.ErrConflict)
	// ErrLastSuperadmin refuses to remove the flag of, or disable, the last
	// active superadmin: nobody could manage users afterwards.
	ErrLastSuperadmin = fmt.Errorf("%w: this is the last active superadmin; make another user superadmin first", app.ErrConflict)
	// ErrAPIKeyRevoked refuses to rotate a revoked API key.
	ErrAPIKeyRevoked = fmt.Errorf("%w: API key is revoked", app.ErrConflict)

	// ErrUserNotFound is a user id that does not exist.
	ErrUserNotFound = fmt.Errorf("%w: user not found", app.ErrNotFound)
	// ErrAPIKeyNotFound is an API key id that does not exist in the organization.
	ErrAPIKeyNotFound = fmt.Errorf("%w: API key not found", app.ErrNotFound)

	// ErrPasswordHashingBusy answers a login or a new password that waited too
	// long for a password hashing slot: 503 with Retry-After.
	ErrPasswordHashingBusy = &app.HTTPError{
		Status: http.StatusServiceUnavailable, Code: app.CodeServiceUnavailable,
		Message: "Too many passwords are being checked at once; try again in a moment", RetryAfter: 1,
	}

	// ErrMailUnavailable is an SMTP failure while sending a one-time code.
	ErrMailUnavailable = fmt.Errorf("%w: the one-time code could not be sent; try again later", app.ErrUnavailable)
)
