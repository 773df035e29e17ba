package metrics

import (
	"fmt"

	"github.com/nxmesh/nxmesh/app"
)

// Errors of the metrics module. Bad query parameters are an
// *app.ValidationError naming each parameter (422).
var (
	// ErrNoAgent: a batch reached the module without the agent and
	// workspace it came from.
	ErrNoAgent = fmt.Errorf("%w: metrics batch without its agent and workspace", app.ErrInvalid)
)
