package metrics

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/logs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
	"github.com/nxmesh/nxmesh/static"
	"github.com/nxmesh/nxmesh/views"
)

// wide is a master with the modules the metrics pages and the stream
// routes need (auth, orgs, upstreams, certs, vhosts, logs, metrics) mounted
// as main.go mounts them, with the admin's static files and navigation:
// one organization whose owner, operator and viewer have API tokens and
// admin sessions, a workspace with an online agent, a virtual host and a
// stream, and an outsider's token.
type wide struct {
	*bundle
	org      uuid.UUID
	clients  map[string]*apptest.Client // by role, and "outsider"
	sessions map[string]wideSession     // by role
	vh       uuid.UUID
	stream   uuid.UUID
}

type wideSession struct{ cookie, csrf string }

func setupWide(t *testing.T) *wide {
	t.Helper()
	a := apptest.NewApp(t, func(c *app.Config) { c.Auth.RateLimitPerMinute = 1 << 30 })
	ctx := context.Background()
	base := orgstest.New(t, a)
	authMod, orgsMod := base.Auth, base.Orgs
	upsMod := must(upstreams.New(a.Deps, upstreams.Options{}))
	certsMod := must(certs.New(a.Deps, certs.Options{}))
	vhMod := must(vhosts.New(a.Deps, vhosts.Options{Upstreams: upsMod.Service(), Certs: certsMod.Service(),
		KnownAgentsFunc: func(_ context.Context, _ *gorm.DB, _ uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
			out := map[uuid.UUID]bool{}
			for _, id := range ids {
				out[id] = true
			}
			return out, nil
		}}))
	mod := must(New(a.Deps, Options{}))
	logsMod := must(logs.New(a.Deps, logs.Options{RollupFunc: mod.Rollup}))
	wiring := base.Wiring()
	wiring.ErrorPage, wiring.Static = views.ErrorPage, static.FS
	base.MountWith(t, wiring, upsMod, certsMod, vhMod, logsMod, mod)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = logsMod.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	w := &wide{bundle: &bundle{a: a, mod: mod, logs: logsMod, base: time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)},
		clients: map[string]*apptest.Client{}, sessions: map[string]wideSession{}}
	users := map[string]auth.User{}
	for _, who := range []string{authz.RoleOwner, authz.RoleOperator, authz.RoleViewer, "outsider"} {
		u, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: who + "@example.com", Password: "password-" + who})
		if err != nil {
			t.Fatal(err)
		}
		users[who] = u
	}
	org, err := orgsMod.Service().CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Org", Slug: "org", OwnerID: users[authz.RoleOwner].ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := orgsMod.Service().CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Else", Slug: "else", OwnerID: users["outsider"].ID}); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{authz.RoleOperator, authz.RoleViewer} {
		if _, err := orgsMod.Service().AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: users[role].Email, Role: role}); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := orgsMod.Service().CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "WS", Slug: "ws"})
	if err != nil {
		t.Fatal(err)
	}
	w.org, w.ws = org.ID, ws.ID
	for who, u := range users {
		pair, err := authMod.Service().Login(ctx, auth.LoginParams{Email: u.Email, Password: "password-" + who, IP: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		w.clients[who] = apptest.NewClient(a).As(pair.AccessToken)
		if who != "outsider" {
			cookie, csrf, err := authMod.Service().CreateWebSession(ctx, u.ID, "127.0.0.1", "test")
			if err != nil {
				t.Fatal(err)
			}
			w.sessions[who] = wideSession{cookie: cookie, csrf: csrf}
		}
	}
	w.client = w.clients[authz.RoleViewer]
	if err := a.Deps.Pool.QueryRow(ctx, "INSERT INTO agents (workspace_id, name, state) VALUES ($1, 'edge-1', 'online') RETURNING id", ws.ID).Scan(&w.online); err != nil {
		t.Fatal(err)
	}
	weight := 1
	up, err := upsMod.Service().Create(ctx, upstreams.CreateParams{WorkspaceID: ws.ID, Name: "db", Servers: []upstreams.ServerInput{{Address: "127.0.0.1:5433", Weight: &weight}}})
	if err != nil {
		t.Fatal(err)
	}
	vh, err := vhMod.Service().CreateVirtualHost(ctx, ws.ID, vhosts.VirtualHostInput{Name: "www", ServerName: "www.example.com",
		Locations: []vhosts.Location{{Path: "/", UpstreamID: up.ID.String()}}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := vhMod.Service().CreateStream(ctx, ws.ID, vhosts.StreamInput{Name: "postgres", ListenPort: 5432, UpstreamID: up.ID.String()})
	if err != nil {
		t.Fatal(err)
	}
	w.vh, w.stream = vh.ID, st.ID
	return w
}

// page sends an admin request with role's session; a non-nil form is posted
// with the session's CSRF token.
func (w *wide) page(t *testing.T, role, method, path string, form url.Values) (int, string, http.Header) {
	t.Helper()
	var body io.Reader
	if form != nil {
		form.Set("_csrf", w.sessions[role].csrf)
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: w.sessions[role].cookie})
	resp := apptest.Do(t, w.a, req)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(raw), resp.Header
}

// session is a stream session entry of the agents' stream log format.
func session(ts time.Time, stream uuid.UUID, status uint32, in, out uint64, ms float64, client string) *agentv1.AccessLogEntry {
	return &agentv1.AccessLogEntry{TimestampMs: ts.UnixMilli(), Kind: "tcp", StreamId: stream.String(), Status: status,
		RequestLength: in, BytesSent: out, RequestTimeMs: ms, RemoteAddr: client, ServerPort: 5432}
}

// request is an HTTP access-log entry.
func request(ts time.Time, host, uri string, status uint32, client, ua string, vh uuid.UUID) *agentv1.AccessLogEntry {
	e := &agentv1.AccessLogEntry{TimestampMs: ts.UnixMilli(), Kind: "http", Method: "GET", Uri: uri, Protocol: "HTTP/1.1",
		Host: host, Status: status, RemoteAddr: client, UserAgent: ua, RequestLength: 200, BytesSent: 2000, RequestTimeMs: 12}
	if vh != uuid.Nil {
		e.VirtualHostId = vh.String()
	}
	return e
}

var dataChart = regexp.MustCompile(`data-chart="([^"]*)"`)

// charts returns the data-chart JSON documents of a page.
func charts(body string) []string {
	var out []string
	for _, m := range dataChart.FindAllStringSubmatch(body, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

// must returns v, panicking on err (module constructors in test setups).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
