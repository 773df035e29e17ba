package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// TestMigration_RuleScopes rolls back the notification-channels migration,
// stores rules of the former shape (agent_id, virtual_host_id), migrates up
// again and reads their scopes: one agent becomes an agents scope, a
// virtual host a virtual_host scope, neither all.
func TestMigration_RuleScopes(t *testing.T) {
	// beforeChannels is the migration before 00096_metrics_notification_channels.
	const beforeChannels = 95
	a, mig := apptest.NewMigrator(t)
	ctx := context.Background()
	if err := mig.DownTo(ctx, beforeChannels); err != nil {
		t.Fatal(err)
	}
	pool := a.Deps.Pool
	var org, ws, agent uuid.UUID
	vh := uuid.New()
	if err := pool.QueryRow(ctx, `INSERT INTO organizations (name, slug) VALUES ('O', 'o') RETURNING id`).Scan(&org); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO workspaces (organization_id, name, slug) VALUES ($1, 'W', 'w') RETURNING id`, org).Scan(&ws); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO agents (workspace_id, name) VALUES ($1, 'a') RETURNING id`, ws).Scan(&agent); err != nil {
		t.Fatal(err)
	}
	ids := map[string]uuid.UUID{}
	for name, cols := range map[string][2]any{"all": {nil, nil}, "agent": {agent, nil}, "vhost": {nil, vh}, "both": {agent, vh}} {
		var id uuid.UUID
		if err := pool.QueryRow(ctx, `INSERT INTO alert_rules (workspace_id, name, metric, operator, threshold, agent_id, virtual_host_id)
			VALUES ($1, $2, 'error_rate', '>', 0.5, $3, $4) RETURNING id`, ws, name, cols[0], cols[1]).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	if err := mig.Up(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]struct {
		typ    string
		agents []uuid.UUID
		vh     *uuid.UUID
	}{"all": {ScopeAll, []uuid.UUID{}, nil}, "agent": {ScopeAgents, []uuid.UUID{agent}, nil},
		"vhost": {ScopeVirtualHost, []uuid.UUID{}, &vh}, "both": {ScopeVirtualHost, []uuid.UUID{}, &vh}} {
		var typ string
		var agents []uuid.UUID
		var got *uuid.UUID
		if err := pool.QueryRow(ctx, `SELECT scope_type, scope_agent_ids, virtual_host_id FROM alert_rules WHERE id = $1`, ids[name]).Scan(&typ, &agents, &got); err != nil {
			t.Fatal(err)
		}
		if typ != want.typ || len(agents) != len(want.agents) || (len(agents) == 1 && agents[0] != want.agents[0]) ||
			(got == nil) != (want.vh == nil) || (got != nil && *got != *want.vh) {
			t.Errorf("%s: scope %s %v %v, want %s %v %v", name, typ, agents, got, want.typ, want.agents, want.vh)
		}
	}
	// And back: the agents scope of one agent is agent_id again.
	if err := mig.DownTo(ctx, beforeChannels); err != nil {
		t.Fatal(err)
	}
	var back *uuid.UUID
	if err := pool.QueryRow(ctx, `SELECT agent_id FROM alert_rules WHERE id = $1`, ids["agent"]).Scan(&back); err != nil || back == nil || *back != agent {
		t.Fatalf("rolled back agent_id %v, %v", back, err)
	}
	if err := mig.Up(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMigration_HostMetricsPartitioned rolls back the migration that
// partitions host_metrics, stores samples in the former table, migrates up
// again: the samples are kept and their hourly rollup is built from them;
// rolling back once more keeps them too.
func TestMigration_HostMetricsPartitioned(t *testing.T) {
	const beforePartitions = 109
	a, mig := apptest.NewMigrator(t)
	ctx := context.Background()
	if err := mig.DownTo(ctx, beforePartitions); err != nil {
		t.Fatal(err)
	}
	pool := a.Deps.Pool
	agent, ws := uuid.New(), uuid.New()
	hour := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	for i, cpu := range []float64{10, 30} {
		if _, err := pool.Exec(ctx, `INSERT INTO host_metrics (agent_id, workspace_id, ts, cpu_percent, nginx_active_connections)
			VALUES ($1, $2, $3, $4, $5)`, agent, ws, hour.Add(time.Duration(i+1)*time.Minute), cpu, 5*(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := mig.Up(ctx); err != nil {
		t.Fatal(err)
	}
	var n, samples int64
	var cpuSum float64
	var conns int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM host_metrics WHERE agent_id = $1), samples, cpu_percent_sum,
		nginx_active_connections_max FROM host_metrics_hour WHERE agent_id = $1 AND bucket = $2`, agent, hour).
		Scan(&n, &samples, &cpuSum, &conns); err != nil {
		t.Fatal(err)
	}
	if n != 2 || samples != 2 || cpuSum != 40 || conns != 10 {
		t.Fatalf("after up: %d samples kept, hour rollup %d samples, cpu sum %v, max connections %d", n, samples, cpuSum, conns)
	}
	var partitioned bool
	if err := pool.QueryRow(ctx, `SELECT relkind = 'p' FROM pg_class WHERE relname = 'host_metrics'`).Scan(&partitioned); err != nil || !partitioned {
		t.Fatalf("host_metrics partitioned: %v (%v)", partitioned, err)
	}
	if err := mig.DownTo(ctx, beforePartitions); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM host_metrics WHERE agent_id = $1`, agent).Scan(&n); err != nil || n != 2 {
		t.Fatalf("after down: %d samples (%v)", n, err)
	}
	if err := mig.Up(ctx); err != nil {
		t.Fatal(err)
	}
}
