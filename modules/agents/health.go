package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// The upstream servers' active health checks, as the agents report them.
//
// Each HealthReport carries upstream_health: the agent's verdict on every
// server it probes. recordHealth stores it as a whole in
// agents.upstream_health (replacing the previous one) and publishes
// upstream.health for every server whose healthy or marked_down changed
// since the agent's previous report (a server first reported healthy and
// up is no change). GET /v1/agents/{id} shows the list as health.upstreams;
// UpstreamHealth serves the upstreams module (Options.HealthFunc in
// main.go) the verdicts of all of a workspace's agents on one upstream.

// maxUpstreamHealth bounds how many server verdicts of one report are kept.
const maxUpstreamHealth = 1000

// UpstreamServerHealth is an agent's active health-check verdict on one
// server of an upstream, from its last health report.
type UpstreamServerHealth struct {
	UpstreamID string `json:"upstream_id"`
	// Address is the server's address as configured (host:port).
	Address    string    `json:"address"`
	Healthy    bool      `json:"healthy"`
	MarkedDown bool      `json:"marked_down" doc:"the agent renders the server down because of its failed probes; the last healthy non-backup server is never marked down"`
	LastError  string    `json:"last_error" doc:"the last probe's failure; empty when it passed"`
	ChangedAt  *app.Time `json:"changed_at" doc:"when healthy last changed; null when it has not changed since the agent started probing the server"`
	CheckedAt  *app.Time `json:"checked_at" doc:"the last probe; null before the first"`
}

// upstreamHealthList is agents.upstream_health.
type upstreamHealthList []UpstreamServerHealth

// unixTime converts Unix seconds from an agent, 0 being unknown.
func unixTime(s int64) *app.Time {
	if s <= 0 {
		return nil
	}
	return &app.Time{Time: time.Unix(s, 0).UTC()}
}

// upstreamHealthOf bounds and converts a report's upstream_health.
func upstreamHealthOf(in []*agentv1.UpstreamServerHealth) upstreamHealthList {
	out := make(upstreamHealthList, 0, min(len(in), maxUpstreamHealth))
	for _, h := range in {
		if len(out) == maxUpstreamHealth {
			break
		}
		id, addr := clip(h.GetUpstreamId(), 64), clip(h.GetAddress(), 300)
		if id == "" || addr == "" {
			continue
		}
		out = append(out, UpstreamServerHealth{
			UpstreamID: id, Address: addr, Healthy: h.GetHealthy(), MarkedDown: h.GetMarkedDown(),
			LastError: clip(h.GetLastError(), 1024), ChangedAt: unixTime(h.GetChangedAt()), CheckedAt: unixTime(h.GetCheckedAt()),
		})
	}
	return out
}

// recordUpstreamHealth stores the upstream_health of a report of agent row
// (read in tx with its previous list) and publishes upstream.health for
// every server whose state changed.
func (s *Service) recordUpstreamHealth(ctx context.Context, tx *gorm.DB, row agentRow, orgID uuid.UUID,
	in []*agentv1.UpstreamServerHealth, now time.Time) error {
	list := upstreamHealthOf(in)
	if len(list) == 0 && len(row.UpstreamHealth) == 0 {
		return nil
	}
	data, err := json.Marshal(list)
	if err != nil {
		return fmt.Errorf("record upstream health of agent %s: %w", row.ID, err)
	}
	if err := tx.Exec("UPDATE agents SET upstream_health = ?::jsonb WHERE id = ?", string(data), row.ID).Error; err != nil {
		return fmt.Errorf("record upstream health of agent %s: %w", row.ID, err)
	}
	type key struct{ upstream, address string }
	prev := make(map[key]UpstreamServerHealth, len(row.UpstreamHealth))
	for _, h := range row.UpstreamHealth {
		prev[key{h.UpstreamID, h.Address}] = h
	}
	for _, h := range list {
		p, ok := prev[key{h.UpstreamID, h.Address}]
		if !ok {
			// Before its first report a server is taken as healthy and up.
			p = UpstreamServerHealth{Healthy: true}
		}
		if p.Healthy == h.Healthy && p.MarkedDown == h.MarkedDown {
			continue
		}
		if err := s.publish(ctx, tx, app.Event{
			Type: EventUpstreamHealth, WorkspaceID: row.WorkspaceID, OrgID: orgID, Timestamp: now,
			Data: map[string]any{
				"agent_id": row.ID.String(), "upstream_id": h.UpstreamID, "address": h.Address,
				"healthy": h.Healthy, "marked_down": h.MarkedDown, "last_error": h.LastError,
			},
		}); err != nil {
			return err
		}
	}
	return nil
}

// UpstreamHealth returns what the agents of workspace ws last reported about
// the servers of upstream id, by agent name (upstreams.Options.HealthFunc).
func (s *Service) UpstreamHealth(ctx context.Context, ws, id uuid.UUID) ([]upstreams.ServerHealth, error) {
	filter, err := json.Marshal([]map[string]string{{"upstream_id": id.String()}})
	if err != nil {
		return nil, fmt.Errorf("read upstream health of %s: %w", id, err)
	}
	var rows []agentRow
	err = s.db.WithContext(ctx).Select("id", "name", "upstream_health").
		Where("workspace_id = ? AND upstream_health @> ?::jsonb", ws, string(filter)).
		Order("name, id").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read upstream health of %s: %w", id, err)
	}
	out := []upstreams.ServerHealth{}
	for _, r := range rows {
		for _, h := range r.UpstreamHealth {
			if h.UpstreamID != id.String() {
				continue
			}
			out = append(out, upstreams.ServerHealth{
				Address: h.Address, AgentID: r.ID, AgentName: r.Name, Healthy: h.Healthy, MarkedDown: h.MarkedDown,
				LastError: h.LastError, ChangedAt: h.ChangedAt, CheckedAt: h.CheckedAt,
			})
		}
	}
	return out, nil
}
