package certs

import (
	"fmt"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeCertificate resolves routes addressing a certificate by the UUID in path
// parameter param (/v1/certificates/:id) to its workspace and organization. A
// malformed id or an unknown certificate is a 404.
func ScopeCertificate(db *gorm.DB, param string) app.ScopeFunc {
	return func(c *fiber.Ctx) (app.Scope, error) {
		id, err := app.ParamUUID(c, param)
		if err != nil {
			return app.Scope{}, ErrCertificateNotFound
		}
		var s struct {
			WorkspaceID    uuid.UUID
			OrganizationID uuid.UUID
		}
		res := db.WithContext(c.UserContext()).Table("certificates AS c").
			Select("c.workspace_id, w.organization_id").
			Joins("JOIN workspaces AS w ON w.id = c.workspace_id").
			Where("c.id = ?", id).Limit(1).Scan(&s)
		if res.Error != nil {
			return app.Scope{}, fmt.Errorf("resolve certificate %s: %w", id, res.Error)
		}
		if res.RowsAffected == 0 {
			return app.Scope{}, ErrCertificateNotFound
		}
		return app.Scope{OrgID: s.OrganizationID, WorkspaceID: s.WorkspaceID}, nil
	}
}
