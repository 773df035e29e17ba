package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/vhosts"
)

// ---- Evaluation ----

// observation is a rule's metric for one subject at one evaluation.
type observation struct {
	subject                  string
	value                    float64
	agentID, vhostID, certID *uuid.UUID
	what                     string // "agent web-01", "certificate www.example.com"
}

// EvalResult counts what an evaluation did.
type EvalResult struct {
	Rules, Fired, Resolved int
}

// Evaluate evaluates every enabled rule once (see the top of this file).
// A rule whose evaluation fails is logged and skipped; the error returned
// is the first such failure, after every rule was tried.
func (s *AlertService) Evaluate(ctx context.Context) (EvalResult, error) {
	var res EvalResult
	rows, err := s.pool.Query(ctx, `SELECT r.id FROM alert_rules r WHERE r.enabled
		OR EXISTS (SELECT 1 FROM alert_states st WHERE st.rule_id = r.id) ORDER BY r.id`)
	if err != nil {
		return res, fmt.Errorf("list alert rules: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return res, fmt.Errorf("list alert rules: %w", err)
	}
	var first error
	for _, id := range ids {
		fired, resolved, err := s.evaluateRule(ctx, id)
		if err != nil {
			if errors.Is(err, ErrRuleNotFound) {
				continue
			}
			s.logger.WarnContext(ctx, "evaluate alert rule", "rule_id", id, "error", err)
			if first == nil {
				first = err
			}
			continue
		}
		res.Rules++
		res.Fired += fired
		res.Resolved += resolved
	}
	return res, first
}

type stateRow struct {
	Subject      string
	PendingSince time.Time
	AlertID      *uuid.UUID
}

// evaluateRule evaluates one rule in one transaction holding its row lock.
func (s *AlertService) evaluateRule(ctx context.Context, id uuid.UUID) (fired, resolved int, err error) {
	r, err := s.rule(ctx, nil, id, false)
	if err != nil {
		return 0, 0, err
	}
	now := s.now().UTC()
	var obs []observation
	if r.Enabled {
		if obs, err = s.observe(ctx, r, now); err != nil {
			return 0, 0, err
		}
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var locked []struct{ ID uuid.UUID }
		if err := tx.Raw(`SELECT id FROM alert_rules WHERE id = ? FOR UPDATE`, id).Scan(&locked).Error; err != nil {
			return fmt.Errorf("lock alert rule %s: %w", id, err)
		}
		if len(locked) == 0 {
			return ErrRuleNotFound
		}
		var states []stateRow
		if err := tx.Raw(`SELECT subject, pending_since, alert_id FROM alert_states WHERE rule_id = ?`, id).Scan(&states).Error; err != nil {
			return fmt.Errorf("read states of alert rule %s: %w", id, err)
		}
		byState := map[string]stateRow{}
		for _, st := range states {
			byState[st.Subject] = st
		}
		seen := map[string]observation{}
		cmp := operators[r.Op]
		for _, o := range obs {
			seen[o.subject] = o
			if cmp == nil || !cmp(o.value, r.Threshold) {
				continue
			}
			st, ok := byState[o.subject]
			if !ok {
				st = stateRow{Subject: o.subject, PendingSince: now}
				if err := tx.Exec(`INSERT INTO alert_states (rule_id, subject, pending_since) VALUES (?, ?, ?)`, id, o.subject, now).Error; err != nil {
					return fmt.Errorf("record pending condition of alert rule %s: %w", id, err)
				}
			}
			delete(byState, o.subject)
			if st.AlertID != nil || now.Sub(st.PendingSince) < time.Duration(r.ForSeconds)*time.Second {
				continue
			}
			if err := s.fire(ctx, tx, r, o, now); err != nil {
				return err
			}
			fired++
		}
		// What remains in byState no longer holds (or is gone).
		for subject, st := range byState {
			if st.AlertID != nil {
				var value *float64
				if o, ok := seen[subject]; ok {
					value = &o.value
				}
				if err := s.resolve(ctx, tx, r, *st.AlertID, value, now); err != nil {
					return err
				}
				resolved++
			}
			if err := tx.Exec(`DELETE FROM alert_states WHERE rule_id = ? AND subject = ?`, id, subject).Error; err != nil {
				return fmt.Errorf("clear condition of alert rule %s: %w", id, err)
			}
		}
		return nil
	})
	return fired, resolved, err
}

// fire records and announces a new alert of r for o, in tx.
func (s *AlertService) fire(ctx context.Context, tx *gorm.DB, r ruleRow, o observation, now time.Time) error {
	msg := fmt.Sprintf("%s: %s is %s (%s %s)", r.Name, r.Metric, formatValue(round(o.value)), r.Op, formatValue(r.Threshold))
	if o.what != "" {
		msg += " on " + o.what
	}
	var inserted []struct{ ID uuid.UUID }
	if err := tx.Raw(`INSERT INTO alerts (workspace_id, rule_id, rule_name, subject, metric, operator, threshold, severity,
			agent_id, virtual_host_id, certificate_id, value, message, state, fired_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'firing', ?) RETURNING id`,
		r.WorkspaceID, r.ID, r.Name, o.subject, r.Metric, r.Op, r.Threshold, r.Severity, o.agentID, o.vhostID, o.certID,
		o.value, msg, now).Scan(&inserted).Error; err != nil {
		return fmt.Errorf("record alert of rule %s: %w", r.ID, err)
	}
	if len(inserted) != 1 {
		return fmt.Errorf("record alert of rule %s: no id returned", r.ID)
	}
	alertID := inserted[0].ID
	if err := tx.Exec(`UPDATE alert_states SET alert_id = ? WHERE rule_id = ? AND subject = ?`, alertID, r.ID, o.subject).Error; err != nil {
		return fmt.Errorf("record alert of rule %s: %w", r.ID, err)
	}
	a := Alert{ID: alertID, WorkspaceID: r.WorkspaceID, RuleID: &r.ID, RuleName: r.Name, Metric: r.Metric, Operator: r.Op,
		Threshold: r.Threshold, Severity: r.Severity, AgentID: o.agentID, VirtualHostID: o.vhostID, CertificateID: o.certID,
		Value: o.value, Message: msg, State: AlertFiring, FiredAt: app.Time{Time: now}}
	return s.announce(ctx, tx, r, a, now)
}

// resolve marks alert id resolved and announces it, in tx. value is the
// metric's value now, when its subject is still there.
func (s *AlertService) resolve(ctx context.Context, tx *gorm.DB, r ruleRow, id uuid.UUID, value *float64, now time.Time) error {
	if err := tx.Exec(`UPDATE alerts SET state = 'resolved', resolved_at = ?, resolved_value = ? WHERE id = ?`, now, value, id).Error; err != nil {
		return fmt.Errorf("resolve alert %s: %w", id, err)
	}
	var rows []struct {
		AgentID, VirtualHostID, CertificateID *uuid.UUID
		Value                                 float64
		Message                               string
		FiredAt                               time.Time
	}
	if err := tx.Raw(`SELECT agent_id, virtual_host_id, certificate_id, value, message, fired_at FROM alerts WHERE id = ?`, id).Scan(&rows).Error; err != nil {
		return fmt.Errorf("read alert %s: %w", id, err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("read alert %s: %w", id, app.ErrNotFound)
	}
	row := rows[0]
	resolvedAt := app.Time{Time: now}
	a := Alert{ID: id, WorkspaceID: r.WorkspaceID, RuleID: &r.ID, RuleName: r.Name, Metric: r.Metric, Operator: r.Op,
		Threshold: r.Threshold, Severity: r.Severity, AgentID: row.AgentID, VirtualHostID: row.VirtualHostID,
		CertificateID: row.CertificateID, Value: row.Value, Message: row.Message, State: AlertResolved,
		FiredAt: app.Time{Time: row.FiredAt}, ResolvedAt: &resolvedAt, ResolvedValue: value}
	return s.announce(ctx, tx, r, a, now)
}

// eventData is the data of a health.alert or alert.resolved event
// (and of a webhook delivery).
func eventData(a Alert) map[string]any {
	d := map[string]any{
		"alert_id": a.ID.String(), "severity": a.Severity, "message": a.Message, "metric": a.Metric,
		"value": a.Value, "threshold": a.Threshold, "operator": a.Operator, "state": a.State,
		"rule_name": a.RuleName, "fired_at": a.FiredAt.UTC().Format(time.RFC3339),
	}
	if a.RuleID != nil {
		d["rule_id"] = a.RuleID.String()
	}
	for k, id := range map[string]*uuid.UUID{"agent_id": a.AgentID, "virtual_host_id": a.VirtualHostID, "certificate_id": a.CertificateID} {
		if id != nil {
			d[k] = id.String()
		}
	}
	if a.ResolvedAt != nil {
		d["resolved_at"] = a.ResolvedAt.UTC().Format(time.RFC3339)
		if a.ResolvedValue != nil {
			d["value"] = *a.ResolvedValue
		}
	}
	return d
}

func eventType(state string) string {
	if state == AlertResolved {
		return EventAlertResolved
	}
	return EventAlert
}

// announce publishes a's event and enqueues its notifications, in tx.
func (s *AlertService) announce(ctx context.Context, tx *gorm.DB, r ruleRow, a Alert, now time.Time) error {
	if s.events != nil {
		if err := s.events.Publish(ctx, tx, app.Event{Type: eventType(a.State), OrgID: r.OrgID, WorkspaceID: r.WorkspaceID,
			Data: eventData(a), Timestamp: now, Object: ObjAlert}); err != nil {
			return fmt.Errorf("publish %s of alert %s: %w", eventType(a.State), a.ID, err)
		}
	}
	if s.jobs == nil || (r.WebhookURL == "" && len(r.Emails) == 0 && len(r.Notify) == 0) {
		return nil
	}
	sqlTx, err := app.SQLTx(tx)
	if err != nil {
		return err
	}
	for _, c := range r.Notify {
		if _, err := s.jobs.InsertTx(ctx, sqlTx, ChannelArgs{AlertID: a.ID, State: a.State, ChannelID: c.ID}, nil); err != nil {
			return fmt.Errorf("enqueue notification of alert %s to channel %s: %w", a.ID, c.ID, err)
		}
	}
	if r.WebhookURL != "" {
		if _, err := s.jobs.InsertTx(ctx, sqlTx, WebhookArgs{AlertID: a.ID, State: a.State}, nil); err != nil {
			return fmt.Errorf("enqueue webhook of alert %s: %w", a.ID, err)
		}
	}
	for _, to := range r.Emails {
		if _, err := s.jobs.InsertTx(ctx, sqlTx, EmailArgs{AlertID: a.ID, State: a.State, To: to}, nil); err != nil {
			return fmt.Errorf("enqueue e-mail of alert %s: %w", a.ID, err)
		}
	}
	return nil
}

func round(v float64) float64 { return math.Round(v*1000) / 1000 }

// observe computes r's metric for each subject it watches, now.
func (s *AlertService) observe(ctx context.Context, r ruleRow, now time.Time) ([]observation, error) {
	switch alertMetrics[r.Metric] {
	case kindTraffic:
		return s.observeTraffic(ctx, r, now)
	case kindHost:
		return s.observeHosts(ctx, r, now)
	case kindAgentState:
		return s.observeAgentStates(ctx, r)
	case kindAgentAlert:
		return s.observeAgentAlerts(ctx, r)
	case kindCertificate:
		return s.observeCertificates(ctx, r, now)
	}
	return nil, nil
}

// trafficWindow is the range [from, now) of whole per-minute rollups that
// covers the last window and the current minute: its rates divide by its
// exact length.
func trafficWindow(now time.Time, window time.Duration) (from time.Time, secs float64) {
	from = now.Truncate(time.Minute).Add(-window)
	return from, now.Sub(from).Seconds()
}

// windowTraffic is the traffic of the range: requests, 4xx and 5xx, the
// latency histogram.
type windowTraffic struct {
	requests, s4xx, s5xx int64
	latency              []int64
	secs                 float64
}

func windowTrafficOf(ctx context.Context, pool *pgxpool.Pool, workspaceID, agentID, vhostID uuid.UUID, now time.Time, window time.Duration) (windowTraffic, error) {
	from, secs := trafficWindow(now, window)
	conds := []string{"workspace_id = $1", "bucket >= $2"}
	args := []any{workspaceID, from}
	if agentID != uuid.Nil {
		args = append(args, agentID)
		conds = append(conds, "agent_id = $"+strconv.Itoa(len(args)))
	}
	if vhostID != uuid.Nil {
		args = append(args, vhostID)
		conds = append(conds, "virtual_host_id = $"+strconv.Itoa(len(args)))
	}
	t := windowTraffic{secs: secs}
	err := pool.QueryRow(ctx, `SELECT coalesce(sum(requests), 0)::bigint, coalesce(sum(status_4xx), 0)::bigint,
			coalesce(sum(status_5xx), 0)::bigint, `+sumCounts("latency_counts")+`
		FROM traffic_minute WHERE `+strings.Join(conds, " AND "), args...).Scan(&t.requests, &t.s4xx, &t.s5xx, &t.latency)
	if err != nil {
		return t, fmt.Errorf("read recent traffic of workspace %s: %w", workspaceID, err)
	}
	return t, nil
}

func (t windowTraffic) value(metric string) float64 {
	switch metric {
	case MetricErrorRate:
		if t.requests > 0 {
			return float64(t.s5xx) / float64(t.requests)
		}
	case MetricClientErrorRate:
		if t.requests > 0 {
			return float64(t.s4xx) / float64(t.requests)
		}
	case MetricRequestsPerSecond:
		if t.secs > 0 {
			return float64(t.requests) / t.secs
		}
	case MetricLatencyP50:
		return percentile(t.latency, 0.50)
	case MetricLatencyP95:
		return percentile(t.latency, 0.95)
	case MetricLatencyP99:
		return percentile(t.latency, 0.99)
	}
	return 0
}

// scopeAgent is an agent a rule's scope covers.
type scopeAgent struct {
	id          uuid.UUID
	name, state string
}

// agentsInScope returns the agents of r's workspace its scope covers, in
// any state: every agent (all), those whose labels match now (labels), the
// listed ones still there (agents), or those the virtual host or stream is
// sent to (virtual_host: its target_agents).
func (s *AlertService) agentsInScope(ctx context.Context, r ruleRow) ([]scopeAgent, error) {
	target := vhosts.TargetAgents{Type: vhosts.TargetAll}
	switch r.ScopeType {
	case ScopeLabels:
		target = vhosts.TargetAgents{Type: vhosts.TargetSelector, LabelSelector: r.ScopeSelector}
	case ScopeAgents:
		target = vhosts.TargetAgents{Type: vhosts.TargetAgentList, AgentIDs: []string{}}
		for _, id := range r.ScopeAgents {
			target.AgentIDs = append(target.AgentIDs, id.String())
		}
	case ScopeVirtualHost:
		if r.VHostID == nil {
			return nil, nil
		}
		// virtual_hosts and streams are the vhosts module's.
		var raw []byte
		err := s.pool.QueryRow(ctx, `SELECT target_agents FROM virtual_hosts WHERE id = $1
			UNION ALL SELECT target_agents FROM streams WHERE id = $1 LIMIT 1`, *r.VHostID).Scan(&raw)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil // the virtual host is gone: nothing to watch
		}
		if err != nil {
			return nil, fmt.Errorf("read target agents of virtual host %s: %w", *r.VHostID, err)
		}
		if err := json.Unmarshal(raw, &target); err != nil {
			return nil, fmt.Errorf("read target agents of virtual host %s: %w", *r.VHostID, err)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT id, name, state, labels FROM agents WHERE workspace_id = $1 ORDER BY id`, r.WorkspaceID)
	if err != nil {
		return nil, fmt.Errorf("list agents of workspace %s: %w", r.WorkspaceID, err)
	}
	defer rows.Close()
	var out []scopeAgent
	for rows.Next() {
		var a scopeAgent
		var labels map[string]string
		if err := rows.Scan(&a.id, &a.name, &a.state, &labels); err != nil {
			return nil, fmt.Errorf("read agent: %w", err)
		}
		if target.Matches(a.id, labels) {
			out = append(out, a)
		}
	}
	return out, rows.Err()
}

// perAgent reports whether r's traffic metric is one figure per agent.
func (r ruleRow) perAgent() bool { return r.ScopeType == ScopeLabels || r.ScopeType == ScopeAgents }

func (s *AlertService) observeTraffic(ctx context.Context, r ruleRow, now time.Time) ([]observation, error) {
	window := time.Duration(r.WindowSec) * time.Second
	if !r.perAgent() {
		var vhostID uuid.UUID
		what := ""
		if r.ScopeType == ScopeVirtualHost {
			if r.VHostID == nil {
				return nil, nil
			}
			vhostID = *r.VHostID
			what = "virtual host " + vhostID.String()
			var name string
			err := s.pool.QueryRow(ctx, `SELECT name FROM virtual_hosts WHERE id = $1 UNION ALL SELECT name FROM streams WHERE id = $1 LIMIT 1`, vhostID).Scan(&name)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return nil, fmt.Errorf("read virtual host %s: %w", vhostID, err)
			}
			if name != "" {
				what = "virtual host " + name
			}
		}
		t, err := windowTrafficOf(ctx, s.pool, r.WorkspaceID, uuid.Nil, vhostID, now, window)
		if err != nil {
			return nil, err
		}
		return []observation{{subject: "", value: t.value(r.Metric), vhostID: r.VHostID, what: what}}, nil
	}
	scope, err := s.agentsInScope(ctx, r)
	if err != nil || len(scope) == 0 {
		return nil, err
	}
	ids := make([]uuid.UUID, len(scope))
	for i, a := range scope {
		ids[i] = a.id
	}
	from, secs := trafficWindow(now, window)
	rows, err := s.pool.Query(ctx, `SELECT agent_id, coalesce(sum(requests), 0)::bigint, coalesce(sum(status_4xx), 0)::bigint,
			coalesce(sum(status_5xx), 0)::bigint, `+sumCounts("latency_counts")+`
		FROM traffic_minute WHERE workspace_id = $1 AND bucket >= $2 AND agent_id = ANY($3) GROUP BY agent_id`, r.WorkspaceID, from, ids)
	if err != nil {
		return nil, fmt.Errorf("read recent traffic of workspace %s: %w", r.WorkspaceID, err)
	}
	defer rows.Close()
	byAgent := map[uuid.UUID]windowTraffic{}
	for rows.Next() {
		var id uuid.UUID
		t := windowTraffic{secs: secs}
		if err := rows.Scan(&id, &t.requests, &t.s4xx, &t.s5xx, &t.latency); err != nil {
			return nil, fmt.Errorf("read recent traffic: %w", err)
		}
		byAgent[id] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read recent traffic of workspace %s: %w", r.WorkspaceID, err)
	}
	var out []observation
	for _, a := range scope {
		if a.state == agents.StatePending {
			continue
		}
		t, ok := byAgent[a.id]
		if !ok {
			t = windowTraffic{secs: secs}
		}
		id := a.id
		out = append(out, observation{subject: "agent:" + id.String(), value: t.value(r.Metric), agentID: &id, what: "agent " + a.name})
	}
	return out, nil
}

// scopeFilter is the agent ids r's scope limits an agent query to; all is
// true when it does not limit it.
func (s *AlertService) scopeFilter(ctx context.Context, r ruleRow) (ids []uuid.UUID, all bool, err error) {
	if r.ScopeType == ScopeAll || r.ScopeType == "" {
		return nil, true, nil
	}
	scope, err := s.agentsInScope(ctx, r)
	if err != nil {
		return nil, false, err
	}
	ids = []uuid.UUID{}
	for _, a := range scope {
		ids = append(ids, a.id)
	}
	return ids, false, nil
}

func (s *AlertService) observeHosts(ctx context.Context, r ruleRow, now time.Time) ([]observation, error) {
	ids, all, err := s.scopeFilter(ctx, r)
	if err != nil {
		return nil, err
	}
	q := `SELECT a.id, a.name, h.cpu_percent, h.memory_used_bytes, h.memory_total_bytes, h.disk_used_bytes,
			h.disk_total_bytes, h.load_average_1m, coalesce(h.nginx_active_connections, (a.health->>'active_connections')::bigint, 0)
		FROM agents a JOIN LATERAL (
			SELECT * FROM host_metrics m WHERE m.agent_id = a.id AND m.ts > $3 ORDER BY m.ts DESC LIMIT 1
		) h ON true
		WHERE a.workspace_id = $1 AND a.state = ANY($2)`
	args := []any{r.WorkspaceID, []string{agents.StateOnline, agents.StateDegraded}, now.Add(-hostSampleMaxAge)}
	if !all {
		q += ` AND a.id = ANY($4)`
		args = append(args, ids)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read host metrics of workspace %s: %w", r.WorkspaceID, err)
	}
	defer rows.Close()
	var out []observation
	for rows.Next() {
		var id uuid.UUID
		var name string
		var cpu, load float64
		var memUsed, memTotal, diskUsed, diskTotal, conns int64
		if err := rows.Scan(&id, &name, &cpu, &memUsed, &memTotal, &diskUsed, &diskTotal, &load, &conns); err != nil {
			return nil, fmt.Errorf("read host metrics: %w", err)
		}
		var v float64
		switch r.Metric {
		case MetricCPUPercent:
			v = cpu
		case MetricMemoryPercent:
			v = ratioPercent(memUsed, memTotal)
		case MetricDiskPercent:
			v = ratioPercent(diskUsed, diskTotal)
		case MetricLoadAverage1m:
			v = load
		case MetricActiveConnections:
			v = float64(conns)
		}
		out = append(out, observation{subject: "agent:" + id.String(), value: v, agentID: &id, what: "agent " + name})
	}
	return out, rows.Err()
}

func ratioPercent(used, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return math.Round(float64(used)/float64(total)*100*100) / 100
}

func (s *AlertService) observeAgentStates(ctx context.Context, r ruleRow) ([]observation, error) {
	ids, all, err := s.scopeFilter(ctx, r)
	if err != nil {
		return nil, err
	}
	q := `SELECT id, name, state FROM agents WHERE workspace_id = $1 AND state <> $2`
	args := []any{r.WorkspaceID, agents.StatePending}
	if !all {
		q += ` AND id = ANY($3)`
		args = append(args, ids)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read agent states of workspace %s: %w", r.WorkspaceID, err)
	}
	defer rows.Close()
	var out []observation
	for rows.Next() {
		var id uuid.UUID
		var name, state string
		if err := rows.Scan(&id, &name, &state); err != nil {
			return nil, fmt.Errorf("read agent state: %w", err)
		}
		v := 0.0
		if state == agents.StateOffline {
			v = 1
		}
		out = append(out, observation{subject: "agent:" + id.String(), value: v, agentID: &id, what: "agent " + name})
	}
	return out, rows.Err()
}

// severityRank orders the agent protocol's alert severities (0: unknown).
var severityRank = map[string]float64{"info": 1, "warning": 2, "error": 3, "critical": 4}

// observeAgentAlerts is one observation per alert in the newest health
// report of each agent in scope (subject agent:<id>:alert:<alert id>), its
// value the severity's rank. An alert the agent no longer reports, or an
// agent that went offline, has no observation, so its alert resolves.
func (s *AlertService) observeAgentAlerts(ctx context.Context, r ruleRow) ([]observation, error) {
	ids, all, err := s.scopeFilter(ctx, r)
	if err != nil {
		return nil, err
	}
	// agents.health is the agents module's health summary (HealthAlert
	// objects in "alerts").
	q := `SELECT a.id, a.name, coalesce(al->>'id', ''), coalesce(al->>'severity', ''), coalesce(al->>'message', '')
		FROM agents a CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(a.health->'alerts') = 'array'
			THEN a.health->'alerts' ELSE '[]'::jsonb END) al
		WHERE a.workspace_id = $1 AND a.state = ANY($2)`
	args := []any{r.WorkspaceID, []string{agents.StateOnline, agents.StateDegraded}}
	if !all {
		q += ` AND a.id = ANY($3)`
		args = append(args, ids)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read agent alerts of workspace %s: %w", r.WorkspaceID, err)
	}
	defer rows.Close()
	var out []observation
	for rows.Next() {
		var id uuid.UUID
		var name, alertID, severity, message string
		if err := rows.Scan(&id, &name, &alertID, &severity, &message); err != nil {
			return nil, fmt.Errorf("read agent alert: %w", err)
		}
		if alertID == "" {
			alertID = message
		}
		what := "agent " + name
		if message != "" {
			what += " (" + severity + ": " + message + ")"
		}
		out = append(out, observation{subject: "agent:" + id.String() + ":alert:" + alertID, value: severityRank[severity], agentID: &id, what: what})
	}
	return out, rows.Err()
}

func (s *AlertService) observeCertificates(ctx context.Context, r ruleRow, now time.Time) ([]observation, error) {
	// certificates are the certs module's, virtual_hosts and streams the
	// vhosts module's. A virtual_host scope watches the certificate the
	// virtual host or stream serves; any other scope every certificate.
	q := `SELECT id, domain, expires_at FROM certificates
		WHERE workspace_id = $1 AND expires_at IS NOT NULL AND status IN ('active', 'expiring', 'expired')`
	args := []any{r.WorkspaceID}
	if r.ScopeType == ScopeVirtualHost {
		q += ` AND id IN (SELECT ssl_certificate_id FROM virtual_hosts WHERE id = $2
			UNION SELECT ssl_certificate_id FROM streams WHERE id = $2)`
		args = append(args, r.VHostID)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read certificates of workspace %s: %w", r.WorkspaceID, err)
	}
	defer rows.Close()
	var out []observation
	for rows.Next() {
		var id uuid.UUID
		var domain string
		var expires time.Time
		if err := rows.Scan(&id, &domain, &expires); err != nil {
			return nil, fmt.Errorf("read certificate: %w", err)
		}
		days := math.Round(expires.Sub(now).Hours()/24*100) / 100
		out = append(out, observation{subject: "certificate:" + id.String(), value: days, certID: &id, what: "certificate " + domain})
	}
	return out, rows.Err()
}
