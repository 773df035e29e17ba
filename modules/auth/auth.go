// Package auth is who is calling: users and their passwords, the optional
// second factor by emailed one-time code, API sessions (access JWT plus rotated
// refresh token), admin cookie sessions, API keys, and login throttling.
//
// How a request is authenticated (main.go wires AuthenticateAPI,
// AuthenticateUI and AuthenticateToken into app.Wiring):
//
//  1. An API request carries X-API-Key, or Authorization: Bearer with either
//     an API key ("nxm_…") or an access JWT (HS256, 1 h, claims sub = user,
//     sid = session, amr = ["pwd"] or ["pwd","otp"] when the session was
//     confirmed with an emailed code). An admin request carries the
//     nxmesh_session cookie.
//  2. The credential is checked cryptographically (JWT signature and expiry) or
//     by its SHA-256 (refresh tokens, session cookies and API keys are stored
//     only hashed).
//  3. One indexed query then confirms that the session or key is not revoked or
//     expired and that the user is not disabled. Its answer is cached per
//     replica (app.Cache) and dropped by the PostgreSQL notification that the
//     revoking transaction sends (app.Invalidator), so logout, refresh-token
//     reuse, key revocation and disabling a user take effect at once on the
//     replica that wrote them and within a second on every other one; the
//     expiries are checked on every request. The same query reads whether the session was
//     confirmed with an emailed code (app.Principal.EmailCodeVerified), and
//     for an API key its creator's current membership: a key acts with at most
//     its creator's role and stops when the creator is no longer a member.
//     The Principal's RecheckFunc repeats steps 2 and 3
//     for the same credential; the live event streams call it every few
//     seconds and close when it fails.
//
// Refresh tokens are rotated on every use; a session is one family of them.
// Presenting a used refresh token again revokes the whole family.
//
// Logins are throttled per account and per client IP from the login_attempts
// table (shared by all replicas): /v1/auth/login, /login/init, /login/verify
// and the admin login page all go through VerifyPassword or VerifyEmailCode.
// An attempt is counted under advisory locks before its password is hashed, so
// parallel guesses cannot overrun the limits (see reserveAttempt), and password
// hashing runs in a bounded number of slots per replica (see withHashSlot).
//
// The Service holds the domain logic; the JSON handlers in api.go and the admin
// pages call the same exported methods.
package auth

import (
	"context"

	"github.com/gofiber/fiber/v2"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
)

// Options connect the module to the rest of the master. The auth module uses
// no other module and has no hooks, so it has no fields; it exists so that
// every module is built the same way (New(d, opts)).
type Options struct{}

// Module is the auth module.
type Module struct {
	svc           *Service
	pages         *app.Pages
	secureCookies bool
}

var _ app.Module = (*Module)(nil)

// New builds the auth module over d. The error is always nil: the module
// loads nothing when it is built.
func New(d app.Deps, opts Options) (*Module, error) {
	return &Module{svc: NewService(d, opts), pages: d.Pages, secureCookies: d.Config.HTTP.SecureCookies}, nil
}

// Service returns the module's service, for other modules, main.go and the
// admin pages.
func (m *Module) Service() *Service { return m.svc }

// Name is "auth".
func (m *Module) Name() string { return "auth" }

// Policies declares who may manage API keys (see policies).
func (m *Module) Policies() []authz.Policy { return policies() }

// Jobs registers the hourly auth.cleanup job.
func (m *Module) Jobs(w *river.Workers) []*river.PeriodicJob { return registerJobs(w, m.svc) }

// GRPC registers nothing: agents do not authenticate as users.
func (m *Module) GRPC(grpc.ServiceRegistrar) {}

// Routes mounts /v1/auth/* and /v1/users* (api.go), the admin's sign-in pages
// (ui.go) and the users and account pages (users_ui.go).
func (m *Module) Routes(r app.Routers) {
	m.bindAuth(r.API)
	m.bindUsers(r.API)
	m.mountUI(r.UI)
	m.mountAccountUI(r.UI)
}

// AuthenticateAPI is app.Wiring.AuthenticateAPI: the caller of an API request,
// nil when it presents no credential, or an error wrapping app.ErrUnauthorized.
func (m *Module) AuthenticateAPI(c *fiber.Ctx) (*app.Principal, error) {
	return m.svc.authenticateAPI(c)
}

// AuthenticateUI is app.Wiring.AuthenticateUI: the caller of an admin request
// from its nxmesh_session cookie (with the session's CSRF token), nil without
// a cookie.
func (m *Module) AuthenticateUI(c *fiber.Ctx) (*app.Principal, error) { return m.svc.authenticateUI(c) }

// AuthenticateToken is app.Wiring.AuthenticateToken: the caller of an access
// token or API key sent in a first-message WebSocket's first message.
func (m *Module) AuthenticateToken(ctx context.Context, token string) (*app.Principal, error) {
	return m.svc.AuthenticateToken(ctx, token)
}
