package agents

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// TestMigration_HeartbeatsUpdateInPlace writes what a heartbeat and a
// configuration status write (last_seen_at, state, apply_status) to an
// agent's row and reads from PostgreSQL's own counters whether the row was
// updated in place (a heap-only tuple, no index entries added): after
// 00125_agents_hot_updates it is, before it (an index on last_seen_at) it
// is not.
func TestMigration_HeartbeatsUpdateInPlace(t *testing.T) {
	// beforeHOT is the migration before 00125_agents_hot_updates.
	const beforeHOT = 124
	a, mig := apptest.NewMigrator(t)
	ctx := context.Background()
	pool := a.Deps.Pool
	var org, ws, agent uuid.UUID
	if err := pool.QueryRow(ctx, `INSERT INTO organizations (name, slug) VALUES ('O', 'o') RETURNING id`).Scan(&org); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO workspaces (organization_id, name, slug) VALUES ($1, 'W', 'w') RETURNING id`, org).Scan(&ws); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO agents (workspace_id, name, state) VALUES ($1, 'a', 'online') RETURNING id`, ws).Scan(&agent); err != nil {
		t.Fatal(err)
	}
	// inPlace updates the row as a heartbeat does and reports whether the
	// update was a heap-only one.
	inPlace := func(state string) bool {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		// The view also holds this connection's counts not yet reported:
		// the update's own are the difference.
		counts := func() (updated, hot int64) {
			t.Helper()
			if err := tx.QueryRow(ctx, `SELECT coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_hot_upd), 0)
				FROM pg_stat_xact_user_tables WHERE relid = 'agents'::regclass`).Scan(&updated, &hot); err != nil {
				t.Fatal(err)
			}
			return updated, hot
		}
		updated0, hot0 := counts()
		if _, err := tx.Exec(ctx, `UPDATE agents SET last_seen_at = now(), state = $2, apply_status = 'success' WHERE id = $1`, agent, state); err != nil {
			t.Fatal(err)
		}
		updated, hot := counts()
		updated, hot = updated-updated0, hot-hot0
		if updated != 1 {
			t.Fatalf("%d updates counted, want 1", updated)
		}
		return hot == 1
	}
	for _, tc := range []struct {
		name    string
		version int64 // migrate to; 0: all
		want    bool
	}{
		{"after", 0, true},
		{"before", beforeHOT, false},
		{"after again", 0, true},
	} {
		migrate := mig.Up
		if tc.version > 0 {
			migrate = func(ctx context.Context) error { return mig.DownTo(ctx, tc.version) }
		}
		if err := migrate(ctx); err != nil {
			t.Fatalf("%s: migrate: %v", tc.name, err)
		}
		for _, state := range []string{"online", "degraded"} {
			if got := inPlace(state); got != tc.want {
				t.Errorf("%s 00125: heartbeat setting state %s updated in place: %v, want %v", tc.name, state, got, tc.want)
			}
		}
	}
}

// TestMigration_ResultsGoWithTheirAgent: without the foreign key from
// agent_config_results to agents (00128), deleting an agent, or its
// workspace, still deletes its results and leaves other agents' alone; and
// the way back restores the key.
func TestMigration_ResultsGoWithTheirAgent(t *testing.T) {
	// beforeTrigger is the migration before 00128_config_results_agent_fk.
	const beforeTrigger = 127
	a, mig := apptest.NewMigrator(t)
	ctx := context.Background()
	pool := a.Deps.Pool
	var org uuid.UUID
	if err := pool.QueryRow(ctx, `INSERT INTO organizations (name, slug) VALUES ('O', 'o') RETURNING id`).Scan(&org); err != nil {
		t.Fatal(err)
	}
	workspace := func(slug string) uuid.UUID {
		t.Helper()
		var ws uuid.UUID
		if err := pool.QueryRow(ctx, `INSERT INTO workspaces (organization_id, name, slug) VALUES ($1, $2, $2) RETURNING id`, org, slug).Scan(&ws); err != nil {
			t.Fatal(err)
		}
		return ws
	}
	agentWithResults := func(ws uuid.UUID) uuid.UUID {
		t.Helper()
		var id uuid.UUID
		if err := pool.QueryRow(ctx, `INSERT INTO agents (workspace_id, name) VALUES ($1, 'a') RETURNING id`, ws).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO agent_config_results (agent_id, workspace_id, version, status, updated_at)
			SELECT $1, $2, v, 'success', now() FROM generate_series(1, 3) AS v`, id, ws); err != nil {
			t.Fatal(err)
		}
		return id
	}
	results := func(agent uuid.UUID) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM agent_config_results WHERE agent_id = $1`, agent).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	check := func(stage string) {
		t.Helper()
		ws1, ws2 := workspace(stage+"-1"), workspace(stage+"-2")
		deleted, kept, inWorkspace := agentWithResults(ws1), agentWithResults(ws1), agentWithResults(ws2)
		if _, err := pool.Exec(ctx, `DELETE FROM agents WHERE id = $1`, deleted); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `DELETE FROM workspaces WHERE id = $1`, ws2); err != nil {
			t.Fatal(err)
		}
		if n := results(deleted); n != 0 {
			t.Errorf("%s: a deleted agent kept %d results", stage, n)
		}
		if n := results(inWorkspace); n != 0 {
			t.Errorf("%s: an agent of a deleted workspace kept %d results", stage, n)
		}
		if n := results(kept); n != 3 {
			t.Errorf("%s: another agent has %d results, want 3", stage, n)
		}
	}
	if err := mig.Up(ctx); err != nil {
		t.Fatal(err)
	}
	check("after")
	if err := mig.DownTo(ctx, beforeTrigger); err != nil {
		t.Fatal(err)
	}
	check("before")
	var fk bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'agent_config_results_agent_id_fkey')`).Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if !fk {
		t.Error("the way back did not restore the foreign key")
	}
	if err := mig.Up(ctx); err != nil {
		t.Fatal(err)
	}
	check("after again")
}
