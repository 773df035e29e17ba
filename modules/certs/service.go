package certs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/orgs"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Service is the domain logic of certificates and the only writer of their
// table. Every change runs in one transaction with ChangeFunc and its audit row.
// Methods that take a tx run in the caller's transaction (nil: their own
// connection), so other modules can read certificates consistently with their
// own writes.
type Service struct {
	db      *gorm.DB
	clock   app.Clock
	secrets app.Secrets
	logger  *slog.Logger
	change  ChangeFunc
	usage   UsageFunc
	acme    acmeDeps
}

// NewService returns a Service over d's database, sealing keys with d.Secrets.
func NewService(d app.Deps, opts Options) *Service {
	return &Service{db: d.DB, clock: d.Clock, secrets: d.Secrets, logger: d.Logger, change: opts.ChangeFunc, usage: opts.UsageFunc, acme: newACMEDeps(d, opts)}
}

// MaxNameLength is the longest certificate name, in characters.
const MaxNameLength = 100

// now is d.Clock in UTC; tests move app.Deps.Clock to see certificates age.
func (s *Service) now() time.Time { return s.clock().UTC() }

// conn is tx, or the service's database when tx is nil, bound to ctx.
func (s *Service) conn(ctx context.Context, tx *gorm.DB) *gorm.DB {
	if tx == nil {
		tx = s.db
	}
	return tx.WithContext(ctx)
}

func (s *Service) changed(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, summary string) error {
	if s.change == nil {
		return nil
	}
	if err := s.change(ctx, tx, workspaceID, summary); err != nil {
		return fmt.Errorf("record config change (%s): %w", summary, err)
	}
	return nil
}

// lockWorkspace locks the workspace's row until tx ends (SELECT ... FOR UPDATE)
// and returns its organization. Every configuration change of a workspace takes
// this lock first, as the vhosts module's changes and its ChangeFunc do, so
// changes serialize in one lock order: workspace, then the objects in it.
// (Inserting first would take a KEY SHARE lock on the workspace through the
// foreign key, and two such transactions upgrading it in ChangeFunc deadlock.)
func lockWorkspace(tx *gorm.DB, workspaceID uuid.UUID) (uuid.UUID, error) {
	var ids []uuid.UUID
	if err := tx.Raw("SELECT organization_id FROM workspaces WHERE id = ? FOR UPDATE", workspaceID).Scan(&ids).Error; err != nil {
		return uuid.Nil, fmt.Errorf("lock workspace %s: %w", workspaceID, err)
	}
	if len(ids) == 0 {
		return uuid.Nil, orgs.ErrWorkspaceNotFound
	}
	return ids[0], nil
}

// workspaceOrg returns the organization of a workspace.
func workspaceOrg(tx *gorm.DB, workspaceID uuid.UUID) (uuid.UUID, error) {
	var ids []uuid.UUID
	if err := tx.Table("workspaces").Where("id = ?", workspaceID).Limit(1).Pluck("organization_id", &ids).Error; err != nil {
		return uuid.Nil, fmt.Errorf("read organization of workspace %s: %w", workspaceID, err)
	}
	if len(ids) == 0 {
		return uuid.Nil, orgs.ErrWorkspaceNotFound
	}
	return ids[0], nil
}

// ---- Reading ----

// List returns a workspace's certificates, oldest first.
func (s *Service) List(ctx context.Context, workspaceID uuid.UUID, page app.Page) ([]Certificate, int64, error) {
	return s.Search(ctx, workspaceID, Filter{}, page)
}

// Filter narrows a list of certificates.
type Filter struct {
	// Q matches, ignoring case, a part of the name, the domain or a
	// subjectAltName; '%' and '_' are plain characters.
	Q string
	// State is a status as of now (active, expiring, expired, pending,
	// failed), or empty for all.
	State string
}

// Search is List narrowed by f: a 422 naming q or state when malformed.
func (s *Service) Search(ctx context.Context, workspaceID uuid.UUID, f Filter, page app.Page) ([]Certificate, int64, error) {
	v := &app.Validator{}
	app.CheckSearch(v, "q", f.Q)
	now := s.now()
	q := s.db.WithContext(ctx).Model(&certificateRow{}).Where("workspace_id = ?", workspaceID)
	if f.Q != "" {
		pattern := app.ContainsPattern(f.Q)
		q = q.Where(`(name ILIKE ? ESCAPE '\' OR domain ILIKE ? ESCAPE '\' OR EXISTS (
			SELECT 1 FROM jsonb_array_elements_text(san) AS alt WHERE alt ILIKE ? ESCAPE '\'))`, pattern, pattern, pattern)
	}
	if f.State != "" {
		clause, args, ok := stateClause(f.State, now)
		if !ok {
			v.Add("state", app.FieldInvalidValue, "must be active, expiring, expired, pending or failed")
		} else {
			q = q.Where(clause, args...)
		}
	}
	if err := v.Err(); err != nil {
		return nil, 0, err
	}
	var total int64
	if err := q.Count(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("count certificates of workspace %s: %w", workspaceID, err)
	}
	var rows []certificateRow
	if err := q.Select(publicColumns).Order("created_at, id").Offset(page.Offset()).Limit(page.PerPage).Find(&rows).Error; err != nil {
		return nil, 0, fmt.Errorf("list certificates of workspace %s: %w", workspaceID, err)
	}
	return certificates(rows, now), total, nil
}

// stateClause is the condition on certificate rows of having state at now,
// as certificateRow.certificate computes it (statusAt): a stored status for
// pending and failed ones, else from the expiry and the renewal time.
func stateClause(state string, now time.Time) (string, []any, bool) {
	const material = "status IN ('active', 'expiring', 'expired') AND expires_at IS NOT NULL"
	// expiring: past an ACME certificate's renewal time, or (uploads and
	// certificates without one) less than ExpiringWindow before expiry.
	const expiring = `((provider <> @upload AND renew_at IS NOT NULL AND renew_at <= @now)
		OR ((provider = @upload OR renew_at IS NULL) AND expires_at < @window))`
	args := []any{sql.Named("now", now), sql.Named("upload", ProviderUpload), sql.Named("window", now.Add(ExpiringWindow))}
	switch state {
	case StatusPending, StatusFailed:
		return "status = ?", []any{state}, true
	case StatusExpired:
		return material + " AND expires_at <= @now", args, true
	case StatusExpiring:
		return material + " AND expires_at > @now AND " + expiring, args, true
	case StatusActive:
		return material + " AND expires_at > @now AND NOT " + expiring, args, true
	}
	return "", nil, false
}

// ListAll returns every certificate of a workspace, by domain, in tx (nil: the
// service's connection). For choosers and validation in other modules.
func (s *Service) ListAll(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID) ([]Certificate, error) {
	var rows []certificateRow
	err := s.conn(ctx, tx).Select(publicColumns).Where("workspace_id = ?", workspaceID).
		Order("domain, created_at, id").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("list certificates of workspace %s: %w", workspaceID, err)
	}
	return certificates(rows, s.now()), nil
}

// Get returns the certificate with id.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (Certificate, error) {
	var row certificateRow
	err := s.db.WithContext(ctx).Select(publicColumns).Take(&row, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Certificate{}, ErrCertificateNotFound
	}
	if err != nil {
		return Certificate{}, fmt.Errorf("get certificate %s: %w", id, err)
	}
	return row.certificate(s.now()), nil
}

// Exists reports whether the workspace has a certificate with id, in tx (nil:
// the service's connection). Other modules validate references with it. Inside
// a transaction it locks the certificate's row (FOR KEY SHARE) until the
// transaction ends, so the certificate cannot be deleted under a reference
// being written; Delete waits and then sees the new user.
func (s *Service) Exists(ctx context.Context, tx *gorm.DB, workspaceID, id uuid.UUID) (bool, error) {
	q := s.conn(ctx, tx).Model(&certificateRow{})
	if tx != nil {
		q = q.Clauses(clause.Locking{Strength: "KEY SHARE"})
	}
	var ids []uuid.UUID
	if err := q.Where("id = ? AND workspace_id = ?", id, workspaceID).Limit(1).Pluck("id", &ids).Error; err != nil {
		return false, fmt.Errorf("look up certificate %s in workspace %s: %w", id, workspaceID, err)
	}
	return len(ids) > 0, nil
}

// Material returns the chains and decrypted private keys of the certificates
// with ids, keyed by id string, as the agents receive them in ConfigUpdate. It
// reads in tx (nil: the service's connection). Ids that do not exist, and
// certificates without material yet (pending or failed issuance), are absent
// from the map: the caller decides what a missing certificate means. Expired
// certificates are included; agents keep serving what they were given.
//
// The result holds private keys: send it to agents and nowhere else.
func (s *Service) Material(ctx context.Context, tx *gorm.DB, ids []uuid.UUID) (map[string]*agentv1.Certificate, error) {
	out := make(map[string]*agentv1.Certificate, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var rows []certificateRow
	err := s.conn(ctx, tx).Where("id IN ? AND status IN ?", ids, []string{StatusActive, StatusExpiring, StatusExpired}).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read certificate material: %w", err)
	}
	now := s.now()
	for _, r := range rows {
		key, err := s.secrets.Open(r.PrivateKeySealed)
		if err != nil {
			return nil, fmt.Errorf("open private key of certificate %s: %w", r.ID, err)
		}
		out[r.ID.String()] = ToProto(r.certificate(now), r.CertificatePEM, string(key))
	}
	return out, nil
}

// ToProto builds the agents' Certificate message from c and its material (the
// chain, leaf first, and the private key, both PEM). Pass an empty key where the
// message must not carry one (previews).
func ToProto(c Certificate, certificatePEM, privateKeyPEM string) *agentv1.Certificate {
	m := &agentv1.Certificate{
		Id:             c.ID.String(),
		Domain:         c.Domain,
		CertificatePem: certificatePEM,
		PrivateKeyPem:  privateKeyPEM,
	}
	if c.ExpiresAt != nil {
		m.ExpiresAt = c.ExpiresAt.Unix()
	}
	return m
}

func certificates(rows []certificateRow, now time.Time) []Certificate {
	out := make([]Certificate, len(rows))
	for i, r := range rows {
		out[i] = r.certificate(now)
	}
	return out
}

// ---- Changes ----

// CreateParams are the inputs of Create. An upload sets CertificatePEM and
// PrivateKeyPEM (Provider empty or "upload"). Domain, Provider and AutoRenew
// are the ACME request, which this server does not serve yet.
type CreateParams struct {
	WorkspaceID uuid.UUID
	// Name labels the certificate; the domain when empty.
	Name string
	// CertificatePEM is the chain: the leaf first, then each issuer.
	CertificatePEM string
	// PrivateKeyPEM is the leaf's private key.
	PrivateKeyPEM string
	// Domain, when set on an upload, must equal the domain read from the leaf.
	Domain    string
	Provider  string
	AutoRenew bool
}

// acmeNotEnabled answers requests for ACME issuance.
const acmeNotEnabled = `ACME issuance is not enabled on this server yet: upload a certificate instead (provider "upload", or none, with certificate_pem and private_key_pem)`

// Create validates and stores an uploaded certificate, with ChangeFunc and the
// audit row in the same transaction. Nothing is stored when any check fails.
func (s *Service) Create(ctx context.Context, p CreateParams) (Certificate, error) {
	now := s.now()
	u, name, err := validateCreate(p, now)
	if err != nil {
		return Certificate{}, err
	}
	sealed, err := s.secrets.Seal(u.keyPEM)
	if err != nil {
		return Certificate{}, fmt.Errorf("create certificate %q: seal private key: %w", u.domain, err)
	}
	row := certificateRow{
		ID:                uuid.New(),
		WorkspaceID:       p.WorkspaceID,
		Name:              name,
		Domain:            u.domain,
		SAN:               u.san,
		IsWildcard:        u.wildcard,
		Provider:          ProviderUpload,
		Status:            statusAt(u.notAfter, nil, now),
		CertificatePEM:    u.chainPEM,
		PrivateKeySealed:  sealed,
		Issuer:            u.issuer,
		Serial:            u.serial,
		FingerprintSHA256: u.fingerprintSHA256,
		IssuedAt:          &u.notBefore,
		ExpiresAt:         &u.notAfter,
	}
	var cert Certificate
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		orgID, err := lockWorkspace(tx, p.WorkspaceID)
		if err != nil {
			return err
		}
		var dup []uuid.UUID
		if err := tx.Model(&certificateRow{}).Where("workspace_id = ? AND fingerprint_sha256 = ?", p.WorkspaceID, row.FingerprintSHA256).
			Limit(1).Pluck("id", &dup).Error; err != nil {
			return fmt.Errorf("create certificate %q: look for duplicates: %w", row.Domain, err)
		}
		if len(dup) > 0 {
			return fmt.Errorf("%w as %s", ErrDuplicateCertificate, dup[0])
		}
		if err := tx.Create(&row).Error; err != nil {
			switch {
			case app.IsUniqueViolation(err):
				return fmt.Errorf("create certificate %q: %w", row.Domain, ErrDuplicateCertificate)
			case app.IsForeignKeyViolation(err):
				return fmt.Errorf("create certificate %q: %w", row.Domain, orgs.ErrWorkspaceNotFound)
			}
			return fmt.Errorf("create certificate %q: %w", row.Domain, err)
		}
		cert = row.certificate(now)
		if err := s.changed(ctx, tx, p.WorkspaceID, fmt.Sprintf("certificate %q uploaded", row.Domain)); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: p.WorkspaceID, Action: "certificate.create",
			ObjectType: ObjectCertificate, ObjectID: row.ID.String(), After: cert,
		})
	})
	if err != nil {
		return Certificate{}, err
	}
	s.logger.InfoContext(ctx, "certificate uploaded", "certificate_id", cert.ID, "workspace_id", cert.WorkspaceID,
		"domain", cert.Domain, "expires_at", u.notAfter)
	return cert, nil
}

// validateCreate checks every input of Create and returns the parsed upload and
// the name to store.
func validateCreate(p CreateParams, now time.Time) (upload, string, error) {
	provider := strings.TrimSpace(p.Provider)
	hasPEM := strings.TrimSpace(p.CertificatePEM) != "" || strings.TrimSpace(p.PrivateKeyPEM) != ""
	// An ACME provider, or the ACME request shape without any PEM.
	if (provider != "" && provider != ProviderUpload) || (provider == "" && !hasPEM && strings.TrimSpace(p.Domain) != "") {
		return upload{}, "", app.Invalid("provider", app.FieldInvalidValue, acmeNotEnabled)
	}
	v := &app.Validator{}
	name := strings.TrimSpace(p.Name)
	switch {
	case utf8.RuneCountInString(name) > MaxNameLength:
		v.Add("name", app.FieldTooLong, fmt.Sprintf("must be at most %d characters", MaxNameLength))
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		v.Add("name", app.FieldInvalidFormat, "must not contain control characters")
	}
	v.Check(!p.AutoRenew, "auto_renew", app.FieldInvalidValue,
		"uploaded certificates are not renewed automatically: upload a new certificate before this one expires")
	u, parseErr := parseUpload(p.CertificatePEM, p.PrivateKeyPEM, now)
	if parseErr != nil {
		if err := v.Merge("", parseErr); err != nil {
			return upload{}, "", err
		}
	} else if d := normalizeName(p.Domain); d != "" && d != u.domain {
		v.Add("domain", app.FieldInvalidValue, fmt.Sprintf("must be omitted or equal the certificate's domain %q", u.domain))
	}
	if err := v.Err(); err != nil {
		return upload{}, "", err
	}
	if name == "" {
		name = u.domain
	}
	return u, name, nil
}

// Delete removes a certificate that no virtual host or stream uses, with
// ChangeFunc and the audit row in the same transaction.
func (s *Service) Delete(ctx context.Context, id uuid.UUID) error {
	var deleted Certificate
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var wsIDs []uuid.UUID
		if err := tx.Model(&certificateRow{}).Where("id = ?", id).Limit(1).Pluck("workspace_id", &wsIDs).Error; err != nil {
			return fmt.Errorf("delete certificate %s: %w", id, err)
		}
		if len(wsIDs) == 0 {
			return ErrCertificateNotFound
		}
		orgID, err := lockWorkspace(tx, wsIDs[0])
		if err != nil {
			return err
		}
		var row certificateRow
		err = tx.Select(publicColumns).Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).
			Take(&row, "id = ? AND workspace_id = ?", id, wsIDs[0]).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrCertificateNotFound
		}
		if err != nil {
			return fmt.Errorf("delete certificate %s: %w", id, err)
		}
		if s.usage != nil {
			users, err := s.usage(ctx, tx, id)
			if err != nil {
				return fmt.Errorf("delete certificate %s: list its users: %w", id, err)
			}
			if len(users) > 0 {
				return fmt.Errorf("delete certificate %s: %w", id, &app.InUseError{What: "certificate", Users: users, Hint: "stop using it there first"})
			}
		}
		if err := tx.Delete(&certificateRow{}, "id = ?", id).Error; err != nil {
			if app.IsForeignKeyViolation(err) {
				return fmt.Errorf("delete certificate %s: %w", id, &app.InUseError{What: "certificate", Hint: "stop using it first"})
			}
			return fmt.Errorf("delete certificate %s: %w", id, err)
		}
		deleted = row.certificate(s.now())
		if err := s.changed(ctx, tx, row.WorkspaceID, fmt.Sprintf("certificate %q deleted", row.Domain)); err != nil {
			return err
		}
		return app.Audit(ctx, tx, app.AuditParams{
			OrgID: orgID, WorkspaceID: row.WorkspaceID, Action: "certificate.delete",
			ObjectType: ObjectCertificate, ObjectID: id.String(), Before: deleted,
		})
	})
	if err != nil {
		return err
	}
	s.logger.InfoContext(ctx, "certificate deleted", "certificate_id", id, "workspace_id", deleted.WorkspaceID, "domain", deleted.Domain)
	return nil
}

// users lists the virtual hosts and streams using the certificate with id
// (UsageFunc), as Delete would name them; none without a UsageFunc.
func (s *Service) users(ctx context.Context, id uuid.UUID) ([]string, error) {
	if s.usage == nil {
		return nil, nil
	}
	users, err := s.usage(ctx, s.db.WithContext(ctx), id)
	if err != nil {
		return nil, fmt.Errorf("find users of certificate %s: %w", id, err)
	}
	return users, nil
}

// RefreshStatuses stores the status each certificate with material has now:
// active → expiring (statusAt: from an ACME certificate's renewal time, within
// ExpiringWindow of an upload's expiry) → expired after it. Each
// change gets an audit row (actor: the master). ChangeFunc is not called: the
// material agents receive is unchanged. Rows locked by another replica's refresh
// are skipped; they are being refreshed there.
func (s *Service) RefreshStatuses(ctx context.Context) error {
	now := s.now()
	var changed []Certificate
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []certificateRow
		err := tx.Select(publicColumns).
			Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate, Options: clause.LockingOptionsSkipLocked}).
			Where("status IN ? AND (expires_at < ? OR renew_at <= ?)", []string{StatusActive, StatusExpiring}, now.Add(ExpiringWindow), now).
			Order("expires_at, id").Find(&rows).Error
		if err != nil {
			return fmt.Errorf("refresh certificate statuses: %w", err)
		}
		orgOf := map[uuid.UUID]uuid.UUID{}
		for _, r := range rows {
			status := statusAt(*r.ExpiresAt, r.renewAt(), now)
			if status == r.Status {
				continue
			}
			before := r.certificate(now)
			before.Status = r.Status
			if err := tx.Model(&certificateRow{}).Where("id = ?", r.ID).
				Updates(map[string]any{"status": status, "updated_at": now}).Error; err != nil {
				return fmt.Errorf("set status of certificate %s to %s: %w", r.ID, status, err)
			}
			r.Status, r.UpdatedAt = status, now
			after := r.certificate(now)
			orgID, ok := orgOf[r.WorkspaceID]
			if !ok {
				if orgID, err = workspaceOrg(tx, r.WorkspaceID); err != nil {
					return err
				}
				orgOf[r.WorkspaceID] = orgID
			}
			if err := app.Audit(ctx, tx, app.AuditParams{
				OrgID: orgID, WorkspaceID: r.WorkspaceID, Action: "certificate." + status,
				ObjectType: ObjectCertificate, ObjectID: r.ID.String(), Before: before, After: after,
			}); err != nil {
				return err
			}
			changed = append(changed, after)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range changed {
		s.logger.InfoContext(ctx, "certificate status changed", "certificate_id", c.ID, "workspace_id", c.WorkspaceID,
			"domain", c.Domain, "status", c.Status, "expires_at", c.ExpiresAt)
	}
	return nil
}
