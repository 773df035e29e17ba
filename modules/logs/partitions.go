package logs

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nxmesh/nxmesh/app"
)

// Partitions of access_logs: one per UTC day, named access_logs_pYYYYMMDD
// (app.DailyPartitions), created ahead by the logs.partitions job
// (PartitionsAhead days) and on demand by the ingest for days within the
// retention window. Rows of other days (a clock far off) land in
// access_logs_default; creating a day's partition moves that day's rows out
// of the default partition in the same transaction, so no row is lost and
// none is counted twice.

// PartitionsAhead is how many days after today get a partition ahead.
const PartitionsAhead = 3

// partitionLock serializes partition changes across replicas
// (pg_advisory_xact_lock key).
const partitionLock = 0x6e786c6f6773 // "nxlogs"

// onDemand reports whether the ingest creates day's partition: days from
// the retention window to PartitionsAhead days ahead.
func (s *Service) onDemand(day time.Time) bool {
	return app.InWindow(day, s.now(), time.Duration(s.GlobalRetentionDays())*24*time.Hour, PartitionsAhead)
}

// EnsurePartition creates day's partition of access_logs unless it exists,
// moving the day's rows out of the default partition.
func (s *Service) EnsurePartition(ctx context.Context, day time.Time) error {
	return s.partitions.Ensure(ctx, day)
}

// EnsurePartitionsAhead creates the partitions of today and the next
// PartitionsAhead days.
func (s *Service) EnsurePartitionsAhead(ctx context.Context) error {
	return s.partitions.EnsureAhead(ctx, s.now(), PartitionsAhead)
}

// Partitions lists the days that have an access_logs partition, oldest
// first.
func (s *Service) Partitions(ctx context.Context) ([]time.Time, error) { return s.partitions.Days(ctx) }

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
	dropped, deleted, err := s.partitions.DropBefore(ctx, cutoff)
	res.DroppedPartitions, res.DeletedRows = dropped, deleted
	if err != nil {
		return res, err
	}
	del := func(what, q string, args ...any) error {
		tag, err := s.pool.Exec(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("retention: delete %s: %w", what, err)
		}
		res.DeletedRows += tag.RowsAffected()
		return nil
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
