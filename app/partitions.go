package app

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DailyPartitions manages the per-day partitions of a table range-partitioned
// on a timestamptz column, with a DEFAULT partition named <table>_default
// (access_logs, host_metrics). Partition i is named <table>_pYYYYMMDD and
// covers one UTC day.
//
// Rows of a day without a partition land in the default partition; creating
// the day's partition moves that day's rows out of the default partition in
// the same transaction, so no row is lost and none is counted twice. Changes
// are serialized across replicas by an advisory transaction lock.
type DailyPartitions struct {
	pool   *pgxpool.Pool
	table  string
	column string
	lock   int64

	mu    sync.Mutex
	known map[string]bool
}

const partitionLayout = "20060102"

// NewDailyPartitions manages table's daily partitions on column; lock is the
// pg_advisory_xact_lock key that serializes their changes.
func NewDailyPartitions(pool *pgxpool.Pool, table, column string, lock int64) *DailyPartitions {
	return &DailyPartitions{pool: pool, table: table, column: column, lock: lock, known: map[string]bool{}}
}

// DayOf is the UTC day that holds t.
func DayOf(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// InWindow reports whether day's partition is created on demand at now:
// days from the retention window (keep before now) to ahead days after
// today. Rows of other days land in the default partition.
func InWindow(day, now time.Time, keep time.Duration, ahead int) bool {
	day = DayOf(day)
	return !day.Before(DayOf(now.Add(-keep))) && !day.After(DayOf(now).AddDate(0, 0, ahead))
}

// Name is the partition of day.
func (p *DailyPartitions) Name(day time.Time) string {
	return p.table + "_p" + DayOf(day).Format(partitionLayout)
}

// Ensure creates day's partition unless it exists, moving the day's rows out
// of the default partition.
func (p *DailyPartitions) Ensure(ctx context.Context, day time.Time) error {
	day = DayOf(day)
	name := p.Name(day)
	p.mu.Lock()
	known := p.known[name]
	p.mu.Unlock()
	if known {
		return nil
	}
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", p.lock); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		table, def := pgx.Identifier{p.table}.Sanitize(), pgx.Identifier{p.table + "_default"}.Sanitize()
		moving, col := pgx.Identifier{p.table + "_moving"}.Sanitize(), pgx.Identifier{p.column}.Sanitize()
		// The bounds are formatted from a time.Time, never from user input.
		from, to := day.Format(time.RFC3339), day.AddDate(0, 0, 1).Format(time.RFC3339)
		stmts := []string{
			fmt.Sprintf("CREATE TEMP TABLE %s (LIKE %s) ON COMMIT DROP", moving, table),
			fmt.Sprintf(`WITH moved AS (DELETE FROM %s WHERE %s >= '%s' AND %s < '%s' RETURNING *)
				INSERT INTO %s SELECT * FROM moved`, def, col, from, col, to, moving),
			fmt.Sprintf("CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')", pgx.Identifier{name}.Sanitize(), table, from, to),
			fmt.Sprintf("INSERT INTO %s SELECT * FROM %s", table, moving),
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create %s partition %s: %w", p.table, name, err)
	}
	p.mu.Lock()
	p.known[name] = true
	p.mu.Unlock()
	return nil
}

// EnsureAhead creates the partitions of now's day and the next ahead days.
func (p *DailyPartitions) EnsureAhead(ctx context.Context, now time.Time, ahead int) error {
	today := DayOf(now)
	for i := 0; i <= ahead; i++ {
		if err := p.Ensure(ctx, today.AddDate(0, 0, i)); err != nil {
			return err
		}
	}
	return nil
}

// Days lists the days that have a partition, oldest first.
func (p *DailyPartitions) Days(ctx context.Context) ([]time.Time, error) {
	rows, err := p.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = to_regclass($1) ORDER BY c.relname`, p.table)
	if err != nil {
		return nil, fmt.Errorf("list %s partitions: %w", p.table, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list %s partitions: %w", p.table, err)
	}
	prefix := p.table + "_p"
	var days []time.Time
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		if d, err := time.Parse(partitionLayout, strings.TrimPrefix(n, prefix)); err == nil {
			days = append(days, d)
		}
	}
	return days, nil
}

// DropBefore drops the partitions whose whole day is before cutoff and
// deletes the default partition's rows older than cutoff. It returns the
// dropped partitions' names and the number of rows deleted.
func (p *DailyPartitions) DropBefore(ctx context.Context, cutoff time.Time) ([]string, int64, error) {
	days, err := p.Days(ctx)
	if err != nil {
		return nil, 0, err
	}
	var dropped []string
	for _, d := range days {
		if d.AddDate(0, 0, 1).After(cutoff) {
			continue
		}
		name := p.Name(d)
		err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", p.lock); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize())
			return err
		})
		if err != nil {
			return dropped, 0, fmt.Errorf("drop %s partition %s: %w", p.table, name, err)
		}
		p.mu.Lock()
		delete(p.known, name)
		p.mu.Unlock()
		dropped = append(dropped, name)
	}
	tag, err := p.pool.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s < $1",
		pgx.Identifier{p.table + "_default"}.Sanitize(), pgx.Identifier{p.column}.Sanitize()), cutoff)
	if err != nil {
		return dropped, 0, fmt.Errorf("delete old rows of %s_default: %w", p.table, err)
	}
	return dropped, tag.RowsAffected(), nil
}
