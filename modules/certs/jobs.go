package certs

// River jobs of the module:
//
//   - "certs.issue" (IssueArgs): one ACME order for a certificate (issue or
//     renew), enqueued in the transaction of the request, of "Renew now", of a
//     failure's retry (scheduled at next_attempt_at) and by the scan.
//   - "certs.renew_scan" (periodic, every acme.renew_check_interval, on the
//     elected leader only): enqueues renewals of auto-renewing certificates
//     past their renewal time, publishes certificate.expiring at 21, 7 and 1
//     days left for certificates that are not renewing, and refreshes the
//     stored statuses. A unique job per certificate and the order claim
//     (issue.go) keep one order in flight per certificate across replicas.

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

// IssueArgs is the job "certs.issue".
type IssueArgs struct {
	CertificateID uuid.UUID `json:"certificate_id"`
	Op            string    `json:"op"`
	// Retry is the number of failures a scheduled retry follows (zero for
	// first tries). It keeps the retry, enqueued by the running job, apart
	// from that job for uniqueness.
	Retry int `json:"retry,omitempty"`
}

// Kind names the job.
func (IssueArgs) Kind() string { return "certs.issue" }

// InsertOpts: a failed order is retried by scheduling a new job (issue.go),
// not by River, so one attempt each.
func (IssueArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 1, UniqueOpts: river.UniqueOpts{ByArgs: true,
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning, rivertype.JobStateRetryable, rivertype.JobStateScheduled}}}
}

type issueWorker struct {
	river.WorkerDefaults[IssueArgs]
	svc *Service
}

func (w *issueWorker) Work(ctx context.Context, j *river.Job[IssueArgs]) error {
	return w.svc.work(ctx, j.Args.CertificateID)
}

func (w *issueWorker) Timeout(*river.Job[IssueArgs]) time.Duration { return 10 * time.Minute }

// RenewScanArgs is the periodic job "certs.renew_scan".
type RenewScanArgs struct{}

// Kind names the job.
func (RenewScanArgs) Kind() string { return "certs.renew_scan" }

type scanWorker struct {
	river.WorkerDefaults[RenewScanArgs]
	svc *Service
}

func (w *scanWorker) Work(ctx context.Context, _ *river.Job[RenewScanArgs]) error {
	_, err := w.svc.RenewScan(ctx)
	return err
}

func registerJobs(w *river.Workers, svc *Service) []*river.PeriodicJob {
	river.AddWorker(w, &issueWorker{svc: svc})
	river.AddWorker(w, &scanWorker{svc: svc})
	every := svc.acme.cfg.RenewCheckInterval
	if every <= 0 {
		every = 10 * time.Minute
	}
	return []*river.PeriodicJob{
		river.NewPeriodicJob(river.PeriodicInterval(every),
			func() (river.JobArgs, *river.InsertOpts) { return RenewScanArgs{}, nil },
			&river.PeriodicJobOpts{ID: RenewScanArgs{}.Kind(), RunOnStart: true}),
	}
}

// enqueue inserts the issuance job in tx, at (zero: now); retry is the number
// of failures a retry follows (IssueArgs.Retry).
func (s *Service) enqueue(ctx context.Context, tx *gorm.DB, id uuid.UUID, kind string, at time.Time, retry int) error {
	if s.acme.jobs == nil {
		return nil
	}
	sqlTx, err := app.SQLTx(tx)
	if err != nil {
		return err
	}
	opts := IssueArgs{}.InsertOpts()
	if !at.IsZero() {
		opts.ScheduledAt = at
	}
	if _, err := s.acme.jobs.InsertTx(ctx, sqlTx, IssueArgs{CertificateID: id, Op: kind, Retry: retry}, &opts); err != nil {
		return fmt.Errorf("enqueue %s of certificate %s: %w", kind, id, err)
	}
	return nil
}

// enqueueRenewals inserts the renewal jobs of ids in tx, a batch at a time.
func (s *Service) enqueueRenewals(ctx context.Context, tx *gorm.DB, ids []uuid.UUID) error {
	if s.acme.jobs == nil || len(ids) == 0 {
		return nil
	}
	sqlTx, err := app.SQLTx(tx)
	if err != nil {
		return err
	}
	const batch = 1000
	for start := 0; start < len(ids); start += batch {
		chunk := ids[start:min(start+batch, len(ids))]
		params := make([]river.InsertManyParams, len(chunk))
		for i, id := range chunk {
			opts := IssueArgs{}.InsertOpts()
			params[i] = river.InsertManyParams{Args: IssueArgs{CertificateID: id, Op: KindRenew}, InsertOpts: &opts}
		}
		if _, err := s.acme.jobs.InsertManyTx(ctx, sqlTx, params); err != nil {
			return fmt.Errorf("enqueue %d renewals: %w", len(chunk), err)
		}
	}
	return nil
}

// alertDays are the days left at which certificate.expiring is published,
// smallest first: a certificate already inside several thresholds gets one
// event, for the smallest.
var alertDays = []int{1, 7, 21}

// RenewScan enqueues the renewals that are due and the expiry alerts, and
// returns how many renewals it enqueued.
func (s *Service) RenewScan(ctx context.Context) (int, error) {
	now := s.now()
	n := 0
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var ids []uuid.UUID
		if err := tx.Raw(`SELECT id FROM certificates WHERE auto_renew AND provider <> 'upload'
			AND status IN ('active', 'expiring', 'expired') AND renew_at <= ? AND order_started_at IS NULL
			AND (next_attempt_at IS NULL OR next_attempt_at <= ?) AND failures < ?
			ORDER BY renew_at FOR UPDATE SKIP LOCKED`, now, now, maxFailures).Scan(&ids).Error; err != nil {
			return fmt.Errorf("find certificates due for renewal: %w", err)
		}
		if err := s.enqueueRenewals(ctx, tx, ids); err != nil {
			return err
		}
		n = len(ids)
		return s.expiryAlerts(ctx, tx, now)
	})
	if err != nil {
		return 0, err
	}
	if err := s.RefreshStatuses(ctx); err != nil {
		return n, err
	}
	return n, nil
}

func (s *Service) expiryAlerts(ctx context.Context, tx *gorm.DB, now time.Time) error {
	for _, d := range alertDays {
		var rows []struct {
			ID             uuid.UUID `gorm:"column:id"`
			WorkspaceID    uuid.UUID `gorm:"column:workspace_id"`
			Domain         string    `gorm:"column:domain"`
			OrganizationID uuid.UUID `gorm:"column:organization_id"`
		}
		err := tx.Raw(`SELECT c.id, c.workspace_id, c.domain, w.organization_id FROM certificates c JOIN workspaces w ON w.id = c.workspace_id
			WHERE c.status IN ('active', 'expiring') AND c.expires_at <= ? AND c.expires_at > ?
			AND (c.alerted_days = 0 OR c.alerted_days > ?)
			AND (NOT c.auto_renew OR c.provider = 'upload' OR c.error <> '')
			FOR UPDATE OF c SKIP LOCKED`, now.Add(time.Duration(d)*24*time.Hour), now, d).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("find certificates expiring within %d days: %w", d, err)
		}
		for _, r := range rows {
			if err := tx.Exec("UPDATE certificates SET alerted_days = ? WHERE id = ?", d, r.ID).Error; err != nil {
				return err
			}
			o := orderRow{OrganizationID: r.OrganizationID}
			o.ID, o.WorkspaceID, o.Domain = r.ID, r.WorkspaceID, r.Domain
			if err := s.publish(ctx, tx, o, "certificate.expiring", fmt.Sprintf("expires within %d day(s)", d)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Renew enqueues a renewal (or a new issuance for a failed one) now.
func (s *Service) Renew(ctx context.Context, id uuid.UUID) (Certificate, error) {
	var cert Certificate
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row certificateRow
		if err := tx.Select(publicColumns).Take(&row, "id = ?", id).Error; err != nil {
			if err == gorm.ErrRecordNotFound {
				return ErrCertificateNotFound
			}
			return fmt.Errorf("renew certificate %s: %w", id, err)
		}
		if row.Provider == ProviderUpload {
			return app.Invalid("provider", app.FieldInvalidValue, "uploaded certificates are not renewed by the master: upload a new one")
		}
		if err := tx.Exec("UPDATE certificates SET failures = 0, next_attempt_at = NULL WHERE id = ?", id).Error; err != nil {
			return err
		}
		kind := KindRenew
		if !hasMaterial(row.Status) {
			kind = KindIssue
		}
		cert = row.certificate(s.now())
		return s.enqueue(ctx, tx, id, kind, time.Time{}, 0)
	})
	return cert, err
}

// UpdateParams are the inputs of Update; nil fields stay.
type UpdateParams struct {
	AutoRenew *bool   `json:"auto_renew"`
	Name      *string `json:"name"`
}

// Update changes a certificate's auto_renew and name, with an audit row.
func (s *Service) Update(ctx context.Context, id uuid.UUID, p UpdateParams) (Certificate, error) {
	var cert Certificate
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row certificateRow
		if err := tx.Select(publicColumns).Take(&row, "id = ?", id).Error; err != nil {
			if err == gorm.ErrRecordNotFound {
				return ErrCertificateNotFound
			}
			return fmt.Errorf("update certificate %s: %w", id, err)
		}
		before := row.certificate(s.now())
		upd := map[string]any{"updated_at": s.now()}
		if p.Name != nil {
			n := *p.Name
			if len([]rune(n)) > MaxNameLength {
				return app.Invalid("name", app.FieldTooLong, fmt.Sprintf("must be at most %d characters", MaxNameLength))
			}
			if n == "" {
				n = row.Domain
			}
			upd["name"], row.Name = n, n
		}
		if p.AutoRenew != nil {
			if *p.AutoRenew && row.Provider == ProviderUpload {
				return app.Invalid("auto_renew", app.FieldInvalidValue, "uploaded certificates are not renewed automatically")
			}
			upd["auto_renew"], row.AutoRenew = *p.AutoRenew, *p.AutoRenew
		}
		if err := tx.Model(&certificateRow{}).Where("id = ?", id).Updates(upd).Error; err != nil {
			return fmt.Errorf("update certificate %s: %w", id, err)
		}
		cert = row.certificate(s.now())
		orgID, err := workspaceOrg(tx, row.WorkspaceID)
		if err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{OrgID: orgID, WorkspaceID: row.WorkspaceID, Action: "certificate.update",
			ObjectType: ObjectCertificate, ObjectID: id.String(), Before: before, After: cert})
	})
	return cert, err
}
