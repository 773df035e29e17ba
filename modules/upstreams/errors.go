package upstreams

import (
	"fmt"

	"github.com/nxmesh/nxmesh/app"
)

// Errors returned by the service. Each wraps an app category, which the HTTP edge
// maps to a status; the text after the category is the public message.
var (
	// ErrNotFound: no upstream has the id (or it is in another workspace).
	ErrNotFound = fmt.Errorf("%w: no such upstream", app.ErrNotFound)
	// ErrNameTaken: another upstream of the workspace has the name (ignoring
	// case).
	ErrNameTaken = fmt.Errorf("%w: an upstream with this name already exists in the workspace", app.ErrConflict)
)
