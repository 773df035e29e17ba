package upstreams

import (
	"fmt"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeUpstream resolves routes addressing an upstream by the UUID in path
// parameter param (/v1/upstreams/:id) to its workspace and organization. A
// malformed id or an unknown upstream is a 404.
func ScopeUpstream(db *gorm.DB, param string) app.ScopeFunc {
	return func(c *fiber.Ctx) (app.Scope, error) {
		id, err := app.ParamUUID(c, param)
		if err != nil {
			return app.Scope{}, ErrNotFound
		}
		var rows []struct {
			WorkspaceID    uuid.UUID
			OrganizationID uuid.UUID
		}
		err = db.WithContext(c.UserContext()).Table("upstreams AS u").
			Select("u.workspace_id, w.organization_id").
			Joins("JOIN workspaces AS w ON w.id = u.workspace_id").
			Where("u.id = ?", id).Limit(1).Scan(&rows).Error
		if err != nil {
			return app.Scope{}, fmt.Errorf("resolve upstream %s: %w", id, err)
		}
		if len(rows) == 0 {
			return app.Scope{}, ErrNotFound
		}
		return app.Scope{OrgID: rows[0].OrganizationID, WorkspaceID: rows[0].WorkspaceID}, nil
	}
}
