package upstreams

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// The servers' health as the agents see it. The agents run the active health
// checks (HealthCheck) and report each server's verdict; the agents module
// stores the reports, and main.go hands its reader in as Options.HealthFunc,
// because this module must not import the agents module. GET
// /v1/upstreams/{id} adds the verdicts as "health" (UpstreamDetail) and the
// upstream's page shows them per server.

// ServerHealth is one agent's active health-check verdict on one server of an
// upstream, from its last health report.
type ServerHealth struct {
	// Address is the server's address, as in servers[].address.
	Address   string    `json:"address"`
	AgentID   uuid.UUID `json:"agent_id"`
	AgentName string    `json:"agent_name"`
	Healthy   bool      `json:"healthy" doc:"the last healthy_threshold probes passed (or unhealthy_threshold consecutive failures have not happened yet)"`
	// MarkedDown: the agent renders the server down because of failed
	// probes. An unhealthy server that is not marked down is the last
	// healthy non-backup server of the upstream, which the agent keeps up.
	MarkedDown bool      `json:"marked_down" doc:"the agent renders the server down because of its failed probes; the last healthy non-backup server is never marked down"`
	LastError  string    `json:"last_error" doc:"the last probe's failure; empty when it passed"`
	ChangedAt  *app.Time `json:"changed_at" doc:"when healthy last changed; null when it has not changed since the agent started probing the server"`
	CheckedAt  *app.Time `json:"checked_at" doc:"the last probe; null before the first"`
}

// HealthFunc returns what the agents of a workspace last reported about the
// servers of upstream upstreamID (the agents module's UpstreamHealth).
type HealthFunc func(ctx context.Context, workspaceID, upstreamID uuid.UUID) ([]ServerHealth, error)

// UpstreamDetail is an upstream with its servers' health
// (GET /v1/upstreams/{id}).
type UpstreamDetail struct {
	Upstream
	// Health lists, for each server and each agent that reported on it, the
	// agent's verdict; in the order of servers, then by agent name. Empty
	// when the health check is off or no agent has reported yet.
	Health []ServerHealth `json:"health" doc:"per server and agent, the active health-check verdict of the agent's last report; in the order of servers, then by agent name"`
}

// MarshalJSON writes the upstream's JSON with "health" added.
func (d UpstreamDetail) MarshalJSON() ([]byte, error) {
	up, err := json.Marshal(d.Upstream)
	if err != nil {
		return nil, err
	}
	h := d.Health
	if h == nil {
		h = []ServerHealth{}
	}
	health, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	out := append(up[:len(up)-1:len(up)-1], `,"health":`...)
	out = append(out, health...)
	return append(out, '}'), nil
}

// Health returns the agents' verdicts on u's current servers, in the order of
// u.Servers, then by agent name (reports on servers u no longer has are left
// out).
func (s *Service) Health(ctx context.Context, u Upstream) ([]ServerHealth, error) {
	if s.health == nil {
		return []ServerHealth{}, nil
	}
	all, err := s.health(ctx, u.WorkspaceID, u.ID)
	if err != nil {
		return nil, fmt.Errorf("read health of upstream %s: %w", u.ID, err)
	}
	slices.SortStableFunc(all, func(a, b ServerHealth) int { return strings.Compare(a.AgentName, b.AgentName) })
	out := make([]ServerHealth, 0, len(all))
	for _, srv := range u.Servers {
		for _, h := range all {
			if h.Address == srv.Address {
				out = append(out, h)
			}
		}
	}
	return out, nil
}

// Detail returns upstream id with its servers' health.
func (s *Service) Detail(ctx context.Context, id uuid.UUID) (UpstreamDetail, error) {
	u, err := s.Get(ctx, id)
	if err != nil {
		return UpstreamDetail{}, err
	}
	h, err := s.Health(ctx, u)
	if err != nil {
		return UpstreamDetail{}, err
	}
	return UpstreamDetail{Upstream: u, Health: h}, nil
}

// uiHealthStatus is a server's verdict in a word for the page.
func uiHealthStatus(h ServerHealth) string {
	switch {
	case h.MarkedDown:
		return "marked down"
	case !h.Healthy:
		return "failing, kept up (last healthy server)"
	case h.CheckedAt == nil:
		return "not probed yet"
	default:
		return "healthy"
	}
}

// uiHealthWhen formats an optional time for the page.
func uiHealthWhen(t *app.Time) string {
	if t == nil {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}
