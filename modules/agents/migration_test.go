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
