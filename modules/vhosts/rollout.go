package vhosts

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// A configuration version's rollout is what each agent of the workspace made
// of it. The agents module records it (it holds the agents' streams) and
// hands it to this module through Options.RolloutFunc, so that
// GET /v1/workspaces/{id}/config/versions/{version} shows it under agents.

// Rollout statuses of one agent for one version.
const (
	// RolloutPending: sent and not answered yet, being validated or applied,
	// or not sent yet (the agent is offline or has not been reached).
	RolloutPending = "pending"
	// RolloutApplied: nginx runs the version's configuration on the agent.
	RolloutApplied = "applied"
	// RolloutFailed: the agent could not apply it (or it could not be
	// delivered); error_message says why.
	RolloutFailed = "failed"
	// RolloutRolledBack: nginx refused it and the agent restored its
	// previous configuration; error_message is nginx's own text.
	RolloutRolledBack = "rolled_back"
	// RolloutSuperseded: a later version reached the agent before this one,
	// or was answered while this one was not (this one will not be any
	// more).
	RolloutSuperseded = "superseded"
)

// AgentRollout is what one agent made of a configuration version.
type AgentRollout struct {
	AgentID      uuid.UUID  `json:"agent_id"`
	Name         string     `json:"name"`
	State        string     `json:"state" doc:"the agent's connection state now: online, offline or degraded"`
	Status       string     `json:"status" doc:"pending, applied, failed, rolled_back, or superseded (a later version reached the agent first)"`
	ErrorMessage string     `json:"error_message" doc:"why the version failed on the agent: nginx's error text for failed and rolled_back; empty otherwise"`
	UpdatedAt    *time.Time `json:"updated_at" doc:"when the agent's status for this version last changed; null before it was sent"`
}

// Final reports whether the status no longer changes unless the version is
// sent again.
func (r AgentRollout) Final() bool { return r.Status != RolloutPending }

// RolloutFunc returns what each registered agent of the workspace made of
// configuration version version, sorted by agent name. It is the agents
// module's Service.Rollout.
type RolloutFunc func(ctx context.Context, workspaceID uuid.UUID, version int64) ([]AgentRollout, error)

// rollout is the rollout of a version ([] without a RolloutFunc).
func (s *Service) rollout(ctx context.Context, workspaceID uuid.UUID, version int64) ([]AgentRollout, error) {
	if s.rolloutFunc == nil {
		return []AgentRollout{}, nil
	}
	out, err := s.rolloutFunc(ctx, workspaceID, version)
	if out == nil {
		out = []AgentRollout{}
	}
	return out, err
}
