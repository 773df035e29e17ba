package app

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"
)

// Error categories. Modules wrap these in their own sentinels
// (var ErrSlugTaken = fmt.Errorf("%w: slug taken", app.ErrConflict)); the HTTP edge maps
// a category to its error code and status once (docs/API.md).
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrInvalid      = errors.New("validation failed")
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
	ErrRateLimited  = errors.New("rate limited")
	ErrUnavailable  = errors.New("service unavailable")
)

// Error codes of the error envelope (docs/API.md).
const (
	CodeUnauthorized       = "UNAUTHORIZED"
	CodeForbidden          = "FORBIDDEN"
	CodeNotFound           = "NOT_FOUND"
	CodeMethodNotAllowed   = "METHOD_NOT_ALLOWED"
	CodeValidation         = "VALIDATION_ERROR"
	CodeConflict           = "CONFLICT"
	CodePayloadTooLarge    = "PAYLOAD_TOO_LARGE"
	CodeRateLimited        = "RATE_LIMITED"
	CodeInternal           = "INTERNAL_ERROR"
	CodeServiceUnavailable = "SERVICE_UNAVAILABLE"
)

// Error codes of requests refused at the HTTP edge, before any module sees them.
const (
	// CodeUnsupportedMediaType (415): a /v1 request body that is not sent as
	// JSON (Content-Type application/json or application/*+json).
	CodeUnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE"
	// CodeURITooLong (414): a request line that does not fit the request head
	// limit on its own.
	CodeURITooLong = "URI_TOO_LONG"
	// CodeHeadersTooLarge (431): a request line and headers that together do
	// not fit the request head limit.
	CodeHeadersTooLarge = "HEADERS_TOO_LARGE"
)

// FieldError describes one invalid field. Field is the JSON path of the value
// (locations[1].custom_headers[0].value).
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
	Code    string `json:"code"`
}

// Field error codes.
const (
	FieldRequired      = "REQUIRED"
	FieldInvalidFormat = "INVALID_FORMAT"
	FieldInvalidValue  = "INVALID_VALUE"
	FieldUnknown       = "UNKNOWN_FIELD"
	FieldTooLong       = "TOO_LONG"
	FieldNotFound      = "NOT_FOUND"
	// FieldDuplicate is a key that appears more than once in one JSON object.
	FieldDuplicate = "DUPLICATE_FIELD"
)

// ValidationError is a 422 with one detail per bad field.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	if len(e.Fields) == 0 {
		return ErrInvalid.Error()
	}
	return fmt.Sprintf("%s: %s %s", ErrInvalid, e.Fields[0].Field, e.Fields[0].Message)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Invalid returns a ValidationError for a single field.
func Invalid(field, code, message string) *ValidationError {
	return &ValidationError{Fields: []FieldError{{Field: field, Code: code, Message: message}}}
}

// HTTPError is an error with an explicit status, code and public message. Use it
// for the rare failure that has no category (405, 413).
type HTTPError struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, in seconds, is sent as Retry-After when positive.
	RetryAfter int
	// Details, optional, name fields involved.
	Details []FieldError
}

func (e *HTTPError) Error() string { return e.Message }

// RateLimited returns a 429 that tells the client when to retry.
func RateLimited(retryAfterSeconds int) error {
	return &HTTPError{Status: http.StatusTooManyRequests, Code: CodeRateLimited, Message: "Too many requests", RetryAfter: retryAfterSeconds}
}

// publicError is what the edge sends for err.
type publicError struct {
	Status     int
	Code       string
	Message    string
	Details    []FieldError
	RetryAfter int
}

// classify maps an error to its public form. Messages of categorized errors are
// shown to the client, so modules must not wrap secrets into them.
func classify(err error) publicError {
	var he *HTTPError
	if errors.As(err, &he) {
		return publicError{Status: he.Status, Code: he.Code, Message: he.Message, RetryAfter: he.RetryAfter, Details: he.Details}
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		return publicError{Status: http.StatusUnprocessableEntity, Code: CodeValidation, Message: "Request validation failed", Details: ve.Fields}
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return publicError{Status: http.StatusNotFound, Code: CodeNotFound, Message: messageOf(err, "Resource not found")}
	case errors.Is(err, ErrConflict):
		return publicError{Status: http.StatusConflict, Code: CodeConflict, Message: messageOf(err, "Resource conflict")}
	case errors.Is(err, ErrInvalid):
		return publicError{Status: http.StatusUnprocessableEntity, Code: CodeValidation, Message: messageOf(err, "Request validation failed")}
	case errors.Is(err, ErrUnauthorized):
		return publicError{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: messageOf(err, "Authentication required")}
	case errors.Is(err, ErrForbidden):
		return publicError{Status: http.StatusForbidden, Code: CodeForbidden, Message: messageOf(err, "Insufficient permissions")}
	case errors.Is(err, ErrRateLimited):
		return publicError{Status: http.StatusTooManyRequests, Code: CodeRateLimited, Message: messageOf(err, "Too many requests"), RetryAfter: 60}
	case errors.Is(err, ErrUnavailable):
		return publicError{Status: http.StatusServiceUnavailable, Code: CodeServiceUnavailable, Message: messageOf(err, "Service temporarily unavailable")}
	case IsDatabaseUnavailable(err):
		return publicError{Status: http.StatusServiceUnavailable, Code: CodeServiceUnavailable,
			Message: "The database is unavailable; try again shortly", RetryAfter: 5}
	}
	return publicError{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "Internal server error"}
}

// messageOf returns the text that follows the category in err's message, so
// "create organization: conflict: slug already in use" shows as "Slug already in
// use"; the bare category gives def.
func messageOf(err error, def string) string {
	msg := err.Error()
	for _, c := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrUnauthorized, ErrForbidden, ErrRateLimited, ErrUnavailable} {
		if !errors.Is(err, c) {
			continue
		}
		i := strings.Index(msg, c.Error()+": ")
		if i < 0 {
			return def
		}
		rest := msg[i+len(c.Error())+2:]
		if rest == "" {
			return def
		}
		return strings.ToUpper(rest[:1]) + rest[1:]
	}
	return def
}

// InUseError is every module's answer to deleting an object that other
// objects still use. It is a conflict (409) whose message names the users
// ("upstream is used by ...") or, when they are not known (a foreign key
// refused the delete), says the object is in use; Hint, when set, follows
// ("stop using it there first").
type InUseError struct {
	// What is the object, as the message's subject ("upstream").
	What string
	// Users are the human-readable users, e.g. `virtual host "api" (<id>)`.
	Users []string
	// Hint is appended after the users.
	Hint string
}

func (e *InUseError) Error() string {
	msg := fmt.Sprintf("%s: %s is in use", ErrConflict, e.What)
	if len(e.Users) > 0 {
		msg = fmt.Sprintf("%s: %s is used by %s", ErrConflict, e.What, strings.Join(e.Users, ", "))
	}
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *InUseError) Unwrap() error { return ErrConflict }

// IsUniqueViolation reports whether err is PostgreSQL's unique_violation
// (23505), as GORM's ErrDuplicatedKey or the driver's error.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, gorm.ErrDuplicatedKey) || (errors.As(err, &pgErr) && pgErr.Code == "23505")
}

// IsDatabaseUnavailable reports whether err says that PostgreSQL cannot be
// reached or is shutting down or starting up: a connection that could not
// be made, a connection exception (SQLSTATE class 08), or an operator
// intervention (class 57: admin or crash shutdown, cannot connect now).
// Requests failing so are answered 503 with Retry-After; the pool
// reconnects by itself once the server is back.
func IsDatabaseUnavailable(err error) bool {
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P"))
}

// IsForeignKeyViolation reports whether err is PostgreSQL's
// foreign_key_violation (23503), as GORM's ErrForeignKeyViolated or the
// driver's error.
func IsForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, gorm.ErrForeignKeyViolated) || (errors.As(err, &pgErr) && pgErr.Code == "23503")
}
