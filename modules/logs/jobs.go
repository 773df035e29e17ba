package logs

import (
	"context"
	"time"

	"github.com/riverqueue/river"
)

// PartitionsArgs is the periodic job "logs.partitions": it creates the
// access_logs partitions of today and the next PartitionsAhead days. It runs
// at start and every hour on the elected leader.
type PartitionsArgs struct{}

// Kind names the job.
func (PartitionsArgs) Kind() string { return "logs.partitions" }

// RetentionArgs is the periodic job "logs.retention": ApplyRetention, at
// start and every hour on the elected leader.
type RetentionArgs struct{}

// Kind names the job.
func (RetentionArgs) Kind() string { return "logs.retention" }

type partitionsWorker struct {
	river.WorkerDefaults[PartitionsArgs]
	svc *Service
}

func (w *partitionsWorker) Work(ctx context.Context, _ *river.Job[PartitionsArgs]) error {
	return w.svc.EnsurePartitionsAhead(ctx)
}

type retentionWorker struct {
	river.WorkerDefaults[RetentionArgs]
	svc *Service
}

func (w *retentionWorker) Work(ctx context.Context, _ *river.Job[RetentionArgs]) error {
	res, err := w.svc.ApplyRetention(ctx)
	if err != nil {
		return err
	}
	if len(res.DroppedPartitions) > 0 || res.DeletedRows > 0 {
		w.svc.logger.InfoContext(ctx, "logs retention applied", "dropped_partitions", res.DroppedPartitions, "deleted_rows", res.DeletedRows)
	}
	return nil
}

func registerJobs(w *river.Workers, svc *Service) []*river.PeriodicJob {
	river.AddWorker(w, &partitionsWorker{svc: svc})
	river.AddWorker(w, &retentionWorker{svc: svc})
	return []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
			func() (river.JobArgs, *river.InsertOpts) { return PartitionsArgs{}, nil },
			&river.PeriodicJobOpts{ID: PartitionsArgs{}.Kind(), RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
			func() (river.JobArgs, *river.InsertOpts) { return RetentionArgs{}, nil },
			&river.PeriodicJobOpts{ID: RetentionArgs{}.Kind(), RunOnStart: true}),
	}
}
