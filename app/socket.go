package app

// First-message WebSockets and the admission of long-lived connections.
//
// A browser cannot set headers on a WebSocket, so the live sockets of the
// modules (GET /v1/ws/logs/:agent_id, GET /v1/ws/metrics/:agent_id) take no
// credential on the upgrade. Router.Socket mounts such a route:
//
//  1. A plain GET (no upgrade) is answered 426 UPGRADE_REQUIRED. The scope of
//     the addressed object is resolved before the upgrade and told only after
//     authentication, so the socket discloses nothing to an anonymous client.
//  2. The server sends nothing until the client's first message, which must
//     arrive within SocketAuth.Wait (SocketAuthWait by default):
//
//     {"type":"auth","token":"<access token or API key>"}
//
//  3. The token is authenticated with Wiring.AuthenticateToken, counted
//     against the credential's request budget like an API request, and the
//     caller's role in the scope is resolved and checked against
//     SocketAuth.Object and Action with the Casbin enforcer, as the route
//     guard does for a Require route.
//  4. A refusal is the message {"type":"error","message":"…"} followed by a
//     close frame with the same reason: 1008 (policy violation) for a
//     malformed or late first message, a bad token, an object out of the
//     caller's reach (SocketAuth.NotFound) or a role without the permission
//     (SocketAuth.Forbidden); 1013 (try again later) when the client address
//     has failed authentication too often or the credential spent its budget.
//  5. Bad tokens are counted per client address (the address Fiber resolves,
//     behind http.trusted_proxies the forwarded one): after
//     auth.login_attempts_per_ip of them within auth.login_window further
//     first messages from that address are refused without looking at their
//     token until the window ends. Counted per replica.
//  6. Otherwise the route's handler runs with the Socket. It calls
//     Socket.StillAllowed every few seconds and closes with SocketRevoked
//     once the credential is revoked or expired or the role is gone.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	fiberws "github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
)

// Timing and limits of first-message sockets.
const (
	// SocketAuthWait is how long a socket waits for its first message
	// unless SocketAuth.Wait says otherwise.
	SocketAuthWait = 10 * time.Second
	// SocketWriteWait bounds every write to a socket, and the upgrade.
	SocketWriteWait = 10 * time.Second
	// SocketReadLimit is the largest message a client may send.
	SocketReadLimit = 8 << 10
	// SocketPing is how often a handler pings its client (Socket.Ping).
	SocketPing = 30 * time.Second
	// SocketPongWait is how long a socket's reader (Socket.ReadPings)
	// waits for any message or pong before it ends.
	SocketPongWait = 75 * time.Second
	// socketLookupWait bounds authenticating a token and resolving a role.
	socketLookupWait = 5 * time.Second
)

// Close reasons of first-message sockets, also sent as the error message
// before the close frame.
const (
	SocketBadFirstMessage = `Invalid message format: the first message must be {"type":"auth","token":"<access token or API key>"}`
	SocketAuthTimeout     = `Authentication timed out: send {"type":"auth","token":"…"} first`
	SocketBadToken        = "Invalid or expired token"
	// SocketRateLimited starts the reason when the client address failed
	// authentication too often; " (retry in N s)" follows.
	SocketRateLimited = "Too many failed authentications from this address"
	// SocketTooManyRequests is the reason when the credential spent its
	// request budget (auth.rate_limit_per_minute).
	SocketTooManyRequests = "Too many requests"
	SocketRevoked         = "Credential revoked or expired, or access removed; authenticate again"
	// SocketBadMessage ends a socket whose client sent something other than
	// a ping after authenticating (Socket.ReadPings).
	SocketBadMessage  = `Invalid message format: send {"type":"ping"} or nothing`
	SocketUnavailable = "Service temporarily unavailable; reconnect"
)

// maxCloseReason is the longest close reason a close frame carries (a
// control frame's payload is at most 125 bytes, two of them the code).
const maxCloseReason = 123

// SocketAuth is what a first-message socket requires of its caller.
type SocketAuth struct {
	// Object and Action are the permission the caller needs in the scope
	// Scope resolves (as for Require).
	Object, Action string
	Scope          ScopeFunc
	// NotFound is the reason when the addressed object does not exist or
	// lies outside the caller's organizations ("Agent not found").
	NotFound string
	// Forbidden is the reason when the caller's role lacks the permission.
	Forbidden string
	// Wait is how long the socket waits for the first message;
	// SocketAuthWait when zero.
	Wait time.Duration
}

// socketGuard admits the callers of Socket routes.
type socketGuard struct {
	g *guard
	// failures counts bad tokens per client address.
	failures *failureLimiter
}

func newSocketGuard(g *guard, cfg AuthConfig) *socketGuard {
	return &socketGuard{g: g, failures: newFailureLimiter(cfg.LoginAttemptsPerIP, cfg.LoginWindow)}
}

// socketTarget is the scope a socket addressed, resolved before the upgrade.
type socketTarget struct {
	scope Scope
	err   error
}

const localSocketTarget = "nxmesh.socket_target"

// Socket mounts a first-message WebSocket at path (see the top of
// socket.go): run gets the connection once its caller is authenticated and
// allowed; the connection closes when run returns. The route is public in
// the route registry and the OpenAPI document (the upgrade carries no
// credential), documented as a WebSocket stream.
func (r *Router) Socket(path string, sa SocketAuth, d Doc, run func(*Socket)) {
	if r.sockets == nil {
		panic("app: socket route " + r.prefix + path + " on a router Mount did not build")
	}
	if sa.Scope == nil || sa.Object == "" || sa.Action == "" {
		panic("app: socket route " + r.prefix + path + " without object, action or scope")
	}
	if sa.Wait <= 0 {
		sa.Wait = SocketAuthWait
	}
	if sa.NotFound == "" {
		sa.NotFound = "Resource not found"
	}
	if sa.Forbidden == "" {
		sa.Forbidden = "Insufficient permissions"
	}
	d.Stream = StreamWebSocket
	sg := r.sockets
	upgrade := fiberws.New(func(c *fiberws.Conn) { sg.serve(c, sa, run) }, fiberws.Config{HandshakeTimeout: SocketWriteWait})
	r.Get(path, Public(), d, func(c *fiber.Ctx) error {
		if !fiberws.IsWebSocketUpgrade(c) {
			return &HTTPError{Status: http.StatusUpgradeRequired, Code: codeUpgradeRequired, Message: "Connect with a WebSocket client"}
		}
		// Resolved now (the fiber context ends with the upgrade), told only
		// after authentication.
		var t socketTarget
		t.scope, t.err = sa.Scope(c)
		c.Locals(localSocketTarget, t)
		return upgrade(c)
	})
}

// serve authenticates c's first message and runs run.
func (sg *socketGuard) serve(c *fiberws.Conn, sa SocketAuth, run func(*Socket)) {
	defer c.Close()
	s := &Socket{Conn: c}
	c.SetReadLimit(SocketReadLimit)
	_ = c.SetReadDeadline(time.Now().Add(sa.Wait))
	_, msg, err := c.ReadMessage()
	if err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			s.Fail(websocket.ClosePolicyViolation, SocketAuthTimeout)
			return
		}
		s.Fail(websocket.ClosePolicyViolation, SocketBadFirstMessage)
		return
	}
	var first struct {
		Type  string `json:"type"`
		Token string `json:"token"`
	}
	token := ""
	if json.Unmarshal(msg, &first) == nil && first.Type == "auth" {
		token = strings.TrimSpace(first.Token)
	}
	if token == "" {
		s.Fail(websocket.ClosePolicyViolation, SocketBadFirstMessage)
		return
	}
	t, _ := c.Locals(localSocketTarget).(socketTarget)
	ctx, cancel := context.WithTimeout(context.Background(), socketLookupWait)
	grant, code, why := sg.admit(ctx, c.IP(), token, t, sa)
	cancel()
	if why != "" {
		s.Fail(code, why)
		return
	}
	s.grant = grant
	_ = c.SetReadDeadline(time.Time{})
	run(s)
}

// admit authenticates token from client address ip and checks its caller
// against sa in t's scope; why is the close reason (with its code) when not.
func (sg *socketGuard) admit(ctx context.Context, ip, token string, t socketTarget, sa SocketAuth) (_ *Grant, code int, why string) {
	g := sg.g
	now := time.Now()
	if retry := sg.failures.blocked(ip, now); retry > 0 {
		return nil, websocket.CloseTryAgainLater, fmt.Sprintf("%s (retry in %d s)", SocketRateLimited, retry)
	}
	var p *Principal
	var err error
	if g.w.AuthenticateToken != nil {
		p, err = g.w.AuthenticateToken(ctx, token)
	}
	if err != nil && !errors.Is(err, ErrUnauthorized) {
		g.logger.Warn("socket: authenticate", "error", err)
		return nil, websocket.ClosePolicyViolation, SocketUnavailable
	}
	if err != nil || p == nil {
		sg.failures.take(ip, now)
		return nil, websocket.ClosePolicyViolation, SocketBadToken
	}
	if retry := g.limiter.take(p.Credential(), now); retry > 0 {
		return nil, websocket.CloseTryAgainLater, fmt.Sprintf("%s (retry in %d s)", SocketTooManyRequests, retry)
	}
	if t.err != nil {
		if errors.Is(t.err, ErrNotFound) {
			return nil, websocket.ClosePolicyViolation, sa.NotFound
		}
		g.logger.Warn("socket: resolve scope", "error", t.err)
		return nil, websocket.ClosePolicyViolation, SocketUnavailable
	}
	role, ok, err := g.allowed(ctx, p, t.scope, sa.Object, sa.Action)
	switch {
	case err != nil:
		g.logger.Warn("socket: resolve role", "error", err, "credential", p.Credential())
		return nil, websocket.ClosePolicyViolation, SocketUnavailable
	case role == "":
		return nil, websocket.ClosePolicyViolation, sa.NotFound
	case !ok:
		return nil, websocket.ClosePolicyViolation, sa.Forbidden
	}
	return &Grant{g: g, p: p, scope: t.scope, object: sa.Object, action: sa.Action}, 0, ""
}

// Socket is an authenticated first-message WebSocket (Router.Socket). Its
// Conn gives the upgrade request's parameters (Params) and the connection;
// only one goroutine may write to it at a time. A handler that reads in
// another goroutine closes the socket and waits for that goroutine before it
// returns: the connection's buffers go back to the server then.
type Socket struct {
	*fiberws.Conn
	grant *Grant
}

// Principal returns the caller as last authenticated.
func (s *Socket) Principal() *Principal { return s.grant.Principal() }

// Scope returns the scope of the object the socket addressed.
func (s *Socket) Scope() Scope { return s.grant.scope }

// StillAllowed authenticates the caller's credential again and checks its
// role in the socket's scope (see Grant.StillAllowed).
func (s *Socket) StillAllowed(ctx context.Context) bool { return s.grant.StillAllowed(ctx) }

// Send writes v as a JSON text message.
func (s *Socket) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.WriteText(b)
}

// WriteText writes b as a text message, within SocketWriteWait.
func (s *Socket) WriteText(b []byte) error {
	_ = s.SetWriteDeadline(time.Now().Add(SocketWriteWait))
	return s.WriteMessage(websocket.TextMessage, b)
}

// Ping sends a ping control frame, within SocketWriteWait.
func (s *Socket) Ping() error {
	return s.WriteControl(websocket.PingMessage, nil, time.Now().Add(SocketWriteWait))
}

// SocketReader reads an authenticated socket's client in its own goroutine
// (Socket.ReadPings): it answers {"type":"ping"} through Replies and ends on
// any other message, on a close, or when neither a message nor a pong came
// within SocketPongWait.
type SocketReader struct {
	// Replies are the answers ({"type":"pong"}) the handler writes.
	Replies <-chan []byte
	// Done is closed when the reader ended.
	Done <-chan struct{}
	s    *Socket
	bad  chan string
}

// ReadPings starts the socket's reader. The handler writes what Replies
// brings, ends when Done is closed (failing with Err when it says why), and
// calls Stop before it returns.
func (s *Socket) ReadPings() *SocketReader {
	replies := make(chan []byte, 4)
	done := make(chan struct{})
	r := &SocketReader{Replies: replies, Done: done, s: s, bad: make(chan string, 1)}
	go func() {
		defer close(done)
		_ = s.SetReadDeadline(time.Now().Add(SocketPongWait))
		s.SetPongHandler(func(string) error { return s.SetReadDeadline(time.Now().Add(SocketPongWait)) })
		for {
			_, msg, err := s.ReadMessage()
			if err != nil {
				return
			}
			_ = s.SetReadDeadline(time.Now().Add(SocketPongWait))
			var in struct {
				Type string `json:"type"`
			}
			if json.Unmarshal(msg, &in) != nil || in.Type != "ping" {
				r.bad <- SocketBadMessage
				return
			}
			select {
			case replies <- []byte(`{"type":"pong"}`):
			default:
			}
		}
	}()
	return r
}

// Err returns, once Done is closed, why the client broke the protocol; ""
// when it left or went quiet.
func (r *SocketReader) Err() string {
	select {
	case why := <-r.bad:
		return why
	default:
		return ""
	}
}

// Stop closes the socket and waits for the reader to end.
func (r *SocketReader) Stop() {
	_ = r.s.Close()
	<-r.Done
}

// Fail sends {"type":"error","message":message} and a close frame with code
// and message as its reason (cut to what a close frame carries).
func (s *Socket) Fail(code int, message string) {
	_ = s.Send(map[string]string{"type": "error", "message": message})
	reason := message
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
	}
	_ = s.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(SocketWriteWait))
}

// Grant is a caller's admission to a Require route or a Socket: who, in
// which scope, for which permission. Long-lived answers (SSE tails, live
// sockets) hold it and ask StillAllowed every few seconds.
type Grant struct {
	g              *guard
	p              *Principal
	scope          Scope
	object, action string
}

// GrantOf returns the admission the guard gave c's caller on a Require
// route, nil elsewhere.
func GrantOf(c *fiber.Ctx) *Grant {
	g, _ := c.Locals(localGrant).(*Grant)
	if g == nil {
		return nil
	}
	cp := *g // a long-lived answer updates its own copy
	return &cp
}

// Principal returns the caller as last authenticated.
func (gr *Grant) Principal() *Principal { return gr.p }

// StillAllowed authenticates the caller's credential again
// (Principal.RecheckFunc) and checks its role in the grant's scope with the
// enforcer, as the guard did. It reports false once the credential is
// revoked or expired, the caller is no longer a member, or the role lost
// the permission. A failed lookup (the database unreachable) keeps the
// connection; the next check decides. A nil Grant (outside a Require
// route) is never allowed. Not safe for concurrent use.
func (gr *Grant) StillAllowed(ctx context.Context) bool {
	if gr == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, socketLookupWait)
	defer cancel()
	if f := gr.p.RecheckFunc; f != nil {
		np, err := f(ctx)
		switch {
		case errors.Is(err, ErrUnauthorized):
			return false
		case err != nil:
			gr.g.logger.Warn("recheck credential", "error", err, "credential", gr.p.Credential())
			return true
		case np == nil:
			return false
		}
		gr.p = np
	}
	role, ok, err := gr.g.allowed(ctx, gr.p, gr.scope, gr.object, gr.action)
	if err != nil {
		gr.g.logger.Warn("recheck role", "error", err, "credential", gr.p.Credential())
		return true
	}
	return role != "" && ok
}
