package events_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/app/events"
)

func TestMain(m *testing.M) { apptest.Main(m) }

// wait bounds every wait for a message in these tests.
const wait = 15 * time.Second

// eventsModule declares a policy so events naming an Object can be tested:
// only operators and above read "evtest.secret".
type eventsModule struct{}

func (eventsModule) Name() string { return "evtest" }
func (eventsModule) Policies() []authz.Policy {
	return authz.AtLeast(authz.RoleOperator, "evtest.secret", authz.Read)
}
func (eventsModule) Jobs(*river.Workers) []*river.PeriodicJob { return nil }
func (eventsModule) GRPC(grpc.ServiceRegistrar)               {}
func (eventsModule) Routes(app.Routers)                       {}

// eventsBundle is two replicas ("a" and "b") of a master on one database, with
// callers known by token: superadmin, viewer and operator of org1, outsider
// (owner of org2), key (API key of org1 scoped to ws1), revocable (a viewer of
// org1 whose credential ends when the test says so), and the session cookie
// "viewer-session".
type eventsBundle struct {
	// recheck decides what the "revocable" caller's RecheckFunc answers
	// (nil: still valid); rechecks counts its calls.
	recheck  atomic.Pointer[error]
	rechecks atomic.Int64

	replicas [2]*app.App
	addrs    [2]string
	org1     uuid.UUID
	org2     uuid.UUID
	ws1      uuid.UUID
	ws2      uuid.UUID
	ws3      uuid.UUID // in org2
}

func setupEvents(t *testing.T) *eventsBundle {
	t.Helper()
	b := &eventsBundle{org1: uuid.New(), org2: uuid.New(), ws1: uuid.New(), ws2: uuid.New(), ws3: uuid.New()}
	users := map[string]uuid.UUID{"viewer": uuid.New(), "operator": uuid.New(), "outsider": uuid.New(), "super": uuid.New()}
	principals := map[string]*app.Principal{
		"super":    {UserID: users["super"], Superadmin: true},
		"viewer":   {UserID: users["viewer"]},
		"operator": {UserID: users["operator"]},
		"outsider": {UserID: users["outsider"]},
		"key":      {APIKey: &app.APIKeyScope{ID: uuid.New(), OrgID: b.org1, WorkspaceID: b.ws1, Role: authz.RoleAdmin}},
	}
	revocable := &app.Principal{UserID: users["viewer"]}
	revocable.RecheckFunc = func(context.Context) (*app.Principal, error) {
		b.rechecks.Add(1)
		if err := b.recheck.Load(); err != nil {
			return nil, *err
		}
		return revocable, nil
	}
	principals["revocable"] = revocable
	roles := map[[2]uuid.UUID]string{
		{users["viewer"], b.org1}:   authz.RoleViewer,
		{users["operator"], b.org1}: authz.RoleOperator,
		{users["outsider"], b.org2}: authz.RoleOwner,
	}
	wiring := app.Wiring{
		AuthenticateAPI: func(c *fiber.Ctx) (*app.Principal, error) {
			tok := strings.TrimPrefix(c.Get("Authorization"), "Bearer ")
			if tok == "" {
				tok = c.Query("token")
			}
			if tok == "" {
				return nil, nil
			}
			if p, ok := principals[tok]; ok {
				return p, nil
			}
			return nil, app.ErrUnauthorized
		},
		AuthenticateUI: func(c *fiber.Ctx) (*app.Principal, error) {
			if c.Cookies("session") == "viewer-session" {
				return principals["viewer"], nil
			}
			return nil, nil
		},
		Role: func(_ context.Context, user uuid.UUID, s app.Scope) (string, error) {
			return roles[[2]uuid.UUID{user, s.OrgID}], nil
		},
	}
	cfg := apptest.Config(t)
	for i := range b.replicas {
		a, err := app.New(context.Background(), cfg, apptest.Logger(t))
		if err != nil {
			t.Fatalf("app.New: %v", err)
		}
		t.Cleanup(func() { a.Close(context.Background()) })
		if err := a.Mount(context.Background(), []app.Module{eventsModule{}}, wiring); err != nil {
			t.Fatalf("mount: %v", err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = a.Fiber().Listener(lis) }()
		t.Cleanup(func() {
			a.Events().Stop()
			_ = a.Fiber().Shutdown()
		})
		select {
		case <-a.Events().Listening():
		case <-time.After(wait):
			t.Fatal("events hub did not start listening")
		}
		b.replicas[i], b.addrs[i] = a, lis.Addr().String()
	}
	return b
}

// publish commits ev through replica a.
func (b *eventsBundle) publish(t *testing.T, ev events.Event) {
	t.Helper()
	a := b.replicas[0]
	err := a.Deps.DB.Transaction(func(tx *gorm.DB) error {
		return a.Deps.Events.Publish(context.Background(), tx, ev)
	})
	if err != nil {
		t.Fatalf("publish %s: %v", ev.Type, err)
	}
}

type gotEvent struct {
	Type        string         `json:"type"`
	Timestamp   string         `json:"timestamp"`
	Data        map[string]any `json:"data"`
	WorkspaceID string         `json:"workspace_id"`
	OrgID       string         `json:"org_id"`
}

type wsClient struct {
	conn *websocket.Conn
}

// dial connects to replica i's /v1/events and reads the "subscribed" greeting.
func (b *eventsBundle) dial(t *testing.T, i int, token, query string) *wsClient {
	t.Helper()
	u := "ws://" + b.addrs[i] + "/v1/events?token=" + token
	if query != "" {
		u += "&" + query
	}
	conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", u, err, status)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &wsClient{conn: conn}
	if got := c.next(t); got.Type != "subscribed" {
		t.Fatalf("greeting %+v, want subscribed", got)
	}
	return c
}

func (c *wsClient) next(t *testing.T) gotEvent {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	_, msg, err := c.conn.ReadMessage()
	if err != nil {
		t.Fatalf("read event: %v", err)
	}
	var ev gotEvent
	if err := json.Unmarshal(msg, &ev); err != nil {
		t.Fatalf("decode %s: %v", msg, err)
	}
	return ev
}

// send writes a client message and returns the reply.
func (c *wsClient) send(t *testing.T, msg string) gotEvent {
	t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	return c.next(t)
}

// expectOnly asserts the next event is the marker: everything published
// before it was withheld.
func (c *wsClient) expectOnly(t *testing.T, marker string) gotEvent {
	t.Helper()
	got := c.next(t)
	if got.Type != marker {
		t.Fatalf("received %s (%v), want only %s", got.Type, got.Data, marker)
	}
	return got
}

func TestEvents_WebSocket(t *testing.T) {
	t.Parallel()

	t.Run("CommittedPublishReachesOtherReplica", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 1, "viewer", "")
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1, WorkspaceID: b.ws1,
			Data: map[string]any{"agent_id": "a-1", "hostname": "web-01"}})
		got := c.next(t)
		if got.Type != "agent.connected" || got.Data["hostname"] != "web-01" || got.WorkspaceID != b.ws1.String() || got.OrgID != b.org1.String() {
			t.Fatalf("got %+v", got)
		}
		if _, err := time.Parse(time.RFC3339, got.Timestamp); err != nil || !strings.HasSuffix(got.Timestamp, "Z") {
			t.Fatalf("timestamp %q is not RFC 3339 UTC", got.Timestamp)
		}
	})

	t.Run("RolledBackPublishSendsNothing", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 1, "viewer", "")
		a := b.replicas[0]
		rollback := errors.New("rollback")
		err := a.Deps.DB.Transaction(func(tx *gorm.DB) error {
			if err := a.Deps.Events.Publish(context.Background(), tx, events.Event{Type: "agent.deleted", OrgID: b.org1}); err != nil {
				return err
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		b.publish(t, events.Event{Type: "marker.done", OrgID: b.org1})
		c.expectOnly(t, "marker.done")
	})

	t.Run("NilTransactionPublishesAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 0, "viewer", "")
		if err := b.replicas[1].Deps.Events.Publish(context.Background(), nil, events.Event{Type: "health.alert", OrgID: b.org1}); err != nil {
			t.Fatal(err)
		}
		c.expectOnly(t, "health.alert")
	})

	t.Run("GlobAndWorkspaceFilters", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 1, "viewer", "")
		reply := c.send(t, fmt.Sprintf(`{"action":"subscribe","events":["config.*"],"filter":{"workspace_id":%q}}`, b.ws1))
		if reply.Type != "subscribed" || fmt.Sprint(reply.Data["events"]) != "[config.*]" {
			t.Fatalf("reply %+v", reply)
		}
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1, WorkspaceID: b.ws1})
		b.publish(t, events.Event{Type: "config.applied", OrgID: b.org1, WorkspaceID: b.ws2})
		b.publish(t, events.Event{Type: "config.applied", OrgID: b.org1})
		b.publish(t, events.Event{Type: "config.applied", OrgID: b.org1, WorkspaceID: b.ws1, Data: map[string]any{"version": 42}})
		if got := c.expectOnly(t, "config.applied"); got.WorkspaceID != b.ws1.String() || got.Data["version"] != float64(42) {
			t.Fatalf("got %+v", got)
		}

		// Adding a pattern keeps the first; unsubscribing removes it.
		c.send(t, `{"action":"subscribe","events":["agent.*"]}`)
		reply = c.send(t, `{"action":"unsubscribe","events":["config.*"]}`)
		if fmt.Sprint(reply.Data["events"]) != "[agent.*]" {
			t.Fatalf("after unsubscribe: %+v", reply)
		}
		b.publish(t, events.Event{Type: "config.applied", OrgID: b.org1, WorkspaceID: b.ws1})
		b.publish(t, events.Event{Type: "agent.disconnected", OrgID: b.org1, WorkspaceID: b.ws1})
		c.expectOnly(t, "agent.disconnected")

		// Clearing the workspace filter.
		c.send(t, `{"action":"subscribe","events":["agent.*"],"filter":{}}`)
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1, WorkspaceID: b.ws2})
		c.expectOnly(t, "agent.connected")
	})

	t.Run("QueryFilters", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 0, "viewer", "events=health.*&workspace_id="+b.ws2.String())
		b.publish(t, events.Event{Type: "health.alert", OrgID: b.org1, WorkspaceID: b.ws1})
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1, WorkspaceID: b.ws2})
		b.publish(t, events.Event{Type: "health.alert", OrgID: b.org1, WorkspaceID: b.ws2})
		if got := c.expectOnly(t, "health.alert"); got.WorkspaceID != b.ws2.String() {
			t.Fatalf("got %+v", got)
		}
	})

	t.Run("BadMessagesAreAnsweredWithErrors", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 0, "viewer", "")
		for _, msg := range []string{`nope`, `{"action":"dance"}`, `{"action":"subscribe","events":["[a"]}`,
			`{"action":"subscribe","filter":{"workspace_id":"x"}}`} {
			if got := c.send(t, msg); got.Type != "error" || got.Data["message"] == "" {
				t.Fatalf("%s: reply %+v", msg, got)
			}
		}
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1})
		c.expectOnly(t, "agent.connected") // still subscribed to everything
	})

	t.Run("MemberOfAnotherOrgReceivesNothing", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 1, "outsider", "")
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1, WorkspaceID: b.ws1})
		b.publish(t, events.Event{Type: "config.applied", OrgID: b.org1})
		b.publish(t, events.Event{Type: "system.notice"}) // no organization: superadmins only
		b.publish(t, events.Event{Type: "marker.done", OrgID: b.org2, WorkspaceID: b.ws3})
		c.expectOnly(t, "marker.done")

		super := b.dial(t, 1, "super", "")
		b.publish(t, events.Event{Type: "system.notice"})
		super.expectOnly(t, "system.notice")
	})

	t.Run("WorkspaceAPIKeySeesOnlyItsWorkspace", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 1, "key", "")
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1, WorkspaceID: b.ws2})
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1})
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org2, WorkspaceID: b.ws3})
		b.publish(t, events.Event{Type: "marker.done", OrgID: b.org1, WorkspaceID: b.ws1})
		c.expectOnly(t, "marker.done")
	})

	t.Run("ObjectNeedsReadPermission", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		viewer := b.dial(t, 0, "viewer", "")
		operator := b.dial(t, 0, "operator", "")
		b.publish(t, events.Event{Type: "secret.changed", OrgID: b.org1, Object: "evtest.secret"})
		b.publish(t, events.Event{Type: "marker.done", OrgID: b.org1})
		operator.expectOnly(t, "secret.changed")
		viewer.expectOnly(t, "marker.done")
	})

	t.Run("ShutdownIsAnnounced", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 1, "viewer", "")
		b.replicas[1].Events().Stop()
		if got := c.next(t); got.Type != "shutdown" {
			t.Fatalf("got %+v, want shutdown", got)
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(wait))
		_, _, err := c.conn.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("after shutdown: %v, want close 1001", err)
		}
	})

	t.Run("RequiresCredentialAndUpgrade", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		for _, tc := range []struct {
			path   string
			status int
		}{
			{"/v1/events", http.StatusUnauthorized},
			{"/v1/events?token=wrong", http.StatusUnauthorized},
			{"/v1/events?token=viewer", http.StatusUpgradeRequired},
			{"/v1/events/stream", http.StatusUnauthorized},
			{"/v1/events/stream?token=viewer", http.StatusNotAcceptable},
		} {
			resp := apptest.Do(t, b.replicas[0], httptest.NewRequest(http.MethodGet, tc.path, nil))
			if resp.StatusCode != tc.status {
				t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.status)
			}
		}
		var routes []string
		for _, r := range b.replicas[0].Routes() {
			if strings.HasPrefix(r.Path, "/v1/events") {
				routes = append(routes, r.Method+" "+r.Path)
			}
		}
		if fmt.Sprint(routes) != "[GET /v1/events GET /v1/events/stream]" {
			t.Fatalf("registered routes %v", routes)
		}
	})
}

func TestEvents_Publish(t *testing.T) {
	t.Parallel()

	t.Run("TruncatesLargeData", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		c := b.dial(t, 1, "viewer", "")
		b.publish(t, events.Event{Type: "log.line", OrgID: b.org1, Data: map[string]any{
			"agent_id": "a-1", "text": strings.Repeat("x", 20000),
		}})
		got := c.next(t)
		if got.Data["truncated"] != true || got.Data["agent_id"] != "a-1" || got.Data["text"] != nil {
			t.Fatalf("got %+v", got.Data)
		}
	})

	t.Run("PublishAllSendsEveryEventInOrderOnCommit", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		hub := b.replicas[1].Events()
		sub, err := hub.Subscribe([]string{"batch.*"}, uuid.Nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		a := b.replicas[0]
		// Many events are packed several to a notification; one too
		// large to share one goes alone, in its place.
		evs := make([]events.Event, 300)
		for i := range evs {
			evs[i] = events.Event{Type: "batch.item", OrgID: b.org1, Data: map[string]any{"i": i, "pad": strings.Repeat("x", 100)}}
		}
		evs[150].Data["pad"] = strings.Repeat("y", 7700)
		err = a.Deps.DB.Transaction(func(tx *gorm.DB) error {
			return a.Events().PublishAll(context.Background(), tx, evs)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Events().PublishAll(context.Background(), nil, []events.Event{{Type: "Bad Type"}}); err == nil {
			t.Error("a bad type was accepted")
		}
		for i := range evs {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			ev, err := sub.Next(ctx)
			cancel()
			if err != nil || ev.Type != "batch.item" || fmt.Sprint(ev.Data["i"]) != fmt.Sprint(i) || ev.Data["pad"] != evs[i].Data["pad"] {
				t.Fatalf("event %d: %v %v %v", i, ev.Type, ev.Data["i"], err)
			}
		}
	})

	t.Run("RejectsBadType", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		for _, typ := range []string{"", "Agent Connected", "agent..x", strings.Repeat("a", 101)} {
			if err := b.replicas[0].Deps.Events.Publish(context.Background(), nil, events.Event{Type: typ}); err == nil {
				t.Errorf("type %q accepted", typ)
			}
		}
	})

	t.Run("SlowSubscriberIsDroppedWithoutBlockingOthers", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		hub := b.replicas[1].Events()
		slow, err := hub.Subscribe([]string{"flood.*"}, uuid.Nil)
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		fast, err := hub.Subscribe([]string{"marker.*"}, uuid.Nil)
		if err != nil {
			t.Fatal(err)
		}
		defer fast.Close()
		a := b.replicas[0]
		err = a.Deps.DB.Transaction(func(tx *gorm.DB) error {
			for i := range events.SubscriberBuffer + 50 {
				if err := a.Deps.Events.Publish(context.Background(), tx, events.Event{Type: "flood.item", OrgID: b.org1, Data: map[string]any{"i": i}}); err != nil {
					return err
				}
			}
			return a.Deps.Events.Publish(context.Background(), tx, events.Event{Type: "marker.done", OrgID: b.org1})
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		ev, err := fast.Next(ctx)
		if err != nil || ev.Type != "marker.done" {
			t.Fatalf("fast subscriber: %v %v", ev.Type, err)
		}
		select {
		case <-slow.Done():
		case <-ctx.Done():
			t.Fatal("slow subscriber was not dropped")
		}
		if _, err := slow.Next(ctx); !errors.Is(err, events.ErrSubscriberDropped) {
			t.Fatalf("slow subscriber: %v, want ErrSubscriberDropped", err)
		}
	})
}

// sseClient reads one /v1/events/stream response.
type sseClient struct {
	r *bufio.Reader
}

type sseFrame struct {
	event string
	data  gotEvent
}

func (b *eventsBundle) stream(t *testing.T, i int, query string, header ...string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addrs[i]+"/v1/events/stream?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for j := 0; j+1 < len(header); j += 2 {
		req.Header.Set(header[j], header[j+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// A stalled stream fails the read when the test's deadline cancels ctx.
	timer := time.AfterFunc(wait, cancel)
	t.Cleanup(func() { timer.Stop() })
	return &sseClient{r: bufio.NewReader(resp.Body)}
}

// next returns the next frame; ok is false at the end of the stream.
func (s *sseClient) next(t *testing.T) (f sseFrame, ok bool) {
	t.Helper()
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return f, false
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && f.event != "":
			return f, true
		case strings.HasPrefix(line, "event: "):
			f.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &f.data); err != nil {
				t.Fatalf("decode %s: %v", line, err)
			}
		}
	}
}

func (s *sseClient) expect(t *testing.T, event, typ string) sseFrame {
	t.Helper()
	f, ok := s.next(t)
	if !ok || f.event != event || f.data.Type != typ {
		t.Fatalf("frame %q %+v (open %v), want event %q of type %q", f.event, f.data, ok, event, typ)
	}
	return f
}

func TestEvents_Stream(t *testing.T) {
	t.Parallel()

	t.Run("DeliversWithSessionCookieAndAnnouncesShutdown", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		s := b.stream(t, 1, "events=agent.*,config.*&workspace_id="+b.ws1.String(), "Cookie", "session=viewer-session")
		initial := s.expect(t, "initial", "initial")
		if fmt.Sprint(initial.data.Data["events"]) != "[agent.* config.*]" {
			t.Fatalf("initial %+v", initial.data)
		}
		b.publish(t, events.Event{Type: "health.alert", OrgID: b.org1, WorkspaceID: b.ws1})
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1, WorkspaceID: b.ws2})
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1, WorkspaceID: b.ws1, Data: map[string]any{"agent_id": "a-1"}})
		b.publish(t, events.Event{Type: "agent.created", OrgID: b.org1, WorkspaceID: b.ws1})
		b.publish(t, events.Event{Type: "agent.deleted", OrgID: b.org1, WorkspaceID: b.ws1})
		if f := s.expect(t, "update", "agent.connected"); f.data.Data["agent_id"] != "a-1" {
			t.Fatalf("update %+v", f.data)
		}
		s.expect(t, "agent.connected", "agent.connected")
		s.expect(t, "create", "agent.created")
		s.expect(t, "agent.created", "agent.created")
		s.expect(t, "delete", "agent.deleted")
		s.expect(t, "agent.deleted", "agent.deleted")

		b.replicas[1].Events().Stop()
		s.expect(t, "shutdown", "shutdown")
		if f, ok := s.next(t); ok {
			t.Fatalf("stream still open after shutdown: %+v", f)
		}
	})

	t.Run("FiltersWhatTheCallerMaySee", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		s := b.stream(t, 0, "token=outsider")
		s.expect(t, "initial", "initial")
		b.publish(t, events.Event{Type: "log.line", OrgID: b.org1, WorkspaceID: b.ws1})
		b.publish(t, events.Event{Type: "log.line", OrgID: b.org2, WorkspaceID: b.ws3})
		s.expect(t, "log", "log.line")
		if f := s.expect(t, "log.line", "log.line"); f.data.OrgID != b.org2.String() {
			t.Fatalf("got %+v", f.data)
		}
	})
}

func TestEvents_CredentialRecheck(t *testing.T) {
	t.Parallel()

	t.Run("StreamsCloseOnceTheCredentialEnds", func(t *testing.T) {
		t.Parallel()
		b := setupEvents(t)
		ws := b.dial(t, 0, "revocable", "")
		sse := b.stream(t, 0, "token=revocable")
		sse.expect(t, "initial", "initial")

		// A lookup that fails for another reason keeps the streams.
		transient := errors.New("database unreachable")
		b.recheck.Store(&transient)
		deadline := time.Now().Add(wait)
		for b.rechecks.Load() < 2 {
			if time.Now().After(deadline) {
				t.Fatal("the streams did not recheck their credential")
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.publish(t, events.Event{Type: "agent.connected", OrgID: b.org1})
		ws.expectOnly(t, "agent.connected")
		sse.expect(t, "update", "agent.connected")
		sse.expect(t, "agent.connected", "agent.connected")

		revoked := fmt.Errorf("%w: session revoked", app.ErrUnauthorized)
		b.recheck.Store(&revoked)
		start := time.Now()
		if got := ws.next(t); got.Type != "unauthorized" {
			t.Fatalf("WebSocket got %+v, want unauthorized", got)
		}
		_ = ws.conn.SetReadDeadline(time.Now().Add(wait))
		if _, _, err := ws.conn.ReadMessage(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
			t.Fatalf("after unauthorized: %v, want close 1008", err)
		}
		sse.expect(t, "unauthorized", "unauthorized")
		if f, ok := sse.next(t); ok {
			t.Fatalf("stream still open after unauthorized: %+v", f)
		}
		if elapsed := time.Since(start); elapsed > 10*time.Second {
			t.Fatalf("streams closed %v after the credential ended", elapsed)
		}
	})
}
