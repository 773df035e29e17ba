package logs

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
	"github.com/nxmesh/nxmesh/static"
	"github.com/nxmesh/nxmesh/views"
)

// wait bounds every wait for something the master does.
const wait = 15 * time.Second

const testPassword = "correct horse battery staple"

// replica is one master replica: auth, orgs and logs mounted the way main.go
// wires them, served over HTTP on a loopback port, the logs module running.
type replica struct {
	a    *app.App
	base string
	mod  *Module
	auth *auth.Service
	orgs *orgs.Service
	// stop ends the logs module's Run (as on shutdown) and waits for it.
	stop func()
}

// newReplica starts a replica over cfg (replicas with the same
// cfg.Database.URL share the database).
func newReplica(t *testing.T, cfg app.Config) *replica {
	t.Helper()
	a, err := app.New(context.Background(), cfg, apptest.Logger(t))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	base := orgstest.New(t, a)
	authMod, orgsMod := base.Auth, base.Orgs
	mod, err := New(a.Deps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mod.recheck = 200 * time.Millisecond
	w := base.Wiring()
	w.ErrorPage, w.Static = views.ErrorPage, static.FS
	base.MountWith(t, w, mod)
	r := &replica{a: a, base: apptest.Serve(t, a), mod: mod, auth: authMod.Service(), orgs: orgsMod.Service()}
	// Registered after Serve, so it runs first: the module's streams end
	// before the server shuts down.
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = mod.Run(ctx) }()
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); <-ran }) }
	t.Cleanup(r.stop)
	select {
	case <-mod.lv.listening:
	case <-time.After(wait):
		t.Fatal("the live tail does not listen")
	}
	return r
}

// world is an organization with a workspace, two agents and its people,
// and the owner of another organization.
type world struct {
	org, ws      uuid.UUID
	agent, other uuid.UUID
	users        map[string]auth.User
	tokens       map[string]string // access tokens by role, and "outsider"
	key          string            // a viewer API key of the organization
	keyID        uuid.UUID
	keyOtherWS   string // a viewer API key of the organization's second workspace
	otherWS      uuid.UUID
	agentOtherWS uuid.UUID
	r            *replica
}

var worldSeq struct {
	sync.Mutex
	n int
}

func newWorld(t *testing.T, r *replica) *world {
	t.Helper()
	worldSeq.Lock()
	worldSeq.n++
	n := worldSeq.n
	worldSeq.Unlock()
	ctx := context.Background()
	w := &world{r: r, users: map[string]auth.User{}, tokens: map[string]string{}}
	for _, who := range []string{authz.RoleOwner, authz.RoleViewer, "outsider"} {
		email := fmt.Sprintf("%s-%d@example.test", who, n)
		u, err := r.auth.CreateUser(ctx, auth.CreateUserParams{Email: email, Password: testPassword})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := r.auth.Login(ctx, auth.LoginParams{Email: email, Password: testPassword, IP: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		w.users[who], w.tokens[who] = u, pair.AccessToken
	}
	org, err := r.orgs.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Org", Slug: fmt.Sprintf("org-%d", n), OwnerID: w.users[authz.RoleOwner].ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.orgs.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Else", Slug: fmt.Sprintf("else-%d", n), OwnerID: w.users["outsider"].ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.orgs.AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: w.users[authz.RoleViewer].Email, Role: authz.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	ws, err := r.orgs.CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "WS", Slug: "ws"})
	if err != nil {
		t.Fatal(err)
	}
	ws2, err := r.orgs.CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "WS2", Slug: "ws2"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := r.orgs.CreateAPIKey(ctx, orgs.CreateAPIKeyParams{OrgID: org.ID, Name: "k", Role: authz.RoleViewer, CreatedBy: w.users[authz.RoleOwner].ID})
	if err != nil {
		t.Fatal(err)
	}
	key2, err := r.orgs.CreateAPIKey(ctx, orgs.CreateAPIKeyParams{OrgID: org.ID, WorkspaceID: ws2.ID, Name: "k2", Role: authz.RoleViewer, CreatedBy: w.users[authz.RoleOwner].ID})
	if err != nil {
		t.Fatal(err)
	}
	w.org, w.ws, w.otherWS, w.key, w.keyID, w.keyOtherWS = org.ID, ws.ID, ws2.ID, key.Key, key.ID, key2.Key
	w.agent = w.newAgent(t, ws.ID, "edge-1")
	w.other = w.newAgent(t, ws.ID, "edge-2")
	w.agentOtherWS = w.newAgent(t, ws2.ID, "edge-3")
	return w
}

func (w *world) newAgent(t *testing.T, ws uuid.UUID, name string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := w.r.a.Deps.Pool.QueryRow(context.Background(), "INSERT INTO agents (workspace_id, name) VALUES ($1, $2) RETURNING id", ws, name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// ---- Ingest ----

// ingest stores a batch through r's Ingest path and waits for its ack.
func (w *world) ingest(t *testing.T, r *replica, agent uuid.UUID, access []*agentv1.AccessLogEntry, errs []*agentv1.LogEntry) {
	t.Helper()
	ws := w.ws
	if agent == w.agentOtherWS {
		ws = w.otherWS
	}
	acked := make(chan *agentv1.Ack, 1)
	b := agents.LogBatch{AgentID: agent, WorkspaceID: ws, OrgID: w.org, Ack: func(a *agentv1.Ack) bool { acked <- a; return true }}
	if access != nil {
		b.Access = &agentv1.AccessLogBatch{BatchId: uuid.NewString(), Entries: access}
	} else {
		b.Errors = &agentv1.LogBatch{BatchId: uuid.NewString(), Entries: errs}
	}
	r.mod.Ingest(context.Background(), b)
	select {
	case a := <-acked:
		if !a.GetSuccess() {
			t.Fatalf("batch refused: %s", a.GetErrorMessage())
		}
	case <-time.After(wait):
		t.Fatal("batch not acknowledged")
	}
}

func accessEntry(status uint32, uri string) *agentv1.AccessLogEntry {
	return &agentv1.AccessLogEntry{TimestampMs: time.Now().UnixMilli(), Method: "GET", Uri: uri, Protocol: "HTTP/1.1",
		Host: "api.example.com", Status: status, BodyBytesSent: 123, RequestTimeMs: 150.5, RemoteAddr: "192.168.1.100",
		UserAgent: "curl/8.5", Kind: "http"}
}

func errorEntry(level, msg string) *agentv1.LogEntry {
	return &agentv1.LogEntry{Level: level, Message: msg, Timestamp: time.Now().Unix()}
}

// ---- WebSocket client ----

type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

type wsMessage struct {
	Type    string         `json:"type"`
	Message string         `json:"message"`
	AgentID string         `json:"agent_id"`
	Data    map[string]any `json:"data"`
}

func dialLogs(t *testing.T, r *replica, agent string) *wsClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(r.base, "http") + "/v1/ws/logs/" + agent
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}

func (c *wsClient) send(msg string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *wsClient) auth(token string) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]string{"type": "auth", "token": token})
	c.send(string(b))
}

// read returns the next message, failing after d.
func (c *wsClient) read(d time.Duration) (wsMessage, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.conn.ReadMessage()
	if err != nil {
		return wsMessage{}, err
	}
	var m wsMessage
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("message %s: %v", b, err)
	}
	return m, nil
}

func (c *wsClient) expect(typ string) wsMessage {
	c.t.Helper()
	m, err := c.read(wait)
	if err != nil {
		c.t.Fatalf("want %s, read: %v", typ, err)
	}
	if m.Type != typ {
		c.t.Fatalf("got %+v, want a %s message", m, typ)
	}
	return m
}

// expectClosed reads the close frame with code.
func (c *wsClient) expectClosed(code int) {
	c.t.Helper()
	_, err := c.read(wait)
	if !websocket.IsCloseError(err, code) {
		c.t.Fatalf("read %v, want close %d", err, code)
	}
}

// ---- SSE client ----

type sseEvent struct {
	name string
	data string
}

// openSSE opens an SSE stream and returns its events as they arrive.
func openSSE(t *testing.T, url string, header http.Header) (<-chan sseEvent, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	events := make(chan sseEvent, 64)
	if resp.StatusCode != http.StatusOK {
		close(events)
		return events, resp
	}
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ev.data = strings.Join(data, "\n")
					events <- ev
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			}
		}
	}()
	return events, resp
}

// nextSSE returns the next event named name, skipping others.
func nextSSE(t *testing.T, events <-chan sseEvent, name string) sseEvent {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream ended before an event %q", name)
			}
			if ev.name == name {
				return ev
			}
		case <-deadline:
			t.Fatalf("no event %q", name)
		}
	}
}
