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
)
