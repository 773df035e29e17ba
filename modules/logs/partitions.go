package logs

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Partitions of access_logs: one per UTC day, named access_logs_pYYYYMMDD,
// created ahead by the logs.partitions job (PartitionsAhead days) and on
// demand by the ingest for days within the retention window. Rows of other
// days (a clock far off) land in access_logs_default; creating a day's
// partition moves that day's rows out of the default partition in the same
// transaction, so no row is lost and none is counted twice.

// PartitionsAhead is how many days after today get a partition ahead.
const PartitionsAhead = 3

const (
	partitionPrefix = "access_logs_p"
	partitionLayout = "20060102"
	// partitionLock serializes partition changes across replicas
	// (pg_advisory_xact_lock key).
	partitionLock = 0x6e786c6f6773 // "nxlogs"
)

func dayOf(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func partitionName(day time.Time) string { return partitionPrefix + day.Format(partitionLayout) }

// onDemand reports whether the ingest creates day's partition: days from
// the retention window to PartitionsAhead days ahead.
func (s *Service) onDemand(day time.Time) bool {
	today := dayOf(s.now())
	return !day.Before(today.AddDate(0, 0, -s.GlobalRetentionDays())) && !day.After(today.AddDate(0, 0, PartitionsAhead))
}

// EnsurePartition creates day's partition of access_logs unless it exists,
// moving the day's rows out of the default partition.
func (s *Service) EnsurePartition(ctx context.Context, day time.Time) error {
	day = dayOf(day)
	name := partitionName(day)
	s.partMu.Lock()
	known := s.partitions[name]
	s.partMu.Unlock()
	if known {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(partitionLock)); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		from, to := day.Format(time.RFC3339), day.AddDate(0, 0, 1).Format(time.RFC3339)
		stmts := []string{
			"CREATE TEMP TABLE access_logs_moving (LIKE access_logs) ON COMMIT DROP",
			fmt.Sprintf(`WITH moved AS (DELETE FROM access_logs_default WHERE ts >= '%s' AND ts < '%s' RETURNING *)
				INSERT INTO access_logs_moving SELECT * FROM moved`, from, to),
			fmt.Sprintf("CREATE TABLE %s PARTITION OF access_logs FOR VALUES FROM ('%s') TO ('%s')", pgx.Identifier{name}.Sanitize(), from, to),
			"INSERT INTO access_logs SELECT * FROM access_logs_moving",
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create access_logs partition %s: %w", name, err)
	}
	s.partMu.Lock()
	s.partitions[name] = true
	s.partMu.Unlock()
	return nil
}

// EnsurePartitionsAhead creates the partitions of today and the next
// PartitionsAhead days.
func (s *Service) EnsurePartitionsAhead(ctx context.Context) error {
	today := dayOf(s.now())
	for i := 0; i <= PartitionsAhead; i++ {
		if err := s.EnsurePartition(ctx, today.AddDate(0, 0, i)); err != nil {
			return err
		}
	}
	return nil
}

// Partitions lists the days that have an access_logs partition, oldest
// first.
func (s *Service) Partitions(ctx context.Context) ([]time.Time, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'access_logs'::regclass ORDER BY c.relname`)
	if err != nil {
		return nil, fmt.Errorf("list access_logs partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list access_logs partitions: %w", err)
	}
	var days []time.Time
	for _, n := range names {
		if d, err := time.Parse(partitionLayout, strings.TrimPrefix(n, partitionPrefix)); err == nil && strings.HasPrefix(n, partitionPrefix) {
			days = append(days, d)
		}
	}
	return days, nil
}

// RetentionResult says what ApplyRetention removed.
type RetentionResult struct {
	DroppedPartitions []string
	// DeletedRows counts the rows deleted one by one: from the default
	// partition, error_logs, and workspaces with a shorter retention.
	DeletedRows int64
}

// ApplyRetention enforces logs.retention and the workspaces' own:
//
//  1. access_logs partitions whose whole day is older than the global
//     retention are dropped;
//  2. older rows of the default partition and of error_logs are deleted,
//     and the batch ids of log_batches received before then (a batch that
//     old would be expired anyway);
//  3. each workspace with a shorter retention loses its older access-log
//     and error-log rows.
func (s *Service) ApplyRetention(ctx context.Context) (RetentionResult, error) {
	var res RetentionResult
	now := s.now()
	cutoff := now.Add(-time.Duration(s.GlobalRetentionDays()) * 24 * time.Hour)
	days, err := s.Partitions(ctx)
	if err != nil {
		return res, err
	}
	for _, d := range days {
		if d.AddDate(0, 0, 1).After(cutoff) {
			continue
		}
		name := partitionName(d)
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(partitionLock)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize())
			return err
		})
		if err != nil {
			return res, fmt.Errorf("drop access_logs partition %s: %w", name, err)
		}
		s.partMu.Lock()
		delete(s.partitions, name)
		s.partMu.Unlock()
		res.DroppedPartitions = append(res.DroppedPartitions, name)
	}
	del := func(what, q string, args ...any) error {
		tag, err := s.pool.Exec(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("retention: delete %s: %w", what, err)
		}
		res.DeletedRows += tag.RowsAffected()
		return nil
	}
	if err := del("default partition rows", "DELETE FROM access_logs_default WHERE ts < $1", cutoff); err != nil {
		return res, err
	}
	if err := del("error logs", "DELETE FROM error_logs WHERE ts < $1", cutoff); err != nil {
		return res, err
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM log_batches WHERE received_at < $1", cutoff); err != nil {
		return res, fmt.Errorf("retention: delete batch ids: %w", err)
	}
	rows, err := s.pool.Query(ctx, "SELECT workspace_id, retention_days FROM logs_settings WHERE retention_days < $1", s.GlobalRetentionDays())
	if err != nil {
		return res, fmt.Errorf("retention: read workspace settings: %w", err)
	}
	type wsRetention struct {
		ID   uuid.UUID
		Days int
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[wsRetention])
	if err != nil {
		return res, fmt.Errorf("retention: read workspace settings: %w", err)
	}
	for _, w := range list {
		wsCutoff := now.Add(-time.Duration(w.Days) * 24 * time.Hour)
		if err := del("access logs of workspace "+w.ID.String(), "DELETE FROM access_logs WHERE workspace_id = $1 AND ts < $2", w.ID, wsCutoff); err != nil {
			return res, err
		}
		if err := del("error logs of workspace "+w.ID.String(), "DELETE FROM error_logs WHERE workspace_id = $1 AND ts < $2", w.ID, wsCutoff); err != nil {
			return res, err
		}
	}
	return res, nil
}
