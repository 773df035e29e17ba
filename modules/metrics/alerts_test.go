package metrics

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/logs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// wait bounds every wait for something the master does.
const wait = 20 * time.Second

// lab is a served master with auth, orgs, logs and metrics wired as main.go
// wires them, a real SMTP mailbox, a webhook receiver, River workers for the
// module's jobs, an organization with a workspace, an online agent and its
// people.
type lab struct {
	a    *app.App
	base string
	mod  *Module
	logs *logs.Module
	auth *auth.Service
	orgs *orgs.Service
	mail *apptest.Mailbox
	hook *hookServer
	org  uuid.UUID
	// elseOrg is the outsider's organization.
	elseOrg uuid.UUID
	ws      uuid.UUID
	agent   uuid.UUID
	owner   *apptest.Client
	viewer  *apptest.Client
	tokens  map[string]string // access tokens: owner, viewer, outsider
	key     string            // a viewer API key of the organization
	keyID   uuid.UUID
	// ownerID is the organization's owner.
	ownerID uuid.UUID
}

type labOpts struct {
	// periodic runs the evaluation as the periodic job every interval.
	periodic bool
	interval time.Duration
}

func newLab(t *testing.T, o labOpts) *lab {
	t.Helper()
	mb := apptest.StartMailbox(t, "", "")
	host, port, _ := net.SplitHostPort(mb.Addr)
	portN, _ := strconv.Atoi(port)
	a := apptest.NewApp(t, func(c *app.Config) {
		c.Auth.RateLimitPerMinute = 1 << 30
		c.SMTP.Host, c.SMTP.Port, c.SMTP.From = host, portN, "alerts@nxmesh.test"
		if o.interval > 0 {
			c.Metrics.AlertInterval = o.interval
		}
	})
	ctx := context.Background()
	base := orgstest.New(t, a)
	authMod, orgsMod := base.Auth, base.Orgs
	mod := must(New(a.Deps, Options{}))
	mod.socketEvery = 200 * time.Millisecond
	mod.recheck = 200 * time.Millisecond
	logsMod := must(logs.New(a.Deps, logs.Options{RollupFunc: mod.Rollup}))
	base.Mount(t, logsMod, mod)
	l := &lab{a: a, mod: mod, logs: logsMod, auth: authMod.Service(), orgs: orgsMod.Service(), mail: mb,
		hook: newHookServer(t), tokens: map[string]string{}}
	l.base = apptest.Serve(t, a)
	select {
	case <-a.Events().Listening():
	case <-time.After(wait):
		t.Fatal("the events hub does not listen")
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = logsMod.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	// River runs the module's workers; the periodic jobs only when asked.
	w := river.NewWorkers()
	periodic := mod.Jobs(w)
	cfg := &river.Config{Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}}, Workers: w,
		FetchPollInterval: 100 * time.Millisecond, FetchCooldown: 50 * time.Millisecond, Logger: apptest.Logger(t)}
	if o.periodic {
		cfg.PeriodicJobs = periodic
	}
	rc, err := river.NewClient(riverpgxv5.New(a.Deps.Pool), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCtx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		_ = rc.Stop(stopCtx)
	})

	users := map[string]auth.User{}
	for _, who := range []string{"owner", "viewer", "outsider"} {
		u, err := l.auth.CreateUser(ctx, auth.CreateUserParams{Email: who + "@example.com", Password: "password-" + who})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := l.auth.Login(ctx, auth.LoginParams{Email: u.Email, Password: "password-" + who, IP: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		users[who], l.tokens[who] = u, pair.AccessToken
	}
	org, err := l.orgs.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Org", Slug: "org", OwnerID: users["owner"].ID})
	if err != nil {
		t.Fatal(err)
	}
	elseOrg, err := l.orgs.CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Else", Slug: "else", OwnerID: users["outsider"].ID})
	if err != nil {
		t.Fatal(err)
	}
	l.elseOrg = elseOrg.ID
	if _, err := l.orgs.AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: users["viewer"].Email, Role: authz.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	ws, err := l.orgs.CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "WS", Slug: "ws"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := l.orgs.CreateAPIKey(ctx, orgs.CreateAPIKeyParams{OrgID: org.ID, Name: "k", Role: authz.RoleViewer, CreatedBy: users["owner"].ID})
	if err != nil {
		t.Fatal(err)
	}
	l.org, l.ws, l.key, l.keyID, l.ownerID = org.ID, ws.ID, key.Key, key.ID, users["owner"].ID
	if err := a.Deps.Pool.QueryRow(ctx, `INSERT INTO agents (workspace_id, name, state, health)
		VALUES ($1, 'web-01', 'online', '{"active_connections": 3}') RETURNING id`, ws.ID).Scan(&l.agent); err != nil {
		t.Fatal(err)
	}
	l.owner = apptest.NewClient(a).As(l.tokens["owner"])
	l.viewer = apptest.NewClient(a).As(l.tokens["viewer"])
	return l
}

// ingest hands access-log entries of l.agent to the logs ingest and waits
// for the acknowledgement.
func (l *lab) ingest(t *testing.T, entries ...*agentv1.AccessLogEntry) {
	t.Helper()
	ak := newAcks()
	id := uuid.NewString()
	l.logs.Ingest(context.Background(), agents.LogBatch{AgentID: l.agent, WorkspaceID: l.ws,
		Access: &agentv1.AccessLogBatch{BatchId: id, Entries: entries}, Ack: ak.ack})
	select {
	case <-ak.ch:
	case <-time.After(wait):
		t.Fatalf("batch %s not acknowledged", id)
	}
	ak.mu.Lock()
	defer ak.mu.Unlock()
	if !ak.got[0].GetSuccess() {
		t.Fatalf("batch refused: %+v", ak.got[0])
	}
}

func burst(n int, status uint32, vh uuid.UUID) []*agentv1.AccessLogEntry {
	var out []*agentv1.AccessLogEntry
	for range n {
		out = append(out, entry(time.Now(), status, 12, vh, "api.example.com"))
	}
	return out
}

// sample stores a host sample of l.agent taken now.
func (l *lab) sample(t *testing.T, cpu float64, memUsed, memTotal int64) {
	t.Helper()
	if _, err := l.a.Deps.Pool.Exec(context.Background(), `INSERT INTO host_metrics (agent_id, workspace_id, ts, cpu_percent,
			memory_used_bytes, memory_total_bytes, disk_used_bytes, disk_total_bytes, load_average_1m, nginx_active_connections)
		VALUES ($1, $2, $3, $4, $5, $6, 25, 100, 1.5, 9)`, l.agent, l.ws, time.Now().UTC(), cpu, memUsed, memTotal); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) createRule(t *testing.T, body map[string]any) AlertRule {
	t.Helper()
	var r AlertRule
	l.owner.Call(t, http.MethodPost, "/v1/workspaces/"+l.ws.String()+"/alert-rules", body, http.StatusCreated, &r)
	return r
}

func (l *lab) createChannel(t *testing.T, as *apptest.Client, org uuid.UUID, body map[string]any) NotificationChannel {
	t.Helper()
	var c NotificationChannel
	as.Call(t, http.MethodPost, "/v1/organizations/"+org.String()+"/notification-channels", body, http.StatusCreated, &c)
	return c
}

// ---- Webhook receiver ----

type delivery struct {
	header http.Header
	body   []byte
}

// hookServer is a webhook receiver; it answers 500 to the first failFirst
// deliveries.
type hookServer struct {
	*httptest.Server
	mu        sync.Mutex
	failFirst int
	seen      int
	ch        chan delivery
}

func newHookServer(t *testing.T) *hookServer {
	h := &hookServer{ch: make(chan delivery, 16)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.seen++
		fail := h.seen <= h.failFirst
		h.mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		h.ch <- delivery{header: r.Header.Clone(), body: body}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-h.ch:
		return d
	case <-time.After(wait):
		t.Fatal("no webhook delivery arrived")
		return delivery{}
	}
}

// verified checks d's signature under secret and decodes its payload.
func verified(t *testing.T, d delivery, secret string) WebhookPayload {
	t.Helper()
	want := Sign([]byte(secret), d.body)
	if got := d.header.Get(SignatureHeader); !hmac.Equal([]byte(got), []byte(want)) {
		t.Fatalf("signature %q, want %q (body %s)", got, want, d.body)
	}
	if got := Sign([]byte("another secret of sixteen"), d.body); got == d.header.Get(SignatureHeader) {
		t.Fatal("the signature does not depend on the secret")
	}
	var p WebhookPayload
	dec := json.NewDecoder(bytes.NewReader(d.body))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("payload %s: %v", d.body, err)
	}
	return p
}

func numOf(t *testing.T, v any) float64 {
	t.Helper()
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			t.Fatal(err)
		}
		return f
	case float64:
		return x
	}
	t.Fatalf("%v (%T) is not a number", v, v)
	return 0
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
	at      time.Time
}

func (l *lab) dial(t *testing.T, agent string) *wsClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(l.base, "http") + "/v1/ws/metrics/" + agent
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
	m.at = time.Now()
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

// until reads messages, skipping metrics, until one of type typ.
func (c *wsClient) until(typ string) wsMessage {
	c.t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		m, err := c.read(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("want %s, read: %v", typ, err)
		}
		if m.Type == typ {
			return m
		}
		if m.Type != "metrics" {
			c.t.Fatalf("got %+v while waiting for %s", m, typ)
		}
	}
	c.t.Fatalf("no %s message", typ)
	return wsMessage{}
}

func (c *wsClient) expectClosed(code int) {
	c.t.Helper()
	for {
		m, err := c.read(wait)
		if err == nil && m.Type == "metrics" {
			continue
		}
		if !websocket.IsCloseError(err, code) {
			c.t.Fatalf("read %+v %v, want close %d", m, err, code)
		}
		return
	}
}

// ---- Tests ----

// TestAPI_AlertRulesBadInput posts bad rules: each is a 422 naming the field,
// and nothing is stored.
func TestAPI_AlertRulesBadInput(t *testing.T) {
	l := newLab(t, labOpts{})
	path := "/v1/workspaces/" + l.ws.String() + "/alert-rules"
	ok := func(extra string) string {
		return `{"metric":"error_rate","operator":">","threshold":0.5` + extra + `}`
	}
	cases := []struct {
		name, body, field string
	}{
		{"UnknownMetric", `{"metric":"happiness","operator":">","threshold":1}`, "metric"},
		{"MissingMetric", `{"operator":">","threshold":1}`, "metric"},
		{"ThresholdNotANumber", `{"metric":"error_rate","operator":">","threshold":"0.5"}`, "threshold"},
		{"ThresholdMissing", `{"metric":"error_rate","operator":">"}`, "threshold"},
		{"BadOperator", `{"metric":"error_rate","operator":"=>","threshold":0.5}`, "operator"},
		{"OperatorNotAString", `{"metric":"error_rate","operator":1,"threshold":0.5}`, "operator"},
		{"BadFor", ok(`,"for":"five minutes"`), "for"},
		{"NegativeFor", ok(`,"for":"-1m"`), "for"},
		{"WindowTooShort", ok(`,"window":"30s"`), "window"},
		{"BadSeverity", ok(`,"severity":"meh"`), "severity"},
		{"ScopeNotAnObject", ok(`,"scope":"agent"`), "scope"},
		{"ScopeTypeMissing", ok(`,"scope":{}`), "scope.type"},
		{"ScopeTypeUnknown", ok(`,"scope":{"type":"region"}`), "scope.type"},
		{"ScopeAgentNotUUID", ok(`,"scope":{"type":"agents","agent_ids":["AGENT","web-01"]}`), "scope.agent_ids[1]"},
		{"ScopeAgentOfNoOne", ok(`,"scope":{"type":"agents","agent_ids":["` + uuid.NewString() + `"]}`), "scope.agent_ids[0]"},
		{"ScopeAgentTwice", ok(`,"scope":{"type":"agents","agent_ids":["AGENT","AGENT"]}`), "scope.agent_ids[1]"},
		{"ScopeAgentsEmpty", ok(`,"scope":{"type":"agents","agent_ids":[]}`), "scope.agent_ids"},
		{"ScopeAgentsWithSelector", ok(`,"scope":{"type":"agents","agent_ids":["AGENT"],"label_selector":"env=prod"}`), "scope.label_selector"},
		{"ScopeLabelsMissing", ok(`,"scope":{"type":"labels"}`), "scope.label_selector"},
		{"ScopeLabelsBad", ok(`,"scope":{"type":"labels","label_selector":"env prod"}`), "scope.label_selector"},
		{"ScopeAllWithAgents", ok(`,"scope":{"type":"all","agent_ids":["AGENT"]}`), "scope.agent_ids"},
		{"ScopeVirtualHostMissing", ok(`,"scope":{"type":"virtual_host"}`), "scope.virtual_host_id"},
		{"ScopeVirtualHostNotUUID", ok(`,"scope":{"type":"virtual_host","virtual_host_id":"www"}`), "scope.virtual_host_id"},
		{"ScopeVirtualHostOfNoOne", ok(`,"scope":{"type":"virtual_host","virtual_host_id":"` + uuid.NewString() + `"}`), "scope.virtual_host_id"},
		{"CertificatesPerAgent", `{"metric":"certificate_days_left","operator":"<","threshold":14,"scope":{"type":"agents","agent_ids":["AGENT"]}}`, "scope.type"},
		{"CertificatesPerLabel", `{"metric":"certificate_days_left","operator":"<","threshold":14,"scope":{"type":"labels","label_selector":"env=prod"}}`, "scope.type"},
		{"NotifyNotAList", ok(`,"notify":"ops"`), "notify"},
		{"NotifyNotUUID", ok(`,"notify":["ops"]`), "notify[0]"},
		{"NotifyUnknownChannel", ok(`,"notify":["` + uuid.NewString() + `"]`), "notify[0]"},
		{"NotifyOtherOrgChannel", ok(`,"notify":["FOREIGN"]`), "notify[0]"},
		{"NotifyTwice", ok(`,"notify":["CHANNEL","CHANNEL"]`), "notify[1]"},
		{"WebhookNotHTTP", ok(`,"channels":{"webhook":{"url":"ftp://hooks.example.com/x","secret":"0123456789abcdef"}}`), "channels.webhook.url"},
		{"WebhookMetadata", ok(`,"channels":{"webhook":{"url":"http://169.254.169.254/latest","secret":"0123456789abcdef"}}`), "channels.webhook.url"},
		{"WebhookMetadataV6", ok(`,"channels":{"webhook":{"url":"http://[fd00:ec2::254]/","secret":"0123456789abcdef"}}`), "channels.webhook.url"},
		{"WebhookUserInfo", ok(`,"channels":{"webhook":{"url":"https://u:p@hooks.example.com/","secret":"0123456789abcdef"}}`), "channels.webhook.url"},
		{"WebhookWithoutSecret", ok(`,"channels":{"webhook":{"url":"https://hooks.example.com/"}}`), "channels.webhook.secret"},
		{"WebhookShortSecret", ok(`,"channels":{"webhook":{"url":"https://hooks.example.com/","secret":"short"}}`), "channels.webhook.secret"},
		{"BadEmail", ok(`,"channels":{"emails":["ops@example.com","not an address"]}`), "channels.emails[1]"},
		{"EmailHeaderInjection", ok(`,"channels":{"emails":["ops@example.com\r\nBcc: x@example.com"]}`), "channels.emails[0]"},
		{"UnknownField", ok(`,"colour":"red"`), "colour"},
	}
	channel := l.createChannel(t, l.owner, l.org, map[string]any{"name": "ops", "type": "webhook", "url": l.hook.URL, "secret": "0123456789abcdef"})
	foreign := l.createChannel(t, apptest.NewClient(l.a).As(l.tokens["outsider"]), l.elseOrg,
		map[string]any{"name": "theirs", "type": "webhook", "url": l.hook.URL, "secret": "0123456789abcdef"})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.NewReplacer("AGENT", l.agent.String(), "FOREIGN", foreign.ID.String(), "CHANNEL", channel.ID.String()).Replace(tc.body)
			resp := l.owner.Do(t, http.MethodPost, path, body)
			if resp.Status != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422: %s", resp.Status, resp.Body)
			}
			var env apptest.ErrorEnvelope
			if err := json.Unmarshal(resp.Body, &env); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, d := range env.Error.Details {
				found = found || d.Field == tc.field
			}
			if !found {
				t.Fatalf("details %+v do not name %s", env.Error.Details, tc.field)
			}
		})
	}
	var n int
	if err := l.a.Deps.Pool.QueryRow(context.Background(), "SELECT count(*) FROM alert_rules").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rules stored (%v), want none", n, err)
	}
	t.Run("EmailsWithoutSMTP", func(t *testing.T) {
		mailer := l.mod.alerts.mailer
		l.mod.alerts.mailer = auth.NewMailer(app.SMTPConfig{})
		defer func() { l.mod.alerts.mailer = mailer }()
		resp := l.owner.Do(t, http.MethodPost, path, ok(`,"channels":{"emails":["ops@example.com"]}`))
		if resp.Status != http.StatusUnprocessableEntity || !bytes.Contains(resp.Body, []byte(`"channels.emails"`)) {
			t.Fatalf("status %d, want 422 naming channels.emails: %s", resp.Status, resp.Body)
		}
	})
	t.Run("ViewerMayNotCreate", func(t *testing.T) {
		if resp := l.viewer.Do(t, http.MethodPost, path, ok("")); resp.Status != http.StatusForbidden {
			t.Fatalf("status %d, want 403: %s", resp.Status, resp.Body)
		}
	})
}

// TestAPI_AlertRulesCRUD creates, reads, changes and deletes a rule; the
// webhook secret is stored sealed and never shown.
func TestAPI_AlertRulesCRUD(t *testing.T) {
	l := newLab(t, labOpts{})
	const secret = "s3cret-webhook-key-0123"
	r := l.createRule(t, map[string]any{"name": "High CPU", "metric": "cpu_percent", "operator": ">=", "threshold": 85,
		"for": "2m", "severity": "critical", "scope": map[string]any{"type": "agents", "agent_ids": []string{l.agent.String()}},
		"channels": map[string]any{"webhook": map[string]any{"url": "https://hooks.example.com/nxmesh", "secret": secret},
			"emails": []string{"ops@example.com", "ops@example.com", "oncall@example.com"}}})
	if r.Name != "High CPU" || r.Metric != "cpu_percent" || r.Operator != ">=" || r.Threshold != 85 || r.For != "2m" ||
		r.Window != "5m" || r.Severity != "critical" || r.Scope.Type != ScopeAgents || len(r.Scope.AgentIDs) != 1 || r.Scope.AgentIDs[0] != l.agent.String() ||
		!r.Enabled || r.Channels.Webhook == nil || !r.Channels.Webhook.SecretSet || len(r.Channels.Emails) != 2 {
		t.Fatalf("created %+v", r)
	}
	var sealed []byte
	if err := l.a.Deps.Pool.QueryRow(context.Background(), "SELECT webhook_secret_sealed FROM alert_rules WHERE id = $1", r.ID).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(secret)) {
		t.Fatal("the webhook secret is stored in clear")
	}
	if opened, err := l.a.Deps.Secrets.Open(sealed); err != nil || string(opened) != secret {
		t.Fatalf("sealed secret opens to %q, %v", opened, err)
	}
	for _, path := range []string{"/v1/alert-rules/" + r.ID.String(), "/v1/workspaces/" + l.ws.String() + "/alert-rules"} {
		resp := l.viewer.Do(t, http.MethodGet, path, nil)
		if resp.Status != http.StatusOK || bytes.Contains(resp.Body, []byte(secret)) || !bytes.Contains(resp.Body, []byte(r.ID.String())) {
			t.Fatalf("GET %s: %d %s", path, resp.Status, resp.Body)
		}
	}
	var changed AlertRule
	l.owner.Call(t, http.MethodPatch, "/v1/alert-rules/"+r.ID.String(), map[string]any{"threshold": 90.5, "scope": map[string]any{"type": "all"},
		"channels": map[string]any{"webhook": map[string]any{"url": "https://hooks.example.com/other"}}}, http.StatusOK, &changed)
	if changed.Threshold != 90.5 || changed.Scope.Type != ScopeAll || changed.Scope.AgentIDs != nil || changed.Name != "High CPU" ||
		changed.Channels.Webhook == nil || changed.Channels.Webhook.URL != "https://hooks.example.com/other" || !changed.Channels.Webhook.SecretSet {
		t.Fatalf("changed %+v", changed)
	}
	l.owner.Call(t, http.MethodPatch, "/v1/alert-rules/"+r.ID.String(), map[string]any{"channels": map[string]any{"webhook": map[string]any{"url": ""}}}, http.StatusOK, &changed)
	if changed.Channels.Webhook != nil {
		t.Fatalf("webhook not removed: %+v", changed.Channels)
	}
	if resp := l.owner.Do(t, http.MethodPatch, "/v1/alert-rules/"+r.ID.String(), map[string]any{"operator": "=="}); resp.Status != http.StatusUnprocessableEntity {
		t.Fatalf("bad operator in PATCH: %d %s", resp.Status, resp.Body)
	}
	if resp := l.viewer.Do(t, http.MethodDelete, "/v1/alert-rules/"+r.ID.String(), nil); resp.Status != http.StatusForbidden {
		t.Fatalf("viewer delete: %d", resp.Status)
	}
	if resp := l.owner.Do(t, http.MethodDelete, "/v1/alert-rules/"+r.ID.String(), nil); resp.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", resp.Status, resp.Body)
	}
	if resp := l.owner.Do(t, http.MethodGet, "/v1/alert-rules/"+r.ID.String(), nil); resp.Status != http.StatusNotFound {
		t.Fatalf("deleted rule: %d", resp.Status)
	}
	outsider := apptest.NewClient(l.a).As(l.tokens["outsider"])
	r2 := l.createRule(t, map[string]any{"metric": "agent_offline", "operator": ">=", "threshold": 1})
	if r2.Name != "agent_offline >= 1" {
		t.Fatalf("default name %q", r2.Name)
	}
	if resp := outsider.Do(t, http.MethodGet, "/v1/alert-rules/"+r2.ID.String(), nil); resp.Status != http.StatusNotFound {
		t.Fatalf("outsider: %d", resp.Status)
	}
}

// TestAPI_AlertsFireAndResolve runs the evaluation as River's periodic job: a
// burst of 5xx ingested through the logs path fires the rule (event, a
// webhook channel's signed delivery retried after a failure, an e-mail
// channel's message, socket message, history), and enough 2xx afterwards
// resolve it (alert.resolved).
func TestAPI_AlertsFireAndResolve(t *testing.T) {
	l := newLab(t, labOpts{periodic: true, interval: time.Second})
	l.hook.failFirst = 1 // River retries the first delivery
	const secret = "webhook-secret-0123456789"
	hook := l.createChannel(t, l.owner, l.org, map[string]any{"name": "Hook", "type": "webhook", "url": l.hook.URL + "/hook", "secret": secret})
	mail := l.createChannel(t, l.owner, l.org, map[string]any{"name": "Ops mail", "type": "email", "addresses": []string{"ops@example.com"}})
	rule := l.createRule(t, map[string]any{"name": "Errors", "metric": "error_rate", "operator": ">", "threshold": 0.5,
		"window": "1m", "scope": map[string]any{"type": "agents", "agent_ids": []string{l.agent.String()}},
		"notify": []string{hook.ID.String(), mail.ID.String()}})
	if len(rule.Notify) != 2 || rule.Notify[0] != hook.ID || rule.Notify[1] != mail.ID {
		t.Fatalf("notify %v", rule.Notify)
	}
	sub, err := l.a.Events().Subscribe([]string{EventAlert, EventAlertResolved}, l.ws)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ws := l.dial(t, l.agent.String())
	ws.auth(l.tokens["viewer"])
	ws.expect("auth_success")
	ws.expect("metrics")

	l.ingest(t, burst(10, 502, uuid.Nil)...)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ev, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != EventAlert || ev.Data["rule_id"] != rule.ID.String() || ev.Data["agent_id"] != l.agent.String() ||
		ev.Data["metric"] != "error_rate" || numOf(t, ev.Data["value"]) != 1 || numOf(t, ev.Data["threshold"]) != 0.5 || ev.Data["state"] != AlertFiring {
		t.Fatalf("event %+v", ev)
	}
	fired := verified(t, l.hook.next(t), secret)
	if fired.Type != EventAlert || fired.WorkspaceID != l.ws || fired.Data["rule_id"] != rule.ID.String() ||
		numOf(t, fired.Data["value"]) != 1 || numOf(t, fired.Data["threshold"]) != 0.5 || fired.Data["agent_id"] != l.agent.String() {
		t.Fatalf("firing webhook %+v", fired)
	}
	l.hook.mu.Lock()
	attempts := l.hook.seen
	l.hook.mu.Unlock()
	if attempts != 2 {
		t.Fatalf("%d webhook attempts, want 2 (a failure, then the retry)", attempts)
	}
	m := l.mail.Next(t)
	if len(m.To) != 1 || m.To[0] != "ops@example.com" || !strings.Contains(m.Data, "[NxMesh FIRING] Errors") || !strings.Contains(m.Data, "error_rate > 0.5") || !strings.Contains(m.Data, "on agent web-01") {
		t.Fatalf("firing mail to %v:\n%s", m.To, m.Data)
	}
	if a := ws.until("alert"); a.Data["state"] != AlertFiring || a.Data["rule_id"] != rule.ID.String() {
		t.Fatalf("socket alert %+v", a)
	}

	// 10 errors in 50 requests: 0.2, under the threshold.
	l.ingest(t, burst(40, 200, uuid.Nil)...)
	ev, err = sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != EventAlertResolved || ev.Data["rule_id"] != rule.ID.String() || numOf(t, ev.Data["value"]) != 0.2 {
		t.Fatalf("resolved event %+v", ev)
	}
	resolved := verified(t, l.hook.next(t), secret)
	if resolved.Type != EventAlertResolved || resolved.Data["state"] != AlertResolved || resolved.Data["alert_id"] != fired.Data["alert_id"] ||
		numOf(t, resolved.Data["value"]) != 0.2 {
		t.Fatalf("resolved webhook %+v", resolved)
	}
	if m := l.mail.Next(t); !strings.Contains(m.Data, "[NxMesh RESOLVED] Errors") {
		t.Fatalf("resolved mail:\n%s", m.Data)
	}
	if a := ws.until("alert"); a.Data["state"] != AlertResolved {
		t.Fatalf("socket alert %+v", a)
	}
	var hist app.List[Alert]
	l.viewer.Call(t, http.MethodGet, "/v1/workspaces/"+l.ws.String()+"/alerts", nil, http.StatusOK, &hist)
	if hist.Meta.Total != 1 || hist.Data[0].State != AlertResolved || hist.Data[0].Value != 1 || hist.Data[0].ResolvedValue == nil ||
		*hist.Data[0].ResolvedValue != 0.2 || hist.Data[0].RuleID == nil || *hist.Data[0].RuleID != rule.ID {
		t.Fatalf("history %+v", hist)
	}
	l.viewer.Call(t, http.MethodGet, "/v1/workspaces/"+l.ws.String()+"/alerts?state=firing", nil, http.StatusOK, &hist)
	if hist.Meta.Total != 0 {
		t.Fatalf("firing alerts %+v", hist)
	}
	if resp := l.viewer.Do(t, http.MethodGet, "/v1/workspaces/"+l.ws.String()+"/alerts?state=maybe", nil); resp.Status != http.StatusUnprocessableEntity {
		t.Fatalf("bad state: %d", resp.Status)
	}
}

// TestAPI_AlertsEvaluate evaluates host, agent-state and certificate rules
// directly, with the for duration.
func TestAPI_AlertsEvaluate(t *testing.T) {
	l := newLab(t, labOpts{})
	ctx := context.Background()
	svc := l.mod.Alerts()
	cpu := l.createRule(t, map[string]any{"metric": "cpu_percent", "operator": ">", "threshold": 80})
	memHeld := l.createRule(t, map[string]any{"metric": "memory_percent", "operator": ">=", "threshold": 50, "for": "1h"})
	offline := l.createRule(t, map[string]any{"metric": "agent_offline", "operator": ">=", "threshold": 1,
		"scope": map[string]any{"type": "agents", "agent_ids": []string{l.agent.String()}}})
	days := l.createRule(t, map[string]any{"metric": "certificate_days_left", "operator": "<", "threshold": 14})
	evaluate := func(wantFired, wantResolved int) {
		t.Helper()
		res, err := svc.Evaluate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Fired != wantFired || res.Resolved != wantResolved {
			t.Fatalf("evaluation %+v, want %d fired and %d resolved", res, wantFired, wantResolved)
		}
	}
	firing := func() map[uuid.UUID]Alert {
		t.Helper()
		q := AlertQuery{WorkspaceID: l.ws, State: AlertFiring, Page: app.Page{Page: 1, PerPage: 100}}
		as, _, err := svc.Alerts(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		out := map[uuid.UUID]Alert{}
		for _, a := range as {
			out[*a.RuleID] = a
		}
		return out
	}
	evaluate(0, 0)
	l.sample(t, 91.5, 60, 100)
	if _, err := l.a.Deps.Pool.Exec(ctx, `INSERT INTO certificates (workspace_id, domain, provider, status, certificate_pem,
			private_key_sealed, issued_at, expires_at)
		VALUES ($1, 'www.example.com', 'upload', 'active', 'PEM', '\x00', now() - interval '80 days', now() + interval '10 days')`, l.ws); err != nil {
		t.Fatal(err)
	}
	evaluate(2, 0) // cpu and the certificate; memory must hold for an hour
	got := firing()
	if a := got[cpu.ID]; a.Value != 91.5 || a.AgentID == nil || *a.AgentID != l.agent || !strings.Contains(a.Message, "web-01") {
		t.Fatalf("cpu alert %+v", a)
	}
	if a := got[days.ID]; a.Value < 9.9 || a.Value > 10.01 || a.CertificateID == nil {
		t.Fatalf("certificate alert %+v", a)
	}
	if _, ok := got[memHeld.ID]; ok {
		t.Fatal("memory alert fired before its for duration")
	}
	evaluate(0, 0) // still firing: not again

	if _, err := l.a.Deps.Pool.Exec(ctx, `UPDATE agents SET state = 'offline' WHERE id = $1`, l.agent); err != nil {
		t.Fatal(err)
	}
	evaluate(1, 1) // offline fires; cpu resolves (an offline agent's samples do not count)
	got = firing()
	if _, ok := got[offline.ID]; !ok {
		t.Fatalf("offline alert not firing: %+v", got)
	}
	if _, ok := got[cpu.ID]; ok {
		t.Fatal("cpu alert still firing")
	}
	if _, err := l.a.Deps.Pool.Exec(ctx, `UPDATE agents SET state = 'online' WHERE id = $1`, l.agent); err != nil {
		t.Fatal(err)
	}
	l.sample(t, 10, 60, 100)
	evaluate(0, 1) // offline resolves; cpu stays quiet
	if resp := l.owner.Do(t, http.MethodPatch, "/v1/alert-rules/"+days.ID.String(), map[string]any{"enabled": false}); resp.Status != http.StatusOK {
		t.Fatalf("disable: %d %s", resp.Status, resp.Body)
	}
	evaluate(0, 1) // a disabled rule's alerts resolve
	if len(firing()) != 0 {
		t.Fatalf("still firing: %+v", firing())
	}
}

// TestService_WebhookRefusesBlockedDestinations dials link-local and metadata
// addresses: refused before connecting.
func TestService_WebhookRefusesBlockedDestinations(t *testing.T) {
	for _, tc := range []struct {
		ip      string
		blocked bool
	}{
		{"169.254.169.254", true},
		{"169.254.0.1", true},
		{"::ffff:169.254.169.254", true},
		{"fd00:ec2::254", true},
		{"fe80::1", true},
		{"127.0.0.1", false},
		{"10.0.0.1", false},
		{"2001:db8::1", false},
		{"fd00:ec2::253", false},
	} {
		if got := blockedIP(net.ParseIP(tc.ip)); got != tc.blocked {
			t.Errorf("blockedIP(%s) = %v, want %v", tc.ip, got, tc.blocked)
		}
	}
	s := newWebhookSender()
	err := s.post(context.Background(), "http://169.254.169.254/latest/meta-data", []byte("k"), []byte("{}"), EventAlert)
	if !errors.Is(err, errBlocked) {
		t.Fatalf("post to the metadata address: %v, want refused", err)
	}
	h := newHookServer(t)
	if err := s.post(context.Background(), h.URL, []byte("k"), []byte("{}"), EventAlert); err != nil {
		t.Fatalf("post to loopback: %v", err)
	}
	h.next(t)
}

// TestAPI_LiveSocketAuth checks who may open the live-metrics socket, what it
// sends and when it ends.
func TestAPI_LiveSocketAuth(t *testing.T) {
	l := newLab(t, labOpts{})
	cases := []struct {
		name  string
		agent string
		first string
		want  string
	}{
		{"NotAuthFirst", l.agent.String(), `{"type":"ping"}`, msgBadFirstMessage},
		{"NotJSON", l.agent.String(), `hello`, msgBadFirstMessage},
		{"EmptyToken", l.agent.String(), `{"type":"auth","token":""}`, msgBadFirstMessage},
		{"BadToken", l.agent.String(), `{"type":"auth","token":"nope"}`, msgBadToken},
		{"Outsider", l.agent.String(), "OUTSIDER", msgNotFound},
		{"UnknownAgent", uuid.NewString(), "VIEWER", msgNotFound},
		{"MalformedAgent", "web-01", "VIEWER", msgNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := l.dial(t, tc.agent)
			switch tc.first {
			case "OUTSIDER":
				c.auth(l.tokens["outsider"])
			case "VIEWER":
				c.auth(l.tokens["viewer"])
			default:
				c.send(tc.first)
			}
			if m := c.expect("error"); m.Message != tc.want {
				t.Fatalf("error %q, want %q", m.Message, tc.want)
			}
			c.expectClosed(websocket.ClosePolicyViolation)
		})
	}
	t.Run("NothingBeforeAuth", func(t *testing.T) {
		c := l.dial(t, l.agent.String())
		if m, err := c.read(700 * time.Millisecond); err == nil {
			t.Fatalf("got %+v before authenticating", m)
		}
	})
	t.Run("MetricsEveryInterval", func(t *testing.T) {
		l.sample(t, 42, 512, 1024)
		l.ingest(t, burst(6, 200, uuid.Nil)...)
		c := l.dial(t, l.agent.String())
		start := time.Now()
		c.auth(l.key)
		if m := c.expect("auth_success"); m.AgentID != l.agent.String() {
			t.Fatalf("auth_success %+v", m)
		}
		var ms []wsMessage
		for range 6 {
			ms = append(ms, c.expect("metrics"))
		}
		d := ms[0].Data
		if numOf(t, d["cpu_percent"]) != 42 || numOf(t, d["memory_percent"]) != 50 || numOf(t, d["disk_percent"]) != 25 ||
			numOf(t, d["load_average_1m"]) != 1.5 || numOf(t, d["active_connections"]) != 9 || numOf(t, d["requests_per_second"]) <= 0 ||
			d["agent_id"] != l.agent.String() || d["state"] != "online" {
			t.Fatalf("metrics %+v", d)
		}
		// The first comes at once, then one every 200ms: the k-th cannot be
		// read before k intervals have passed since authenticating.
		for k, m := range ms {
			if since := m.at.Sub(start); since < time.Duration(k)*180*time.Millisecond || since > time.Duration(k)*200*time.Millisecond+3*time.Second {
				t.Fatalf("metrics message %d read %s after authenticating, want about %s", k, since, time.Duration(k)*200*time.Millisecond)
			}
		}
		c.send(`{"type":"ping"}`)
		c.until("pong")
		c.send(`{"type":"subscribe"}`)
		if m := c.until("error"); m.Message != msgBadMessage {
			t.Fatalf("error %q", m.Message)
		}
		c.expectClosed(websocket.ClosePolicyViolation)
	})
	t.Run("RevokedKeyEnds", func(t *testing.T) {
		key, err := l.orgs.CreateAPIKey(context.Background(), orgs.CreateAPIKeyParams{OrgID: l.org, Name: "temp", Role: authz.RoleViewer, CreatedBy: l.ownerID})
		if err != nil {
			t.Fatal(err)
		}
		c := l.dial(t, l.agent.String())
		c.auth(key.Key)
		c.expect("auth_success")
		if err := l.orgs.RevokeAPIKey(context.Background(), l.org, key.ID); err != nil {
			t.Fatal(err)
		}
		if m := c.until("error"); m.Message != msgRevoked {
			t.Fatalf("error %q, want %q", m.Message, msgRevoked)
		}
		c.expectClosed(websocket.ClosePolicyViolation)
	})
	t.Run("NotAWebSocket", func(t *testing.T) {
		resp := apptest.NewClient(l.a).Do(t, http.MethodGet, "/v1/ws/metrics/"+l.agent.String(), nil)
		if resp.Status != http.StatusUpgradeRequired {
			t.Fatalf("status %d", resp.Status)
		}
	})
}

// TestService_AlertsVirtualHostScope watches one virtual host's request rate:
// another's traffic does not count, its own fires the rule.
func TestService_AlertsVirtualHostScope(t *testing.T) {
	l := newLab(t, labOpts{})
	ctx := context.Background()
	var vh uuid.UUID
	if err := l.a.Deps.Pool.QueryRow(ctx, `INSERT INTO virtual_hosts (workspace_id, name, server_name, listen_port)
		VALUES ($1, 'api', 'api.example.com', 80) RETURNING id`, l.ws).Scan(&vh); err != nil {
		t.Fatal(err)
	}
	rule := l.createRule(t, map[string]any{"metric": "requests_per_second", "operator": ">", "threshold": 0,
		"window": "1m", "scope": map[string]any{"type": "virtual_host", "virtual_host_id": vh.String()}})
	if rule.Scope.Type != ScopeVirtualHost || rule.Scope.VirtualHostID != vh.String() {
		t.Fatalf("rule %+v", rule)
	}
	l.ingest(t, burst(3, 200, uuid.New())...)
	if res, err := l.mod.Alerts().Evaluate(ctx); err != nil || res.Fired != 0 {
		t.Fatalf("another virtual host's traffic: %+v, %v", res, err)
	}
	l.ingest(t, burst(3, 200, vh)...)
	if res, err := l.mod.Alerts().Evaluate(ctx); err != nil || res.Fired != 1 {
		t.Fatalf("its own traffic: %+v, %v", res, err)
	}
	as, _, err := l.mod.Alerts().Alerts(ctx, AlertQuery{WorkspaceID: l.ws, Page: app.Page{Page: 1, PerPage: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].VirtualHostID == nil || *as[0].VirtualHostID != vh || as[0].Value <= 0 || as[0].AgentID != nil {
		t.Fatalf("alerts %+v", as)
	}
}

// TestService_AlertsScopes evaluates each scope type for traffic, host,
// agent-state and certificate metrics: all, labels (an agent gaining the
// label is included, losing it resolves), listed agents, and a virtual
// host (its target agents; its certificate).
func TestService_AlertsScopes(t *testing.T) {
	l := newLab(t, labOpts{})
	ctx := context.Background()
	pool := l.a.Deps.Pool
	svc := l.mod.Alerts()
	web1 := l.agent
	var web2 uuid.UUID
	if err := pool.QueryRow(ctx, `INSERT INTO agents (workspace_id, name, state, labels) VALUES ($1, 'web-02', 'online', '{"env":"staging"}') RETURNING id`, l.ws).Scan(&web2); err != nil {
		t.Fatal(err)
	}
	setLabels := func(agent uuid.UUID, labels string) {
		t.Helper()
		if _, err := pool.Exec(ctx, `UPDATE agents SET labels = $2::jsonb WHERE id = $1`, agent, labels); err != nil {
			t.Fatal(err)
		}
	}
	sample := func(agent uuid.UUID, cpu float64) {
		t.Helper()
		if _, err := pool.Exec(ctx, `INSERT INTO host_metrics (agent_id, workspace_id, ts, cpu_percent, memory_used_bytes,
				memory_total_bytes, disk_used_bytes, disk_total_bytes, load_average_1m) VALUES ($1, $2, $3, $4, 1, 2, 1, 2, 0)`,
			agent, l.ws, time.Now().UTC(), cpu); err != nil {
			t.Fatal(err)
		}
	}
	var certA, certB, vh uuid.UUID
	for _, c := range []struct {
		domain string
		dst    *uuid.UUID
	}{{"a.example.com", &certA}, {"b.example.com", &certB}} {
		if err := pool.QueryRow(ctx, `INSERT INTO certificates (workspace_id, domain, provider, status, certificate_pem,
				private_key_sealed, issued_at, expires_at)
			VALUES ($1, $2, 'upload', 'active', 'PEM', '\x00', now() - interval '80 days', now() + interval '5 days') RETURNING id`,
			l.ws, c.domain).Scan(c.dst); err != nil {
			t.Fatal(err)
		}
	}
	if err := pool.QueryRow(ctx, `INSERT INTO virtual_hosts (workspace_id, name, server_name, listen_port, target_agents, ssl_certificate_id)
		VALUES ($1, 'api', 'api.example.com', 80, $2::jsonb, $3) RETURNING id`, l.ws,
		`{"type":"agents","agent_ids":["`+web2.String()+`"]}`, certA).Scan(&vh); err != nil {
		t.Fatal(err)
	}
	labels := map[string]any{"type": "labels", "label_selector": "env=prod"}
	listed := map[string]any{"type": "agents", "agent_ids": []string{web1.String()}}
	onVH := map[string]any{"type": "virtual_host", "virtual_host_id": vh.String()}
	rule := func(metric, op string, threshold float64, scope map[string]any) uuid.UUID {
		body := map[string]any{"metric": metric, "operator": op, "threshold": threshold, "window": "1m"}
		if scope != nil {
			body["scope"] = scope
		}
		return l.createRule(t, body).ID
	}
	cpuAll := rule("cpu_percent", ">", 80, nil)
	cpuLabels := rule("cpu_percent", ">", 80, labels)
	cpuListed := rule("cpu_percent", ">", 80, listed)
	cpuVH := rule("cpu_percent", ">", 80, onVH)
	offLabels := rule("agent_offline", ">=", 1, labels)
	errLabels := rule("error_rate", ">", 0.5, labels)
	errListed := rule("error_rate", ">", 0.5, listed)
	certAll := rule("certificate_days_left", "<", 14, nil)
	certVH := rule("certificate_days_left", "<", 14, onVH)

	// firing is what each rule fires for now: agent or certificate ids ("" for the whole scope).
	firing := func() map[uuid.UUID][]string {
		t.Helper()
		if _, err := svc.Evaluate(ctx); err != nil {
			t.Fatal(err)
		}
		as, _, err := svc.Alerts(ctx, AlertQuery{WorkspaceID: l.ws, State: AlertFiring, Page: app.Page{Page: 1, PerPage: 100}})
		if err != nil {
			t.Fatal(err)
		}
		out := map[uuid.UUID][]string{}
		for _, a := range as {
			subject := ""
			switch {
			case a.AgentID != nil:
				subject = a.AgentID.String()
			case a.CertificateID != nil:
				subject = a.CertificateID.String()
			}
			out[*a.RuleID] = append(out[*a.RuleID], subject)
		}
		for _, v := range out {
			sort.Strings(v)
		}
		return out
	}
	expect := func(got map[uuid.UUID][]string, name string, rule uuid.UUID, want ...uuid.UUID) {
		t.Helper()
		w := []string{}
		for _, id := range want {
			w = append(w, id.String())
		}
		sort.Strings(w)
		g := got[rule]
		if g == nil {
			g = []string{}
		}
		if strings.Join(g, ",") != strings.Join(w, ",") {
			t.Errorf("%s fires for %v, want %v", name, g, w)
		}
	}

	sample(web1, 90)
	sample(web2, 95)
	l.ingest(t, burst(4, 503, uuid.Nil)...) // web-01's traffic: all errors
	got := firing()
	expect(got, "cpu/all", cpuAll, web1, web2)
	expect(got, "cpu/labels before any agent has env=prod", cpuLabels)
	expect(got, "cpu/agents", cpuListed, web1)
	expect(got, "cpu/virtual_host (its target agents)", cpuVH, web2)
	expect(got, "offline/labels", offLabels)
	expect(got, "errors/labels", errLabels)
	expect(got, "errors/agents", errListed, web1)
	expect(got, "certificates/all", certAll, certA, certB)
	expect(got, "certificates/virtual_host (its certificate)", certVH, certA)

	// web-02 gains the label: the labels rules include it at the next evaluation.
	setLabels(web2, `{"env":"prod"}`)
	got = firing()
	expect(got, "cpu/labels after web-02 gained env=prod", cpuLabels, web2)
	expect(got, "errors/labels (web-02 has no traffic)", errLabels)
	setLabels(web1, `{"env":"prod","role":"edge"}`)
	got = firing()
	expect(got, "cpu/labels after web-01 gained env=prod", cpuLabels, web1, web2)
	expect(got, "errors/labels after web-01 gained env=prod", errLabels, web1)

	// web-02 goes offline: the offline rule fires for it; then it loses the
	// label and leaves the scope, which resolves the alert.
	if _, err := pool.Exec(ctx, `UPDATE agents SET state = 'offline' WHERE id = $1`, web2); err != nil {
		t.Fatal(err)
	}
	got = firing()
	expect(got, "offline/labels", offLabels, web2)
	expect(got, "cpu/labels (an offline agent's samples do not count)", cpuLabels, web1)
	setLabels(web2, `{"env":"staging"}`)
	got = firing()
	expect(got, "offline/labels after web-02 lost the label", offLabels)
	var resolved int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM alerts WHERE rule_id = $1 AND state = 'resolved'`, offLabels).Scan(&resolved); err != nil || resolved != 1 {
		t.Fatalf("%d resolved offline alerts (%v), want 1", resolved, err)
	}
}

// TestService_AlertsRuleChannels fires a rule with its own webhook and address
// (the inline channels kept from before notification channels) and a
// webhook channel: each is notified, signed with its own secret.
func TestService_AlertsRuleChannels(t *testing.T) {
	l := newLab(t, labOpts{})
	ctx := context.Background()
	const inline, shared = "inline-secret-0123456789", "shared-secret-0123456789"
	other := newHookServer(t)
	hook := l.createChannel(t, l.owner, l.org, map[string]any{"name": "Shared", "type": "webhook", "url": other.URL, "secret": shared})
	rule := l.createRule(t, map[string]any{"name": "CPU", "metric": "cpu_percent", "operator": ">", "threshold": 50,
		"notify":   []string{hook.ID.String()},
		"channels": map[string]any{"webhook": map[string]any{"url": l.hook.URL, "secret": inline}, "emails": []string{"inline@example.com"}}})
	l.sample(t, 75, 1, 2)
	if res, err := l.mod.Alerts().Evaluate(ctx); err != nil || res.Fired != 1 {
		t.Fatalf("evaluation %+v, %v", res, err)
	}
	if p := verified(t, l.hook.next(t), inline); p.Type != EventAlert || p.Data["rule_id"] != rule.ID.String() {
		t.Fatalf("inline webhook %+v", p)
	}
	if p := verified(t, other.next(t), shared); p.Type != EventAlert || p.Data["rule_id"] != rule.ID.String() || numOf(t, p.Data["value"]) != 75 {
		t.Fatalf("channel webhook %+v", p)
	}
	if m := l.mail.Next(t); len(m.To) != 1 || m.To[0] != "inline@example.com" || !strings.Contains(m.Data, "[NxMesh FIRING] CPU") {
		t.Fatalf("inline mail to %v:\n%s", m.To, m.Data)
	}
	l.sample(t, 10, 1, 2)
	if res, err := l.mod.Alerts().Evaluate(ctx); err != nil || res.Resolved != 1 {
		t.Fatalf("evaluation %+v, %v", res, err)
	}
	if p := verified(t, other.next(t), shared); p.Type != "alert.resolved" || p.Data["state"] != AlertResolved {
		t.Fatalf("channel webhook on resolve %+v", p)
	}
	if p := verified(t, l.hook.next(t), inline); p.Type != "alert.resolved" {
		t.Fatalf("inline webhook on resolve %+v", p)
	}
}

// TestService_AlertsAgentOwnAlerts turns the alerts an agent reports in its health
// (nginx down, disk full) into alerts of an agent_alert rule: one per
// reported alert at or above the rule's severity, with the agent's message,
// resolved when the agent stops reporting it.
func TestService_AlertsAgentOwnAlerts(t *testing.T) {
	l := newLab(t, labOpts{})
	ctx := context.Background()
	pool := l.a.Deps.Pool
	svc := l.mod.Alerts()
	report := func(alerts string) {
		t.Helper()
		if _, err := pool.Exec(ctx, `UPDATE agents SET state = 'online', health = jsonb_build_object('alerts', $2::jsonb) WHERE id = $1`,
			l.agent, alerts); err != nil {
			t.Fatal(err)
		}
	}
	rule := l.createRule(t, map[string]any{"name": "agent says", "metric": "agent_alert", "operator": ">=", "threshold": 2}).ID
	firing := func() []Alert {
		t.Helper()
		if _, err := svc.Evaluate(ctx); err != nil {
			t.Fatal(err)
		}
		as, _, err := svc.Alerts(ctx, AlertQuery{WorkspaceID: l.ws, State: AlertFiring, Page: app.Page{Page: 1, PerPage: 100}})
		if err != nil {
			t.Fatal(err)
		}
		return as
	}
	report(`[{"id":"nginx_down","severity":"critical","message":"nginx is not running"},
		{"id":"disk_full","severity":"warning","message":"/var is 97% full"},
		{"id":"note","severity":"info","message":"config drift checked"}]`)
	got := firing()
	msgs := []string{}
	for _, a := range got {
		if a.RuleID == nil || *a.RuleID != rule || a.AgentID == nil || *a.AgentID != l.agent {
			t.Fatalf("alert %+v not of the rule and agent", a)
		}
		msgs = append(msgs, fmt.Sprintf("%v %s", a.Value, a.Message))
	}
	sort.Strings(msgs)
	if len(msgs) != 2 || !strings.Contains(msgs[0], "2 ") || !strings.Contains(msgs[0], "/var is 97% full") ||
		!strings.Contains(msgs[1], "4 ") || !strings.Contains(msgs[1], "nginx is not running") {
		t.Fatalf("firing %q, want the warning and the critical alert with their messages", msgs)
	}
	// nginx is back: its alert resolves, the disk one keeps firing.
	report(`[{"id":"disk_full","severity":"warning","message":"/var is 97% full"}]`)
	got = firing()
	if len(got) != 1 || !strings.Contains(got[0].Message, "/var is 97% full") {
		t.Fatalf("firing after nginx came back: %+v", got)
	}
	report(`[]`)
	if got = firing(); len(got) != 0 {
		t.Fatalf("firing after the agent cleared its alerts: %+v", got)
	}
	resolved, _, err := svc.Alerts(ctx, AlertQuery{WorkspaceID: l.ws, State: AlertResolved, Page: app.Page{Page: 1, PerPage: 100}})
	if err != nil || len(resolved) != 2 {
		t.Fatalf("resolved %d alerts (%v), want 2", len(resolved), err)
	}
}
