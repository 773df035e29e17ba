package upstreams

import (
	"fmt"
	"strings"

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

// InUseError is returned when deleting an upstream that virtual hosts or
// streams still use. It is a conflict (409) whose message names the users.
type InUseError struct {
	// Users are the human-readable users reported by UsageFunc, e.g.
	// `virtual host "api" (<id>)`.
	Users []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s: upstream is used by %s", app.ErrConflict, strings.Join(e.Users, ", "))
}

// Unwrap makes errors.Is(err, app.ErrConflict) true.
func (e *InUseError) Unwrap() error { return app.ErrConflict }
