package agents

import (
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeAgent resolves routes addressing an agent by the UUID in path
// parameter param (/v1/agents/:id/...) to its workspace and organization. A
// malformed id or an unknown agent is a 404.
func ScopeAgent(db *gorm.DB, param string) app.ScopeFunc {
	return app.ScopeRow(db, param, "agents", "workspace_id", ErrAgentNotFound)
}
