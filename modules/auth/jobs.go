package auth

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"gorm.io/gorm"
)

// Housekeeping.
const (
	cleanupInterval = time.Hour
	// attemptRetention keeps login attempts for at least a day (longer when the
	// login window is longer).
	attemptRetention = 24 * time.Hour
	// expiredRetention keeps expired or revoked sessions and refresh tokens a
	// week, for investigation.
	expiredRetention = 7 * 24 * time.Hour
)

// CleanupArgs is the hourly housekeeping job "auth.cleanup".
type CleanupArgs struct{}

// Kind names the job.
func (CleanupArgs) Kind() string { return "auth.cleanup" }

type cleanupWorker struct {
	river.WorkerDefaults[CleanupArgs]
	svc *Service
}

func (w *cleanupWorker) Work(ctx context.Context, _ *river.Job[CleanupArgs]) error {
	res, err := w.svc.Cleanup(ctx)
	if err != nil {
		return err
	}
	w.svc.logger.InfoContext(ctx, "auth cleanup", "login_codes", res.LoginCodes, "login_attempts", res.LoginAttempts,
		"refresh_tokens", res.RefreshTokens, "sessions", res.Sessions)
	return nil
}

// registerJobs adds the cleanup worker and returns its hourly schedule
// (River's leader election keeps it to one replica).
func registerJobs(w *river.Workers, svc *Service) []*river.PeriodicJob {
	river.AddWorker(w, &cleanupWorker{svc: svc})
	return []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(cleanupInterval),
			func() (river.JobArgs, *river.InsertOpts) { return CleanupArgs{}, nil },
			&river.PeriodicJobOpts{ID: CleanupArgs{}.Kind(), RunOnStart: true}),
	}
}

// CleanupResult counts the rows Cleanup deleted.
type CleanupResult struct {
	LoginCodes    int64
	LoginAttempts int64
	RefreshTokens int64
	Sessions      int64
}

// Cleanup deletes expired one-time codes, login attempts older than a day (or
// the login window), and refresh tokens and sessions that expired or were
// revoked more than a week ago.
func (s *Service) Cleanup(ctx context.Context) (CleanupResult, error) {
	now := s.now()
	var res CleanupResult
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		steps := []struct {
			n     *int64
			model any
			where string
			args  []any
		}{
			{&res.LoginCodes, &loginCodeRow{}, "expires_at < ?", []any{now}},
			{&res.LoginAttempts, &loginAttemptRow{}, "created_at < ?", []any{now.Add(-max(attemptRetention, s.cfg.LoginWindow))}},
			{&res.RefreshTokens, &refreshTokenRow{}, "expires_at < ?", []any{now.Add(-expiredRetention)}},
			{&res.Sessions, &sessionRow{}, "expires_at < ? OR revoked_at < ?", []any{now.Add(-expiredRetention), now.Add(-expiredRetention)}},
		}
		for _, st := range steps {
			r := tx.Where(st.where, st.args...).Delete(st.model)
			if r.Error != nil {
				return r.Error
			}
			*st.n = r.RowsAffected
		}
		return nil
	})
	if err != nil {
		return CleanupResult{}, fmt.Errorf("auth cleanup: %w", err)
	}
	return res, nil
}
