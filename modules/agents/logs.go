package agents

import (
	"context"

	"github.com/google/uuid"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// LogBatch is one batch of log lines an agent sent on its stream, for
// Options.LogsFunc. Exactly one of Access and Errors is set.
type LogBatch struct {
	AgentID     uuid.UUID
	WorkspaceID uuid.UUID
	OrgID       uuid.UUID
	Access      *agentv1.AccessLogBatch
	Errors      *agentv1.LogBatch
	// Ack sends the batch's acknowledgement on the agent's stream; it
	// reports false when the stream is gone (the agent then sends the batch
	// again on its next stream). Safe to call from any goroutine.
	Ack func(*agentv1.Ack) bool
}

// BatchID is the batch's id, "" for batches that need no acknowledgement.
func (b LogBatch) BatchID() string {
	if b.Access != nil {
		return b.Access.GetBatchId()
	}
	return b.Errors.GetBatchId()
}

// LogsFunc takes a log batch from an agent's stream. It must return at once
// (the stream's receive loop waits for it; configuration statuses come on the
// same loop) and call b.Ack later, once the batch is stored or refused.
type LogsFunc func(ctx context.Context, b LogBatch)
