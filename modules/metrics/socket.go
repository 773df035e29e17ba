package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	fiberws "github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/app/events"
	"github.com/nxmesh/nxmesh/modules/agents"
)

// The live-metrics WebSocket GET /v1/ws/metrics/:agent_id:
//
//  1. The upgrade carries no credential (browsers cannot set headers on a
//     WebSocket) and the server sends nothing until the client's first
//     message, within socketAuthWait:
//
//     {"type":"auth","token":"<access token or API key>"}
//
//  2. A malformed first message, a bad token, an agent that does not exist
//     or that the caller may not see (read on metrics.metric in the
//     agent's workspace, the rule of GET /v1/agents/:id/metrics) is answered
//     with {"type":"error","message":"…"} and a close frame 1008.
//  3. Otherwise the client gets {"type":"auth_success","agent_id":"…",
//     "message":"…"}, at once a {"type":"metrics","data":{…}} message (Live:
//     the agent's newest host sample and its traffic of the last minute)
//     and another every socketEvery (5 s), and {"type":"alert","data":{…}}
//     whenever an alert of this agent fires or resolves, on any replica
//     (the data of health.alert / alert.resolved, state telling
//     which). A client may send {"type":"ping"} (answered {"type":"pong"});
//     any other message is an error and closes the socket.
//  4. Every recheck the caller's credential (Principal.RecheckFunc) and role
//     are checked again: a revoked API key, a logged-out session, an
//     expired token or a removed membership ends the socket with an error
//     message and close 1008. On shutdown the socket closes with 1001.

// Timing and limits of the live socket.
const (
	socketAuthWait  = 10 * time.Second
	socketWriteWait = 10 * time.Second
	socketPing      = 30 * time.Second
	socketPongWait  = 75 * time.Second
	socketReadLimit = 8 << 10
	authWait        = 5 * time.Second
	// SocketInterval is how often the socket sends the agent's metrics.
	SocketInterval = 5 * time.Second
	// socketRecheck is how often the socket authenticates its caller again.
	socketRecheck = 5 * time.Second

	localTarget = "nxmesh.metrics.target"
)

// Messages of the live socket's errors.
const (
	msgBadFirstMessage = `Invalid message format: the first message must be {"type":"auth","token":"<access token or API key>"}`
	msgBadMessage      = `Invalid message format: send {"type":"ping"} or nothing`
	msgBadToken        = "Invalid or expired token"
	msgNotFound        = "Agent not found"
	msgForbidden       = "Insufficient permissions to read this agent's metrics"
	msgRevoked         = "Credential revoked or expired, or access removed; authenticate again"
	msgUnavailable     = "Service temporarily unavailable; reconnect"
)

// Live is an agent's metrics at one moment, as the live socket sends them.
type Live struct {
	AgentID uuid.UUID `json:"agent_id"`
	State   string    `json:"state"`
	// Timestamp is when the host sample was taken; null without one.
	Timestamp        *time.Time `json:"timestamp"`
	CPUPercent       float64    `json:"cpu_percent"`
	MemoryPercent    float64    `json:"memory_percent"`
	MemoryUsedBytes  int64      `json:"memory_used_bytes"`
	MemoryTotalBytes int64      `json:"memory_total_bytes"`
	DiskPercent      float64    `json:"disk_percent"`
	DiskUsedBytes    int64      `json:"disk_used_bytes"`
	DiskTotalBytes   int64      `json:"disk_total_bytes"`
	LoadAverage1m    float64    `json:"load_average_1m"`
	NetRxBytes       int64      `json:"net_rx_bytes"`
	NetTxBytes       int64      `json:"net_tx_bytes"`
	// ActiveConnections is nginx's, from the sample (or the last health
	// report when the sample has none).
	ActiveConnections int64 `json:"active_connections"`
	// RequestsPerSecond, ErrorRate and LatencyP95Ms are the agent's traffic
	// from the start of the previous minute to now (per-minute rollups).
	RequestsPerSecond float64 `json:"requests_per_second"`
	ErrorRate         float64 `json:"error_rate"`
	LatencyP95Ms      float64 `json:"latency_p95_ms"`
}

// Live returns agent's live metrics (its workspace is workspaceID).
func (s *Service) Live(ctx context.Context, workspaceID, agentID uuid.UUID) (Live, error) {
	l := Live{AgentID: agentID}
	var health []byte
	if err := s.pool.QueryRow(ctx, `SELECT state, health FROM agents WHERE id = $1`, agentID).Scan(&l.State, &health); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return l, agents.ErrAgentNotFound
		}
		return l, err
	}
	var ts time.Time
	var conns *int64
	err := s.pool.QueryRow(ctx, `SELECT ts, cpu_percent, memory_used_bytes, memory_total_bytes, disk_used_bytes,
			disk_total_bytes, load_average_1m, net_rx_bytes, net_tx_bytes, nginx_active_connections
		FROM host_metrics WHERE agent_id = $1 ORDER BY ts DESC LIMIT 1`, agentID).Scan(&ts, &l.CPUPercent,
		&l.MemoryUsedBytes, &l.MemoryTotalBytes, &l.DiskUsedBytes, &l.DiskTotalBytes, &l.LoadAverage1m, &l.NetRxBytes, &l.NetTxBytes, &conns)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return l, err
	default:
		ts = ts.UTC()
		l.Timestamp = &ts
	}
	l.MemoryPercent = ratioPercent(l.MemoryUsedBytes, l.MemoryTotalBytes)
	l.DiskPercent = ratioPercent(l.DiskUsedBytes, l.DiskTotalBytes)
	if conns != nil {
		l.ActiveConnections = *conns
	} else if len(health) > 0 {
		var h struct {
			ActiveConnections int64 `json:"active_connections"`
		}
		if json.Unmarshal(health, &h) == nil {
			l.ActiveConnections = h.ActiveConnections
		}
	}
	t, err := windowTrafficOf(ctx, s.pool, workspaceID, agentID, uuid.Nil, s.now().UTC(), time.Minute)
	if err != nil {
		return l, err
	}
	l.RequestsPerSecond = math.Round(t.value(MetricRequestsPerSecond)*1000) / 1000
	l.ErrorRate = math.Round(t.value(MetricErrorRate)*1e6) / 1e6
	l.LatencyP95Ms = t.value(MetricLatencyP95)
	return l, nil
}

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

// alertSource is the events hub, when Deps.Events is one: the socket's
// alerts come from it (so they reach the sockets of every replica).
type alertSource interface {
	Subscribe(patterns []string, workspaceID uuid.UUID) (*events.Subscription, error)
}

func (m *Module) mountSocket(api *app.Router) {
	upgrade := fiberws.New(m.runSocket, fiberws.Config{HandshakeTimeout: socketWriteWait})
	scope := agents.ScopeAgent(m.db, "agent_id")
	api.Get("/ws/metrics/:agent_id", app.Public(), app.Doc{
		Summary: `Live metrics of an agent over WebSocket: send {"type":"auth","token":"<access token or API key>"} first; ` +
			`then {"type":"metrics","data":{cpu_percent, memory_percent, disk_percent, load_average_1m, active_connections, requests_per_second, …}} every 5 s ` +
			`and {"type":"alert","data":{…}} when an alert of the agent fires or resolves (needs read on metrics.metric in the agent's workspace)`,
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
	_ = s.ws.SetWriteDeadline(time.Now().Add(socketWriteWait))
	return s.ws.WriteMessage(websocket.TextMessage, b)
}

// fail sends an error message and closes with code.
func (s socketConn) fail(code int, message string) {
	_ = s.send(map[string]string{"type": "error", "message": message})
	_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, message), time.Now().Add(socketWriteWait))
}

// runSocket serves one live-metrics socket (see the top of this file).
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
	var alerts <-chan events.Event
	stopped := make(<-chan struct{})
	if src, ok := m.events.(alertSource); ok {
		sub, err := src.Subscribe([]string{EventAlert, EventAlertResolved}, t.scope.WorkspaceID)
		if err != nil {
			out.fail(websocket.CloseGoingAway, msgUnavailable)
			return
		}
		defer sub.Close()
		ch := make(chan events.Event, 16)
		subCtx, stop := context.WithCancel(context.Background())
		defer stop()
		go func() {
			defer close(ch)
			for {
				ev, err := sub.Next(subCtx)
				if err != nil {
					return
				}
				if id, _ := ev.Data["agent_id"].(string); id != t.agentID.String() {
					continue
				}
				select {
				case ch <- ev:
				case <-subCtx.Done():
					return
				}
			}
		}()
		alerts, stopped = ch, sub.Done()
	}
	if out.send(map[string]string{"type": "auth_success", "agent_id": t.agentID.String(),
		"message": "Connected; streaming the agent's metrics"}) != nil {
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

	sendMetrics := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), authWait)
		defer cancel()
		l, err := m.svc.Live(ctx, t.scope.WorkspaceID, t.agentID)
		if errors.Is(err, agents.ErrAgentNotFound) {
			out.fail(websocket.ClosePolicyViolation, msgNotFound)
			return false
		}
		if err != nil {
			m.svc.logger.Warn("metrics: read live metrics", "agent_id", t.agentID, "error", err)
			return true // the next tick tries again
		}
		return out.send(map[string]any{"type": "metrics", "data": l}) == nil
	}
	if !sendMetrics() {
		return
	}
	every := time.NewTicker(m.socketEvery)
	defer every.Stop()
	ping := time.NewTicker(socketPing)
	defer ping.Stop()
	recheck := time.NewTicker(m.recheck)
	defer recheck.Stop()
	for {
		select {
		case <-every.C:
			if !sendMetrics() {
				return
			}
		case ev, ok := <-alerts:
			if !ok {
				alerts = nil
				continue
			}
			if out.send(map[string]any{"type": "alert", "data": ev.Data}) != nil {
				return
			}
		case r := <-replies:
			_ = ws.SetWriteDeadline(time.Now().Add(socketWriteWait))
			if ws.WriteMessage(websocket.TextMessage, r) != nil {
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
		case <-stopped:
			out.fail(websocket.CloseGoingAway, msgUnavailable)
			return
		}
	}
}

// authenticateSocket authenticates token and checks that its caller may
// read t's metrics; why is the error message to send when not.
func (m *Module) authenticateSocket(ctx context.Context, token string, t socketTarget) (p *app.Principal, why string) {
	if m.opts.Authenticate == nil {
		return nil, msgBadToken
	}
	p, err := m.opts.Authenticate(ctx, token)
	if err != nil || p == nil {
		if err != nil && !errors.Is(err, app.ErrUnauthorized) {
			m.svc.logger.Warn("metrics: authenticate live socket", "error", err)
			return nil, msgUnavailable
		}
		return nil, msgBadToken
	}
	if t.err != nil {
		if errors.Is(t.err, app.ErrNotFound) {
			return nil, msgNotFound
		}
		m.svc.logger.Warn("metrics: resolve live socket's agent", "error", t.err)
		return nil, msgUnavailable
	}
	role, err := m.roleIn(ctx, p, t.scope)
	if err != nil {
		m.svc.logger.Warn("metrics: resolve live socket's role", "error", err)
		return nil, msgUnavailable
	}
	if role == "" {
		return nil, msgNotFound
	}
	if ok, err := m.authz.Allowed(role, t.scope.OrgID.String(), ObjMetrics, authz.Read); err != nil || !ok {
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
			m.svc.logger.Warn("metrics: recheck live socket's credential", "error", err, "credential", p.Credential())
			return p, true
		case np == nil:
			return p, false
		}
		p = np
	}
	role, err := m.roleIn(ctx, p, s)
	if err != nil {
		m.svc.logger.Warn("metrics: recheck live socket's role", "error", err)
		return p, true
	}
	if role == "" {
		return p, false
	}
	ok, err := m.authz.Allowed(role, s.OrgID.String(), ObjMetrics, authz.Read)
	if err != nil {
		return p, true
	}
	return p, ok
}
