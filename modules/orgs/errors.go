package orgs

import (
	"fmt"

	"github.com/nxmesh/nxmesh/app"
)

// Errors returned by the service. Each wraps an app category, which the HTTP edge
// maps to a status; the text after the category is the public message.
var (
	// ErrOrganizationNotFound: no organization has the id.
	ErrOrganizationNotFound = fmt.Errorf("%w: no such organization", app.ErrNotFound)
	// ErrWorkspaceNotFound: no workspace has the id.
	ErrWorkspaceNotFound = fmt.Errorf("%w: no such workspace", app.ErrNotFound)
	// ErrMemberNotFound: the user is not a member of the organization.
	ErrMemberNotFound = fmt.Errorf("%w: no such member", app.ErrNotFound)
	// ErrOrgSlugTaken: another organization uses the slug.
	ErrOrgSlugTaken = fmt.Errorf("%w: an organization with this slug already exists", app.ErrConflict)
	// ErrWorkspaceSlugTaken: another workspace of the organization uses the slug.
	ErrWorkspaceSlugTaken = fmt.Errorf("%w: a workspace with this slug already exists in the organization", app.ErrConflict)
	// ErrAlreadyMember: the user already belongs to the organization.
	ErrAlreadyMember = fmt.Errorf("%w: the user is already a member of this organization", app.ErrConflict)
	// ErrLastOwner: the change would leave the organization without an owner.
	ErrLastOwner = fmt.Errorf("%w: organization must keep at least one owner", app.ErrConflict)
	// ErrOwnerRequired: only owners may grant the owner role or change or remove
	// an owner.
	ErrOwnerRequired = fmt.Errorf("%w: only an owner can grant the owner role or change or remove an owner", app.ErrForbidden)
	// ErrOwnerKeyRequired: API keys with a role above the caller's (owner keys for
	// admins) may only be created, rotated or revoked by owners.
	ErrOwnerKeyRequired = fmt.Errorf("%w: only an owner can create, rotate or revoke an API key with the owner role", app.ErrForbidden)
	// ErrAPIKeyCannotCreateOrganization: organizations are created by users; an API
	// key belongs to one organization already.
	ErrAPIKeyCannotCreateOrganization = fmt.Errorf("%w: API keys cannot create organizations", app.ErrForbidden)
	// ErrNotPermitted: the caller has no role in the organization that allows the
	// change.
	ErrNotPermitted = fmt.Errorf("%w: insufficient permissions", app.ErrForbidden)

	// ErrEmailCodeSessionRequired: the organization requires sessions confirmed
	// with an emailed one-time code and the caller's session was not.
	ErrEmailCodeSessionRequired = fmt.Errorf("%w: this organization admits only sessions confirmed with a one-time code sent by e-mail; "+
		"sign in again with POST /v1/auth/login/init and POST /v1/auth/login/verify "+
		"(in the admin: sign in with \"Also confirm with a code sent by e-mail\" ticked)", app.ErrForbidden)

	// ErrInvitationNotFound: no pending invitation with the id (for the caller,
	// or in the organization).
	ErrInvitationNotFound = fmt.Errorf("%w: no such pending invitation", app.ErrNotFound)
	// ErrAlreadyInvited: the user has a pending invitation to the organization.
	ErrAlreadyInvited = fmt.Errorf("%w: the user already has a pending invitation to this organization", app.ErrConflict)
	// ErrInvitationStale: whoever sent the invitation may no longer grant its role.
	ErrInvitationStale = fmt.Errorf("%w: this invitation is no longer valid: whoever sent it may no longer grant its role; ask for a new one", app.ErrConflict)
	// ErrInvitationsNeedUser: invitations are answered by the invited user
	// themselves, not through an API key.
	ErrInvitationsNeedUser = fmt.Errorf("%w: invitations are listed and answered by the invited user, not with an API key", app.ErrForbidden)
	// ErrConsentRequired: memberships of existing accounts are created by
	// invitation; only the master itself adds members directly.
	ErrConsentRequired = fmt.Errorf("%w: members join by accepting an invitation", app.ErrForbidden)
)
