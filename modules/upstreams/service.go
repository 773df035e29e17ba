package upstreams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// ChangeFunc is called inside the transaction of every change to a workspace's
// upstreams, after the rows are written and before the audit row. It records
// a new configuration version of the workspace (the vhosts module's
// ConfigChanged); an error rolls the whole change back. summary describes the
// change (`upstream "api" created`).
type ChangeFunc func(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, summary string) error

// UsageFunc returns the users of an upstream, human-readable
// (`virtual host "api" (<id>)`, `stream "db" (<id>)`), read in tx. Delete
// refuses to remove an upstream that has any.
type UsageFunc func(ctx context.Context, tx *gorm.DB, id uuid.UUID) ([]string, error)

// Options connect the module to the rest of the master: the functions it
// gets from higher modules (main.go fills them). Nil functions do nothing: no
// configuration versions are recorded and no upstream is ever in use, which
// is what tests of this module alone want.
type Options struct {
	// ChangeFunc is vhosts.(*Service).ConfigChanged.
	ChangeFunc ChangeFunc
	// UsageFunc lists the virtual hosts and streams using an upstream.
	UsageFunc UsageFunc
	// HealthFunc reads the agents' health-check verdicts on an upstream's
	// servers (health.go); nil: none are shown.
	HealthFunc HealthFunc
}

// Service is the domain logic of upstreams. Every change runs in one
// transaction that writes the rows, calls ChangeFunc and writes the audit row.
type Service struct {
	db     *gorm.DB
	logger *slog.Logger
	clock  app.Clock
	change ChangeFunc
	usage  UsageFunc
	health HealthFunc
}

// NewService returns a Service over d.DB.
func NewService(d app.Deps, opts Options) *Service {
	s := &Service{db: d.DB, logger: d.Logger, clock: d.Clock, change: opts.ChangeFunc, usage: opts.UsageFunc, health: opts.HealthFunc}
	if s.change == nil {
		s.change = func(context.Context, *gorm.DB, uuid.UUID, string) error { return nil }
	}
	if s.usage == nil {
		s.usage = func(context.Context, *gorm.DB, uuid.UUID) ([]string, error) { return nil, nil }
	}
	return s
}

// ServerInput is a server as a caller sends it; nil fields take their defaults
// (weight 1, max_fails 1, fail_timeout 10).
type ServerInput struct {
	Address     string `json:"address" doc:"host:port; host is an IPv4 address, an IPv6 address in brackets or a DNS name"`
	Weight      *int   `json:"weight" doc:"1 to 1000, default 1"`
	Backup      bool   `json:"backup,omitempty" doc:"default false; not allowed with ip_hash"`
	Down        bool   `json:"down,omitempty" doc:"default false"`
	MaxFails    *int   `json:"max_fails" doc:"0 to 100, default 1"`
	FailTimeout *int   `json:"fail_timeout" doc:"seconds, 0 to 3600, default 10"`
}

func (in ServerInput) server() Server {
	s := Server{
		Address:     in.Address,
		Weight:      DefaultWeight,
		Backup:      in.Backup,
		Down:        in.Down,
		MaxFails:    DefaultMaxFails,
		FailTimeout: DefaultFailTimeout,
	}
	if in.Weight != nil {
		s.Weight = *in.Weight
	}
	if in.MaxFails != nil {
		s.MaxFails = *in.MaxFails
	}
	if in.FailTimeout != nil {
		s.FailTimeout = *in.FailTimeout
	}
	return s
}

func servers(in []ServerInput) []Server {
	out := make([]Server, len(in))
	for i, s := range in {
		out[i] = s.server()
	}
	return out
}

// HealthCheckInput is a health check as a caller sends it. On create nil fields
// take their defaults (see DefaultHealthCheck); on update they keep their
// current values.
type HealthCheckInput struct {
	Enabled            *bool   `json:"enabled"`
	Path               *string `json:"path" doc:"request path starting with /, default /"`
	Interval           *int    `json:"interval" doc:"seconds, 1 to 3600, default 10"`
	Timeout            *int    `json:"timeout" doc:"seconds, 1 to 300 and at most interval, default 5"`
	HealthyThreshold   *int    `json:"healthy_threshold" doc:"1 to 100, default 2"`
	UnhealthyThreshold *int    `json:"unhealthy_threshold" doc:"1 to 100, default 3"`
}

// applyTo sets h's fields from the non-nil fields of in.
func (in *HealthCheckInput) applyTo(h *HealthCheck) {
	if in == nil {
		return
	}
	if in.Enabled != nil {
		h.Enabled = *in.Enabled
	}
	if in.Path != nil {
		h.Path = *in.Path
	}
	if in.Interval != nil {
		h.Interval = *in.Interval
	}
	if in.Timeout != nil {
		h.Timeout = *in.Timeout
	}
	if in.HealthyThreshold != nil {
		h.HealthyThreshold = *in.HealthyThreshold
	}
	if in.UnhealthyThreshold != nil {
		h.UnhealthyThreshold = *in.UnhealthyThreshold
	}
}

func (in *HealthCheckInput) empty() bool {
	return in == nil || *in == HealthCheckInput{}
}

// CreateParams are the inputs of Create. The JSON tags make it the API's
// request body ("omitempty" marks the optional fields in the OpenAPI document).
type CreateParams struct {
	WorkspaceID uuid.UUID `json:"-"`
	Name        string    `json:"name" doc:"1 to 100 printable characters, unique in the workspace (ignoring case)"`
	// Algorithm defaults to round_robin.
	Algorithm            Algorithm         `json:"algorithm,omitempty" doc:"round_robin (default), least_connections, ip_hash or weighted_round_robin"`
	Servers              []ServerInput     `json:"servers" doc:"1 to 1000 servers"`
	KeepaliveConnections int               `json:"keepalive_connections,omitempty" doc:"0 to 10000, default 0 (off)"`
	HealthCheck          *HealthCheckInput `json:"health_check"`
}

// UpdateParams are the changes of Update. Nil fields are left alone; Servers,
// when non-nil, replaces the whole list; HealthCheck changes only the fields it
// sets. At least one field must be set.
type UpdateParams struct {
	Name                 *string           `json:"name"`
	Algorithm            *Algorithm        `json:"algorithm" doc:"round_robin, least_connections, ip_hash or weighted_round_robin"`
	Servers              []ServerInput     `json:"servers,omitempty" doc:"replaces the whole list"`
	KeepaliveConnections *int              `json:"keepalive_connections"`
	HealthCheck          *HealthCheckInput `json:"health_check" doc:"only the fields given change"`
}

func (p UpdateParams) empty() bool {
	return p.Name == nil && p.Algorithm == nil && p.Servers == nil && p.KeepaliveConnections == nil && p.HealthCheck.empty()
}

// now is the timestamp of a write, at PostgreSQL's precision so that what a
// method returns equals what a later read returns.
func (s *Service) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }

// Create validates p and creates the upstream.
func (s *Service) Create(ctx context.Context, p CreateParams) (Upstream, error) {
	u := Upstream{
		ID:                   uuid.New(),
		WorkspaceID:          p.WorkspaceID,
		Name:                 strings.TrimSpace(p.Name),
		Algorithm:            p.Algorithm,
		Servers:              servers(p.Servers),
		KeepaliveConnections: p.KeepaliveConnections,
		HealthCheck:          DefaultHealthCheck(),
	}
	if u.Algorithm == "" {
		u.Algorithm = RoundRobin
	}
	timeoutGiven := p.HealthCheck != nil && p.HealthCheck.Timeout != nil
	p.HealthCheck.applyTo(&u.HealthCheck)
	if !timeoutGiven && u.HealthCheck.Interval >= MinInterval {
		// A short interval lowers the default timeout with it.
		u.HealthCheck.Timeout = min(u.HealthCheck.Timeout, u.HealthCheck.Interval)
	}
	if err := validateUpstream(u, upstreamPaths{serversGiven: true, timeoutGiven: timeoutGiven}); err != nil {
		return Upstream{}, err
	}
	u.CreatedAt = s.now()
	u.UpdatedAt = u.CreatedAt
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		orgID, err := workspaceOrg(tx, u.WorkspaceID)
		if err != nil {
			return err
		}
		if err := lockWorkspace(tx, u.WorkspaceID); err != nil {
			return err
		}
		if err := tx.Create(&u).Error; err != nil {
			switch {
			case app.IsUniqueViolation(err):
				return fmt.Errorf("create upstream %q: %w", u.Name, ErrNameTaken)
			case app.IsForeignKeyViolation(err):
				return fmt.Errorf("create upstream %q: %w", u.Name, orgs.ErrWorkspaceNotFound)
			}
			return fmt.Errorf("create upstream %q: %w", u.Name, err)
		}
		return s.changed(ctx, tx, orgID, "create", nil, &u)
	})
	if err != nil {
		return Upstream{}, err
	}
	return u, nil
}

// List returns a page of a workspace's upstreams, sorted by name, and their
// total.
func (s *Service) List(ctx context.Context, workspaceID uuid.UUID, page app.Page) ([]Upstream, int64, error) {
	return s.Search(ctx, workspaceID, Filter{}, page)
}

// Filter narrows a list of upstreams.
type Filter struct {
	// Q matches, ignoring case, a part of the name or of a server's address;
	// '%' and '_' are plain characters.
	Q string
}

// Search is List narrowed by f: a 422 naming q when it is too long.
func (s *Service) Search(ctx context.Context, workspaceID uuid.UUID, f Filter, page app.Page) ([]Upstream, int64, error) {
	v := &app.Validator{}
	app.CheckSearch(v, "q", f.Q)
	if err := v.Err(); err != nil {
		return nil, 0, err
	}
	q := s.db.WithContext(ctx).Model(&Upstream{}).Where("workspace_id = ?", workspaceID)
	if f.Q != "" {
		pattern := app.ContainsPattern(f.Q)
		q = q.Where(`(name ILIKE ? ESCAPE '\' OR EXISTS (
			SELECT 1 FROM jsonb_array_elements(servers) AS srv WHERE srv->>'address' ILIKE ? ESCAPE '\'))`, pattern, pattern)
	}
	out, total, err := app.FindPage[Upstream](q, page, "name_key, id")
	if err != nil {
		return nil, 0, fmt.Errorf("list upstreams of workspace %s: %w", workspaceID, err)
	}
	return out, total, nil
}

// Get returns the upstream with id.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (Upstream, error) {
	var u Upstream
	err := s.db.WithContext(ctx).Take(&u, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("get upstream %s: %w", id, err)
	}
	return u, nil
}

// Update validates the changes in p against the upstream with id and applies
// them. An update that changes nothing writes nothing (no new configuration
// version, no audit row).
func (s *Service) Update(ctx context.Context, id uuid.UUID, p UpdateParams) (Upstream, error) {
	if p.empty() {
		return Upstream{}, app.Invalid("body", app.FieldRequired,
			"at least one of name, algorithm, servers, keepalive_connections, health_check is required")
	}
	var u Upstream
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if u, err = lockUpstream(tx, id, "NO KEY UPDATE"); err != nil {
			return err
		}
		before := u
		if p.Name != nil {
			u.Name = strings.TrimSpace(*p.Name)
		}
		if p.Algorithm != nil {
			u.Algorithm = *p.Algorithm
		}
		if p.Servers != nil {
			u.Servers = servers(p.Servers)
		}
		if p.KeepaliveConnections != nil {
			u.KeepaliveConnections = *p.KeepaliveConnections
		}
		p.HealthCheck.applyTo(&u.HealthCheck)
		paths := upstreamPaths{serversGiven: p.Servers != nil, timeoutGiven: p.HealthCheck != nil && p.HealthCheck.Timeout != nil}
		if err := validateUpstream(u, paths); err != nil {
			return err
		}
		if reflect.DeepEqual(before, u) {
			return nil
		}
		u.UpdatedAt = s.now()
		err = tx.Model(&u).Select("name", "algorithm", "servers", "keepalive_connections",
			"health_check_enabled", "health_check_path", "health_check_interval", "health_check_timeout",
			"health_check_healthy_threshold", "health_check_unhealthy_threshold", "updated_at").Updates(&u).Error
		if err != nil {
			if app.IsUniqueViolation(err) {
				return fmt.Errorf("update upstream %s: %w", id, ErrNameTaken)
			}
			return fmt.Errorf("update upstream %s: %w", id, err)
		}
		orgID, err := workspaceOrg(tx, u.WorkspaceID)
		if err != nil {
			return err
		}
		return s.changed(ctx, tx, orgID, "update", &before, &u)
	})
	if err != nil {
		return Upstream{}, err
	}
	return u, nil
}

// Delete removes the upstream with id. An upstream that a virtual host or
// stream uses (UsageFunc) is not removed: the error is an *app.InUseError naming
// the users.
func (s *Service) Delete(ctx context.Context, id uuid.UUID) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		u, err := lockUpstream(tx, id, clause.LockingStrengthUpdate)
		if err != nil {
			return err
		}
		users, err := s.usage(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("delete upstream %s: find its users: %w", id, err)
		}
		if len(users) > 0 {
			return fmt.Errorf("delete upstream %s: %w", id, &app.InUseError{What: "upstream", Users: users})
		}
		if err := tx.Delete(&Upstream{}, "id = ?", id).Error; err != nil {
			return fmt.Errorf("delete upstream %s: %w", id, err)
		}
		orgID, err := workspaceOrg(tx, u.WorkspaceID)
		if err != nil {
			return err
		}
		return s.changed(ctx, tx, orgID, "delete", &u, nil)
	})
}

// users lists the virtual hosts and streams using the upstream with id
// (UsageFunc), as Delete would name them.
func (s *Service) users(ctx context.Context, id uuid.UUID) ([]string, error) {
	users, err := s.usage(ctx, s.db.WithContext(ctx), id)
	if err != nil {
		return nil, fmt.Errorf("find users of upstream %s: %w", id, err)
	}
	return users, nil
}

// ListAll returns every upstream of a workspace, sorted by name, read in tx
// (the service's database when tx is nil). The configuration snapshot of a
// workspace stores this list; its order depends on nothing but the names, so
// a restored snapshot lists the same way.
func (s *Service) ListAll(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID) ([]Upstream, error) {
	if tx == nil {
		tx = s.db
	}
	out := []Upstream{}
	if err := tx.WithContext(ctx).Where("workspace_id = ?", workspaceID).Order("name_key, id").Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list all upstreams of workspace %s: %w", workspaceID, err)
	}
	return out, nil
}

// Exists reports whether the workspace has an upstream with id, read in tx
// (the service's database when tx is nil). Inside a transaction it locks the
// row (FOR KEY SHARE) until the transaction ends, so the upstream cannot be
// deleted between the check and the commit of the row that refers to it;
// updates of the upstream are not blocked.
func (s *Service) Exists(ctx context.Context, tx *gorm.DB, workspaceID, id uuid.UUID) (bool, error) {
	if tx == nil {
		tx = s.db
	}
	var ids []uuid.UUID
	err := tx.WithContext(ctx).Model(&Upstream{}).Clauses(clause.Locking{Strength: "KEY SHARE"}).
		Where("id = ? AND workspace_id = ?", id, workspaceID).Limit(1).Pluck("id", &ids).Error
	if err != nil {
		return false, fmt.Errorf("check upstream %s in workspace %s: %w", id, workspaceID, err)
	}
	return len(ids) > 0, nil
}

// ReplaceAll makes a workspace's upstreams exactly ups, in tx (or in a
// transaction of its own when tx is nil or not a transaction): upstreams not
// in ups are deleted, the others are inserted or overwritten with every field
// of ups, ids and timestamps included. It restores a configuration snapshot
// (the output of ListAll) on rollback.
//
// Every upstream is validated as on create (errors name upstreams[i].<field>);
// an id that belongs to another workspace is refused. ReplaceAll neither calls
// ChangeFunc nor writes audit rows: the caller (the rollback) records the
// change once for the whole configuration.
func (s *Service) ReplaceAll(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, ups []Upstream) error {
	if err := checkSnapshot(workspaceID, ups); err != nil {
		return err
	}
	if tx == nil {
		tx = s.db
	}
	if _, err := app.SQLTx(tx); err != nil {
		return tx.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			return s.replaceAll(ctx, tx, workspaceID, ups)
		})
	}
	return s.replaceAll(ctx, tx, workspaceID, ups)
}

// checkSnapshot validates the upstreams given to ReplaceAll.
func checkSnapshot(workspaceID uuid.UUID, ups []Upstream) error {
	v := &app.Validator{}
	ids := make(map[uuid.UUID]int, len(ups))
	names := make(map[string]int, len(ups))
	for i, u := range ups {
		p := fmt.Sprintf("upstreams[%d]", i)
		v.Check(u.ID != uuid.Nil, p+".id", app.FieldRequired, "is required")
		if j, dup := ids[u.ID]; dup && u.ID != uuid.Nil {
			v.Add(p+".id", app.FieldInvalidValue, fmt.Sprintf("duplicates upstreams[%d].id", j))
		}
		ids[u.ID] = i
		v.Check(u.WorkspaceID == workspaceID || u.WorkspaceID == uuid.Nil, p+".workspace_id", app.FieldInvalidValue,
			"must be the workspace being restored")
		key := strings.ToLower(u.Name)
		if j, dup := names[key]; dup {
			v.Add(p+".name", app.FieldInvalidValue, fmt.Sprintf("duplicates upstreams[%d].name", j))
		}
		names[key] = i
		if err := v.Merge(p, validateUpstream(u, upstreamPaths{serversGiven: true, timeoutGiven: true})); err != nil {
			return err
		}
	}
	return v.Err()
}

func (s *Service) replaceAll(ctx context.Context, tx *gorm.DB, workspaceID uuid.UUID, ups []Upstream) error {
	tx = tx.WithContext(ctx)
	// Names may move between upstreams (a rename undone); check uniqueness once
	// every row is in place.
	if err := tx.Exec("SET CONSTRAINTS upstreams_workspace_name_key DEFERRED").Error; err != nil {
		return fmt.Errorf("replace upstreams of workspace %s: defer name check: %w", workspaceID, err)
	}
	ids := make([]uuid.UUID, len(ups))
	for i, u := range ups {
		ids[i] = u.ID
	}
	del := tx.Where("workspace_id = ?", workspaceID)
	if len(ids) > 0 {
		del = del.Where("id NOT IN ?", ids)
	}
	if err := del.Delete(&Upstream{}).Error; err != nil {
		return fmt.Errorf("replace upstreams of workspace %s: delete: %w", workspaceID, err)
	}
	t := s.now()
	for _, u := range ups {
		u.WorkspaceID = workspaceID
		if u.CreatedAt.IsZero() {
			u.CreatedAt = t
		}
		if u.UpdatedAt.IsZero() {
			u.UpdatedAt = t
		}
		res := tx.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "id"}},
			DoUpdates: clause.AssignmentColumns([]string{"name", "algorithm", "servers", "keepalive_connections",
				"health_check_enabled", "health_check_path", "health_check_interval", "health_check_timeout",
				"health_check_healthy_threshold", "health_check_unhealthy_threshold", "created_at", "updated_at"}),
			Where: clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "upstreams.workspace_id = excluded.workspace_id"}}},
		}).Create(&u)
		if res.Error != nil {
			return fmt.Errorf("replace upstreams of workspace %s: write %s: %w", workspaceID, u.ID, res.Error)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("replace upstreams of workspace %s: upstream %s belongs to another workspace: %w",
				workspaceID, u.ID, app.ErrConflict)
		}
	}
	if err := tx.Exec("SET CONSTRAINTS upstreams_workspace_name_key IMMEDIATE").Error; err != nil {
		if app.IsUniqueViolation(err) {
			return fmt.Errorf("replace upstreams of workspace %s: %w", workspaceID, ErrNameTaken)
		}
		return fmt.Errorf("replace upstreams of workspace %s: check names: %w", workspaceID, err)
	}
	return nil
}

// changed completes a change inside its transaction: it records a new
// configuration version of the workspace (ChangeFunc) and the audit row.
// verb is create, update or delete; before and after are the upstream's states
// (nil when absent).
func (s *Service) changed(ctx context.Context, tx *gorm.DB, orgID uuid.UUID, verb string, before, after *Upstream) error {
	u := after
	if u == nil {
		u = before
	}
	summary := fmt.Sprintf("upstream %q %sd", u.Name, verb)
	if err := s.change(ctx, tx, u.WorkspaceID, summary); err != nil {
		return fmt.Errorf("%s upstream %s: record configuration change: %w", verb, u.ID, err)
	}
	p := app.AuditParams{
		OrgID: orgID, WorkspaceID: u.WorkspaceID, Action: objectUpstream + "." + verb,
		ObjectType: objectUpstream, ObjectID: u.ID.String(),
	}
	if before != nil {
		p.Before = *before
	}
	if after != nil {
		p.After = *after
	}
	return app.Audit(ctx, tx, p)
}

// lockWorkspace serializes configuration changes of a workspace: every change
// takes the workspace's row lock (FOR NO KEY UPDATE, the lock the vhosts
// module's ConfigChanged takes) before any object row, so changes and rollbacks
// lock in one order and cannot deadlock.
func lockWorkspace(tx *gorm.DB, workspaceID uuid.UUID) error {
	if err := tx.Exec("SELECT 1 FROM workspaces WHERE id = ? FOR NO KEY UPDATE", workspaceID).Error; err != nil {
		return fmt.Errorf("lock workspace %s: %w", workspaceID, err)
	}
	return nil
}

// lockUpstream locks the upstream's workspace (lockWorkspace), then loads the
// upstream with id and locks its row with strength until tx ends.
func lockUpstream(tx *gorm.DB, id uuid.UUID, strength string) (Upstream, error) {
	var ws []uuid.UUID
	if err := tx.Raw("SELECT workspace_id FROM upstreams WHERE id = ?", id).Scan(&ws).Error; err != nil {
		return Upstream{}, fmt.Errorf("lock upstream %s: %w", id, err)
	}
	if len(ws) == 0 {
		return Upstream{}, ErrNotFound
	}
	if err := lockWorkspace(tx, ws[0]); err != nil {
		return Upstream{}, err
	}
	var u Upstream
	err := tx.Clauses(clause.Locking{Strength: strength}).Take(&u, "id = ?", id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("lock upstream %s: %w", id, err)
	}
	return u, nil
}

// workspaceOrg returns the organization of a workspace.
func workspaceOrg(tx *gorm.DB, workspaceID uuid.UUID) (uuid.UUID, error) {
	var ids []uuid.UUID
	err := tx.Model(&orgs.Workspace{}).Where("id = ?", workspaceID).Limit(1).Pluck("organization_id", &ids).Error
	if err != nil {
		return uuid.Nil, fmt.Errorf("find organization of workspace %s: %w", workspaceID, err)
	}
	if len(ids) == 0 {
		return uuid.Nil, orgs.ErrWorkspaceNotFound
	}
	return ids[0], nil
}
