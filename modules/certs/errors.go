package certs

import (
	"fmt"

	"github.com/nxmesh/nxmesh/app"
)

// Errors returned by the service. Each wraps an app category, which the HTTP edge
// maps to a status; the text after the category is the public message.
var (
	// ErrCertificateNotFound: no certificate has the id.
	ErrCertificateNotFound = fmt.Errorf("%w: no such certificate", app.ErrNotFound)
	// ErrDuplicateCertificate: the workspace already holds this certificate (same
	// leaf fingerprint).
	ErrDuplicateCertificate = fmt.Errorf("%w: this certificate is already stored in the workspace", app.ErrConflict)
)
