package agents

import (
	"context"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/vhosts"
)

// maxTargetAgents bounds the agents the virtual host and stream forms list.
const maxTargetAgents = 1000

// TargetAgents lists a workspace's agents, oldest first, for the target picker of
// the virtual host and stream forms (vhosts.Options.AgentsFunc).
func (s *Service) TargetAgents(ctx context.Context, workspaceID uuid.UUID) ([]vhosts.TargetAgent, error) {
	list, _, err := s.List(ctx, workspaceID, ListAgentsParams{Page: app.Page{Page: 1, PerPage: maxTargetAgents}})
	if err != nil {
		return nil, err
	}
	out := make([]vhosts.TargetAgent, len(list))
	for i, a := range list {
		out[i] = vhosts.TargetAgent{ID: a.ID, Name: a.Name, State: a.State, Labels: a.Labels}
	}
	return out, nil
}
