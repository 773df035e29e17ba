package agents

import (
	"fmt"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeAgent resolves routes addressing an agent by the UUID in path
// parameter param (/v1/agents/:id/...) to its workspace and organization. A
// malformed id or an unknown agent is a 404.
func ScopeAgent(db *gorm.DB, param string) app.ScopeFunc {
	return func(c *fiber.Ctx) (app.Scope, error) {
		id, err := app.ParamUUID(c, param)
		if err != nil {
			return app.Scope{}, ErrAgentNotFound
		}
		var rows []struct {
			WorkspaceID    uuid.UUID
			OrganizationID uuid.UUID
		}
		err = db.WithContext(c.UserContext()).Table("agents AS a").
			Select("a.workspace_id, w.organization_id").
			Joins("JOIN workspaces AS w ON w.id = a.workspace_id").
			Where("a.id = ?", id).Limit(1).Scan(&rows).Error
		if err != nil {
			return app.Scope{}, fmt.Errorf("resolve agent %s: %w", id, err)
		}
		if len(rows) == 0 {
			return app.Scope{}, ErrAgentNotFound
		}
		return app.Scope{OrgID: rows[0].OrganizationID, WorkspaceID: rows[0].WorkspaceID}, nil
	}
}
