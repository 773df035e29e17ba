package vhosts

import (
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeVirtualHost resolves routes addressing a virtual host by the UUID in path
// parameter param (/v1/virtual-hosts/:id) to its workspace and organization. A
// malformed id or an unknown virtual host is a 404.
func ScopeVirtualHost(db *gorm.DB, param string) app.ScopeFunc {
	return app.ScopeRow(db, param, "virtual_hosts", "workspace_id", ErrVirtualHostNotFound)
}

// ScopeStream resolves routes addressing a stream by the UUID in path parameter
// param (/v1/streams/:id). A malformed id or an unknown stream is a 404.
func ScopeStream(db *gorm.DB, param string) app.ScopeFunc {
	return app.ScopeRow(db, param, "streams", "workspace_id", ErrStreamNotFound)
}
