package orgs

import (
	"errors"
	"fmt"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeOrg resolves routes addressing an organization by the UUID in path
// parameter param (/v1/organizations/:id/...). A malformed id or an unknown
// organization is a 404.
func ScopeOrg(db *gorm.DB, param string) app.ScopeFunc {
	return func(c *fiber.Ctx) (app.Scope, error) {
		id, err := app.ParamUUID(c, param)
		if err != nil {
			return app.Scope{}, ErrOrganizationNotFound
		}
		var ids []uuid.UUID
		err = db.WithContext(c.UserContext()).Model(&Organization{}).Where("id = ?", id).Limit(1).Pluck("id", &ids).Error
		if err != nil {
			return app.Scope{}, fmt.Errorf("resolve organization %s: %w", id, err)
		}
		if len(ids) == 0 {
			return app.Scope{}, ErrOrganizationNotFound
		}
		return app.Scope{OrgID: id}, nil
	}
}

// ScopeWorkspace resolves routes addressing a workspace by the UUID in path
// parameter param (/v1/workspaces/:id/...) to the workspace and its organization.
// A malformed id or an unknown workspace is a 404.
func ScopeWorkspace(db *gorm.DB, param string) app.ScopeFunc {
	return func(c *fiber.Ctx) (app.Scope, error) {
		id, err := app.ParamUUID(c, param)
		if err != nil {
			return app.Scope{}, ErrWorkspaceNotFound
		}
		var ws Workspace
		err = db.WithContext(c.UserContext()).Select("id", "organization_id").Take(&ws, "id = ?", id).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return app.Scope{}, ErrWorkspaceNotFound
		}
		if err != nil {
			return app.Scope{}, fmt.Errorf("resolve workspace %s: %w", id, err)
		}
		return app.Scope{OrgID: ws.OrganizationID, WorkspaceID: ws.ID}, nil
	}
}
