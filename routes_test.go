package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/metrics"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	"github.com/nxmesh/nxmesh/modules/wire"
	"github.com/nxmesh/nxmesh/modules/wire/wiretest"
)

// master is the whole master as main.go wires it, on a fresh database.
type master struct {
	a    *app.App
	mods wire.Modules
}

func newMaster(t *testing.T) *master {
	t.Helper()
	w := wiretest.New(t)
	return &master{a: w.App, mods: w.Modules}
}

func (m *master) do(t *testing.T, method, path, token string, body []byte) (int, []byte) {
	t.Helper()
	var payload any // no body and no Content-Type when body is nil
	if body != nil {
		payload = body
	}
	r := apptest.NewClient(m.a).As(token).Do(t, method, path, payload)
	return r.Status, r.Body
}

// principals of the access matrix: a member of each role, and the owner of
// another organization.
var principals = []string{"anonymous", authz.RoleViewer, authz.RoleOperator, authz.RoleAdmin, authz.RoleOwner, "outsider"}

type people struct {
	users  map[string]auth.User
	tokens map[string]string
}

func (m *master) people(t *testing.T) people {
	t.Helper()
	ctx := context.Background()
	p := people{users: map[string]auth.User{}, tokens: map[string]string{}}
	for _, who := range append(principals[1:], "member", "invitee") {
		email := who + "@example.com"
		u, err := m.mods.Auth.Service().CreateUser(ctx, auth.CreateUserParams{Email: email, Password: "password-" + who})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := m.mods.Auth.Service().Login(ctx, auth.LoginParams{Email: email, Password: "password-" + who, IP: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		p.users[who], p.tokens[who] = u, pair.AccessToken
	}
	if _, err := m.mods.Orgs.Service().CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Elsewhere", Slug: "elsewhere", OwnerID: p.users["outsider"].ID}); err != nil {
		t.Fatal(err)
	}
	return p
}

// relogin replaces who's token when it no longer works.
func (m *master) relogin(t *testing.T, p people, who string) {
	t.Helper()
	if status, _ := m.do(t, http.MethodGet, "/v1/users/me", p.tokens[who], nil); status != http.StatusUnauthorized {
		return
	}
	pair, err := m.mods.Auth.Service().Login(context.Background(), auth.LoginParams{Email: who + "@example.com", Password: "password-" + who, IP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	p.tokens[who] = pair.AccessToken
}

// fixture is one organization with an object of every kind, so every path
// parameter of every route has a real value.
type fixture struct {
	params map[string]string // "<collection>/:id" or ":name" → value
}

var fixtureSeq struct {
	sync.Mutex
	n int
}

func (m *master) fixture(t *testing.T, p people) fixture {
	t.Helper()
	fixtureSeq.Lock()
	fixtureSeq.n++
	n := fixtureSeq.n
	fixtureSeq.Unlock()
	ctx := context.Background()
	os := m.mods.Orgs.Service()
	org, err := os.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Org", Slug: fmt.Sprintf("org-%d", n), OwnerID: p.users[authz.RoleOwner].ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{authz.RoleViewer, authz.RoleOperator, authz.RoleAdmin} {
		if _, err := os.AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: p.users[role].Email, Role: role}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: p.users["member"].Email, Role: authz.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	inv, err := os.InviteMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: p.users["invitee"].Email, Role: authz.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := os.CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "WS", Slug: "ws"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.CreateAPIKey(ctx, orgs.CreateAPIKeyParams{OrgID: org.ID, Name: "k", Role: authz.RoleViewer, CreatedBy: p.users[authz.RoleOwner].ID})
	if err != nil {
		t.Fatal(err)
	}
	weight := 1
	up, err := m.mods.Upstreams.Service().Create(ctx, upstreams.CreateParams{WorkspaceID: ws.ID, Name: "api", Servers: []upstreams.ServerInput{{Address: "127.0.0.1:8081", Weight: &weight}}})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := apptest.SelfSignedCert(t, "www.example.com")
	cert, err := m.mods.Certs.Service().Create(ctx, certs.CreateParams{WorkspaceID: ws.ID, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM, Provider: "upload"})
	if err != nil {
		t.Fatal(err)
	}
	vh, err := m.mods.VHosts.Service().CreateVirtualHost(ctx, ws.ID, vhosts.VirtualHostInput{
		Name: "www", ServerName: "www.example.com",
		Locations: []vhosts.Location{{Path: "/", UpstreamID: up.ID.String()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.mods.VHosts.Service().CreateStream(ctx, ws.ID, vhosts.StreamInput{Name: "db", ListenPort: 5432, UpstreamID: up.ID.String()})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.mods.Agents.Service().CreateToken(ctx, agents.CreateTokenParams{WorkspaceID: ws.ID, Name: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	// A finished command of the (never connected) agent, for the command routes.
	cmdID := uuid.New()
	if err := m.a.Deps.DB.Exec("INSERT INTO agent_commands (id, agent_id, workspace_id, kind, status) VALUES (?, ?, ?, 'get_status', 'succeeded')",
		cmdID, tok.AgentID, ws.ID).Error; err != nil {
		t.Fatal(err)
	}
	metric, op, threshold := "error_rate", ">", 0.5
	rule, err := m.mods.Metrics.Alerts().CreateRule(ctx, ws.ID, metrics.AlertRuleInput{Metric: &metric, Operator: &op, Threshold: &threshold})
	if err != nil {
		t.Fatal(err)
	}
	chName, chType, chURL, chSecret := "hook", metrics.ChannelWebhook, "https://hooks.example.com/nxmesh", "0123456789abcdef"
	channel, err := m.mods.Metrics.Alerts().CreateChannel(ctx, org.ID, metrics.NotificationChannelInput{Name: &chName, Type: &chType, URL: &chURL, Secret: &chSecret})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{params: map[string]string{
		"alert-rules/:id":           rule.ID.String(),
		"notification-channels/:id": channel.ID.String(),
		"agents/:id":                tok.AgentID.String(),
		":agent_id":                 tok.AgentID.String(),
		":command_id":               cmdID.String(),
		"certificates/:id":          cert.ID.String(),
		"virtual-hosts/:id":         vh.ID.String(),
		"streams/:id":               st.ID.String(),
		":version":                  "1",
		"organizations/:id":         org.ID.String(),
		"workspaces/:id":            ws.ID.String(),
		"users/:id":                 p.users["member"].ID.String(),
		":user_id":                  p.users["member"].ID.String(),
		"orgs/:id":                  org.ID.String(),
		":org":                      org.ID.String(),
		":key_id":                   key.ID.String(),
		":invitation_id":            inv.ID.String(),
		"invitations/:id":           inv.ID.String(),
		"upstreams/:id":             up.ID.String(),
	}}
}

// path fills route's parameters from f.
func (f fixture) path(t *testing.T, route string) string {
	segs := strings.Split(route, "/")
	for i, s := range segs {
		if s == "*" {
			segs[i] = "app.css" // a file that exists under /static/
			continue
		}
		if !strings.HasPrefix(s, ":") {
			continue
		}
		v, ok := f.params[s]
		if !ok && i > 0 {
			v, ok = f.params[segs[i-1]+"/"+s]
		}
		if !ok {
			t.Fatalf("route %s: no fixture value for %s; add one to fixture()", route, s)
		}
		segs[i] = v
	}
	return strings.Join(segs, "/")
}

// TestRoutes_AccessMatrix walks every registered route with every principal and
// asserts the outcome: anonymous callers get 401 on every non-public route, a
// member of another organization gets 404 for this organization's ids, a role
// the route's policy does not allow gets 403, an allowed role gets past the guard,
// and a viewer may read (GET) but never write.
func TestRoutes_AccessMatrix(t *testing.T) {
	m := newMaster(t)
	p := m.people(t)
	shared := m.fixture(t, p)
	routes := m.a.Routes()
	sort.Slice(routes, func(i, j int) bool { return routes[i].Method+routes[i].Path < routes[j].Method+routes[j].Path })
	checked := 0
	for _, r := range routes {
		if r.Kind == app.KindUI {
			continue // the admin is walked by TestRoutes_AdminRequiresSession
		}
		for _, who := range principals {
			name := fmt.Sprintf("%s %s as %s", r.Method, r.Path, who)
			f := shared
			if r.Method != http.MethodGet {
				f = m.fixture(t, p) // writes may destroy what they touch
			}
			path := f.path(t, r.Path)
			var body []byte
			if r.Method == http.MethodPost || r.Method == http.MethodPatch || r.Method == http.MethodPut {
				body = []byte(`{}`)
			}
			status, resp := m.do(t, r.Method, path, p.tokens[who], body)
			checked++
			if r.Method != http.MethodGet && who != "anonymous" {
				m.relogin(t, p, who) // the call may have ended the caller's session (logout)
			}
			switch {
			case r.Access.IsPublic():
				if status == http.StatusUnauthorized || status == http.StatusForbidden {
					t.Errorf("%s: public route answered %d: %s", name, status, resp)
				}
			case who == "anonymous":
				if status != http.StatusUnauthorized {
					t.Errorf("%s: status %d, want 401: %s", name, status, resp)
				}
			case !r.Access.IsPermission():
				if status == http.StatusUnauthorized {
					t.Errorf("%s: signed-in caller got 401: %s", name, resp)
				}
			case who == "outsider":
				if status != http.StatusNotFound {
					t.Errorf("%s: status %d, want 404 for another organization's id: %s", name, status, resp)
				}
			default:
				allowed, err := m.a.Deps.Authz.Allowed(who, "", r.Access.Object, r.Access.Action)
				if err != nil {
					t.Fatal(err)
				}
				if who == authz.RoleViewer && allowed != (r.Method == http.MethodGet) {
					t.Errorf("%s: viewer allowed=%v by policy %s/%s; viewers read everything and write nothing", name, allowed, r.Access.Object, r.Access.Action)
				}
				if allowed && (status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound) {
					t.Errorf("%s: allowed by policy but status %d: %s", name, status, resp)
				}
				if !allowed && status != http.StatusForbidden {
					t.Errorf("%s: denied by policy but status %d, want 403: %s", name, status, resp)
				}
			}
			if status >= 500 {
				t.Errorf("%s: server error %d: %s", name, status, resp)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no route was checked")
	}
	t.Logf("checked %d (route, principal) pairs", checked)
}

// TestRoutes_AdminRequiresSession asserts every admin page redirects a caller
// without a session to /login, and every unsafe admin request without a CSRF
// token is refused.
func TestRoutes_AdminRequiresSession(t *testing.T) {
	m := newMaster(t)
	p := m.people(t)
	f := m.fixture(t, p)
	for _, r := range m.a.Routes() {
		if r.Kind != app.KindUI || r.Access.IsPublic() {
			continue
		}
		path := f.path(t, r.Path)
		status, body := m.do(t, r.Method, path, "", nil)
		if status != http.StatusSeeOther && status != http.StatusFound {
			t.Errorf("%s %s without session: status %d, want a redirect to /login: %s", r.Method, r.Path, status, body)
		}
	}
}

// TestOpenAPI_MatchesRoutes fails when a /v1 route served by the HTTP app is
// missing from /v1/openapi.json, or the document lists an operation that is not
// served.
func TestOpenAPI_MatchesRoutes(t *testing.T) {
	m := newMaster(t)
	status, body := m.do(t, http.MethodGet, "/v1/openapi.json", "", nil)
	if status != http.StatusOK {
		t.Fatalf("openapi.json: %d", status)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi version %q, want 3.1.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" /v1"+path] = true
		}
	}
	served := map[string]bool{}
	for _, r := range m.a.Fiber().GetRoutes(true) {
		if !strings.HasPrefix(r.Path, "/v1/") || r.Method == http.MethodHead {
			continue
		}
		served[r.Method+" "+app.Route{Path: r.Path}.OpenAPIPath()] = true
	}
	for k := range served {
		if !documented[k] {
			t.Errorf("served but not in openapi.json: %s", k)
		}
	}
	for k := range documented {
		if !served[k] {
			t.Errorf("in openapi.json but not served: %s", k)
		}
	}
	if len(served) < 10 {
		t.Fatalf("only %d /v1 routes served", len(served))
	}
	status, page := m.do(t, http.MethodGet, "/docs", "", nil)
	if status != http.StatusOK || !bytes.Contains(page, []byte("/v1/organizations/{id}/workspaces")) {
		t.Fatalf("/docs: status %d, does not list the workspaces route", status)
	}
}

// TestServe_Conventions checks the behaviour every route shares: request ids,
// the error envelope on unknown routes and methods, body limits, health.
func TestServe_Conventions(t *testing.T) {
	m := newMaster(t)
	cases := []struct {
		name, method, path string
		body               []byte
		status             int
		code               string
	}{
		{"UnknownRouteIs404Envelope", http.MethodGet, "/v1/nope", nil, 404, app.CodeNotFound},
		{"WrongMethodIs405Envelope", http.MethodPut, "/v1/organizations", []byte(`{}`), 405, app.CodeMethodNotAllowed},
		{"MissingTokenIs401", http.MethodGet, "/v1/organizations", nil, 401, app.CodeUnauthorized},
		{"MalformedJSONIs422", http.MethodPost, "/v1/auth/login", []byte(`{"email":`), 422, app.CodeValidation},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp := apptest.Do(t, m.a, req)
			defer resp.Body.Close()
			var env struct {
				Error struct {
					Code      string `json:"code"`
					RequestID string `json:"request_id"`
				} `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&env)
			if resp.StatusCode != tc.status || env.Error.Code != tc.code {
				t.Fatalf("status %d code %q, want %d %q", resp.StatusCode, env.Error.Code, tc.status, tc.code)
			}
			if id := resp.Header.Get("X-Request-ID"); id == "" || id != env.Error.RequestID {
				t.Fatalf("X-Request-ID %q, envelope request_id %q", id, env.Error.RequestID)
			}
		})
	}
	t.Run("OversizedBodyIs413", func(t *testing.T) {
		// Over a real socket: the declared length is refused before the body is
		// read, so the client sends only the headers and reads the answer.
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = m.a.Fiber().Listener(lis) }()
		conn, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", 2<<20)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !bytes.Contains(body, []byte(app.CodePayloadTooLarge)) {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("KeepsCallerRequestID", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodGet, "/healthz", nil)
		req.Header.Set("X-Request-ID", "trace-123")
		resp := apptest.Do(t, m.a, req)
		if got := resp.Header.Get("X-Request-ID"); got != "trace-123" {
			t.Fatalf("X-Request-ID = %q", got)
		}
	})
	t.Run("ReadyWhenMigrated", func(t *testing.T) {
		status, body := m.do(t, http.MethodGet, "/readyz", "", nil)
		if status != http.StatusOK || !bytes.Contains(body, []byte(`"migrations":"current"`)) {
			t.Fatalf("readyz: %d %s", status, body)
		}
	})
	t.Run("ServesMetrics", func(t *testing.T) {
		status, body := m.do(t, http.MethodGet, "/metrics", "", nil)
		if status != http.StatusOK || !bytes.Contains(body, []byte("nxmesh_http_requests_total")) {
			t.Fatalf("metrics: %d %s", status, body)
		}
	})
}

func TestMain(m *testing.M) { apptest.Main(m) }
