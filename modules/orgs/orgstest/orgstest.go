// Package orgstest builds the two lowest modules, auth and orgs, for the tests
// of a module above them, which mount their own module (with hooks standing in
// for the modules above it) on top: the module wiring those two provide is
// written once, here. A test that needs every module uses modules/wire/wiretest.
package orgstest

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/uuid"
	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// Base is the auth and orgs modules of a test master.
type Base struct {
	App  *app.App
	Auth *auth.Module
	Orgs *orgs.Module
}

// New builds the auth and orgs modules on a's dependencies. configure may
// adjust the orgs module's options (its Auth is set already), e.g. to give
// it the workspace overview's OverviewFunc.
func New(t testing.TB, a *app.App, configure ...func(*orgs.Options)) *Base {
	t.Helper()
	authMod, err := auth.New(a.Deps, auth.Options{})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	opts := orgs.Options{Auth: authMod.Service()}
	for _, c := range configure {
		c(&opts)
	}
	orgsMod, err := orgs.New(a.Deps, opts)
	if err != nil {
		t.Fatalf("orgs.New: %v", err)
	}
	return &Base{App: a, Auth: authMod, Orgs: orgsMod}
}

// Wiring is the wiring auth and orgs provide: the authenticators, the role
// lookup and the admin's navigation.
func (b *Base) Wiring() app.Wiring {
	return app.Wiring{
		AuthenticateAPI:   b.Auth.AuthenticateAPI,
		AuthenticateUI:    b.Auth.AuthenticateUI,
		AuthenticateToken: b.Auth.AuthenticateToken,
		Role:              b.Orgs.Service().Role,
		Nav:               b.Orgs.Shell,
	}
}

// Mount mounts auth, orgs and then mods on the app with Wiring.
func (b *Base) Mount(t testing.TB, mods ...app.Module) {
	t.Helper()
	b.MountWith(t, b.Wiring(), mods...)
}

// MountWith is Mount with a wiring the caller adjusted from Wiring.
func (b *Base) MountWith(t testing.TB, w app.Wiring, mods ...app.Module) {
	t.Helper()
	if err := b.App.Mount(context.Background(), append([]app.Module{b.Auth, b.Orgs}, mods...), w); err != nil {
		t.Fatalf("mount: %v", err)
	}
}

// SignIn creates a user (named name) and signs it in through
// POST /v1/auth/login, after Mount; it returns the user and its access token.
func (b *Base) SignIn(t testing.TB, email, password, name string) (auth.User, string) {
	t.Helper()
	u, err := b.Auth.Service().CreateUser(context.Background(), auth.CreateUserParams{Email: email, Password: password, Name: name})
	if err != nil {
		t.Fatalf("create user %s: %v", email, err)
	}
	var pair auth.TokenPair
	apptest.NewClient(b.App).Call(t, http.MethodPost, "/v1/auth/login", map[string]string{"email": email, "password": password}, http.StatusOK, &pair)
	return u, pair.AccessToken
}

// Org creates an organization with a unique name and slug owned by owner,
// adds users[role] as role for each of roles, in order, and creates its
// workspace "Production" (slug production).
func (b *Base) Org(t testing.TB, owner auth.User, users map[string]auth.User, roles ...string) (orgs.Organization, orgs.Workspace) {
	t.Helper()
	ctx := context.Background()
	os := b.Orgs.Service()
	slug := "o" + uuid.NewString()[:8]
	org, err := os.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Org " + slug, Slug: slug, OwnerID: owner.ID})
	if err != nil {
		t.Fatalf("create organization: %v", err)
	}
	for _, role := range roles {
		if _, err := os.AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: users[role].Email, Role: role}); err != nil {
			t.Fatalf("add %s: %v", role, err)
		}
	}
	ws, err := os.CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "Production", Slug: "production"})
	if err != nil {
		t.Fatalf("create workspace: %v", err)
	}
	return org, ws
}
