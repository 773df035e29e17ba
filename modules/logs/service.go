package logs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxmesh/nxmesh/app"
)

// Service holds the module's domain logic: queries, settings, partitions and
// retention. Every statement goes through the pgx pool (COPY and row
// streaming need it; GORM adds nothing to these tables).
type Service struct {
	pool      *pgxpool.Pool
	logger    *slog.Logger
	retention time.Duration
	now       app.Clock

	// partitions are access_logs' daily partitions.
	partitions *app.DailyPartitions
}

// NewService returns the service over d.Pool, keeping lines for
// logs.retention (d.Config.Logs.Retention; less than a day means
// app.DefaultLogsRetention). The service uses no option (opts.Ingest
// configures the module's ingest queue).
func NewService(d app.Deps, _ Options) *Service {
	retention := d.Config.Logs.Retention
	if retention < 24*time.Hour {
		retention = app.DefaultLogsRetention
	}
	return &Service{pool: d.Pool, logger: d.Logger, retention: retention, now: d.Clock, partitions: app.NewDailyPartitions(d.Pool, "access_logs", "ts", partitionLock)}
}

// GlobalRetentionDays is logs.retention in whole days (rounded up).
func (s *Service) GlobalRetentionDays() int {
	return int(math.Ceil(float64(s.retention) / float64(24*time.Hour)))
}

// ---- Access logs ----

const entryColumns = `id, agent_id, workspace_id, ts, remote_addr, method, uri, protocol, host, status, body_bytes_sent,
	request_time_ms, user_agent, referer, request_id, virtual_host_id, request_length, bytes_sent, upstream_addr,
	upstream_response_time_ms, scheme, server_port, kind, stream_id`

func scanEntry(row pgx.Row) (Entry, error) {
	var e Entry
	var vh pgtype.UUID
	var ts time.Time
	err := row.Scan(&e.ID, &e.AgentID, &e.workspaceID, &ts, &e.RemoteAddr, &e.Method, &e.URI, &e.Protocol, &e.Host, &e.Status,
		&e.BodyBytesSent, &e.ResponseTimeMs, &e.UserAgent, &e.Referer, &e.RequestID, &vh, &e.RequestLength, &e.BytesSent,
		&e.UpstreamAddr, &e.UpstreamResponseTimeMs, &e.Scheme, &e.ServerPort, &e.Kind, &e.StreamID)
	if err != nil {
		return e, err
	}
	e.Timestamp = Millis{ts.UTC()}
	if vh.Valid {
		id := uuid.UUID(vh.Bytes)
		e.VirtualHostID = &id
	}
	return e, nil
}

// where is q's filter as SQL conditions with their arguments; withCursor
// adds the keyset position.
func (q Query) where(withCursor bool) (string, []any) {
	conds := []string{"workspace_id = $1", "ts >= $2", "ts <= $3"}
	args := []any{q.WorkspaceID, q.From, q.To}
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if q.Status != 0 {
		add("status = ?", q.Status)
	}
	if q.StatusClass != 0 {
		add("status >= ?", q.StatusClass*100)
		add("status < ?", q.StatusClass*100+100)
	}
	if q.Host != "" {
		add("lower(host) = lower(?)", q.Host)
	}
	if q.Method != "" {
		add("method = ?", q.Method)
	}
	if q.URIPrefix != "" {
		add("starts_with(uri, ?)", q.URIPrefix)
	}
	if q.RemoteAddr != "" {
		add("remote_addr = ?", q.RemoteAddr)
	}
	if q.AgentID != uuid.Nil {
		add("agent_id = ?", q.AgentID)
	}
	if q.VirtualHostID != uuid.Nil {
		add("virtual_host_id = ?", q.VirtualHostID)
	}
	if withCursor && q.After != nil {
		args = append(args, q.After.TS, q.After.ID)
		conds = append(conds, fmt.Sprintf("(ts, id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	return strings.Join(conds, " AND "), args
}

// AccessLogs returns one page of q, newest first, with the number of entries
// matching q's window and filters.
func (s *Service) AccessLogs(ctx context.Context, q Query) (Page[Entry], error) {
	limit := q.Limit
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	page := Page[Entry]{Data: []Entry{}, Meta: PageMeta{Limit: limit}}
	cond, args := q.where(true)
	rows, err := s.pool.Query(ctx, "SELECT "+entryColumns+" FROM access_logs WHERE "+cond+
		" ORDER BY ts DESC, id DESC LIMIT "+strconv.Itoa(limit+1), args...)
	if err != nil {
		return page, fmt.Errorf("query access logs: %w", err)
	}
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			rows.Close()
			return page, fmt.Errorf("read access log: %w", err)
		}
		page.Data = append(page.Data, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("query access logs: %w", err)
	}
	if len(page.Data) > limit {
		page.Data = page.Data[:limit]
		last := page.Data[limit-1]
		page.Meta.NextCursor = Cursor{TS: last.Timestamp.Time, ID: last.ID}.Encode()
	}
	cond, args = q.where(false)
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM access_logs WHERE "+cond, args...).Scan(&page.Meta.Total); err != nil {
		return page, fmt.Errorf("count access logs: %w", err)
	}
	return page, nil
}

// ExportAccessLogs calls fn for every entry of q (no limit), newest first,
// reading the rows as they come.
func (s *Service) ExportAccessLogs(ctx context.Context, q Query, fn func(*Entry) error) error {
	cond, args := q.where(true)
	rows, err := s.pool.Query(ctx, "SELECT "+entryColumns+" FROM access_logs WHERE "+cond+" ORDER BY ts DESC, id DESC", args...)
	if err != nil {
		return fmt.Errorf("export access logs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return fmt.Errorf("read access log: %w", err)
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export access logs: %w", err)
	}
	return nil
}

// ---- Error logs ----

// ErrorLogs returns an agent's error-log lines in q's window, newest first.
func (s *Service) ErrorLogs(ctx context.Context, q ErrorQuery) (Page[ErrorLine], error) {
	limit := q.Limit
	if limit <= 0 || limit > MaxLimit {
		limit = MaxLimit
	}
	page := Page[ErrorLine]{Data: []ErrorLine{}, Meta: PageMeta{Limit: limit}}
	cond := "agent_id = $1 AND ts >= $2 AND ts <= $3"
	args := []any{q.AgentID, q.From, q.To}
	if len(q.Levels) > 0 {
		cond += " AND level = ANY($4)"
		args = append(args, q.Levels)
	}
	rows, err := s.pool.Query(ctx, "SELECT id, agent_id, ts, level, message, fields FROM error_logs WHERE "+cond+
		" ORDER BY ts DESC, id DESC LIMIT "+strconv.Itoa(limit), args...)
	if err != nil {
		return page, fmt.Errorf("query error logs: %w", err)
	}
	for rows.Next() {
		var l ErrorLine
		var ts time.Time
		var fields []byte
		if err := rows.Scan(&l.ID, &l.AgentID, &ts, &l.Level, &l.Message, &fields); err != nil {
			rows.Close()
			return page, fmt.Errorf("read error log: %w", err)
		}
		l.Timestamp = Millis{ts.UTC()}
		l.Fields = map[string]string{}
		_ = json.Unmarshal(fields, &l.Fields)
		page.Data = append(page.Data, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("query error logs: %w", err)
	}
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM error_logs WHERE "+cond, args...).Scan(&page.Meta.Total); err != nil {
		return page, fmt.Errorf("count error logs: %w", err)
	}
	return page, nil
}

// ---- Settings ----

// Settings returns a workspace's log settings.
func (s *Service) Settings(ctx context.Context, workspaceID uuid.UUID) (Settings, error) {
	global := s.GlobalRetentionDays()
	out := Settings{RetentionDays: global, GlobalRetentionDays: global}
	var days int
	err := s.pool.QueryRow(ctx, "SELECT retention_days FROM logs_settings WHERE workspace_id = $1", workspaceID).Scan(&days)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return out, nil
	case err != nil:
		return out, fmt.Errorf("read log settings of workspace %s: %w", workspaceID, err)
	}
	if days < global {
		out.RetentionDays, out.Override = days, true
	}
	return out, nil
}

// SetSettings sets a workspace's retention: retention_days from 1 to the
// global retention in days; the global value removes the override.
func (s *Service) SetSettings(ctx context.Context, workspaceID uuid.UUID, p SettingsParams) (Settings, error) {
	global := s.GlobalRetentionDays()
	var v app.Validator
	if v.Check(p.RetentionDays != nil, "retention_days", app.FieldRequired, "is required") {
		v.Check(*p.RetentionDays >= 1 && *p.RetentionDays <= global, "retention_days", app.FieldInvalidValue,
			fmt.Sprintf("must be from 1 to %d (logs.retention); a workspace may only keep its logs for less", global))
	}
	if err := v.Err(); err != nil {
		return Settings{}, err
	}
	var err error
	if *p.RetentionDays == global {
		_, err = s.pool.Exec(ctx, "DELETE FROM logs_settings WHERE workspace_id = $1", workspaceID)
	} else {
		_, err = s.pool.Exec(ctx, `INSERT INTO logs_settings (workspace_id, retention_days, updated_at) VALUES ($1, $2, now())
			ON CONFLICT (workspace_id) DO UPDATE SET retention_days = EXCLUDED.retention_days, updated_at = now()`,
			workspaceID, *p.RetentionDays)
	}
	if err != nil {
		return Settings{}, fmt.Errorf("store log settings of workspace %s: %w", workspaceID, err)
	}
	return s.Settings(ctx, workspaceID)
}

// workspaceNames lists at most limit agents or virtual hosts (table) of
// workspace ws by name, for the Logs page's filters (read only; the agents
// and vhosts modules own the tables).
func (s *Service) workspaceNames(ctx context.Context, table string, ws uuid.UUID, limit int) ([]app.Named, error) {
	return app.WorkspaceNames(ctx, s.pool, table, ws, limit)
}
