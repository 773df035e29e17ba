package vhosts

import (
	"fmt"

	"github.com/nxmesh/nxmesh/app"
)

// Errors returned by the service. Each wraps an app category, which the HTTP edge
// maps to a status; the text after the category is the public message.
var (
	// ErrVirtualHostNotFound: no virtual host has the id.
	ErrVirtualHostNotFound = fmt.Errorf("%w: no such virtual host", app.ErrNotFound)
	// ErrStreamNotFound: no stream has the id.
	ErrStreamNotFound = fmt.Errorf("%w: no such stream", app.ErrNotFound)
	// ErrVersionNotFound: the workspace has no configuration version with the
	// number.
	ErrVersionNotFound = fmt.Errorf("%w: no such configuration version", app.ErrNotFound)
	// ErrVirtualHostNameTaken: another virtual host of the workspace has the
	// name (ignoring case).
	ErrVirtualHostNameTaken = fmt.Errorf("%w: a virtual host with this name already exists in the workspace", app.ErrConflict)
	// ErrStreamNameTaken: another stream of the workspace has the name
	// (ignoring case).
	ErrStreamNameTaken = fmt.Errorf("%w: a stream with this name already exists in the workspace", app.ErrConflict)
	// ErrPortInUse: the listen port (and protocol) is taken in the workspace by
	// a stream, by a virtual host with an overlapping server name, or by a
	// virtual host that differs in TLS. The returned error names the user.
	ErrPortInUse = fmt.Errorf("%w: listen port in use", app.ErrConflict)
	// ErrCertificatesGone: a rollback needs certificates that no longer exist
	// (certificates are not restored). The returned error names them.
	ErrCertificatesGone = fmt.Errorf("%w: the version uses certificates that no longer exist", app.ErrConflict)
	// ErrNotRenderable: the workspace's configuration after the change could
	// not be rendered, typically because an object it refers to is gone.
	ErrNotRenderable = fmt.Errorf("%w: the workspace's configuration after this change cannot be rendered", app.ErrInvalid)
)
