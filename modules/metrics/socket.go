package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"time"

	"github.com/fasthttp/websocket"
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
//     WebSocket); the client authenticates with its first message, as
//     app.Router.Socket describes (app/socket.go):
//
//     {"type":"auth","token":"<access token or API key>"}
//
//     The caller needs read on metrics.metric in the agent's workspace (the
//     rule of GET /v1/agents/:id/metrics). A refusal is {"type":"error",
//     "message":"…"} and a close frame 1008 (1013 when the client address
//     failed authentication too often).
//  2. Otherwise the client gets {"type":"auth_success","agent_id":"…",
//     "message":"…"}, at once a {"type":"metrics","data":{…}} message (Live:
//     the agent's newest host sample and its traffic of the last minute)
//     and another every socketEvery (5 s), and {"type":"alert","data":{…}}
//     whenever an alert of this agent fires or resolves, on any replica
//     (the data of health.alert / alert.resolved, state telling
//     which). A client may send {"type":"ping"} (answered {"type":"pong"});
//     any other message is an error and closes the socket.
//  3. Every recheck the caller's credential (Principal.RecheckFunc) and role
//     are checked again: a revoked API key, a logged-out session, an
//     expired token or a removed membership ends the socket with an error
//     message and close 1008. On shutdown the socket closes with 1001.

// Timing of the live socket.
const (
	// liveWait bounds reading an agent's live metrics.
	liveWait = 5 * time.Second
	// SocketInterval is how often the socket sends the agent's metrics.
	SocketInterval = 5 * time.Second
	// socketRecheck is how often the socket authenticates its caller again.
	socketRecheck = 5 * time.Second
)

// Messages of the live socket's errors.
const (
	msgBadFirstMessage = app.SocketBadFirstMessage
	msgBadMessage      = app.SocketBadMessage
	msgBadToken        = app.SocketBadToken
	msgNotFound        = "Agent not found"
	msgForbidden       = "Insufficient permissions to read this agent's metrics"
	msgRevoked         = app.SocketRevoked
	msgUnavailable     = app.SocketUnavailable
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

// alertSource is the events hub, when Deps.Events is one: the socket's
// alerts come from it (so they reach the sockets of every replica).
type alertSource interface {
	Subscribe(patterns []string, workspaceID uuid.UUID) (*events.Subscription, error)
}

func (m *Module) mountSocket(api *app.Router) {
	api.Socket("/ws/metrics/:agent_id", app.SocketAuth{
		Object: ObjMetrics, Action: authz.Read, Scope: agents.ScopeAgent(m.db, "agent_id"),
		NotFound: msgNotFound, Forbidden: msgForbidden,
	}, app.Doc{
		Summary: `Live metrics of an agent over WebSocket: send {"type":"auth","token":"<access token or API key>"} first; ` +
			`then {"type":"metrics","data":{cpu_percent, memory_percent, disk_percent, load_average_1m, active_connections, requests_per_second, …}} every 5 s ` +
			`and {"type":"alert","data":{…}} when an alert of the agent fires or resolves (needs read on metrics.metric in the agent's workspace)`,
	}, m.runSocket)
}

// runSocket serves one authenticated live-metrics socket (see the top of
// this file).
func (m *Module) runSocket(s *app.Socket) {
	// The scope resolved from this parameter, so it is an agent's id.
	agentID, err := uuid.Parse(s.Params("agent_id"))
	if err != nil {
		s.Fail(websocket.ClosePolicyViolation, msgNotFound)
		return
	}
	ws := s.Scope().WorkspaceID
	var alerts <-chan events.Event
	stopped := make(<-chan struct{})
	if src, ok := m.events.(alertSource); ok {
		sub, err := src.Subscribe([]string{EventAlert, EventAlertResolved}, ws)
		if err != nil {
			s.Fail(websocket.CloseGoingAway, msgUnavailable)
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
				if id, _ := ev.Data["agent_id"].(string); id != agentID.String() {
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
	if s.Send(map[string]string{"type": "auth_success", "agent_id": agentID.String(),
		"message": "Connected; streaming the agent's metrics"}) != nil {
		return
	}

	// The reader answers pings and ends the socket on anything else; only
	// this goroutine writes data messages.
	rd := s.ReadPings()
	defer rd.Stop()

	sendMetrics := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), liveWait)
		defer cancel()
		l, err := m.svc.Live(ctx, ws, agentID)
		if errors.Is(err, agents.ErrAgentNotFound) {
			s.Fail(websocket.ClosePolicyViolation, msgNotFound)
			return false
		}
		if err != nil {
			m.svc.logger.Warn("metrics: read live metrics", "agent_id", agentID, "error", err)
			return true // the next tick tries again
		}
		return s.Send(map[string]any{"type": "metrics", "data": l}) == nil
	}
	if !sendMetrics() {
		return
	}
	every := time.NewTicker(m.socketEvery)
	defer every.Stop()
	ping := time.NewTicker(app.SocketPing)
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
			if s.Send(map[string]any{"type": "alert", "data": ev.Data}) != nil {
				return
			}
		case r := <-rd.Replies:
			if s.WriteText(r) != nil {
				return
			}
		case <-ping.C:
			if s.Ping() != nil {
				return
			}
		case <-recheck.C:
			if !s.StillAllowed(context.Background()) {
				s.Fail(websocket.ClosePolicyViolation, msgRevoked)
				return
			}
		case <-rd.Done:
			if why := rd.Err(); why != "" {
				s.Fail(websocket.ClosePolicyViolation, why)
			}
			return
		case <-stopped:
			s.Fail(websocket.CloseGoingAway, msgUnavailable)
			return
		}
	}
}
