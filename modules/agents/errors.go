package agents

import (
	"fmt"

	"github.com/nxmesh/nxmesh/app"
)

// Errors returned by the service. Each wraps an app category, which the HTTP edge
// maps to a status; the text after the category is the public message.
var (
	// ErrAgentNotFound: no agent has the id.
	ErrAgentNotFound = fmt.Errorf("%w: no such agent", app.ErrNotFound)
	// ErrCommandNotFound: the agent has no command with the id.
	ErrCommandNotFound = fmt.Errorf("%w: no such command", app.ErrNotFound)
	// ErrAgentOffline: the agent has no open stream to the master, so a command
	// cannot reach it.
	ErrAgentOffline = fmt.Errorf("%w: agent is offline", app.ErrConflict)
	// ErrNoAnswer: the agent did not answer a command in time.
	ErrNoAnswer = fmt.Errorf("%w: the agent did not answer in time", app.ErrUnavailable)
)

// Reasons a registration is refused, sent to the agent in
// RegistrationResponse.error_message.
const (
	RefusedTokenUsed     = "token already used"
	RefusedTokenExpired  = "token expired"
	RefusedTokenRevoked  = "token revoked"
	RefusedUnknownToken  = "unknown token"
	RefusedHostnameDeny  = "hostname denied by registration policy"
	RefusedAddressDeny   = "peer address denied by registration policy"
	RefusedLabelsDeny    = "labels denied by registration policy"
	RefusedTokenBurned   = "token burned: an earlier registration with it was denied by registration policy"
	RefusedNoCertificate = "client certificate required"
	RefusedUnknownAgent  = "unknown agent"
	RefusedCertRevoked   = "certificate revoked"
	RefusedBadCSR        = "invalid certificate signing request"
)

// refusal is a refused registration or reconnect: the reason goes to the
// agent, then the stream ends with code.
type refusal struct {
	reason string
	// permission is true for policy refusals (PermissionDenied), false for
	// credential problems (Unauthenticated).
	permission bool
	// commit: what the refusing step wrote (a burned token) must persist.
	commit bool
}

func (r *refusal) Error() string { return "registration refused: " + r.reason }
