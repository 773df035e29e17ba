package vhosts

import (
	"fmt"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeVirtualHost resolves routes addressing a virtual host by the UUID in path
// parameter param (/v1/virtual-hosts/:id) to its workspace and organization. A
// malformed id or an unknown virtual host is a 404.
func ScopeVirtualHost(db *gorm.DB, param string) app.ScopeFunc {
	return scopeObject(db, param, "virtual_hosts", ErrVirtualHostNotFound)
}

// ScopeStream resolves routes addressing a stream by the UUID in path parameter
// param (/v1/streams/:id). A malformed id or an unknown stream is a 404.
func ScopeStream(db *gorm.DB, param string) app.ScopeFunc {
	return scopeObject(db, param, "streams", ErrStreamNotFound)
}

func scopeObject(db *gorm.DB, param, table string, notFound error) app.ScopeFunc {
	return func(c *fiber.Ctx) (app.Scope, error) {
		id, err := app.ParamUUID(c, param)
		if err != nil {
			return app.Scope{}, notFound
		}
		var rows []struct {
			WorkspaceID    uuid.UUID
			OrganizationID uuid.UUID
		}
		err = db.WithContext(c.UserContext()).Table(table+" AS o").
			Select("o.workspace_id, w.organization_id").
			Joins("JOIN workspaces w ON w.id = o.workspace_id").
			Where("o.id = ?", id).Limit(1).Scan(&rows).Error
		if err != nil {
			return app.Scope{}, fmt.Errorf("resolve %s %s: %w", table, id, err)
		}
		if len(rows) == 0 {
			return app.Scope{}, notFound
		}
		return app.Scope{OrgID: rows[0].OrganizationID, WorkspaceID: rows[0].WorkspaceID}, nil
	}
}
