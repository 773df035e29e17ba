package vhosts

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	"github.com/nxmesh/nxmesh/static"
	"github.com/nxmesh/nxmesh/views"
)

func TestMain(m *testing.M) { apptest.Main(m) }

const testPassword = "correct horse battery staple"

// env is one master shared by the subtests of a top-level test: auth, orgs,
// upstreams, certs and vhosts mounted on a fresh database and wired the way
// main.go wires them, and four signed-in users. Subtests get their own
// organization and workspace from env.setup, so they run in parallel without
// seeing each other's rows.
type env struct {
	app   *app.App
	db    *gorm.DB
	svc   *Service
	ups   *upstreams.Service
	certs *certs.Service
	orgs  *orgs.Service
	base  *orgstest.Base
	users map[string]auth.User
	// tokens are access tokens of "owner", "operator", "viewer" (members of
	// every organization setup creates) and "outsider" (owner of another one).
	tokens map[string]string
}

// newEnv builds the env; configure, if any, adjust the master's
// configuration after the tests' defaults.
func newEnv(t *testing.T, configure ...func(*app.Config)) *env {
	t.Helper()
	a := apptest.NewApp(t, func(cfg *app.Config) {
		cfg.Auth.RateLimitPerMinute = 1_000_000
		for _, c := range configure {
			c(cfg)
		}
	})
	base := orgstest.New(t, a)
	// The lower modules call into vhosts, which is built after them.
	var vh *Module
	upsMod, err := upstreams.New(a.Deps, upstreams.Options{
		ChangeFunc: func(ctx context.Context, tx *gorm.DB, ws uuid.UUID, summary string) error {
			return vh.Service().ConfigChanged(ctx, tx, ws, summary)
		},
		UsageFunc: func(ctx context.Context, tx *gorm.DB, id uuid.UUID) ([]string, error) {
			return vh.Service().UpstreamUsers(ctx, tx, id)
		},
	})
	if err != nil {
		t.Fatalf("upstreams.New: %v", err)
	}
	certsMod, err := certs.New(a.Deps, certs.Options{
		ChangeFunc: func(ctx context.Context, tx *gorm.DB, ws uuid.UUID, summary string) error {
			return vh.Service().ConfigChanged(ctx, tx, ws, summary)
		},
		UsageFunc: func(ctx context.Context, tx *gorm.DB, id uuid.UUID) ([]string, error) {
			return vh.Service().CertificateUsers(ctx, tx, id)
		},
	})
	if err != nil {
		t.Fatalf("certs.New: %v", err)
	}
	vh, err = New(a.Deps, Options{Upstreams: upsMod.Service(), Certs: certsMod.Service()})
	if err != nil {
		t.Fatalf("vhosts.New: %v", err)
	}
	vh.svc.bcryptCost = bcrypt.MinCost
	// The admin's error page and assets, as main.go mounts them, so that
	// pages render as in production and a browser gets htmx.
	w := base.Wiring()
	w.ErrorPage, w.Static = views.ErrorPage, static.FS
	base.MountWith(t, w, upsMod, certsMod, vh)
	e := &env{app: a, db: a.Deps.DB, svc: vh.Service(), ups: upsMod.Service(), certs: certsMod.Service(),
		orgs: base.Orgs.Service(), base: base, users: map[string]auth.User{}, tokens: map[string]string{}}
	for _, role := range []string{"owner", "operator", "viewer", "outsider"} {
		e.users[role], e.tokens[role] = base.SignIn(t, role+"@example.test", testPassword, role)
	}
	return e
}

// bundle is one subtest's fixture: a fresh organization (owner, operator and
// viewer members) with one workspace, an upstream and a certificate for
// api.example.com in it.
type bundle struct {
	*env
	ctx      context.Context
	orgID    uuid.UUID
	ws       uuid.UUID
	upstream upstreams.Upstream
	cert     certs.Certificate
}

func (e *env) setup(t *testing.T) *bundle {
	t.Helper()
	ctx := context.Background()
	org, ws := e.base.Org(t, e.users["owner"], e.users, authz.RoleOperator, authz.RoleViewer)
	b := &bundle{env: e, ctx: ctx, orgID: org.ID, ws: ws.ID}
	b.upstream = b.createUpstream(t, "api-backend", "10.0.1.20:8080", "10.0.1.21:8080")
	b.cert = b.createCert(t, "api.example.com")
	return b
}

// createUpstream creates an upstream in the bundle's workspace.
func (b *bundle) createUpstream(t *testing.T, name string, addrs ...string) upstreams.Upstream {
	t.Helper()
	servers := make([]upstreams.ServerInput, len(addrs))
	for i, a := range addrs {
		servers[i] = upstreams.ServerInput{Address: a}
	}
	u, err := b.ups.Create(b.ctx, upstreams.CreateParams{WorkspaceID: b.ws, Name: name, Servers: servers})
	if err != nil {
		t.Fatalf("create upstream %s: %v", name, err)
	}
	return u
}

// createCert uploads a fresh self-signed certificate for domain.
func (b *bundle) createCert(t *testing.T, domain string) certs.Certificate {
	t.Helper()
	certPEM, keyPEM := apptest.SelfSignedCert(t, domain)
	c, err := b.certs.Create(b.ctx, certs.CreateParams{WorkspaceID: b.ws, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM})
	if err != nil {
		t.Fatalf("upload certificate for %s: %v", domain, err)
	}
	return c
}

// do sends a request as the user whose token is tok ("" for none) with the
// given Accept header ("" for none) and returns the status and body.
func (e *env) do(t *testing.T, tok, method, path string, body any, accept string) (int, []byte) {
	t.Helper()
	var headers []string
	if accept != "" {
		headers = []string{"Accept", accept}
	}
	r := apptest.NewClient(e.app).As(tok).Do(t, method, path, body, headers...)
	return r.Status, r.Body
}

// call is do that fails the test unless the status is want, and decodes the
// body into out (when non-nil).
func (e *env) call(t *testing.T, tok, method, path string, body any, want int, out any) []byte {
	t.Helper()
	return apptest.NewClient(e.app).As(tok).Call(t, method, path, body, want, out).Body
}

// as calls the API as role.
func (b *bundle) as(t *testing.T, role, method, path string, body any, want int, out any) []byte {
	t.Helper()
	return b.call(t, b.tokens[role], method, path, body, want, out)
}

func (b *bundle) vhostsPath() string  { return fmt.Sprintf("/v1/workspaces/%s/virtual-hosts", b.ws) }
func (b *bundle) streamsPath() string { return fmt.Sprintf("/v1/workspaces/%s/streams", b.ws) }
func (b *bundle) configPath() string  { return fmt.Sprintf("/v1/workspaces/%s/config", b.ws) }

// createVHost creates a virtual host through the API as the operator.
func (b *bundle) createVHost(t *testing.T, body any) VirtualHost {
	t.Helper()
	var v VirtualHost
	b.as(t, "operator", http.MethodPost, b.vhostsPath(), body, http.StatusCreated, &v)
	return v
}

// createStream creates a stream through the API as the operator.
func (b *bundle) createStream(t *testing.T, body any) Stream {
	t.Helper()
	var s Stream
	b.as(t, "operator", http.MethodPost, b.streamsPath(), body, http.StatusCreated, &s)
	return s
}

// version is the workspace's current configuration version.
func (b *bundle) version(t *testing.T) int64 {
	t.Helper()
	v, err := b.svc.CurrentVersion(b.ctx, b.ws)
	if err != nil {
		t.Fatalf("current version: %v", err)
	}
	return v
}

// summaries are the summaries of the workspace's versions, oldest first.
func (b *bundle) summaries(t *testing.T) []string {
	t.Helper()
	var rows []configVersionRow
	if err := b.db.Select("version", "summary").Where("workspace_id = ?", b.ws).Order("version").Find(&rows).Error; err != nil {
		t.Fatalf("read versions: %v", err)
	}
	out := make([]string, len(rows))
	for i, r := range rows {
		if r.Version != int64(i+1) {
			t.Fatalf("versions are not consecutive from 1: position %d holds version %d", i, r.Version)
		}
		out[i] = r.Summary
	}
	return out
}

// apiError is the API's error envelope (docs/API.md).
type apiError = apptest.ErrorEnvelope

// fields are the details' field paths of an error body.
func fields(t *testing.T, raw []byte) []string {
	t.Helper()
	return append([]string{}, apptest.Response{Body: raw}.Fields(t)...)
}

// expectFields fails unless raw is a 422 naming exactly want.
func expectFields(t *testing.T, status int, raw []byte, want ...string) {
	t.Helper()
	if status != http.StatusUnprocessableEntity {
		t.Fatalf("status %d, want 422; body %s", status, raw)
	}
	got := fields(t, raw)
	slices.Sort(got)
	w := slices.Clone(want)
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Fatalf("details fields = %v, want %v; body %s", got, w, raw)
	}
}
