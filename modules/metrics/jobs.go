package metrics

import (
	"context"
	"time"

	"github.com/riverqueue/river"
)

// RetentionArgs is the periodic job "metrics.retention": ApplyRetention, at
// start and every hour on the elected leader. There is no rollup job: the
// hourly rollups are counted at ingest with the per-minute ones.
type RetentionArgs struct{}

// Kind names the job.
func (RetentionArgs) Kind() string { return "metrics.retention" }

type retentionWorker struct {
	river.WorkerDefaults[RetentionArgs]
	svc *Service
}

func (w *retentionWorker) Work(ctx context.Context, _ *river.Job[RetentionArgs]) error {
	res, err := w.svc.ApplyRetention(ctx)
	if err != nil {
		return err
	}
	if res.MinuteRows > 0 || res.HourRows > 0 || res.HostRows > 0 || res.HostHourRows > 0 || len(res.HostPartitions) > 0 {
		w.svc.logger.InfoContext(ctx, "metrics retention applied", "minute_rows", res.MinuteRows, "hour_rows", res.HourRows,
			"host_rows", res.HostRows, "host_hour_rows", res.HostHourRows, "host_partitions_dropped", res.HostPartitions)
	}
	return nil
}

// PartitionsArgs is the periodic job "metrics.partitions": it creates the
// host_metrics partitions of today and the next HostPartitionsAhead days, at
// start and every hour on the elected leader.
type PartitionsArgs struct{}

// Kind names the job.
func (PartitionsArgs) Kind() string { return "metrics.partitions" }

type partitionsWorker struct {
	river.WorkerDefaults[PartitionsArgs]
	svc *Service
}

func (w *partitionsWorker) Work(ctx context.Context, _ *river.Job[PartitionsArgs]) error {
	return w.svc.EnsureHostPartitionsAhead(ctx)
}

func registerJobs(w *river.Workers, svc *Service) []*river.PeriodicJob {
	river.AddWorker(w, &retentionWorker{svc: svc})
	river.AddWorker(w, &partitionsWorker{svc: svc})
	return []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
			func() (river.JobArgs, *river.InsertOpts) { return PartitionsArgs{}, nil },
			&river.PeriodicJobOpts{ID: PartitionsArgs{}.Kind(), RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
			func() (river.JobArgs, *river.InsertOpts) { return RetentionArgs{}, nil },
			&river.PeriodicJobOpts{ID: RetentionArgs{}.Kind(), RunOnStart: true}),
	}
}
