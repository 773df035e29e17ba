package logs

import (
	"fmt"

	"github.com/nxmesh/nxmesh/app"
)

// Errors of the logs module.
var (
	// ErrAgentNotFound: the agent does not exist, or the caller may not see it.
	ErrAgentNotFound = fmt.Errorf("%w: agent not found", app.ErrNotFound)
	// ErrQueueFull: this replica's ingest queue is full; the agent keeps the
	// batch and sends it again.
	ErrQueueFull = fmt.Errorf("%w: log ingest queue full; retry later", app.ErrUnavailable)
	// ErrStopped: the module is shutting down.
	ErrStopped = fmt.Errorf("%w: log ingest stopped", app.ErrUnavailable)
)
