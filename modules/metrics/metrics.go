// Package metrics is the master's side of the metrics: traffic rollups
// counted from the access logs as they are stored, the agents' host metric
// samples, and the workspace and agent metrics endpoints
// (GET /v1/workspaces/:id/metrics, GET /v1/agents/:id/metrics).
//
// # Traffic rollups
//
//  1. The logs module stores an access-log batch in one transaction
//     (log_batches row, COPY into access_logs) and, in that transaction,
//     calls Options.RollupFunc = Module.Rollup. A redelivered batch is
//     rolled back before, so every batch is counted exactly once.
//  2. Rollup counts the entries per (workspace, agent, virtual host or
//     stream, host name) and minute — requests, status classes 1xx-5xx,
//     bytes in (request_length) and out (bytes_sent), and a fixed-bucket
//     latency histogram (LatencyBucketsMs) — and upserts them into
//     traffic_minute, and the same per hour into traffic_hour.
//  3. Queries sum the rows of the range; p50/p95/p99 come from the summed
//     histogram (percentile). Ranges that start before
//     metrics.retention_minute are answered from the hourly rows.
//  4. The metrics.retention job deletes per-minute rows and host samples
//     older than metrics.retention_minute, hourly rows older than
//     metrics.retention_hour.
//
// Counting at ingest instead of an hourly job keeps the hourly rows exact
// and current without a second pass over access_logs (whose retention is
// shorter than the hourly rollups').
//
// # Host metrics
//
// Every MetricsBatch an agent sends (every 5 s on its stream, or with
// ReportMetrics) reaches Module.StoreHostMetrics through
// agents.Options.MetricsFunc and becomes one host_metrics row: a plain
// table keyed by (agent, time) and trimmed by the retention job, as a
// sample is one small row per agent every 5 s.
//
// # Alerts, live socket, Prometheus
//
// Alert rules and the alert history are alerts.go, their evaluation by the
// periodic job metrics.alerts evaluate.go; their webhook and e-mail notifications,
// River jobs, notify.go; the routes alerts_api.go. The live-metrics
// WebSocket GET /v1/ws/metrics/:agent_id is socket.go. The fleet figures
// of the master's /metrics and a workspace's per-virtual-host exposition
// are prometheus.go.
//
// # Analytics, streams, pages
//
// analytics.go counts the tops of a workspace's access logs
// (GET /v1/workspaces/:id/analytics); streams.go serves a stream's counters
// and their reset (GET /v1/streams/:id/metrics, POST
// /v1/streams/:id/reset-counters, guarded by the vhosts module's stream
// policy); ui.go the admin's metrics pages, whose charts static/js/charts.js
// draws with the vendored uPlot.
//
// # Wiring (main.go)
//
//	metricsMod := metrics.New(d, metrics.Options{})
//	logs.Options{RollupFunc: metricsMod.Rollup}
//	agents.Options{MetricsFunc: metricsMod.StoreHostMetrics}
package metrics

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
)

// Options configure the module.
type Options struct {
	// MaxHostsPerBatch is how many distinct host names one access-log batch
	// keeps apart in the rollups (the rest count under host ""), bounding
	// the rows a flood of made-up Host headers can create; default
	// DefaultMaxHostsPerBatch.
	MaxHostsPerBatch int
}

// Module is the metrics module.
type Module struct {
	db  *gorm.DB
	svc *Service
	// alerts are the alert rules and their evaluation (alerts.go).
	alerts *AlertService
	events app.Publisher
	// socketEvery and recheck are the live socket's cadence and credential
	// recheck (SocketInterval, socketRecheck; tests shorten them).
	socketEvery, recheck time.Duration
	fleet                *fleetCollector
	pages                *app.Pages
}

var _ app.Module = (*Module)(nil)

// New builds the module and registers its fleet collector on d.Metrics.
// The error is always nil: the module loads nothing when it is built.
func New(d app.Deps, opts Options) (*Module, error) {
	svc := NewService(d, opts)
	fleet := newFleetCollector(d.Pool, d.Logger, svc.now)
	registerFleet(d.Metrics, fleet)
	return &Module{db: d.DB, svc: svc, alerts: newAlertService(d, d.Logger, svc.now), events: d.Events,
		socketEvery: SocketInterval, recheck: socketRecheck, fleet: fleet, pages: d.Pages}, nil
}

// Alerts returns the alert rules' service.
func (m *Module) Alerts() *AlertService { return m.alerts }

// Service returns the module's service.
func (m *Module) Service() *Service { return m.svc }

// Rollup is the logs module's RollupFunc (see Service.Rollup).
func (m *Module) Rollup(ctx context.Context, tx pgx.Tx, b agents.LogBatch, now time.Time) error {
	return m.svc.Rollup(ctx, tx, b, now)
}

// StoreHostMetrics is the agents module's MetricsFunc (see
// Service.StoreHostMetrics).
func (m *Module) StoreHostMetrics(ctx context.Context, b agents.MetricsBatch) error {
	return m.svc.StoreHostMetrics(ctx, b)
}

// Name is "metrics".
func (m *Module) Name() string { return "metrics" }

// Policies returns the role matrix of policies.go.
func (m *Module) Policies() []authz.Policy {
	return append(append(policies(), alertPolicies()...), channelPolicies()...)
}

// Jobs registers metrics.retention, and the alert evaluation and
// notifications (notify.go).
func (m *Module) Jobs(w *river.Workers) []*river.PeriodicJob {
	return append(registerJobs(w, m.svc), m.alerts.registerJobs(w)...)
}

// GRPC registers nothing: samples arrive through the agents module's service.
func (m *Module) GRPC(grpc.ServiceRegistrar) {}

// Routes mounts the JSON API (api.go, analytics.go, streams.go), the alert
// rules and history, the Prometheus exposition and the live socket
// (alerts_api.go), and the admin pages (ui.go).
func (m *Module) Routes(r app.Routers) {
	m.bindRoutes(r)
	m.bindAlertRoutes(r)
	m.bindAnalytics(r)
	m.bindStreams(r)
	m.mountUI(r.UI)
	m.mountAlertUI(r.UI)
}
