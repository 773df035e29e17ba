package logs

import (
	"context"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
)

// The live-log WebSocket GET /v1/ws/logs/:agent_id:
//
//  1. The upgrade carries no credential (browsers cannot set headers on a
//     WebSocket); the client authenticates with its first message, as
//     app.Router.Socket describes (app/socket.go):
//
//     {"type":"auth","token":"<access token or API key>"}
//
//     The caller needs read on logs.log in the agent's workspace (the rule
//     of GET /v1/agents/:id/error-logs). A refusal is {"type":"error",
//     "message":"…"} and a close frame 1008 (1013 when the client address
//     failed authentication too often).
//  2. Otherwise the client gets {"type":"auth_success","agent_id":"…",
//     "message":"…"} and from then on every access-log entry and error-log
//     line the agent sends, on any replica (live.go), as
//     {"type":"log","data":{"level","message","timestamp","source",…}}.
//     A client may send {"type":"ping"} (answered {"type":"pong"}); any other
//     message is an error and closes the socket.
//  3. Every liveRecheck the caller's credential (Principal.RecheckFunc) and
//     role are checked again: a revoked API key, a logged-out session, an
//     expired token or a removed membership ends the socket with an error
//     message and close 1008. On shutdown the socket closes with 1001.

// liveRecheck is how often a live socket or stream authenticates its
// caller again.
const liveRecheck = 5 * time.Second

// Messages of the live socket's errors.
const (
	msgBadFirstMessage = app.SocketBadFirstMessage
	msgBadMessage      = app.SocketBadMessage
	msgBadToken        = app.SocketBadToken
	msgNotFound        = "Agent not found"
	msgForbidden       = "Insufficient permissions to read this agent's logs"
	msgRevoked         = app.SocketRevoked
	msgUnavailable     = app.SocketUnavailable
)

func mountSocket(m *Module, api *app.Router) {
	api.Socket("/ws/logs/:agent_id", app.SocketAuth{
		Object: ObjLog, Action: authz.Read, Scope: agents.ScopeAgent(m.db, "agent_id"),
		NotFound: msgNotFound, Forbidden: msgForbidden,
	}, app.Doc{
		Summary: `Live access-log and error-log lines of an agent over WebSocket: send {"type":"auth","token":"<access token or API key>"} first; ` +
			`then {"type":"log","data":{level, message, timestamp, …}} messages (needs read on logs.log in the agent's workspace)`,
	}, m.runSocket)
}

// runSocket serves one authenticated live-log socket (see the top of this
// file).
func (m *Module) runSocket(s *app.Socket) {
	// The scope resolved from this parameter, so it is an agent's id.
	agentID, err := uuid.Parse(s.Params("agent_id"))
	if err != nil {
		s.Fail(websocket.ClosePolicyViolation, msgNotFound)
		return
	}
	sub := m.lv.Subscribe(LiveFilter{WorkspaceID: s.Scope().WorkspaceID, AgentID: agentID})
	defer sub.Close()
	select {
	case <-sub.Done(): // shutting down
		s.Fail(websocket.CloseGoingAway, msgUnavailable)
		return
	default:
	}
	if s.Send(map[string]string{"type": "auth_success", "agent_id": agentID.String(),
		"message": "Connected; streaming the agent's access and error logs"}) != nil {
		return
	}

	// The reader answers pings and ends the socket on anything else; only
	// this goroutine writes data messages.
	rd := s.ReadPings()
	defer rd.Stop()

	ping := time.NewTicker(app.SocketPing)
	defer ping.Stop()
	recheck := time.NewTicker(m.recheck)
	defer recheck.Stop()
	for {
		select {
		case l := <-sub.C:
			if s.WriteText(liveMessage(l)) != nil {
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
		case <-sub.Done():
			s.Fail(websocket.CloseGoingAway, msgUnavailable)
			return
		}
	}
}
