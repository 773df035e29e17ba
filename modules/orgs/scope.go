package orgs

import (
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeOrg resolves routes addressing an organization by the UUID in path
// parameter param (/v1/organizations/:id/...). A malformed id or an unknown
// organization is a 404.
func ScopeOrg(db *gorm.DB, param string) app.ScopeFunc {
	return app.ScopeOrgRow(db, param, "organizations", "id", ErrOrganizationNotFound)
}

// ScopeWorkspace resolves routes addressing a workspace by the UUID in path
// parameter param (/v1/workspaces/:id/...) to the workspace and its organization.
// A malformed id or an unknown workspace is a 404.
func ScopeWorkspace(db *gorm.DB, param string) app.ScopeFunc {
	return app.ScopeRow(db, param, "workspaces", "id", ErrWorkspaceNotFound)
}
