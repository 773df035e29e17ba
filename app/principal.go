package app

import (
	"context"

	"github.com/google/uuid"
)

// Principal is the authenticated caller of a request.
type Principal struct {
	UserID     uuid.UUID
	Email      string
	Superadmin bool
	// SessionID is the refresh-token family or admin session the access came from.
	SessionID uuid.UUID
	// CSRFToken is set for cookie sessions; unsafe admin requests must echo it.
	CSRFToken string
	// EmailCodeVerified is set when the session was started with an emailed
	// one-time code (access tokens carry amr ["pwd","otp"]). Organizations that
	// require the code admit only such sessions.
	EmailCodeVerified bool
	// APIKey is set when the request used an API key.
	APIKey *APIKeyScope
	// RecheckFunc, when set, authenticates the request's credential again
	// and returns the caller as it is now, or an error wrapping
	// ErrUnauthorized once the credential no longer is valid (API key
	// revoked, rotated or expired, session logged out or expired, user
	// disabled, access token expired). Long-lived connections (the live
	// event streams) call it every few seconds and close when it fails.
	RecheckFunc func(ctx context.Context) (*Principal, error)
}

// APIKeyScope limits an API key to one organization, optionally one workspace,
// with a role.
type APIKeyScope struct {
	ID          uuid.UUID
	OrgID       uuid.UUID
	WorkspaceID uuid.UUID // uuid.Nil: every workspace of OrgID
	Role        string
}

// Credential identifies the caller for rate limiting and audit.
func (p *Principal) Credential() string {
	if p.APIKey != nil {
		return "key:" + p.APIKey.ID.String()
	}
	return "user:" + p.UserID.String()
}

// Scope locates the object a request addresses: its organization and, for
// workspace objects, its workspace.
type Scope struct {
	OrgID       uuid.UUID
	WorkspaceID uuid.UUID
}

type ctxKey int

const (
	principalKey ctxKey = iota
	requestKey
)

// RequestInfo is what the audit log needs to know about the current request.
type RequestInfo struct {
	ID string
	IP string
}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey, p)
}

// PrincipalFrom returns the caller carried by ctx, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey).(*Principal)
	return p
}

// WithRequestInfo returns ctx carrying info.
func WithRequestInfo(ctx context.Context, info RequestInfo) context.Context {
	return context.WithValue(ctx, requestKey, info)
}

// RequestInfoFrom returns the request carried by ctx (zero outside a request).
func RequestInfoFrom(ctx context.Context) RequestInfo {
	r, _ := ctx.Value(requestKey).(RequestInfo)
	return r
}
