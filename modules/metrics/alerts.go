package metrics

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/vhosts"
)

// Alert rules and alerts:
//
//  1. A rule watches one metric over its scope (AlertScope: the whole
//     workspace, the agents matching a label selector, listed agents, or one
//     virtual host or stream) and compares it with a threshold (operator >,
//     >=, < or <=). Traffic metrics are computed over the rule's window of
//     per-minute rollups; host metrics from each online agent's newest
//     sample (at most hostSampleMaxAge old); agent_offline is 1 for an
//     offline agent and 0 otherwise; certificate_days_left is computed for
//     each certificate of the workspace (or of the scope's virtual host)
//     that has material.
//  2. The periodic job metrics.alerts (on the elected leader, every
//     metrics.alert_interval) calls AlertService.Evaluate. For each enabled
//     rule and each subject it watches (the whole scope for workspace and
//     virtual-host traffic, each agent, each certificate), a condition that
//     holds is remembered in alert_states with the time it started to hold;
//     when it has held for the rule's for duration an alert fires: an
//     alerts row, the live event health.alert and one notification job per
//     channel, in one transaction.
//  3. When the condition no longer holds (or its subject is gone: agent
//     deleted, out of the scope or back online without samples, certificate
//     deleted), the alert resolves: the row is marked resolved, the event
//     alert.resolved is published and the channels are told, in one
//     transaction.
//  4. Notifications are River jobs (notify.go): one per notification
//     channel the rule names (notify: the organization's channels,
//     channels.go), and for the rule's own webhook and addresses; a failed
//     delivery is retried by River.
//
// Each rule is evaluated in its own transaction holding the rule's row
// lock, so two evaluations that overlap never fire an alert twice.

// Metric names an alert rule may watch.
const (
	MetricErrorRate           = "error_rate"
	MetricClientErrorRate     = "client_error_rate"
	MetricRequestsPerSecond   = "requests_per_second"
	MetricLatencyP50          = "latency_p50_ms"
	MetricLatencyP95          = "latency_p95_ms"
	MetricLatencyP99          = "latency_p99_ms"
	MetricCPUPercent          = "cpu_percent"
	MetricMemoryPercent       = "memory_percent"
	MetricDiskPercent         = "disk_percent"
	MetricLoadAverage1m       = "load_average_1m"
	MetricActiveConnections   = "active_connections"
	MetricAgentOffline        = "agent_offline"
	MetricAgentAlert          = "agent_alert"
	MetricCertificateDaysLeft = "certificate_days_left"
)

// metricKind is where a metric's values come from.
type metricKind int

const (
	kindTraffic metricKind = iota + 1
	kindHost
	kindAgentState
	kindAgentAlert
	kindCertificate
)

// AlertMetrics are the metrics rules may watch, and where they come from.
var alertMetrics = map[string]metricKind{
	MetricErrorRate: kindTraffic, MetricClientErrorRate: kindTraffic, MetricRequestsPerSecond: kindTraffic,
	MetricLatencyP50: kindTraffic, MetricLatencyP95: kindTraffic, MetricLatencyP99: kindTraffic,
	MetricCPUPercent: kindHost, MetricMemoryPercent: kindHost, MetricDiskPercent: kindHost,
	MetricLoadAverage1m: kindHost, MetricActiveConnections: kindHost,
	MetricAgentOffline:        kindAgentState,
	MetricAgentAlert:          kindAgentAlert,
	MetricCertificateDaysLeft: kindCertificate,
}

// AlertMetricNames lists alertMetrics in a stable order, for messages.
var AlertMetricNames = []string{MetricErrorRate, MetricClientErrorRate, MetricRequestsPerSecond,
	MetricLatencyP50, MetricLatencyP95, MetricLatencyP99, MetricCPUPercent, MetricMemoryPercent,
	MetricDiskPercent, MetricLoadAverage1m, MetricActiveConnections, MetricAgentOffline, MetricAgentAlert, MetricCertificateDaysLeft}

// Operators compare a metric's value (left) with the threshold (right).
var operators = map[string]func(v, t float64) bool{
	">":  func(v, t float64) bool { return v > t },
	">=": func(v, t float64) bool { return v >= t },
	"<":  func(v, t float64) bool { return v < t },
	"<=": func(v, t float64) bool { return v <= t },
}

// Severities of a rule (those of the agent protocol's Alert).
var severities = []string{"info", "warning", "error", "critical"}

// Bounds of a rule.
const (
	maxRuleName      = 100
	maxFor           = 24 * time.Hour
	minWindow        = time.Minute
	maxWindow        = 24 * time.Hour
	defaultWindow    = 5 * time.Minute
	maxEmails        = 20
	maxURLLen        = 2048
	minSecretLen     = 16
	maxSecretLen     = 256
	maxRulesPerSpace = 200
	// hostSampleMaxAge is how old an agent's newest host sample may be to
	// be evaluated; older ones (an agent that stopped sending) are ignored.
	hostSampleMaxAge = 2 * time.Minute
)

// Alert event types.
const (
	EventAlert         = "health.alert"
	EventAlertResolved = "alert.resolved"
)

// Alert states.
const (
	AlertFiring   = "firing"
	AlertResolved = "resolved"
)

// Casbin objects of the alert rules and the alert history.
const (
	ObjAlertRule = "metrics.alert_rule"
	ObjAlert     = "metrics.alert"
)

// alertPolicies is the role matrix of the alerts:
//
//	object              read    write     delete
//	metrics.alert_rule  viewer  operator  operator
//	metrics.alert       viewer  -         -
func alertPolicies() []authz.Policy {
	var ps []authz.Policy
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjAlertRule, authz.Read)...)
	ps = append(ps, authz.AtLeast(authz.RoleOperator, ObjAlertRule, authz.Write)...)
	ps = append(ps, authz.AtLeast(authz.RoleOperator, ObjAlertRule, authz.Delete)...)
	ps = append(ps, authz.AtLeast(authz.RoleViewer, ObjAlert, authz.Read)...)
	return ps
}

// Errors of the alerts.
var (
	// ErrRuleNotFound: no alert rule has that id (in that workspace).
	ErrRuleNotFound = fmt.Errorf("%w: alert rule not found", app.ErrNotFound)
	// ErrTooManyRules: the workspace has maxRulesPerSpace rules.
	ErrTooManyRules = fmt.Errorf("%w: a workspace holds at most %d alert rules", app.ErrConflict, maxRulesPerSpace)
)

// ---- API shapes ----

// AlertRule is an alert rule as the API shows it. Webhook secrets are
// never shown: secret_set says whether one is stored.
type AlertRule struct {
	ID          uuid.UUID `json:"id"`
	WorkspaceID uuid.UUID `json:"workspace_id"`
	Name        string    `json:"name"`
	Metric      string    `json:"metric"`
	Operator    string    `json:"operator"`
	Threshold   float64   `json:"threshold"`
	// For is how long the condition must hold before the alert fires (Go
	// duration: "0s", "90s", "5m").
	For string `json:"for"`
	// Window is the range of traffic a traffic metric is computed over.
	Window   string `json:"window"`
	Severity string `json:"severity"`
	// Scope is what the rule watches (AlertScope).
	Scope   AlertScope `json:"scope"`
	Enabled bool       `json:"enabled"`
	// Notify are the ids of the organization's notification channels the
	// rule's alerts are sent to, in order.
	Notify []uuid.UUID `json:"notify"`
	// Channels are the rule's own webhook and addresses, notified besides
	// Notify (kept for rules written before notification channels).
	Channels  Channels `json:"channels"`
	CreatedAt app.Time `json:"created_at"`
	UpdatedAt app.Time `json:"updated_at"`
}

// Scope types of a rule.
const (
	ScopeAll         = "all"
	ScopeLabels      = "labels"
	ScopeAgents      = "agents"
	ScopeVirtualHost = "virtual_host"
)

// maxScopeAgents bounds the agents a rule lists.
const maxScopeAgents = 100

// AlertScope is what a rule watches: {"type":"all"} (the whole workspace,
// the default), {"type":"labels","label_selector":"env=prod,role!=canary"}
// (the agents whose labels match when the rule is evaluated),
// {"type":"agents","agent_ids":[…]} (listed agents of the workspace) or
// {"type":"virtual_host","virtual_host_id":"…"} (one virtual host or
// stream of the workspace). What each means for each kind of metric:
//
//   - traffic metrics: all and virtual_host are one figure over the
//     workspace's or the virtual host's traffic; labels and agents one
//     figure per agent, over that agent's traffic.
//   - host metrics, agent_offline and agent_alert: one figure per agent
//     (agent_alert: per alert the agent reports) — every agent
//     (all), the matching or listed ones, or the agents the virtual host is
//     sent to (its target_agents).
//   - certificate_days_left: certificates are the workspace's, not an
//     agent's: all watches every certificate of the workspace, virtual_host
//     the certificate that virtual host or stream serves; labels and agents
//     are refused.
type AlertScope struct {
	Type string `json:"type" doc:"all (default), labels, agents or virtual_host"`
	// LabelSelector is "key=value,key!=value" (the grammar of a virtual
	// host's target_agents; key!=value also matches agents without the key).
	LabelSelector string   `json:"label_selector,omitempty" doc:"with type labels: comma-separated key=value or key!=value terms"`
	AgentIDs      []string `json:"agent_ids,omitempty" doc:"with type agents: agent UUIDs of the workspace"`
	VirtualHostID string   `json:"virtual_host_id,omitempty" doc:"with type virtual_host: a virtual host or stream UUID of the workspace"`
}

// Channels are a rule's own webhook and addresses.
type Channels struct {
	// Webhook is null when the rule posts to none.
	Webhook *Webhook `json:"webhook"`
	Emails  []string `json:"emails"`
}

// Webhook is a rule's webhook as shown.
type Webhook struct {
	URL       string `json:"url"`
	SecretSet bool   `json:"secret_set"`
}

// AlertRuleInput creates (POST) or changes (PATCH) a rule; in a PATCH an
// absent field is kept. An absent scope is {"type":"all"} on create; notify
// replaces the list; an empty channels.webhook.url removes the webhook.
type AlertRuleInput struct {
	Name      *string        `json:"name"`
	Metric    *string        `json:"metric"`
	Operator  *string        `json:"operator"`
	Threshold *float64       `json:"threshold"`
	For       *string        `json:"for"`
	Window    *string        `json:"window"`
	Severity  *string        `json:"severity"`
	Scope     *AlertScope    `json:"scope"`
	Enabled   *bool          `json:"enabled"`
	Notify    *[]string      `json:"notify" doc:"ids of notification channels of the workspace's organization; replaces the list"`
	Channels  *ChannelsInput `json:"channels" doc:"the rule's own webhook and addresses, notified besides notify"`
}

// ChannelsInput sets a rule's own channels; an absent member is kept.
type ChannelsInput struct {
	Webhook *WebhookInput `json:"webhook"`
	Emails  *[]string     `json:"emails"`
}

// WebhookInput sets a rule's webhook: the URL (http or https) and the
// secret its deliveries are signed with (required with a new webhook; kept
// when absent).
type WebhookInput struct {
	URL    string  `json:"url"`
	Secret *string `json:"secret"`
}

// Alert is one firing of a rule, as the history shows it.
type Alert struct {
	ID            uuid.UUID  `json:"id"`
	WorkspaceID   uuid.UUID  `json:"workspace_id"`
	RuleID        *uuid.UUID `json:"rule_id"`
	RuleName      string     `json:"rule_name"`
	Metric        string     `json:"metric"`
	Operator      string     `json:"operator"`
	Threshold     float64    `json:"threshold"`
	Severity      string     `json:"severity"`
	AgentID       *uuid.UUID `json:"agent_id"`
	VirtualHostID *uuid.UUID `json:"virtual_host_id"`
	CertificateID *uuid.UUID `json:"certificate_id"`
	Value         float64    `json:"value"`
	Message       string     `json:"message"`
	State         string     `json:"state"`
	FiredAt       app.Time   `json:"fired_at"`
	ResolvedAt    *app.Time  `json:"resolved_at"`
	ResolvedValue *float64   `json:"resolved_value"`
}

// AlertQueryNames are the parameters of the alert history.
var AlertQueryNames = []string{"state", "rule_id", "agent_id", "page", "per_page"}

// ---- Service ----

// AlertService holds the alert rules, their evaluation and the alert
// history. Rules and history are read and written through the pgx pool;
// an evaluation's writes go through GORM, whose transaction also carries
// the live event and the River notification jobs.
type AlertService struct {
	db       *gorm.DB
	pool     *pgxpool.Pool
	jobs     *river.Client[*sql.Tx]
	events   app.Publisher
	secrets  app.Secrets
	logger   *slog.Logger
	now      func() time.Time
	interval time.Duration
	mailer   *auth.Mailer
	webhooks *webhookSender
}

func newAlertService(d app.Deps, logger *slog.Logger, now func() time.Time) *AlertService {
	interval := d.Config.Metrics.AlertInterval
	if interval <= 0 {
		interval = app.DefaultMetricsAlertInterval
	}
	return &AlertService{db: d.DB, pool: d.Pool, jobs: d.Jobs, events: d.Events, secrets: d.Secrets,
		logger: logger, now: now, interval: interval, mailer: auth.NewMailer(d.Config.SMTP), webhooks: newWebhookSender()}
}

// ruleRow is an alert_rules row, with the channels it notifies.
type ruleRow struct {
	ID, WorkspaceID      uuid.UUID
	OrgID                uuid.UUID
	Name, Metric, Op     string
	Threshold            float64
	ForSeconds           int
	WindowSec            int
	Severity             string
	ScopeType            string
	ScopeSelector        string
	ScopeAgents          []uuid.UUID
	VHostID              *uuid.UUID
	Enabled              bool
	WebhookURL           string
	Secret               []byte
	Emails               []string
	CreatedAt, UpdatedAt time.Time
	Notify               []ChannelRef
}

const ruleColumns = `r.id, r.workspace_id, w.organization_id, r.name, r.metric, r.operator, r.threshold, r.for_seconds,
	r.window_seconds, r.severity, r.scope_type, r.scope_label_selector, r.scope_agent_ids, r.virtual_host_id, r.enabled,
	r.webhook_url, r.webhook_secret_sealed, r.emails, r.created_at, r.updated_at`

func scanRule(row pgx.Row) (ruleRow, error) {
	var r ruleRow
	err := row.Scan(&r.ID, &r.WorkspaceID, &r.OrgID, &r.Name, &r.Metric, &r.Op, &r.Threshold, &r.ForSeconds,
		&r.WindowSec, &r.Severity, &r.ScopeType, &r.ScopeSelector, &r.ScopeAgents, &r.VHostID, &r.Enabled,
		&r.WebhookURL, &r.Secret, &r.Emails, &r.CreatedAt, &r.UpdatedAt)
	return r, err
}

// scope is the rule's scope as shown.
func (r ruleRow) scope() AlertScope {
	sc := AlertScope{Type: r.ScopeType}
	switch r.ScopeType {
	case ScopeLabels:
		sc.LabelSelector = r.ScopeSelector
	case ScopeAgents:
		sc.AgentIDs = []string{}
		for _, id := range r.ScopeAgents {
			sc.AgentIDs = append(sc.AgentIDs, id.String())
		}
	case ScopeVirtualHost:
		if r.VHostID != nil {
			sc.VirtualHostID = r.VHostID.String()
		}
	}
	return sc
}

func (r ruleRow) api() AlertRule {
	out := AlertRule{ID: r.ID, WorkspaceID: r.WorkspaceID, Name: r.Name, Metric: r.Metric, Operator: r.Op,
		Threshold: r.Threshold, For: durationText(time.Duration(r.ForSeconds) * time.Second),
		Window: durationText(time.Duration(r.WindowSec) * time.Second), Severity: r.Severity, Scope: r.scope(),
		Enabled: r.Enabled, Notify: []uuid.UUID{}, Channels: Channels{Emails: r.Emails},
		CreatedAt: app.Time{Time: r.CreatedAt}, UpdatedAt: app.Time{Time: r.UpdatedAt}}
	for _, c := range r.Notify {
		out.Notify = append(out.Notify, c.ID)
	}
	if out.Channels.Emails == nil {
		out.Channels.Emails = []string{}
	}
	if r.WebhookURL != "" {
		out.Channels.Webhook = &Webhook{URL: r.WebhookURL, SecretSet: len(r.Secret) > 0}
	}
	return out
}

// durationText writes d as Go does, without the trailing zero units
// ("5m", "1h30m", "90s" → "1m30s").
func durationText(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Rules lists a workspace's rules, oldest first.
func (s *AlertService) Rules(ctx context.Context, workspaceID uuid.UUID, p app.Page) ([]AlertRule, int64, error) {
	var total int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM alert_rules WHERE workspace_id = $1`, workspaceID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count alert rules of workspace %s: %w", workspaceID, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+ruleColumns+` FROM alert_rules r JOIN workspaces w ON w.id = r.workspace_id
		WHERE r.workspace_id = $1 ORDER BY r.created_at, r.id LIMIT $2 OFFSET $3`, workspaceID, p.PerPage, p.Offset())
	if err != nil {
		return nil, 0, fmt.Errorf("list alert rules of workspace %s: %w", workspaceID, err)
	}
	var list []ruleRow
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("read alert rule: %w", err)
		}
		list = append(list, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list alert rules of workspace %s: %w", workspaceID, err)
	}
	ids := make([]uuid.UUID, len(list))
	for i, r := range list {
		ids[i] = r.ID
	}
	chans, err := ruleChannels(ctx, s.pool, ids)
	if err != nil {
		return nil, 0, err
	}
	out := []AlertRule{}
	for _, r := range list {
		r.Notify = chans[r.ID]
		out = append(out, r.api())
	}
	return out, total, nil
}

func (s *AlertService) rule(ctx context.Context, q pgx.Tx, id uuid.UUID, lock bool) (ruleRow, error) {
	sqlText := `SELECT ` + ruleColumns + ` FROM alert_rules r JOIN workspaces w ON w.id = r.workspace_id WHERE r.id = $1`
	if lock {
		sqlText += ` FOR UPDATE OF r`
	}
	var qr querier = s.pool
	if q != nil {
		qr = q
	}
	r, err := scanRule(qr.QueryRow(ctx, sqlText, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, ErrRuleNotFound
	}
	if err != nil {
		return r, fmt.Errorf("read alert rule %s: %w", id, err)
	}
	chans, err := ruleChannels(ctx, qr, []uuid.UUID{id})
	if err != nil {
		return r, err
	}
	r.Notify = chans[id]
	return r, nil
}

// Rule returns one rule.
func (s *AlertService) Rule(ctx context.Context, id uuid.UUID) (AlertRule, error) {
	r, err := s.rule(ctx, nil, id, false)
	if err != nil {
		return AlertRule{}, err
	}
	return r.api(), nil
}

// CreateRule validates in and stores a new rule of the workspace. metric,
// operator and threshold are required.
func (s *AlertService) CreateRule(ctx context.Context, workspaceID uuid.UUID, in AlertRuleInput) (AlertRule, error) {
	r := ruleRow{WorkspaceID: workspaceID, Severity: "warning", WindowSec: int(defaultWindow / time.Second), Enabled: true,
		Emails: []string{}, ScopeType: ScopeAll, ScopeAgents: []uuid.UUID{}}
	var v app.Validator
	v.Check(in.Metric != nil, "metric", app.FieldRequired, "is required: one of "+strings.Join(AlertMetricNames, ", "))
	v.Check(in.Operator != nil, "operator", app.FieldRequired, "is required: one of >, >=, <, <=")
	v.Check(in.Threshold != nil, "threshold", app.FieldRequired, "is required: a number")
	var created AlertRule
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT organization_id FROM workspaces WHERE id = $1`, workspaceID).Scan(&r.OrgID); err != nil {
			return fmt.Errorf("read workspace %s: %w", workspaceID, err)
		}
		notify, err := s.apply(ctx, tx, &r, in, &v, true)
		if err != nil {
			return err
		}
		if err := v.Err(); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM alert_rules WHERE workspace_id = $1`, workspaceID).Scan(&n); err != nil {
			return fmt.Errorf("count alert rules of workspace %s: %w", workspaceID, err)
		}
		if n >= maxRulesPerSpace {
			return ErrTooManyRules
		}
		var id uuid.UUID
		if err := tx.QueryRow(ctx, `INSERT INTO alert_rules (workspace_id, name, metric, operator, threshold, for_seconds,
				window_seconds, severity, scope_type, scope_label_selector, scope_agent_ids, virtual_host_id, enabled,
				webhook_url, webhook_secret_sealed, emails)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id`,
			r.WorkspaceID, r.Name, r.Metric, r.Op, r.Threshold, r.ForSeconds, r.WindowSec, r.Severity, r.ScopeType,
			r.ScopeSelector, r.ScopeAgents, r.VHostID, r.Enabled, r.WebhookURL, r.Secret, r.Emails).Scan(&id); err != nil {
			return fmt.Errorf("insert alert rule %q: %w", r.Name, err)
		}
		if notify != nil {
			if err := setRuleChannels(ctx, tx, id, notify); err != nil {
				return err
			}
		}
		got, err := s.rule(ctx, tx, id, false)
		created = got.api()
		return err
	})
	return created, err
}

// UpdateRule changes the fields in sets; a change of what the rule watches
// (metric, operator, threshold, scope, window) starts its pending
// conditions over; firing alerts resolve at the next evaluation when they
// no longer hold.
func (s *AlertService) UpdateRule(ctx context.Context, id uuid.UUID, in AlertRuleInput) (AlertRule, error) {
	var updated AlertRule
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		r, err := s.rule(ctx, tx, id, true)
		if err != nil {
			return err
		}
		var v app.Validator
		notify, err := s.apply(ctx, tx, &r, in, &v, false)
		if err != nil {
			return err
		}
		if err := v.Err(); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE alert_rules SET name = $2, metric = $3, operator = $4, threshold = $5,
				for_seconds = $6, window_seconds = $7, severity = $8, scope_type = $9, scope_label_selector = $10,
				scope_agent_ids = $11, virtual_host_id = $12, enabled = $13, webhook_url = $14, webhook_secret_sealed = $15,
				emails = $16, updated_at = now() WHERE id = $1`,
			id, r.Name, r.Metric, r.Op, r.Threshold, r.ForSeconds, r.WindowSec, r.Severity, r.ScopeType, r.ScopeSelector,
			r.ScopeAgents, r.VHostID, r.Enabled, r.WebhookURL, r.Secret, r.Emails); err != nil {
			return fmt.Errorf("update alert rule %s: %w", id, err)
		}
		if notify != nil {
			if err := setRuleChannels(ctx, tx, id, notify); err != nil {
				return err
			}
		}
		if in.Metric != nil || in.Operator != nil || in.Threshold != nil || in.Scope != nil || in.Window != nil {
			if _, err := tx.Exec(ctx, `DELETE FROM alert_states WHERE rule_id = $1 AND alert_id IS NULL`, id); err != nil {
				return fmt.Errorf("reset pending conditions of alert rule %s: %w", id, err)
			}
		}
		got, err := s.rule(ctx, tx, id, false)
		updated = got.api()
		return err
	})
	return updated, err
}

// DeleteRule deletes a rule; its alerts stay in the history (firing ones
// are marked resolved now, without notifications).
func (s *AlertService) DeleteRule(ctx context.Context, id uuid.UUID) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := s.rule(ctx, tx, id, true); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE alerts SET state = 'resolved', resolved_at = $2 WHERE rule_id = $1 AND state = 'firing'`, id, s.now()); err != nil {
			return fmt.Errorf("resolve alerts of rule %s: %w", id, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM alert_rules WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete alert rule %s: %w", id, err)
		}
		return nil
	})
}

// apply validates in into r (create: every field; update: the fields set).
// Field errors go to v; other errors are returned. notify is the rule's new
// list of channels, nil when in leaves it unchanged.
func (s *AlertService) apply(ctx context.Context, tx pgx.Tx, r *ruleRow, in AlertRuleInput, v *app.Validator, create bool) (notify []uuid.UUID, err error) {
	if in.Metric != nil {
		m := strings.TrimSpace(*in.Metric)
		if v.Check(alertMetrics[m] != 0, "metric", app.FieldInvalidValue, "must be one of "+strings.Join(AlertMetricNames, ", ")) {
			r.Metric = m
		}
	}
	if in.Operator != nil {
		op := strings.TrimSpace(*in.Operator)
		if v.Check(operators[op] != nil, "operator", app.FieldInvalidValue, "must be one of >, >=, <, <=") {
			r.Op = op
		}
	}
	if in.Threshold != nil {
		t := *in.Threshold
		if v.Check(!math.IsNaN(t) && !math.IsInf(t, 0) && math.Abs(t) < 1e15, "threshold", app.FieldInvalidValue, "must be a finite number") {
			r.Threshold = t
		}
	}
	if in.Name != nil {
		n := strings.TrimSpace(*in.Name)
		if v.Check(n != "", "name", app.FieldRequired, "must not be empty") &&
			v.Check(len([]rune(n)) <= maxRuleName, "name", app.FieldTooLong, fmt.Sprintf("at most %d characters", maxRuleName)) {
			v.Check(!strings.ContainsAny(n, "\x00\r\n"), "name", app.FieldInvalidValue, "must be one line of text")
			r.Name = n
		}
	}
	if in.For != nil {
		d, err := time.ParseDuration(strings.TrimSpace(*in.For))
		if v.Check(err == nil, "for", app.FieldInvalidFormat, `must be a duration such as "0s", "90s" or "5m"`) &&
			v.Check(d >= 0 && d <= maxFor && d%time.Second == 0, "for", app.FieldInvalidValue, "must be whole seconds between 0s and 24h") {
			r.ForSeconds = int(d / time.Second)
		}
	}
	if in.Window != nil {
		d, err := time.ParseDuration(strings.TrimSpace(*in.Window))
		if v.Check(err == nil, "window", app.FieldInvalidFormat, `must be a duration such as "1m", "5m" or "1h"`) &&
			v.Check(d >= minWindow && d <= maxWindow && d%time.Minute == 0, "window", app.FieldInvalidValue, "must be whole minutes between 1m and 24h") {
			r.WindowSec = int(d / time.Second)
		}
	}
	if in.Severity != nil {
		sv := strings.TrimSpace(*in.Severity)
		if v.Check(contains(severities, sv), "severity", app.FieldInvalidValue, "must be one of "+strings.Join(severities, ", ")) {
			r.Severity = sv
		}
	}
	if in.Enabled != nil {
		r.Enabled = *in.Enabled
	}
	if in.Scope != nil {
		if err := applyScope(ctx, tx, r, *in.Scope, v); err != nil {
			return nil, err
		}
	}
	if in.Notify != nil {
		if notify, err = checkNotify(ctx, tx, r.OrgID, *in.Notify, v); err != nil {
			return nil, err
		}
	}
	if c := in.Channels; c != nil {
		if c.Emails != nil {
			r.Emails = []string{}
			if len(*c.Emails) > 0 {
				if addrs, ok := s.checkAddresses(*c.Emails, "channels.emails", v); ok {
					r.Emails = addrs
				}
			}
		}
		if w := c.Webhook; w != nil {
			u := strings.TrimSpace(w.URL)
			switch {
			case u == "":
				r.WebhookURL, r.Secret = "", nil
			default:
				if msg := checkWebhookURL(u); v.Check(msg == "", "channels.webhook.url", app.FieldInvalidValue, msg) {
					r.WebhookURL = u
				}
				if w.Secret != nil {
					sec := *w.Secret
					if v.Check(len(sec) >= minSecretLen && len(sec) <= maxSecretLen, "channels.webhook.secret", app.FieldInvalidValue,
						fmt.Sprintf("must be %d to %d bytes", minSecretLen, maxSecretLen)) {
						sealed, err := s.secrets.Seal([]byte(sec))
						if err != nil {
							return nil, fmt.Errorf("seal webhook secret: %w", err)
						}
						r.Secret = sealed
					}
				} else {
					v.Check(len(r.Secret) > 0, "channels.webhook.secret", app.FieldRequired, "is required with a webhook: deliveries are signed with it")
				}
			}
		}
	}
	// Certificates are the workspace's: no agent scope makes sense.
	if alertMetrics[r.Metric] == kindCertificate && (r.ScopeType == ScopeLabels || r.ScopeType == ScopeAgents) {
		v.Add("scope.type", app.FieldInvalidValue, "certificate_days_left watches the workspace's certificates: use all or virtual_host")
	}
	if create && in.Name == nil && r.Metric != "" && r.Op != "" {
		r.Name = fmt.Sprintf("%s %s %s", r.Metric, r.Op, formatValue(r.Threshold))
	}
	return notify, nil
}

// applyScope validates sc into r's scope: its type's member, ids of the
// rule's workspace (scope.agent_ids[i], scope.virtual_host_id).
func applyScope(ctx context.Context, tx pgx.Tx, r *ruleRow, sc AlertScope, v *app.Validator) error {
	only := func(ok bool, field, typ string) {
		v.Check(ok, "scope."+field, app.FieldInvalidValue, `is only allowed with type "`+typ+`"`)
	}
	t := strings.TrimSpace(sc.Type)
	switch t {
	case ScopeAll:
		only(sc.LabelSelector == "", "label_selector", ScopeLabels)
		only(sc.AgentIDs == nil, "agent_ids", ScopeAgents)
		only(sc.VirtualHostID == "", "virtual_host_id", ScopeVirtualHost)
		r.ScopeType, r.ScopeSelector, r.ScopeAgents, r.VHostID = ScopeAll, "", []uuid.UUID{}, nil
	case ScopeLabels:
		only(sc.AgentIDs == nil, "agent_ids", ScopeAgents)
		only(sc.VirtualHostID == "", "virtual_host_id", ScopeVirtualHost)
		sel := strings.TrimSpace(sc.LabelSelector)
		if _, err := vhosts.ParseLabelSelector(sel); err != nil {
			code := app.FieldInvalidFormat
			if sel == "" {
				code = app.FieldRequired
			}
			v.Add("scope.label_selector", code, err.Error())
		}
		r.ScopeType, r.ScopeSelector, r.ScopeAgents, r.VHostID = ScopeLabels, sel, []uuid.UUID{}, nil
	case ScopeAgents:
		only(sc.LabelSelector == "", "label_selector", ScopeLabels)
		only(sc.VirtualHostID == "", "virtual_host_id", ScopeVirtualHost)
		ids := []uuid.UUID{}
		switch {
		case len(sc.AgentIDs) == 0:
			v.Add("scope.agent_ids", app.FieldRequired, "must list at least one agent id")
		case len(sc.AgentIDs) > maxScopeAgents:
			v.Add("scope.agent_ids", app.FieldInvalidValue, fmt.Sprintf("must list at most %d agent ids", maxScopeAgents))
		default:
			seen := map[uuid.UUID]bool{}
			for i, s := range sc.AgentIDs {
				field := fmt.Sprintf("scope.agent_ids[%d]", i)
				id, err := uuid.Parse(strings.TrimSpace(s))
				if !v.Check(err == nil, field, app.FieldInvalidFormat, "must be a UUID") ||
					!v.Check(!seen[id], field, app.FieldInvalidValue, "is listed twice") {
					continue
				}
				seen[id] = true
				var ok bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1 AND workspace_id = $2)`, id, r.WorkspaceID).Scan(&ok); err != nil {
					return fmt.Errorf("find agent %s: %w", id, err)
				}
				if v.Check(ok, field, app.FieldNotFound, "no agent of this workspace has this id") {
					ids = append(ids, id)
				}
			}
		}
		r.ScopeType, r.ScopeSelector, r.ScopeAgents, r.VHostID = ScopeAgents, "", ids, nil
	case ScopeVirtualHost:
		only(sc.LabelSelector == "", "label_selector", ScopeLabels)
		only(sc.AgentIDs == nil, "agent_ids", ScopeAgents)
		r.ScopeType, r.ScopeSelector, r.ScopeAgents, r.VHostID = ScopeVirtualHost, "", []uuid.UUID{}, nil
		s := strings.TrimSpace(sc.VirtualHostID)
		if !v.Check(s != "", "scope.virtual_host_id", app.FieldRequired, "is required with type virtual_host") {
			break
		}
		id, err := uuid.Parse(s)
		if !v.Check(err == nil, "scope.virtual_host_id", app.FieldInvalidFormat, "must be a UUID") {
			break
		}
		var ok bool
		// virtual_hosts and streams are the vhosts module's.
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM virtual_hosts WHERE id = $1 AND workspace_id = $2)
				OR EXISTS (SELECT 1 FROM streams WHERE id = $1 AND workspace_id = $2)`, id, r.WorkspaceID).Scan(&ok); err != nil {
			return fmt.Errorf("find virtual host %s: %w", id, err)
		}
		if v.Check(ok, "scope.virtual_host_id", app.FieldNotFound, "no virtual host or stream of this workspace has this id") {
			r.VHostID = &id
		}
	case "":
		v.Add("scope.type", app.FieldRequired, "must be all, labels, agents or virtual_host")
	default:
		v.Add("scope.type", app.FieldInvalidValue, "must be all, labels, agents or virtual_host")
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// emailAddress is the bare address of s, when s is one.
func emailAddress(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 254 || strings.ContainsAny(s, "\r\n<>\x00 ,") {
		return "", false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || !strings.Contains(s, "@") {
		return "", false
	}
	return s, true
}

// checkWebhookURL is why u is not an acceptable webhook URL ("" when it is):
// http or https, a host, no user information, and not a literal address of
// the link-local or cloud metadata ranges (which are also refused when the
// host name resolves to them, at dial time).
func checkWebhookURL(u string) string {
	if len(u) > maxURLLen {
		return fmt.Sprintf("must be at most %d bytes", maxURLLen)
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.Hostname() == "" {
		return "must be an http:// or https:// URL with a host"
	}
	if p.User != nil {
		return "must not hold user information (use the secret to authenticate deliveries)"
	}
	if p.Fragment != "" {
		return "must not hold a fragment"
	}
	if ip := net.ParseIP(p.Hostname()); ip != nil && blockedIP(ip) {
		return "must not point at a link-local or cloud metadata address"
	}
	return ""
}

func formatValue(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// ---- History ----

// AlertQuery selects alerts of a workspace.
type AlertQuery struct {
	WorkspaceID uuid.UUID
	State       string
	RuleID      uuid.UUID
	AgentID     uuid.UUID
	Page        app.Page
}

// ParseAlertQuery reads state (firing, resolved), rule_id and agent_id.
func ParseAlertQuery(get func(string) string) (AlertQuery, error) {
	var v app.Validator
	var q AlertQuery
	if s := strings.TrimSpace(get("state")); s != "" {
		if v.Check(s == AlertFiring || s == AlertResolved, "state", app.FieldInvalidValue, "must be firing or resolved") {
			q.State = s
		}
	}
	for _, f := range []struct {
		name string
		dst  *uuid.UUID
	}{{"rule_id", &q.RuleID}, {"agent_id", &q.AgentID}} {
		if s := strings.TrimSpace(get(f.name)); s != "" {
			id, err := uuid.Parse(s)
			if v.Check(err == nil, f.name, app.FieldInvalidFormat, "must be a UUID") {
				*f.dst = id
			}
		}
	}
	return q, v.Err()
}

// Alerts lists a workspace's alerts, newest first.
func (s *AlertService) Alerts(ctx context.Context, q AlertQuery) ([]Alert, int64, error) {
	conds := []string{"workspace_id = $1"}
	args := []any{q.WorkspaceID}
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, cond+" $"+strconv.Itoa(len(args)))
	}
	if q.State != "" {
		add("state =", q.State)
	}
	if q.RuleID != uuid.Nil {
		add("rule_id =", q.RuleID)
	}
	if q.AgentID != uuid.Nil {
		add("agent_id =", q.AgentID)
	}
	where := strings.Join(conds, " AND ")
	var total int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM alerts WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count alerts of workspace %s: %w", q.WorkspaceID, err)
	}
	args = append(args, q.Page.PerPage, q.Page.Offset())
	rows, err := s.pool.Query(ctx, `SELECT `+alertColumns+` FROM alerts WHERE `+where+
		` ORDER BY fired_at DESC, id LIMIT $`+strconv.Itoa(len(args)-1)+` OFFSET $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list alerts of workspace %s: %w", q.WorkspaceID, err)
	}
	defer rows.Close()
	out := []Alert{}
	for rows.Next() {
		a, err := scanAlert(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list alerts of workspace %s: %w", q.WorkspaceID, err)
	}
	return out, total, nil
}

const alertColumns = `id, workspace_id, rule_id, rule_name, metric, operator, threshold, severity, agent_id,
	virtual_host_id, certificate_id, value, message, state, fired_at, resolved_at, resolved_value`

func scanAlert(row pgx.Row) (Alert, error) {
	var a Alert
	var fired time.Time
	var resolved *time.Time
	if err := row.Scan(&a.ID, &a.WorkspaceID, &a.RuleID, &a.RuleName, &a.Metric, &a.Operator, &a.Threshold, &a.Severity,
		&a.AgentID, &a.VirtualHostID, &a.CertificateID, &a.Value, &a.Message, &a.State, &fired, &resolved, &a.ResolvedValue); err != nil {
		return a, fmt.Errorf("read alert: %w", err)
	}
	a.FiredAt = app.Time{Time: fired}
	a.ResolvedAt = app.TimePtr(resolved)
	return a, nil
}

// alert reads one alert.
func (s *AlertService) alert(ctx context.Context, id uuid.UUID) (Alert, error) {
	a, err := scanAlert(s.pool.QueryRow(ctx, `SELECT `+alertColumns+` FROM alerts WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, fmt.Errorf("%w: alert %s", app.ErrNotFound, id)
	}
	return a, err
}
