package certs

import (
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// ScopeCertificate resolves routes addressing a certificate by the UUID in path
// parameter param (/v1/certificates/:id) to its workspace and organization. A
// malformed id or an unknown certificate is a 404.
func ScopeCertificate(db *gorm.DB, param string) app.ScopeFunc {
	return app.ScopeRow(db, param, "certificates", "workspace_id", ErrCertificateNotFound)
}
