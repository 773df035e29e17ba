package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
)

func TestMain(m *testing.M) { apptest.Main(m) }

const (
	testSMTPUser = "mailer"
	testSMTPPass = "mailer-secret"
	testPassword = "correct horse battery"
)

// bundle is one test's master: a fresh database, the auth module mounted with a
// probe module, a controllable clock and an SMTP server capturing mail.
type bundle struct {
	app   *app.App
	mod   *Module
	svc   *Service
	clock *testClock
	mail  *apptest.Mailbox
	ctx   context.Context
}

// setup builds a bundle; mutate adjusts the configuration before app.New.
func setup(t *testing.T, mutate func(*app.Config)) *bundle {
	t.Helper()
	mb := apptest.StartMailbox(t, testSMTPUser, testSMTPPass)
	a := apptest.NewApp(t, func(cfg *app.Config) {
		host, port, _ := net.SplitHostPort(mb.Addr)
		cfg.SMTP.Host = host
		cfg.SMTP.Port, _ = strconv.Atoi(port)
		cfg.SMTP.Username = testSMTPUser
		cfg.SMTP.Password = testSMTPPass
		cfg.SMTP.From = "nxmesh@example.test"
		cfg.SMTP.TLS = "none"
		if mutate != nil {
			mutate(cfg)
		}
	})
	clk := &testClock{now: time.Now().UTC().Truncate(time.Second)}
	a.Deps.Clock = clk.Now
	mod, err := New(a.Deps, Options{})
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	ctx := context.Background()
	err = a.Mount(ctx, []app.Module{mod, probeModule{}}, app.Wiring{
		AuthenticateAPI: mod.AuthenticateAPI,
		AuthenticateUI:  mod.AuthenticateUI,
		// Auth does not know memberships; only API keys and superadmins reach
		// the probe's Require route.
		Role: func(context.Context, uuid.UUID, app.Scope) (string, error) { return "", nil },
	})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	return &bundle{app: a, mod: mod, svc: mod.Service(), clock: clk, mail: mb, ctx: ctx}
}

// probeModule mounts routes that show what the guard made of a credential.
type probeModule struct{}

func (probeModule) Name() string                             { return "probe" }
func (probeModule) Policies() []authz.Policy                 { return nil }
func (probeModule) Jobs(*river.Workers) []*river.PeriodicJob { return nil }
func (probeModule) GRPC(grpc.ServiceRegistrar)               {}
func (probeModule) Routes(r app.Routers) {
	orgScope := func(c *fiber.Ctx) (app.Scope, error) {
		id, err := app.ParamUUID(c, "id")
		return app.Scope{OrgID: id}, err
	}
	show := func(c *fiber.Ctx) error {
		p := app.Caller(c)
		return c.JSON(fiber.Map{"user_id": p.UserID, "email": p.Email, "role": app.RoleOf(c), "api_key": p.APIKey != nil})
	}
	r.API.Get("/probe/orgs/:id/keys", app.Require(ObjectAPIKey, authz.Read, orgScope), app.Doc{Summary: "probe"}, show)
	r.API.Post("/probe/orgs/:id/keys", app.Require(ObjectAPIKey, authz.Write, orgScope), app.Doc{Summary: "probe"}, show)
	r.UI.Get("/probe/ui", app.Authenticated(), app.Doc{Summary: "probe"}, func(c *fiber.Ctx) error {
		return c.SendString(app.Caller(c).Email)
	})
	r.UI.Post("/probe/ui", app.Authenticated(), app.Doc{Summary: "probe"}, func(c *fiber.Ctx) error {
		return c.SendString("posted")
	})
}

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// response is an answer read in full.
type response apptest.Response

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	apptest.Response(r).Decode(t, v)
}

type errorEnvelope = apptest.ErrorEnvelope

func (r response) errorBody(t *testing.T) errorEnvelope {
	t.Helper()
	return apptest.Response(r).Envelope(t)
}

// expect fails the test unless r has status and, for errors, code.
func (r response) expect(t *testing.T, status int, code string) {
	t.Helper()
	apptest.Response(r).Expect(t, status, code)
}

// do sends a request; body is JSON-encoded unless it is a string. headers are
// name, value pairs.
func (b *bundle) do(t *testing.T, method, path string, body any, headers ...string) response {
	t.Helper()
	return response(apptest.NewClient(b.app).Do(t, method, path, body, headers...))
}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

func (b *bundle) createUser(t *testing.T, email string, superadmin bool) User {
	t.Helper()
	u, err := b.svc.CreateUser(b.ctx, CreateUserParams{Email: email, Password: testPassword, Name: "Test", Superadmin: superadmin})
	if err != nil {
		t.Fatalf("create user %s: %v", email, err)
	}
	return u
}

// login signs in over HTTP and returns the tokens.
func (b *bundle) login(t *testing.T, email string) TokenPair {
	t.Helper()
	r := b.do(t, "POST", "/v1/auth/login", map[string]string{"email": email, "password": testPassword})
	r.expect(t, http.StatusOK, "")
	var pair TokenPair
	r.decode(t, &pair)
	return pair
}

// createOrg inserts an organization directly (the orgs module is not mounted).
func (b *bundle) createOrg(t *testing.T, requireEmailCode bool) uuid.UUID {
	t.Helper()
	id := uuid.New()
	if err := b.app.Deps.DB.Exec(`INSERT INTO organizations (id, name, slug, require_email_code) VALUES (?, ?, ?, ?)`,
		id, "Org "+id.String()[:8], "org-"+id.String()[:8], requireEmailCode).Error; err != nil {
		t.Fatalf("insert organization: %v", err)
	}
	return id
}

// addMember inserts a membership directly (the orgs module is not mounted).
func (b *bundle) addMember(t *testing.T, orgID, userID uuid.UUID, role string) {
	t.Helper()
	if err := b.app.Deps.DB.Exec(`INSERT INTO memberships (organization_id, user_id, role) VALUES (?, ?, ?)
		ON CONFLICT (organization_id, user_id) DO UPDATE SET role = EXCLUDED.role`, orgID, userID, role).Error; err != nil {
		t.Fatalf("insert membership: %v", err)
	}
	// A write outside the services reaches this replica's caches by notification.
	b.app.Invalidator().Sync(context.Background())
}

func (b *bundle) createWorkspace(t *testing.T, orgID uuid.UUID) uuid.UUID {
	t.Helper()
	id := uuid.New()
	if err := b.app.Deps.DB.Exec(`INSERT INTO workspaces (id, organization_id, name, slug) VALUES (?, ?, 'WS', ?)`,
		id, orgID, "ws-"+id.String()[:8]).Error; err != nil {
		t.Fatalf("insert workspace: %v", err)
	}
	return id
}

// parallel sends n requests at once (released together) and returns their
// responses; it is safe to call from the test goroutine only. Failures to
// send are reported with t.Error, never t.Fatal, from the senders.
func (b *bundle) parallel(t *testing.T, n int, build func(i int) *http.Request) []response {
	t.Helper()
	out := make([]response, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		req := build(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := b.app.Fiber().Test(req, -1)
			if err != nil {
				t.Errorf("%s %s: %v", req.Method, req.URL, err)
				return
			}
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Errorf("read response: %v", err)
				return
			}
			out[i] = response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// jsonRequest builds a JSON POST for parallel.
func jsonRequest(t *testing.T, path string, body any, headers ...string) *http.Request {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

// statuses counts responses by status code.
func statuses(rs []response) map[int]int {
	out := map[int]int{}
	for _, r := range rs {
		out[r.Status]++
	}
	return out
}
