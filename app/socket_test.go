package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
)

// socketModule mounts a first-message socket that needs read on
// sockprobe.thing (operators and above) in the workspace of :id.
type socketModule struct {
	scopes map[string]app.Scope
	wait   time.Duration
}

const (
	socketObject    = "sockprobe.thing"
	socketNotFound  = "Thing not found"
	socketForbidden = "Insufficient permissions to watch this thing"
)

func (socketModule) Name() string { return "sockprobe" }
func (socketModule) Policies() []authz.Policy {
	return authz.AtLeast(authz.RoleOperator, socketObject, authz.Read)
}
func (socketModule) Jobs(*river.Workers) []*river.PeriodicJob { return nil }
func (socketModule) GRPC(grpc.ServiceRegistrar)               {}
func (m socketModule) Routes(r app.Routers) {
	scope := func(c *fiber.Ctx) (app.Scope, error) {
		s, ok := m.scopes[c.Params("id")]
		if !ok {
			return s, fmt.Errorf("%w: no such thing", app.ErrNotFound)
		}
		return s, nil
	}
	r.API.Socket("/sockprobe/:id", app.SocketAuth{
		Object: socketObject, Action: authz.Read, Scope: scope,
		NotFound: socketNotFound, Forbidden: socketForbidden, Wait: m.wait,
	}, app.Doc{Summary: "probe socket"}, func(s *app.Socket) {
		if s.Send(map[string]string{"type": "auth_success", "workspace_id": s.Scope().WorkspaceID.String(),
			"credential": s.Principal().Credential(), "id": s.Params("id")}) != nil {
			return
		}
		rd := s.ReadPings()
		defer rd.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case r := <-rd.Replies:
				if s.WriteText(r) != nil {
					return
				}
			case <-rd.Done:
				if why := rd.Err(); why != "" {
					s.Fail(websocket.ClosePolicyViolation, why)
				}
				return
			case <-tick.C:
				if !s.StillAllowed(context.Background()) {
					s.Fail(websocket.ClosePolicyViolation, app.SocketRevoked)
					return
				}
			}
		}
	})
}

// socketWorld is a master serving socketModule with a fixed set of callers.
type socketWorld struct {
	base    string
	revoked atomic.Bool
	removed atomic.Bool
}

const socketFailureLimit = 3

func newSocketWorld(t *testing.T) *socketWorld {
	t.Helper()
	org, ws, ws2 := uuid.New(), uuid.New(), uuid.New()
	a := apptest.NewApp(t, func(c *app.Config) {
		c.HTTP.TrustedProxies = "127.0.0.1"
		c.Auth.LoginAttemptsPerIP = socketFailureLimit
		c.Auth.LoginWindow = time.Hour
	})
	w := &socketWorld{}
	viewer, operator, revocable, refused := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	principals := map[string]*app.Principal{
		"viewer":   {UserID: viewer},
		"operator": {UserID: operator},
		"refused":  {UserID: refused},
		"key-ws2":  {APIKey: &app.APIKeyScope{ID: uuid.New(), OrgID: org, WorkspaceID: ws2, Role: authz.RoleOperator}},
		"key-org":  {APIKey: &app.APIKeyScope{ID: uuid.New(), OrgID: org, Role: authz.RoleOperator}},
	}
	rp := &app.Principal{UserID: revocable}
	rp.RecheckFunc = func(context.Context) (*app.Principal, error) {
		if w.revoked.Load() {
			return nil, fmt.Errorf("%w: key revoked", app.ErrUnauthorized)
		}
		return rp, nil
	}
	principals["revocable"] = rp
	roles := map[uuid.UUID]string{viewer: authz.RoleViewer, operator: authz.RoleOperator, revocable: authz.RoleOperator}
	err := a.Mount(context.Background(), []app.Module{socketModule{
		scopes: map[string]app.Scope{"thing": {OrgID: org, WorkspaceID: ws}},
		wait:   300 * time.Millisecond,
	}}, app.Wiring{
		AuthenticateAPI: func(*fiber.Ctx) (*app.Principal, error) { return nil, nil },
		AuthenticateUI:  func(*fiber.Ctx) (*app.Principal, error) { return nil, nil },
		AuthenticateToken: func(_ context.Context, token string) (*app.Principal, error) {
			if token == "broken" {
				return nil, errors.New("database unreachable")
			}
			if p, ok := principals[token]; ok {
				return p, nil
			}
			return nil, fmt.Errorf("%w: bad token", app.ErrUnauthorized)
		},
		Role: func(_ context.Context, user uuid.UUID, s app.Scope) (string, error) {
			if user == refused {
				return "", fmt.Errorf("%w: confirm sign-in with a code", app.ErrForbidden)
			}
			if s.OrgID != org || (user == revocable && w.removed.Load()) {
				return "", nil
			}
			return roles[user], nil
		},
		Version: "test",
	})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	w.base = apptest.Serve(t, a)
	return w
}

type socketClient struct {
	t    *testing.T
	conn *websocket.Conn
}

type socketMsg struct {
	Type        string `json:"type"`
	Message     string `json:"message"`
	WorkspaceID string `json:"workspace_id"`
	Credential  string `json:"credential"`
	ID          string `json:"id"`
}

// dial opens /v1/sockprobe/id as client address ip.
func (w *socketWorld) dial(t *testing.T, id, ip string) *socketClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(w.base, "http") + "/v1/sockprobe/" + id
	conn, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"X-Forwarded-For": {ip}})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	resp.Body.Close()
	t.Cleanup(func() { conn.Close() })
	return &socketClient{t: t, conn: conn}
}

func (c *socketClient) send(msg string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *socketClient) read() (socketMsg, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.conn.ReadMessage()
	if err != nil {
		return socketMsg{}, err
	}
	var m socketMsg
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("message %s: %v", b, err)
	}
	return m, nil
}

// refused reads the error message and the close frame, and checks both
// carry a reason starting with want, the frame with code.
func (c *socketClient) refused(code int, want string) {
	c.t.Helper()
	m, err := c.read()
	if err != nil || m.Type != "error" || !strings.HasPrefix(m.Message, want) {
		c.t.Fatalf("got %+v (%v), want error %q", m, err, want)
	}
	_, err = c.read()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || !strings.HasPrefix(ce.Text, want) {
		c.t.Fatalf("read %v, want close %d %q", err, code, want)
	}
}

func authFrame(token string) string {
	b, _ := json.Marshal(map[string]string{"type": "auth", "token": token})
	return string(b)
}

// TestSocket_FirstMessageAuth walks the admission of a first-message socket:
// every case connects from its own client address.
func TestSocket_FirstMessageAuth(t *testing.T) {
	w := newSocketWorld(t)
	cases := []struct {
		name string
		id   string
		// failures bad tokens are sent first, each on its own socket, from
		// the same address.
		failures int
		first    string // "" sends nothing
		code     int    // 0: admitted
		reason   string
		// revoke revokes the admitted caller's credential, remove its
		// membership; the socket must close with SocketRevoked.
		revoke, remove bool
	}{
		{name: "GoodToken", id: "thing", first: authFrame("operator")},
		{name: "GoodAPIKey", id: "thing", first: authFrame("key-org")},
		{name: "BadToken", id: "thing", first: authFrame("nope"), code: websocket.ClosePolicyViolation, reason: app.SocketBadToken},
		{name: "NotJSON", id: "thing", first: "hello", code: websocket.ClosePolicyViolation, reason: app.SocketBadFirstMessage},
		{name: "NotAuth", id: "thing", first: `{"type":"ping"}`, code: websocket.ClosePolicyViolation, reason: app.SocketBadFirstMessage},
		{name: "EmptyToken", id: "thing", first: `{"type":"auth","token":"  "}`, code: websocket.ClosePolicyViolation, reason: app.SocketBadFirstMessage},
		{name: "NoMessageWithinDeadline", id: "thing", code: websocket.ClosePolicyViolation, reason: app.SocketAuthTimeout},
		{name: "ForbiddenRole", id: "thing", first: authFrame("viewer"), code: websocket.ClosePolicyViolation, reason: socketForbidden},
		{name: "KeyOfOtherWorkspace", id: "thing", first: authFrame("key-ws2"), code: websocket.ClosePolicyViolation, reason: socketNotFound},
		{name: "SessionRefusedByScope", id: "thing", first: authFrame("refused"), code: websocket.ClosePolicyViolation, reason: socketNotFound},
		{name: "UnknownThing", id: "other", first: authFrame("operator"), code: websocket.ClosePolicyViolation, reason: socketNotFound},
		{name: "UnknownThingBadToken", id: "other", first: authFrame("nope"), code: websocket.ClosePolicyViolation, reason: app.SocketBadToken},
		{name: "AuthenticatorFails", id: "thing", first: authFrame("broken"), code: websocket.ClosePolicyViolation, reason: app.SocketUnavailable},
		{name: "BelowFailureLimit", id: "thing", failures: socketFailureLimit - 1, first: authFrame("operator")},
		{name: "RateLimitedAfterFailures", id: "thing", failures: socketFailureLimit, first: authFrame("operator"),
			code: websocket.CloseTryAgainLater, reason: app.SocketRateLimited},
		{name: "RevokedWhileOpen", id: "thing", first: authFrame("revocable"), revoke: true},
		{name: "RemovedWhileOpen", id: "thing", first: authFrame("revocable"), remove: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ip := fmt.Sprintf("10.0.%d.1", i)
			for range tc.failures {
				c := w.dial(t, tc.id, ip)
				c.send(authFrame("wrong"))
				c.refused(websocket.ClosePolicyViolation, app.SocketBadToken)
			}
			c := w.dial(t, tc.id, ip)
			if tc.first != "" {
				c.send(tc.first)
			}
			if tc.code != 0 {
				c.refused(tc.code, tc.reason)
				return
			}
			m, err := c.read()
			if err != nil || m.Type != "auth_success" || m.ID != tc.id || m.WorkspaceID == "" || m.Credential == "" {
				t.Fatalf("got %+v (%v), want auth_success", m, err)
			}
			switch {
			case tc.revoke:
				w.revoked.Store(true)
				defer w.revoked.Store(false)
			case tc.remove:
				w.removed.Store(true)
				defer w.removed.Store(false)
			default:
				return
			}
			c.refused(websocket.ClosePolicyViolation, app.SocketRevoked)
		})
	}

	t.Run("LimitIsPerAddress", func(t *testing.T) {
		for range socketFailureLimit {
			c := w.dial(t, "thing", "10.1.0.1")
			c.send(authFrame("wrong"))
			c.refused(websocket.ClosePolicyViolation, app.SocketBadToken)
		}
		c := w.dial(t, "thing", "10.1.0.1")
		c.send(authFrame("operator"))
		c.refused(websocket.CloseTryAgainLater, app.SocketRateLimited)
		c = w.dial(t, "thing", "10.1.0.2")
		c.send(authFrame("operator"))
		if m, err := c.read(); err != nil || m.Type != "auth_success" {
			t.Fatalf("another address: got %+v (%v), want auth_success", m, err)
		}
	})
	t.Run("PingsThenAnythingElseCloses", func(t *testing.T) {
		c := w.dial(t, "thing", "10.2.0.1")
		c.send(authFrame("operator"))
		if m, err := c.read(); err != nil || m.Type != "auth_success" {
			t.Fatalf("got %+v (%v), want auth_success", m, err)
		}
		c.send(`{"type":"ping"}`)
		if m, err := c.read(); err != nil || m.Type != "pong" {
			t.Fatalf("got %+v (%v), want pong", m, err)
		}
		c.send(`{"type":"subscribe"}`)
		c.refused(websocket.ClosePolicyViolation, app.SocketBadMessage)
	})
	t.Run("PlainGETIs426", func(t *testing.T) {
		resp, err := http.Get(w.base + "/v1/sockprobe/thing")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("status %d, want 426", resp.StatusCode)
		}
	})
}
