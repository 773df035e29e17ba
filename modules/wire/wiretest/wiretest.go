// Package wiretest builds a whole test master as main.go wires it (package
// wire): the app on a fresh database with every module mounted, either served
// in process (New) or running as app.Run runs it (Start: HTTP and gRPC on
// loopback ports, River and the modules' Runners started). It hands out the
// module handles, a superadmin and the users of each role in an organization
// and workspace, each with an authenticated JSON client.
package wiretest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/wire"
)

// Version is the version a test master reports.
const Version = "0.0.0-test"

// Password is the password of every user the helpers create.
const Password = "correct horse battery staple"

// Master is a test master.
type Master struct {
	App     *app.App
	Modules wire.Modules
	// URL is the HTTP base URL (http://127.0.0.1:port) and GRPCAddr the
	// agents' endpoint, when the master was started (Start); empty after New.
	URL      string
	GRPCAddr string
	// Client is an anonymous client; Client.As(token) authenticates.
	Client *apptest.Client
	// Stop shuts a started master down as SIGTERM does and waits for Run to
	// return (the test's end does it otherwise); nil after New.
	Stop func()
}

// Option adjusts a test master.
type Option func(*options)

type options struct {
	config []func(*app.Config)
}

// WithConfig adjusts the master's configuration before the app is built.
func WithConfig(f func(*app.Config)) Option {
	return func(o *options) { o.config = append(o.config, f) }
}

func build(t testing.TB, opts []Option, started bool) *Master {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var httpAddr, grpcAddr string
	if started {
		httpAddr, grpcAddr = apptest.FreeAddr(t), apptest.FreeAddr(t)
	}
	a := apptest.NewApp(t, func(c *app.Config) {
		// Tests sign in many times from one address.
		c.Auth.RateLimitPerMinute = 1 << 30
		if started {
			c.HTTP.Addr, c.GRPC.Addr = httpAddr, grpcAddr
			c.HTTP.PublicURL = "http://" + httpAddr
		}
		for _, f := range o.config {
			f(c)
		}
	})
	mods, err := wire.New(a.Deps)
	if err != nil {
		t.Fatalf("modules: %v", err)
	}
	m := &Master{App: a, Modules: mods}
	if started {
		m.URL, m.GRPCAddr = "http://"+httpAddr, grpcAddr
		m.Client = apptest.NewHTTPClient(m.URL)
	} else {
		m.Client = apptest.NewClient(a)
	}
	return m
}

// New returns a master with every module mounted, whose requests m.Client
// serves in process; no listener, job worker or Runner is started.
func New(t testing.TB, opts ...Option) *Master {
	t.Helper()
	m := build(t, opts, false)
	if err := m.App.Mount(context.Background(), m.Modules.List(), m.Modules.Wiring(Version)); err != nil {
		t.Fatalf("mount: %v", err)
	}
	return m
}

// Start returns a master running as app.Run runs it, on loopback ports, until
// the test ends: HTTP at m.URL, gRPC at m.GRPCAddr, River and the Runners
// started. m.Client talks HTTP to it.
func Start(t testing.TB, opts ...Option) *Master {
	t.Helper()
	m := build(t, opts, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.App.Run(ctx, m.Modules.List(), m.Modules.Wiring(Version)) }()
	var once sync.Once
	m.Stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("master run: %v", err)
			}
		})
	}
	t.Cleanup(m.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			done <- err // for Stop
			t.Fatalf("master stopped while starting: %v", err)
		default:
		}
		resp, err := http.Get(m.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("master not serving %s after 30s: %v", m.URL, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// User creates a user (a superadmin when super) with Password and returns it
// with a client signed in as it through POST /v1/auth/login.
func (m *Master) User(t testing.TB, email string, super bool) (auth.User, *apptest.Client) {
	t.Helper()
	u, err := m.Modules.Auth.Service().CreateUser(context.Background(), auth.CreateUserParams{Email: email, Password: Password, Name: email, Superadmin: super})
	if err != nil {
		t.Fatalf("create user %s: %v", email, err)
	}
	return u, m.Login(t, email, Password)
}

// Login signs in through POST /v1/auth/login and returns a client that
// authenticates with the access token.
func (m *Master) Login(t testing.TB, email, password string) *apptest.Client {
	t.Helper()
	var pair auth.TokenPair
	m.Client.Call(t, http.MethodPost, "/v1/auth/login", map[string]string{"email": email, "password": password}, http.StatusOK, &pair)
	return m.Client.As(pair.AccessToken)
}

// Superadmin creates a superadmin and returns it with its client.
func (m *Master) Superadmin(t testing.TB) (auth.User, *apptest.Client) {
	t.Helper()
	return m.User(t, "root-"+uuid.NewString()[:8]+"@example.test", true)
}

// Roles are the roles Team creates a member of, highest first.
var Roles = []string{authz.RoleOwner, authz.RoleAdmin, authz.RoleOperator, authz.RoleViewer}

// Team is an organization with one workspace and a member of each role.
type Team struct {
	Org       orgs.Organization
	Workspace orgs.Workspace
	// Users and Clients are keyed by role (Roles).
	Users   map[string]auth.User
	Clients map[string]*apptest.Client
}

// Team creates an organization with a workspace and a signed-in member of
// each role in Roles. Its slug and e-mail addresses are unique, so parallel
// tests each have their own.
func (m *Master) Team(t testing.TB) Team {
	t.Helper()
	ctx := context.Background()
	slug := "o" + uuid.NewString()[:8]
	tm := Team{Users: map[string]auth.User{}, Clients: map[string]*apptest.Client{}}
	for _, role := range Roles {
		tm.Users[role], tm.Clients[role] = m.User(t, fmt.Sprintf("%s-%s@example.test", role, slug), false)
	}
	os := m.Modules.Orgs.Service()
	org, err := os.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Org " + slug, Slug: slug, OwnerID: tm.Users[authz.RoleOwner].ID})
	if err != nil {
		t.Fatalf("create organization: %v", err)
	}
	for _, role := range Roles[1:] {
		if _, err := os.AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: tm.Users[role].Email, Role: role}); err != nil {
			t.Fatalf("add %s: %v", role, err)
		}
	}
	ws, err := os.CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "Production", Slug: "production"})
	if err != nil {
		t.Fatalf("create workspace: %v", err)
	}
	tm.Org, tm.Workspace = org, ws
	return tm
}
