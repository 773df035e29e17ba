package orgs

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"testing"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
)

func TestMain(m *testing.M) { apptest.Main(m) }

const testPassword = "correct-horse-battery"

// bundle is one test's master: a fresh database with the auth and orgs modules
// mounted.
type bundle struct {
	t    *testing.T
	app  *app.App
	db   *gorm.DB
	svc  *Service
	auth *auth.Service
}

func setup(t *testing.T) *bundle { return setupWith(t, nil) }

// setupWith is setup with mutate adjusting the configuration before app.New.
func setupWith(t *testing.T, mutate func(*app.Config)) *bundle {
	t.Helper()
	a := apptest.NewApp(t, mutate)
	authMod, err := auth.New(a.Deps, auth.Options{})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	mod, err := New(a.Deps, Options{Auth: authMod.Service()})
	if err != nil {
		t.Fatalf("orgs.New: %v", err)
	}
	err = a.Mount(context.Background(), []app.Module{authMod, mod}, app.Wiring{
		AuthenticateAPI: authMod.AuthenticateAPI,
		AuthenticateUI:  authMod.AuthenticateUI,
		Role:            mod.Service().Role,
		Nav:             mod.Shell,
	})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	return &bundle{t: t, app: a, db: a.Deps.DB, svc: mod.Service(), auth: authMod.Service()}
}

// testUser is an account with an access token from /v1/auth/login.
type testUser struct {
	ID    uuid.UUID
	Email string
	Token string
}

// principal is the user as the service sees them in a request's context.
func (u testUser) ctx() context.Context {
	return app.WithPrincipal(context.Background(), &app.Principal{UserID: u.ID, Email: u.Email})
}

// user creates an account with the auth service and signs it in over HTTP.
func (b *bundle) user(name string, superadmin bool) testUser {
	b.t.Helper()
	email := name + "@example.com"
	u, err := b.auth.CreateUser(context.Background(), auth.CreateUserParams{
		Email: email, Password: testPassword, Name: name, Superadmin: superadmin,
	})
	if err != nil {
		b.t.Fatalf("create user %s: %v", name, err)
	}
	res := b.call(http.MethodPost, "/v1/auth/login", "", map[string]string{"email": email, "password": testPassword})
	res.expect(http.StatusOK)
	var pair auth.TokenPair
	res.decode(&pair)
	if pair.AccessToken == "" {
		b.t.Fatalf("login %s: no access token in %s", email, res.body)
	}
	return testUser{ID: u.ID, Email: email, Token: pair.AccessToken}
}

// result is an HTTP response read whole.
type result struct {
	t      *testing.T
	method string
	path   string
	status int
	body   []byte
}

// call sends a request; body is sent as is when it is a string, else as JSON.
func (b *bundle) call(method, path, token string, body any) *result {
	b.t.Helper()
	r := apptest.NewClient(b.app).As(token).Do(b.t, method, path, body)
	return &result{t: b.t, method: method, path: path, status: r.Status, body: r.Body}
}

func (r *result) expect(status int) *result {
	r.t.Helper()
	if r.status != status {
		r.t.Fatalf("%s %s: status %d, want %d; body %s", r.method, r.path, r.status, status, r.body)
	}
	return r
}

func (r *result) decode(v any) {
	r.t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		r.t.Fatalf("%s %s: decode %s: %v", r.method, r.path, r.body, err)
	}
}

func (r *result) object() map[string]any {
	r.t.Helper()
	var m map[string]any
	r.decode(&m)
	return m
}

// list decodes a {data, meta} envelope.
func (r *result) list() ([]map[string]any, app.ListMeta) {
	r.t.Helper()
	var l struct {
		Data []map[string]any `json:"data"`
		Meta app.ListMeta     `json:"meta"`
	}
	r.decode(&l)
	return l.Data, l.Meta
}

// expectError checks the error envelope's code and, when field is set, that a
// detail names it.
func (r *result) expectError(status int, code, field string) {
	r.t.Helper()
	r.expect(status)
	env := apptest.Response{Body: r.body}.Envelope(r.t)
	if env.Error.Code != code {
		r.t.Fatalf("%s %s: error code %q, want %q; body %s", r.method, r.path, env.Error.Code, code, r.body)
	}
	if env.Error.RequestID == "" {
		r.t.Fatalf("%s %s: error without request_id: %s", r.method, r.path, r.body)
	}
	if field != "" && !slices.ContainsFunc(env.Error.Details, func(d app.FieldError) bool { return d.Field == field }) {
		r.t.Fatalf("%s %s: no detail for field %q: %s", r.method, r.path, field, r.body)
	}
}

func (r *result) message() string {
	r.t.Helper()
	return apptest.Response{Body: r.body}.Envelope(r.t).Error.Message
}

// expectKeys checks that obj has exactly keys.
func expectKeys(t *testing.T, what string, obj map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range obj {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Fatalf("%s fields %v, want %v", what, got, keys)
	}
}

var timestampPattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

func expectTimestamp(t *testing.T, what string, v any) {
	t.Helper()
	s, ok := v.(string)
	if !ok || !timestampPattern.MatchString(s) {
		t.Fatalf("%s = %v, want an RFC 3339 UTC timestamp", what, v)
	}
}

// createOrg creates an organization over HTTP as u.
func (b *bundle) createOrg(u testUser, slug string) Organization {
	b.t.Helper()
	res := b.call(http.MethodPost, "/v1/organizations", u.Token, map[string]string{"name": "Org " + slug, "slug": slug})
	res.expect(http.StatusCreated)
	var out struct {
		ID   uuid.UUID `json:"id"`
		Name string    `json:"name"`
		Slug string    `json:"slug"`
	}
	res.decode(&out)
	return Organization{ID: out.ID, Name: out.Name, Slug: out.Slug}
}

// createWorkspace creates a workspace over HTTP as u.
func (b *bundle) createWorkspace(u testUser, orgID uuid.UUID, slug string) Workspace {
	b.t.Helper()
	res := b.call(http.MethodPost, "/v1/organizations/"+orgID.String()+"/workspaces", u.Token, map[string]string{"name": "WS " + slug, "slug": slug})
	res.expect(http.StatusCreated)
	var out struct {
		ID   uuid.UUID `json:"id"`
		Slug string    `json:"slug"`
	}
	res.decode(&out)
	return Workspace{ID: out.ID, OrganizationID: orgID, Slug: out.Slug}
}

// invite invites u to the organization over HTTP as inviter and returns the
// invitation's id.
func (b *bundle) invite(inviter testUser, orgID uuid.UUID, u testUser, role string) string {
	b.t.Helper()
	inv := b.call(http.MethodPost, "/v1/organizations/"+orgID.String()+"/members", inviter.Token,
		map[string]string{"email": u.Email, "role": role}).expect(http.StatusAccepted).object()
	return inv["id"].(string)
}

// join makes u a member over HTTP: inviter invites, u accepts.
func (b *bundle) join(inviter testUser, orgID uuid.UUID, u testUser, role string) {
	b.t.Helper()
	id := b.invite(inviter, orgID, u, role)
	b.call(http.MethodPost, "/v1/invitations/"+id+"/accept", u.Token, nil).expect(http.StatusOK)
}

// addMember adds u to the organization with role, as the master itself.
func (b *bundle) addMember(orgID uuid.UUID, u testUser, role string) {
	b.t.Helper()
	if _, err := b.svc.AddMember(context.Background(), AddMemberParams{OrgID: orgID, Email: u.Email, Role: role}); err != nil {
		b.t.Fatalf("add %s as %s: %v", u.Email, role, err)
	}
}
