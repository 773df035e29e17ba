package agents

import (
	"context"

	"github.com/riverqueue/river"
)

// MarkOfflineArgs is the periodic job "agents.mark_offline": agents not heard
// from for three heartbeat intervals are marked offline. It runs once per
// heartbeat interval on the elected leader; the per-replica work (retries of
// configuration pushes, closing silent streams) is the hub's ticker, since
// only the replica holding a stream can act on it.
type MarkOfflineArgs struct{}

// Kind names the job.
func (MarkOfflineArgs) Kind() string { return "agents.mark_offline" }

type markOfflineWorker struct {
	river.WorkerDefaults[MarkOfflineArgs]
	svc *Service
}

func (w *markOfflineWorker) Work(ctx context.Context, _ *river.Job[MarkOfflineArgs]) error {
	n, err := w.svc.MarkOffline(ctx, w.svc.now())
	if err != nil {
		return err
	}
	if n > 0 {
		w.svc.logger.InfoContext(ctx, "agents marked offline", "count", n)
	}
	return nil
}

func registerJobs(w *river.Workers, svc *Service) []*river.PeriodicJob {
	river.AddWorker(w, &markOfflineWorker{svc: svc})
	return []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(svc.heartbeat),
			func() (river.JobArgs, *river.InsertOpts) { return MarkOfflineArgs{}, nil },
			&river.PeriodicJobOpts{ID: MarkOfflineArgs{}.Kind()}),
	}
}
