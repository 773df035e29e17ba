package orgs

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// Organization is a tenant: it owns workspaces, members and API keys. Its JSON
// form is the API's organization object (plus require_email_code).
type Organization struct {
	ID   uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	Name string    `gorm:"not null" json:"name"`
	Slug string    `gorm:"not null" json:"slug"`
	// RequireEmailCode admits into this organization's scope only sessions
	// confirmed with an emailed one-time code (POST /v1/auth/login/init and
	// /verify). It does not change how members sign in; it can be enabled only
	// when outgoing mail is configured.
	RequireEmailCode bool      `gorm:"not null;default:false" json:"require_email_code"`
	CreatedAt        time.Time `gorm:"not null" json:"created_at"`
	UpdatedAt        time.Time `gorm:"not null" json:"updated_at"`
}

// TableName is the organizations table.
func (Organization) TableName() string { return "organizations" }

// MarshalJSON writes timestamps as RFC 3339 UTC seconds (app.Time).
func (o Organization) MarshalJSON() ([]byte, error) {
	type plain Organization
	return json.Marshal(struct {
		plain
		CreatedAt app.Time `json:"created_at"`
		UpdatedAt app.Time `json:"updated_at"`
	}{plain(o), app.Time{Time: o.CreatedAt}, app.Time{Time: o.UpdatedAt}})
}

// Workspace groups the agents and configuration of one environment of an
// organization. Its JSON form is the API's workspace object (plus updated_at).
type Workspace struct {
	ID             uuid.UUID `gorm:"type:uuid;primaryKey;default:gen_random_uuid()" json:"id"`
	OrganizationID uuid.UUID `gorm:"type:uuid;not null" json:"organization_id"`
	Name           string    `gorm:"not null" json:"name"`
	Slug           string    `gorm:"not null" json:"slug"`
	CreatedAt      time.Time `gorm:"not null" json:"created_at"`
	UpdatedAt      time.Time `gorm:"not null" json:"updated_at"`
}

// TableName is the workspaces table.
func (Workspace) TableName() string { return "workspaces" }

// MarshalJSON writes timestamps as RFC 3339 UTC seconds (app.Time).
func (w Workspace) MarshalJSON() ([]byte, error) {
	type plain Workspace
	return json.Marshal(struct {
		plain
		CreatedAt app.Time `json:"created_at"`
		UpdatedAt app.Time `json:"updated_at"`
	}{plain(w), app.Time{Time: w.CreatedAt}, app.Time{Time: w.UpdatedAt}})
}

// Membership gives a user a role in an organization.
type Membership struct {
	OrganizationID uuid.UUID `gorm:"type:uuid;primaryKey"`
	UserID         uuid.UUID `gorm:"type:uuid;primaryKey"`
	Role           string    `gorm:"not null"`
	CreatedAt      time.Time `gorm:"not null"`
	UpdatedAt      time.Time `gorm:"not null"`
}

// TableName is the memberships table.
func (Membership) TableName() string { return "memberships" }

// Member is a membership with the user's identity, as listed to the organization.
type Member struct {
	UserID uuid.UUID `json:"user_id"`
	Email  string    `json:"email"`
	Name   string    `json:"name"`
	Role   string    `json:"role"`
	// CreatedAt is when the user joined the organization.
	CreatedAt time.Time `json:"created_at"`
}

// MarshalJSON writes created_at as RFC 3339 UTC seconds (app.Time).
func (m Member) MarshalJSON() ([]byte, error) {
	type plain Member
	return json.Marshal(struct {
		plain
		CreatedAt app.Time `json:"created_at"`
	}{plain(m), app.Time{Time: m.CreatedAt}})
}

// AuditActor is who made an audited change: a user, possibly through an API key.
// Both ids are null for changes made by the master itself (first start, CLI).
type AuditActor struct {
	UserID   *uuid.UUID `json:"user_id"`
	APIKeyID *uuid.UUID `json:"api_key_id"`
	Email    string     `json:"email"`
}

// AuditEntry is one audit log row as listed to an organization's admins.
type AuditEntry struct {
	ID             uuid.UUID  `json:"id"`
	OrganizationID *uuid.UUID `json:"organization_id"`
	WorkspaceID    *uuid.UUID `json:"workspace_id"`
	Actor          AuditActor `json:"actor"`
	IP             string     `json:"ip"`
	RequestID      string     `json:"request_id"`
	Action         string     `json:"action"`
	ObjectType     string     `json:"object_type"`
	ObjectID       string     `json:"object_id"`
	// ObjectName is the object's name, e-mail address or domain at the change
	// (empty when it has none, e.g. a configuration rollback).
	ObjectName string          `json:"object_name"`
	Before     json.RawMessage `json:"before"`
	After      json.RawMessage `json:"after"`
	CreatedAt  app.Time        `json:"created_at"`
}

func newAuditEntry(e app.AuditEntry) AuditEntry {
	raw := func(b []byte) json.RawMessage {
		if len(b) == 0 {
			return json.RawMessage("null")
		}
		return json.RawMessage(b)
	}
	return AuditEntry{
		ID:             e.ID,
		OrganizationID: e.OrganizationID,
		WorkspaceID:    e.WorkspaceID,
		Actor:          AuditActor{UserID: e.ActorUserID, APIKeyID: e.ActorAPIKeyID, Email: e.ActorEmail},
		IP:             e.IP,
		RequestID:      e.RequestID,
		Action:         e.Action,
		ObjectType:     e.ObjectType,
		ObjectID:       e.ObjectID,
		ObjectName:     e.ObjectName,
		Before:         raw(e.Before),
		After:          raw(e.After),
		CreatedAt:      app.Time{Time: e.CreatedAt},
	}
}

// Invitation states. A pending invitation past its expires_at is listed as
// expired.
const (
	InvitationPending  = "pending"
	InvitationAccepted = "accepted"
	InvitationDeclined = "declined"
	InvitationRevoked  = "revoked"
	InvitationExpired  = "expired"
)

// invitationRow is a row of the invitations table (migration 00050).
type invitationRow struct {
	ID             uuid.UUID `gorm:"type:uuid;primaryKey"`
	OrganizationID uuid.UUID `gorm:"type:uuid"`
	// UserID is the invited account; nil for an e-mail address without one
	// (Email and TokenHash then).
	UserID      *uuid.UUID `gorm:"type:uuid"`
	Email       string     `gorm:"not null;default:''"`
	TokenHash   []byte
	Role        string     `gorm:"not null"`
	InvitedBy   *uuid.UUID `gorm:"type:uuid"`
	Status      string     `gorm:"not null"`
	CreatedAt   time.Time  `gorm:"not null"`
	ExpiresAt   time.Time  `gorm:"not null"`
	RespondedAt *time.Time
}

func (invitationRow) TableName() string { return "invitations" }

// Invitation asks an existing user to join an organization with a role; the
// user becomes a member only by accepting it.
type Invitation struct {
	ID               uuid.UUID `json:"id"`
	OrganizationID   uuid.UUID `json:"organization_id"`
	OrganizationName string    `json:"organization_name"`
	// UserID and Email are the invited user.
	UserID uuid.UUID `json:"user_id"`
	Email  string    `json:"email"`
	Role   string    `json:"role"`
	// Status is pending, accepted, declined, revoked or expired.
	Status string `json:"status"`
	// InvitedBy is the user who invited (through an API key: its creator); null
	// for the master itself.
	InvitedBy      *uuid.UUID `json:"invited_by"`
	InvitedByEmail string     `json:"invited_by_email"`
	CreatedAt      time.Time  `json:"created_at"`
	ExpiresAt      time.Time  `json:"expires_at"`
	// AcceptURL is the link to the page where an invitee without an account
	// sets a password; it is answered once, on creation, when it could not be
	// sent by e-mail (smtp.* not configured or the server refused), for the
	// inviter to pass on.
	AcceptURL string `json:"accept_url,omitempty" gorm:"-"`
	// Mailed reports that the link went to the invitee by e-mail.
	Mailed bool `json:"-" gorm:"-"`
}

// MarshalJSON writes timestamps as RFC 3339 UTC seconds (app.Time).
func (i Invitation) MarshalJSON() ([]byte, error) {
	type plain Invitation
	return json.Marshal(struct {
		plain
		CreatedAt app.Time `json:"created_at"`
		ExpiresAt app.Time `json:"expires_at"`
	}{plain(i), app.Time{Time: i.CreatedAt}, app.Time{Time: i.ExpiresAt}})
}

// Audit object types written by this module.
const (
	ObjectOrganization = "organization"
	ObjectWorkspace    = "workspace"
	ObjectMember       = "member"
	ObjectInvitation   = "invitation"
)
