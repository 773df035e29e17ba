// Package orgs is the tenancy of the master: organizations, their workspaces,
// their members and roles, and the organization's view of the audit log.
//
// Every other module scopes its objects with this package: ScopeOrg and
// ScopeWorkspace resolve /v1/organizations/:id/... and /v1/workspaces/:id/...
// routes for the route guard, and Service.Role is the guard's membership lookup
// (app.Wiring.Role).
//
// Roles are owner > admin > operator > viewer (app/authz). Besides the Casbin
// matrix in policies.go, the service enforces the rules that depend on the member
// being changed: only owners grant the owner role or change or remove an owner,
// and an organization always keeps one owner. Membership changes lock the
// organization's row, so concurrent changes cannot remove the last owner between
// them.
//
// Nobody joins an organization without consent: adding a member by e-mail
// (POST .../members, the members page) creates a pending invitation, valid
// InvitationTTL, that the invited user accepts or declines (GET
// /v1/invitations, the organizations page); admins list and revoke pending
// invitations. An e-mail without an account is refused (422 naming email):
// there is no sign-up by invitation. Accepting checks that the inviter may
// still grant the role. Only the master itself (no principal in ctx: first
// start, CLI) adds members directly (AddMember).
//
// require_email_code does not change how members sign in (that would let one
// organization lock its members out of everything): Role refuses, with 403,
// sessions that were not confirmed with an emailed one-time code
// (app.Principal.EmailCodeVerified), in every route scoped to the
// organization or its workspaces. It can be turned on only when SMTP is
// configured. Superadmins, who act as owner everywhere without membership, and
// API keys are not subject to it.
//
// An API key acts with at most its creator's current role (auth's
// AuthenticateAPIKey); removing a member revokes the member's keys in the
// organization in the same transaction.
//
// The management routes of API keys (auth module) are mounted here, under the
// organization they belong to, because they need the organization's workspaces
// and the caller's role in it; the keys themselves are created, listed, revoked
// and rotated by the auth service.
//
// Models marshal themselves to the API's JSON (timestamps as app.Time), so the
// API, the admin pages and the audit log's before/after share one representation.
package orgs

import (
	"context"

	"github.com/a-h/templ"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// Options connect the module to the modules below it, and to the higher
// modules through hooks filled by main.go.
type Options struct {
	// Auth is the auth service that stores the API keys whose routes this
	// module mounts. Nil (the workspace navigation other modules' pages build
	// from this module) leaves API keys and require_email_code unavailable.
	Auth *auth.Service
	// OverviewFunc draws the workspace overview's panels about what higher
	// modules hold (agents by state, the configuration's rollout, failing
	// agents, expiring certificates): the agents module's Overview, which
	// sees them all, filled by main.go. Nil: the overview links to the
	// workspace's sections instead. The overview's last changes come from
	// this module's audit log.
	OverviewFunc OverviewFunc
}

// OverviewFunc draws panels of a workspace's overview page.
type OverviewFunc func(ctx context.Context, workspaceID uuid.UUID) (templ.Component, error)

// Module is the orgs module.
type Module struct {
	db       *gorm.DB
	svc      *Service
	pages    *app.Pages
	overview OverviewFunc
}

var _ app.Module = (*Module)(nil)

// New builds the module. The error is always nil: the module loads nothing
// when it is built.
func New(d app.Deps, opts Options) (*Module, error) {
	return &Module{db: d.DB, svc: NewService(d, opts), pages: d.Pages, overview: opts.OverviewFunc}, nil
}

// Service returns the module's service (for main.go's wiring and the admin pages).
func (m *Module) Service() *Service { return m.svc }

// Name is "orgs".
func (m *Module) Name() string { return "orgs" }

// Policies returns the role matrix documented in policies.go.
func (m *Module) Policies() []authz.Policy { return policies() }

// Jobs registers nothing: the module has no background work.
func (m *Module) Jobs(*river.Workers) []*river.PeriodicJob { return nil }

// GRPC registers nothing.
func (m *Module) GRPC(grpc.ServiceRegistrar) {}

// Routes mounts the JSON API (api.go) and the admin pages (ui.go).
func (m *Module) Routes(r app.Routers) {
	m.bindOrganizations(r.API)
	m.bindWorkspaces(r.API)
	m.bindMembers(r.API)
	m.bindInvitations(r.API)
	m.bindAudit(r.API)
	m.bindAPIKeys(r.API)
	m.mountUI(r.UI)
}
