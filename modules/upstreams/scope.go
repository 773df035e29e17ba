package upstreams

import (
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeUpstream resolves routes addressing an upstream by the UUID in path
// parameter param (/v1/upstreams/:id) to its workspace and organization. A
// malformed id or an unknown upstream is a 404.
func ScopeUpstream(db *gorm.DB, param string) app.ScopeFunc {
	return app.ScopeRow(db, param, "upstreams", "workspace_id", ErrNotFound)
}
