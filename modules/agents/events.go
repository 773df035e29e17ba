package agents

import (
	"context"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Event types this module publishes, with seed 000's data shapes:
//
//	agent.connected     {agent_id, hostname, ip_address} (plus peer_address)
//	agent.disconnected  {agent_id, reason}  reason: connection_timeout,
//	                    stream_closed, replaced, deleted
//	config.applied      {agent_id, config_id, version, duration_ms, success}
//	                    (plus status and error_message)
//	health.alert        {agent_id, alert_id, severity, message, metric, value}
//	                    (metric "" and value null: agents' alerts carry neither)
//	upstream.health     {agent_id, upstream_id, address, healthy, marked_down,
//	                    last_error} when an agent's verdict on a server changed
const (
	EventAgentConnected    = "agent.connected"
	EventAgentDisconnected = "agent.disconnected"
	EventConfigApplied     = "config.applied"
	EventHealthAlert       = "health.alert"
	EventUpstreamHealth    = "upstream.health"
)

// Reasons of agent.disconnected.
const (
	ReasonTimeout  = "connection_timeout"
	ReasonClosed   = "stream_closed"
	ReasonReplaced = "replaced"
	ReasonDeleted  = "deleted"
)

// Event is something that happened in the fleet, for the live event streams.
type Event struct {
	Type        string
	WorkspaceID uuid.UUID
	OrgID       uuid.UUID
	Data        map[string]any
	Timestamp   time.Time
}

// PublishFunc hands an event to the events hub. It is called inside the
// transaction tx that records the change (so an implementation may
// pg_notify in it and the event is delivered only if tx commits); tx is the
// plain database when nothing was written. An error rolls the change back.
type PublishFunc func(ctx context.Context, tx *gorm.DB, ev Event) error

// publish calls the PublishFunc, if any.
func (s *Service) publish(ctx context.Context, tx *gorm.DB, ev Event) error {
	if s.publishFunc == nil {
		return nil
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = s.now()
	}
	if err := s.publishFunc(ctx, tx, ev); err != nil {
		return err
	}
	return nil
}
