package app

import (
	"log/slog"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/views/layout"
)

// Pages is what the admin pages of every module share: the navigation around
// a page (Shell) and the decision of what a page offers (Allowed). Allowed
// answers with the same Casbin enforcer and the same role the route guard
// resolved for the request (membership, API-key scope, superadmin as owner),
// so a page offers a button or form exactly when its route accepts the
// caller. app.New creates it and passes it to every module in Deps.Pages;
// Mount gives it the navigation of Wiring.Nav.
type Pages struct {
	authz  *authz.Enforcer
	logger *slog.Logger
	nav    NavFunc
}

// NavFunc builds the shell of a page titled title in organization orgID and
// workspace wsID (uuid.Nil: none), with section the current tab: the user, the
// CSRF token, the organization and workspace switchers and the section tabs.
// The module that knows organizations provides it (Wiring.Nav).
type NavFunc func(c *fiber.Ctx, title string, orgID, wsID uuid.UUID, section string) (layout.Shell, error)

// NewPages returns the pages' permission checks over en.
func NewPages(en *authz.Enforcer, logger *slog.Logger) *Pages {
	if logger == nil {
		logger = slog.Default()
	}
	return &Pages{authz: en, logger: logger}
}

// Allowed reports whether the caller of c may perform action on object in the
// scope of c's route (a Require route). Outside such a route, or when the
// enforcer fails (logged), it reports false: the page hides what the guard
// might refuse.
func (p *Pages) Allowed(c *fiber.Ctx, object, action string) bool {
	role := RoleOf(c)
	if role == "" || p == nil || p.authz == nil {
		return false
	}
	ok, err := p.authz.Allowed(role, ScopeOf(c).OrgID.String(), object, action)
	if err != nil {
		p.logger.ErrorContext(c.UserContext(), "page permission check", "error", err, "object", object, "action", action)
		return false
	}
	return ok
}

// Shell builds the layout around a page titled title in the scope of c's
// route (the organization and workspace ScopeOf resolved; none outside a
// Require route), with section the current tab. Without a navigation
// (Wiring.Nav unset) the shell has the title, the user and the CSRF token only.
func (p *Pages) Shell(c *fiber.Ctx, title, section string) (layout.Shell, error) {
	scope := ScopeOf(c)
	if p != nil && p.nav != nil {
		return p.nav(c, title, scope.OrgID, scope.WorkspaceID, section)
	}
	s := layout.Shell{Title: title}
	if caller := Caller(c); caller != nil {
		s.User, s.CSRF = caller.Email, caller.CSRFToken
	}
	return s, nil
}
