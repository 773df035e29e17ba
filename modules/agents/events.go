package agents

import (
	"context"

	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// Event types this module publishes, with their data fields:
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

// publish hands ev to d.Events (app.Publisher) inside tx, the transaction
// that records the change (the plain database when nothing was written), as
// an object of ObjAgent: subscribers see it when their role may read agents.
// A zero Timestamp is the service's clock. An error rolls the change back.
// publishAll publishes evs in tx, with one statement when the publisher
// can.
func (s *Service) publishAll(ctx context.Context, tx *gorm.DB, evs []app.Event) error {
	type batchPublisher interface {
		PublishAll(ctx context.Context, tx *gorm.DB, evs []app.Event) error
	}
	if bp, ok := s.events.(batchPublisher); ok && len(evs) > 1 {
		for i := range evs {
			if evs[i].Object == "" {
				evs[i].Object = ObjAgent
			}
		}
		return bp.PublishAll(ctx, tx, evs)
	}
	for _, ev := range evs {
		if err := s.publish(ctx, tx, ev); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) publish(ctx context.Context, tx *gorm.DB, ev app.Event) error {
	if s.events == nil {
		return nil
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = s.now()
	}
	if ev.Object == "" {
		ev.Object = ObjAgent
	}
	return s.events.Publish(ctx, tx, ev)
}
