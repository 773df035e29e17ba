package agents

import (
	"context"

	"github.com/google/uuid"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// MetricsBatch is one batch of host and nginx metrics an agent sent, on its
// stream or with ReportMetrics, for Options.MetricsFunc.
type MetricsBatch struct {
	AgentID     uuid.UUID
	WorkspaceID uuid.UUID
	// OrgID is set for batches sent on the stream; zero for ReportMetrics.
	OrgID uuid.UUID
	Batch *agentv1.MetricsBatch
}

// MetricsFunc stores a metrics batch of an agent. It is called on the
// stream's receive loop (as health reports are recorded), so it should be
// quick; an error is logged (stream) or answered as Internal (ReportMetrics).
type MetricsFunc func(ctx context.Context, b MetricsBatch) error
