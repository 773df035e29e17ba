package logs

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	fiberws "github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
)

// The live-log WebSocket GET /v1/ws/logs/:agent_id:
//
//  1. The upgrade carries no credential (browsers cannot set headers on a
//     WebSocket) and the server sends nothing until the client's first
//     message, within socketAuthWait:
//
//     {"type":"auth","token":"<access token or API key>"}
//
//  2. A malformed first message, a bad token, an agent that does not exist
//     or that the caller may not see (the rule of GET /v1/agents/:id/error-logs:
//     read on logs.log in the agent's workspace) is answered with
//     {"type":"error","message":"…"} and a close frame 1008.
//  3. Otherwise the client gets {"type":"auth_success","agent_id":"…",
//     "message":"…"} and from then on every access-log entry and error-log
//     line the agent sends, on any replica (live.go), as
//     {"type":"log","data":{"level","message","timestamp","source",…}}.
//     A client may send {"type":"ping"} (answered {"type":"pong"}); any other
//     message is an error and closes the socket.
//  4. Every liveRecheck the caller's credential (Principal.RecheckFunc) and
//     role are checked again: a revoked API key, a logged-out session, an
//     expired token or a removed membership ends the socket with an error
//     message and close 1008. On shutdown the socket closes with 1001.

// Timing and limits of the live sockets and streams.
const (
	socketAuthWait  = 10 * time.Second
	socketWriteWait = 10 * time.Second
	socketPing      = 30 * time.Second
	socketPongWait  = 75 * time.Second
	socketReadLimit = 8 << 10
	liveRecheck     = 5 * time.Second
	authWait        = 5 * time.Second

	localTarget = "nxmesh.logs.target"
)

// Messages of the live socket's errors.
const (
	msgBadFirstMessage = `Invalid message format: the first message must be {"type":"auth","token":"<access token or API key>"}`
	msgBadMessage      = `Invalid message format: send {"type":"ping"} or nothing`
	msgBadToken        = "Invalid or expired token"
	msgNotFound        = "Agent not found"
	msgForbidden       = "Insufficient permissions to read this agent's logs"
	msgRevoked         = "Credential revoked or expired, or access removed; authenticate again"
	msgUnavailable     = "Service temporarily unavailable; reconnect"
)

// socketTarget is the agent a socket asked for, resolved before the upgrade.
type socketTarget struct {
	agentID uuid.UUID
	scope   app.Scope
	err     error
}

// socketMessage is a client's message.
type socketMessage struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

func mountSocket(m *Module, api *app.Router) {
	upgrade := fiberws.New(m.runSocket, fiberws.Config{HandshakeTimeout: socketWriteWait})
	scope := agents.ScopeAgent(m.db, "agent_id")
	api.Get("/ws/logs/:agent_id", app.Public(), app.Doc{
		Summary: `Live access-log and error-log lines of an agent over WebSocket: send {"type":"auth","token":"<access token or API key>"} first; ` +
			`then {"type":"log","data":{level, message, timestamp, …}} messages (needs read on logs.log in the agent's workspace)`,
		Stream: app.StreamWebSocket,
	}, func(c *fiber.Ctx) error {
		if !fiberws.IsWebSocketUpgrade(c) {
			return &app.HTTPError{Status: http.StatusUpgradeRequired, Code: "UPGRADE_REQUIRED", Message: "Connect with a WebSocket client"}
		}
		// Resolved now (the fiber context ends with the upgrade), told only
		// after authentication.
		t := socketTarget{}
		t.agentID, t.err = app.ParamUUID(c, "agent_id")
		if t.err == nil {
			t.scope, t.err = scope(c)
		}
		c.Locals(localTarget, t)
		return upgrade(c)
	})
}

// socketConn writes a live socket's messages.
type socketConn struct {
	ws *websocket.Conn
}

func (s socketConn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.write(b)
}

func (s socketConn) write(b []byte) error {
	_ = s.ws.SetWriteDeadline(time.Now().Add(socketWriteWait))
	return s.ws.WriteMessage(websocket.TextMessage, b)
}

// fail sends an error message and closes with code.
func (s socketConn) fail(code int, message string) {
	_ = s.send(map[string]string{"type": "error", "message": message})
	_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, message), time.Now().Add(socketWriteWait))
}

// runSocket serves one live-log socket (see the top of this file).
func (m *Module) runSocket(c *fiberws.Conn) {
	t, _ := c.Locals(localTarget).(socketTarget)
	ws := c.Conn
	defer ws.Close()
	out := socketConn{ws: ws}
	ws.SetReadLimit(socketReadLimit)
	_ = ws.SetReadDeadline(time.Now().Add(socketAuthWait))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		out.fail(websocket.ClosePolicyViolation, msgBadFirstMessage)
		return
	}
	var first socketMessage
	if json.Unmarshal(msg, &first) != nil || first.Type != "auth" || strings.TrimSpace(first.Token) == "" {
		out.fail(websocket.ClosePolicyViolation, msgBadFirstMessage)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), authWait)
	p, why := m.authenticateSocket(ctx, strings.TrimSpace(first.Token), t)
	cancel()
	if why != "" {
		out.fail(websocket.ClosePolicyViolation, why)
		return
	}
	sub := m.lv.Subscribe(LiveFilter{WorkspaceID: t.scope.WorkspaceID, AgentID: t.agentID})
	defer sub.Close()
	select {
	case <-sub.Done(): // shutting down
		out.fail(websocket.CloseGoingAway, msgUnavailable)
		return
	default:
	}
	if out.send(map[string]string{"type": "auth_success", "agent_id": t.agentID.String(),
		"message": "Connected; streaming the agent's access and error logs"}) != nil {
		return
	}

	// The reader answers pings and ends the socket on anything else; only
	// this goroutine writes data messages.
	replies := make(chan []byte, 4)
	bad := make(chan string, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		_ = ws.SetReadDeadline(time.Now().Add(socketPongWait))
		ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(socketPongWait)) })
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			_ = ws.SetReadDeadline(time.Now().Add(socketPongWait))
			var in socketMessage
			if json.Unmarshal(msg, &in) != nil || in.Type != "ping" {
				bad <- msgBadMessage
				return
			}
			select {
			case replies <- []byte(`{"type":"pong"}`):
			default:
			}
		}
	}()
	defer func() {
		_ = ws.Close()
		<-readerDone
	}()

	ping := time.NewTicker(socketPing)
	defer ping.Stop()
	recheck := time.NewTicker(m.recheck)
	defer recheck.Stop()
	for {
		select {
		case l := <-sub.C:
			if out.write(liveMessage(l)) != nil {
				return
			}
		case r := <-replies:
			if out.write(r) != nil {
				return
			}
		case <-ping.C:
			if ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(socketWriteWait)) != nil {
				return
			}
		case <-recheck.C:
			var ok bool
			if p, ok = m.stillAllowed(p, t.scope); !ok {
				out.fail(websocket.ClosePolicyViolation, msgRevoked)
				return
			}
		case <-readerDone:
			select {
			case why := <-bad:
				out.fail(websocket.ClosePolicyViolation, why)
			default:
			}
			return
		case <-sub.Done():
			out.fail(websocket.CloseGoingAway, msgUnavailable)
			return
		}
	}
}

// authenticateSocket authenticates token and checks that its caller may
// read t's logs; why is the error message to send when not.
func (m *Module) authenticateSocket(ctx context.Context, token string, t socketTarget) (p *app.Principal, why string) {
	if m.opts.Authenticate == nil {
		return nil, msgBadToken
	}
	p, err := m.opts.Authenticate(ctx, token)
	if err != nil || p == nil {
		if err != nil && !errors.Is(err, app.ErrUnauthorized) {
			m.logger.Warn("logs: authenticate live socket", "error", err)
			return nil, msgUnavailable
		}
		return nil, msgBadToken
	}
	if t.err != nil {
		if errors.Is(t.err, app.ErrNotFound) {
			return nil, msgNotFound
		}
		m.logger.Warn("logs: resolve live socket's agent", "error", t.err)
		return nil, msgUnavailable
	}
	role, err := m.roleIn(ctx, p, t.scope)
	if err != nil {
		m.logger.Warn("logs: resolve live socket's role", "error", err)
		return nil, msgUnavailable
	}
	if role == "" {
		return nil, msgNotFound
	}
	if ok, err := m.authz.Allowed(role, t.scope.OrgID.String(), ObjLog, authz.Read); err != nil || !ok {
		return nil, msgForbidden
	}
	return p, ""
}

// roleIn is the caller's role in s as the route guard resolves it: an API
// key's role within its organization (and workspace), owner for a
// superadmin, the membership otherwise; "" when none. A scope that refuses
// the caller's session (an organization's sign-in policy) gives "".
func (m *Module) roleIn(ctx context.Context, p *app.Principal, s app.Scope) (string, error) {
	if k := p.APIKey; k != nil {
		if k.OrgID != s.OrgID || (k.WorkspaceID != uuid.Nil && k.WorkspaceID != s.WorkspaceID) {
			return "", nil
		}
		return k.Role, nil
	}
	if p.Superadmin {
		return authz.RoleOwner, nil
	}
	if m.opts.Role == nil {
		return "", nil
	}
	role, err := m.opts.Role(app.WithPrincipal(ctx, p), p.UserID, s)
	if errors.Is(err, app.ErrForbidden) {
		return "", nil
	}
	return role, err
}

// stillAllowed authenticates p's credential again and checks its role in s;
// it returns the caller as it is now. A failed lookup (the database
// unreachable) keeps the connection; the next check decides.
func (m *Module) stillAllowed(p *app.Principal, s app.Scope) (*app.Principal, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), authWait)
	defer cancel()
	if p.RecheckFunc != nil {
		np, err := p.RecheckFunc(ctx)
		switch {
		case errors.Is(err, app.ErrUnauthorized):
			return p, false
		case err != nil:
			m.logger.Warn("logs: recheck live subscriber's credential", "error", err, "credential", p.Credential())
			return p, true
		case np == nil:
			return p, false
		}
		p = np
	}
	role, err := m.roleIn(ctx, p, s)
	if err != nil {
		m.logger.Warn("logs: recheck live subscriber's role", "error", err)
		return p, true
	}
	if role == "" {
		return p, false
	}
	ok, err := m.authz.Allowed(role, s.OrgID.String(), ObjLog, authz.Read)
	if err != nil {
		return p, true
	}
	return p, ok
}
