// Package wire is the master's module list and wiring, used by main.go and
// tests: it builds every module in dependency order, connects the hooks through
// which a lower module reaches a higher one, and returns the app.Wiring the
// HTTP layer needs. Only the master's command, tests, e2e and bench import it.
package wire

import (
	"context"
	"fmt"

	"github.com/a-h/templ"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/logs"
	"github.com/nxmesh/nxmesh/modules/metrics"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/replicas"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	"github.com/nxmesh/nxmesh/static"
	"github.com/nxmesh/nxmesh/views"
)

// Modules is every module of the master.
type Modules struct {
	Auth      *auth.Module
	Orgs      *orgs.Module
	Upstreams *upstreams.Module
	Certs     *certs.Module
	VHosts    *vhosts.Module
	Agents    *agents.Module
	Logs      *logs.Module
	Metrics   *metrics.Module
	Replicas  *replicas.Module
}

// New constructs every module of the master on d, in dependency order.
func New(d app.Deps) (Modules, error) {
	var m Modules
	var err error
	if m.Auth, err = auth.New(d, auth.Options{}); err != nil {
		return m, fmt.Errorf("auth module: %w", err)
	}
	// The workspace overview's panels are drawn by the agents module, which
	// sees agents, configuration versions and certificates.
	if m.Orgs, err = orgs.New(d, orgs.Options{
		Auth: m.Auth.Service(),
		OverviewFunc: func(ctx context.Context, ws uuid.UUID) (templ.Component, error) {
			return m.Agents.Overview(ctx, ws)
		},
	}); err != nil {
		return m, fmt.Errorf("orgs module: %w", err)
	}
	// Lower modules report changes to, and ask for their users from, the vhosts
	// module, which owns the workspace's versioned configuration.
	changed := func(ctx context.Context, tx *gorm.DB, ws uuid.UUID, summary string) error {
		return m.VHosts.Service().ConfigChanged(ctx, tx, ws, summary)
	}
	m.Upstreams, err = upstreams.New(d, upstreams.Options{
		ChangeFunc: changed,
		UsageFunc: func(ctx context.Context, tx *gorm.DB, id uuid.UUID) ([]string, error) {
			return m.VHosts.Service().UpstreamUsers(ctx, tx, id)
		},
		// The agents report the servers' health-check verdicts.
		HealthFunc: func(ctx context.Context, ws, id uuid.UUID) ([]upstreams.ServerHealth, error) {
			return m.Agents.Service().UpstreamHealth(ctx, ws, id)
		},
	})
	if err != nil {
		return m, fmt.Errorf("upstreams module: %w", err)
	}
	m.Certs, err = certs.New(d, certs.Options{
		ChangeFunc: changed,
		UsageFunc: func(ctx context.Context, tx *gorm.DB, id uuid.UUID) ([]string, error) {
			return m.VHosts.Service().CertificateUsers(ctx, tx, id)
		},
		// HTTP-01 challenges are answered by the agents' nginx, for names
		// a plain-HTTP virtual host serves.
		PresentFunc: func(ctx context.Context, ws uuid.UUID, domain, token, keyAuth string) (func(context.Context) error, error) {
			return m.Agents.Service().PresentHTTP01(ctx, ws, domain, token, keyAuth)
		},
		ServedFunc: func(ctx context.Context, ws uuid.UUID, domain string) (bool, error) {
			return m.VHosts.Service().ServesHTTP(ctx, ws, domain)
		},
	})
	if err != nil {
		return m, fmt.Errorf("certs module: %w", err)
	}
	m.VHosts, err = vhosts.New(d, vhosts.Options{
		Upstreams: m.Upstreams.Service(),
		Certs:     m.Certs.Service(),
		KnownAgentsFunc: func(ctx context.Context, tx *gorm.DB, ws uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
			return m.Agents.Service().InWorkspace(ctx, tx, ws, ids)
		},
		RolloutFunc: func(ctx context.Context, ws uuid.UUID, v int64) ([]vhosts.AgentRollout, error) {
			return m.Agents.Service().Rollout(ctx, ws, v)
		},
		AgentsFunc: func(ctx context.Context, ws uuid.UUID) ([]vhosts.TargetAgent, error) {
			return m.Agents.Service().TargetAgents(ctx, ws)
		},
	})
	if err != nil {
		return m, fmt.Errorf("vhosts module: %w", err)
	}
	if m.Metrics, err = metrics.New(d, metrics.Options{}); err != nil {
		return m, fmt.Errorf("metrics module: %w", err)
	}
	// Access-log batches are counted into the traffic rollups in the
	// transaction that stores them.
	if m.Logs, err = logs.New(d, logs.Options{RollupFunc: m.Metrics.Rollup}); err != nil {
		return m, fmt.Errorf("logs module: %w", err)
	}
	var replicaID string
	if d.Replicas != nil {
		replicaID = d.Replicas.ID()
	}
	m.Agents, err = agents.New(d, agents.Options{
		// agents.connected_replica names the replica as the registry does.
		ReplicaID: replicaID,
		VHosts:    m.VHosts.Service(),
		Certs:     m.Certs.Service(),
		// Log batches from the agents' streams are queued by the logs
		// module and acknowledged on the stream once stored.
		LogsFunc: m.Logs.Ingest,
		// Host metric batches are stored as the metrics module's samples.
		MetricsFunc: m.Metrics.StoreHostMetrics,
	})
	if err != nil {
		return m, fmt.Errorf("agents module: %w", err)
	}
	if m.Replicas, err = replicas.New(d); err != nil {
		return m, fmt.Errorf("replicas module: %w", err)
	}
	return m, nil
}

// List returns the modules in mount order.
func (m Modules) List() []app.Module {
	return []app.Module{m.Auth, m.Orgs, m.Upstreams, m.Certs, m.VHosts, m.Agents, m.Logs, m.Metrics, m.Replicas}
}

// Wiring returns what the HTTP and gRPC layers take from the modules: the
// authenticators (of requests and of first-message sockets), the role lookup, the admin's navigation, the error page, the
// static files, the master's version and the agents' gRPC server options.
func (m Modules) Wiring(version string) app.Wiring {
	return app.Wiring{
		AuthenticateAPI:   m.Auth.AuthenticateAPI,
		AuthenticateUI:    m.Auth.AuthenticateUI,
		AuthenticateToken: m.Auth.AuthenticateToken,
		Role:              m.Orgs.Service().Role,
		Nav:               m.Orgs.Shell,
		ErrorPage:         views.ErrorPage,
		Static:            static.FS,
		Version:           version,

		GRPCServerOptions:   m.Agents.GRPCServerOptions(),
		ConnectedAgentsFunc: m.Agents.Hub().Count,
	}
}
