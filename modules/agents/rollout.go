package agents

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/modules/vhosts"
)

// This file records each configuration version's rollout: what every agent
// made of it (agent_config_results, one row per agent and version).
//
//   - recordPushes writes the pushed versions' rows pending;
//   - recordStatuses writes the answered versions' status (validating,
//     applying, success, failed, rolled_back) with nginx's error text; an
//     answer to the current push also settles the later versions that left
//     the agent's configuration as it was;
//   - recordUndelivered writes failed with the reason;
//   - a version that does not change an agent's configuration (its checksum
//     equals the last push) is not sent: recordUnchanged gives it the status
//     of the configuration the agent already has.
//
// Rollout reads a version's rows with every registered agent of the
// workspace: an agent without a row is pending (not reached yet), or
// superseded when a later version reached it first. A row still pending
// (validating, applying) once the agent answered a later version for good
// (it applied one, or a later row has a final status) is superseded too:
// the agent answers in order, so that version will not be answered any
// more. Its client applies only the newest of the updates waiting for it,
// and an answer may be lost with the stream or replica that carried it, or
// with a database outage.

// recordResult stores in tx the status (an apply status) of version for the
// agent, replacing an earlier one.
func recordResult(tx *gorm.DB, agentID uuid.UUID, version int64, status, message string, now time.Time) error {
	if version < 1 {
		return nil
	}
	err := tx.Exec(`INSERT INTO agent_config_results (agent_id, workspace_id, version, status, error_message, updated_at)
		SELECT id, workspace_id, ?, ?, ?, ? FROM agents WHERE id = ? FOR KEY SHARE
		ON CONFLICT (agent_id, version) DO UPDATE
		SET status = EXCLUDED.status, error_message = EXCLUDED.error_message, updated_at = EXCLUDED.updated_at`,
		version, status, clip(message, 8192), now, agentID).Error
	if err != nil {
		return fmt.Errorf("record the status of version %d on agent %s: %w", version, agentID, err)
	}
	return nil
}

// unchangedItem is a version that leaves the agent's configuration as the
// last push made it.
type unchangedItem struct {
	AgentID uuid.UUID `json:"agent_id"`
	Version int64     `json:"version"`
}

// recordUnchanged records in tx that versions leave their agents'
// configurations as the last push made them: each version gets that push's
// status as recorded (success when the agent runs it; pending while it is
// in flight, settled with the push's answer).
func (s *Service) recordUnchanged(tx *gorm.DB, items []unchangedItem) error {
	err := execJSON(tx, "record unchanged versions", `INSERT INTO agent_config_results (agent_id, workspace_id, version, status, error_message, updated_at)
		SELECT a.id, a.workspace_id, u.version,
			CASE WHEN a.apply_status = '' THEN '`+ApplyPending+`' ELSE a.apply_status END, a.apply_error, ?
		FROM jsonb_to_recordset(?::jsonb) AS u(agent_id uuid, version bigint)
		JOIN agents a ON a.id = u.agent_id
		WHERE u.version >= 1
		FOR KEY SHARE OF a
		ON CONFLICT (agent_id, version) DO NOTHING`, items, s.now())
	if err != nil {
		return err
	}
	return nil
}

// rolloutStatus is the public status of an apply status.
func rolloutStatus(applyStatus string) string {
	switch applyStatus {
	case ApplySuccess:
		return vhosts.RolloutApplied
	case ApplyFailed:
		return vhosts.RolloutFailed
	case ApplyRolledBack:
		return vhosts.RolloutRolledBack
	}
	return vhosts.RolloutPending
}

// Rollout returns what each registered agent of the workspace made of its
// configuration version version, sorted by name (the vhosts module's
// RolloutFunc). Agents that never registered are left out: nothing is sent to
// them.
func (s *Service) Rollout(ctx context.Context, workspaceID uuid.UUID, version int64) ([]vhosts.AgentRollout, error) {
	var rows []struct {
		ID             uuid.UUID
		Name           string
		State          string
		DesiredVersion int64
		Status         *string
		ErrorMessage   *string
		UpdatedAt      *time.Time
		// AnsweredLater: the agent answered a later version for good.
		AnsweredLater bool
	}
	err := s.db.WithContext(ctx).Raw(`SELECT a.id, a.name, a.state, a.desired_version, r.status, r.error_message, r.updated_at,
			(a.applied_version > ? OR EXISTS (SELECT 1 FROM agent_config_results l
				WHERE l.agent_id = a.id AND l.version > ? AND l.status IN ?)) AS answered_later
		FROM agents a
		LEFT JOIN agent_config_results r ON r.agent_id = a.id AND r.version = ?
		WHERE a.workspace_id = ? AND a.state <> ?
		ORDER BY a.name, a.id`, version, version, []string{ApplySuccess, ApplyFailed, ApplyRolledBack},
		version, workspaceID, StatePending).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read the rollout of version %d of workspace %s: %w", version, workspaceID, err)
	}
	out := make([]vhosts.AgentRollout, 0, len(rows))
	for _, r := range rows {
		a := vhosts.AgentRollout{AgentID: r.ID, Name: r.Name, State: r.State, Status: vhosts.RolloutPending}
		switch {
		case r.Status != nil:
			a.Status = rolloutStatus(*r.Status)
			if a.Status == vhosts.RolloutFailed || a.Status == vhosts.RolloutRolledBack {
				a.ErrorMessage = *r.ErrorMessage
			}
			if r.UpdatedAt != nil {
				t := r.UpdatedAt.UTC()
				a.UpdatedAt = &t
			}
			if a.Status == vhosts.RolloutPending && r.AnsweredLater {
				a.Status = vhosts.RolloutSuperseded
			}
		case r.DesiredVersion > version:
			a.Status = vhosts.RolloutSuperseded
		}
		out = append(out, a)
	}
	return out, nil
}
