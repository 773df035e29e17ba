package upstreams

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	"github.com/nxmesh/nxmesh/static"
	"github.com/nxmesh/nxmesh/views"
)

func TestMain(m *testing.M) { apptest.Main(m) }

const testPassword = "correct horse battery staple"

// hooks stands in for the vhosts module: it records every ChangeFunc call per
// workspace, fails the calls of chosen workspaces, and reports chosen upstreams
// as used.
type hooks struct {
	mu      sync.Mutex
	changes map[uuid.UUID][]change
	fail    map[uuid.UUID]error
	users   map[uuid.UUID][]string
}

// change is one ChangeFunc call. Visible is the number of the workspace's
// upstreams the call saw through its tx: it proves the call runs inside the
// change's transaction, after the rows are written.
type change struct {
	Summary string
	Visible int64
}

func newHooks() *hooks {
	return &hooks{changes: map[uuid.UUID][]change{}, fail: map[uuid.UUID]error{}, users: map[uuid.UUID][]string{}}
}

func (h *hooks) options() Options {
	return Options{ChangeFunc: h.change, UsageFunc: h.usage}
}

func (h *hooks) change(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, summary string) error {
	var n int64
	if err := tx.WithContext(ctx).Model(&Upstream{}).Where("workspace_id = ?", workspaceID).Count(&n).Error; err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.changes[workspaceID] = append(h.changes[workspaceID], change{Summary: summary, Visible: n})
	return h.fail[workspaceID]
}

func (h *hooks) usage(_ context.Context, _ *gorm.DB, id uuid.UUID) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.users[id], nil
}

func (h *hooks) changesOf(ws uuid.UUID) []change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]change(nil), h.changes[ws]...)
}

func (h *hooks) failFor(ws uuid.UUID, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail[ws] = err
}

func (h *hooks) setUsers(id uuid.UUID, users ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users[id] = users
}

// env is one master shared by the subtests of a top-level test: the auth, orgs
// and upstreams modules mounted on a fresh database, and four signed-in users.
// Subtests get their own organization and workspace from env.setup, so they
// run in parallel without seeing each other's rows.
type env struct {
	app   *app.App
	db    *gorm.DB
	svc   *Service
	orgs  *orgs.Service
	hooks *hooks
	base  *orgstest.Base
	users map[string]auth.User
	// tokens are access tokens of "owner", "operator", "viewer" (members of
	// every organization setup creates) and "outsider" (owner of another one).
	tokens map[string]string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	a := apptest.NewApp(t, func(cfg *app.Config) { cfg.Auth.RateLimitPerMinute = 1_000_000 })
	base := orgstest.New(t, a)
	h := newHooks()
	mod, err := New(a.Deps, h.options())
	if err != nil {
		t.Fatalf("upstreams.New: %v", err)
	}
	ctx := context.Background()
	// The admin's assets and error page, for the browser tests.
	w := base.Wiring()
	w.Static, w.ErrorPage = static.FS, views.ErrorPage
	base.MountWith(t, w, mod)
	e := &env{app: a, db: a.Deps.DB, svc: mod.Service(), orgs: base.Orgs.Service(), hooks: h,
		base: base, users: map[string]auth.User{}, tokens: map[string]string{}}
	for _, role := range []string{"owner", "operator", "viewer", "outsider"} {
		e.users[role], e.tokens[role] = base.SignIn(t, role+"@example.test", testPassword, role)
	}
	org, err := e.orgs.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Elsewhere", Slug: "elsewhere", OwnerID: e.users["outsider"].ID})
	if err != nil {
		t.Fatalf("create outsider organization: %v", err)
	}
	if _, err := e.orgs.CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "Other", Slug: "other"}); err != nil {
		t.Fatalf("create outsider workspace: %v", err)
	}
	return e
}

// bundle is one subtest's fixture: a fresh organization (owner, operator and
// viewer members) with one workspace.
type bundle struct {
	*env
	ctx   context.Context
	orgID uuid.UUID
	ws    uuid.UUID
}

func (e *env) setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	org, ws := e.base.Org(t, e.users["owner"], e.users, authz.RoleOperator, authz.RoleViewer)
	return &bundle{env: e, ctx: ctx, orgID: org.ID, ws: ws.ID}
}

// call sends a JSON request as the user whose token is tok ("" for none),
// fails the test unless the status is want, and decodes the body into out
// (when non-nil).
func (e *env) call(t *testing.T, tok, method, path string, body any, want int, out any) []byte {
	t.Helper()
	return apptest.NewClient(e.app).As(tok).Call(t, method, path, body, want, out).Body
}

// as calls the API as role.
func (b *bundle) as(t *testing.T, role, method, path string, body any, want int, out any) []byte {
	t.Helper()
	return b.call(t, b.tokens[role], method, path, body, want, out)
}

func (b *bundle) upstreamsPath() string { return fmt.Sprintf("/v1/workspaces/%s/upstreams", b.ws) }

// create creates an upstream through the API as the operator.
func (b *bundle) create(t *testing.T, body any) Upstream {
	t.Helper()
	var u Upstream
	b.as(t, "operator", http.MethodPost, b.upstreamsPath(), body, http.StatusCreated, &u)
	return u
}

// count is the number of the workspace's upstreams in the database.
func (b *bundle) count(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := b.db.Model(&Upstream{}).Where("workspace_id = ?", b.ws).Count(&n).Error; err != nil {
		t.Fatalf("count upstreams: %v", err)
	}
	return n
}

// audit returns the audit rows of the workspace's upstreams, oldest first.
func (b *bundle) audit(t *testing.T) []app.AuditEntry {
	t.Helper()
	var rows []app.AuditEntry
	if err := b.db.Where("workspace_id = ? AND object_type = ?", b.ws, objectUpstream).Order("created_at, id").Find(&rows).Error; err != nil {
		t.Fatalf("read audit log: %v", err)
	}
	return rows
}

// apiError is the API's error envelope (docs/API.md).
type apiError = apptest.ErrorEnvelope

func decodeError(t *testing.T, raw []byte) apiError {
	t.Helper()
	return apptest.Response{Body: raw}.Envelope(t)
}

// seedBody is the documented create example.
func seedBody() map[string]any {
	return map[string]any{
		"name":      "web-backend",
		"algorithm": "least_connections",
		"servers": []any{
			map[string]any{"address": "10.0.1.30:8080", "weight": 2, "backup": false},
			map[string]any{"address": "10.0.1.31:8080", "weight": 1, "backup": false},
			map[string]any{"address": "10.0.1.32:8080", "weight": 1, "backup": true},
		},
		"health_check": map[string]any{"enabled": true, "path": "/health", "interval": 10, "timeout": 5},
	}
}

func ptr[T any](v T) *T { return &v }

var errHookFailed = errors.New("configuration store unavailable")
