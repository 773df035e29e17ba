package app

import (
	"log/slog"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app/authz"
)

// Pages is what the admin pages of every module share for deciding what a page
// offers: Allowed answers with the same Casbin enforcer and the same role the
// route guard resolved for the request (membership, API-key scope, superadmin
// as owner), so a page offers a button or form exactly when its route accepts
// the caller. app.New creates it and passes it to every module in Deps.Pages.
type Pages struct {
	authz  *authz.Enforcer
	logger *slog.Logger
}

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
