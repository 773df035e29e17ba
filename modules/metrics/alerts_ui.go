package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/views"
)

// The admin's alert pages:
//
//	GET  /workspaces/:id/alerts               firing alerts, the history (?state=) and the rules
//	GET  /workspaces/:id/alert-rules/new      the rule editor, empty
//	POST /workspaces/:id/alert-rules          create a rule (form)
//	GET  /alert-rules/:id                     the rule editor (read-only without write)
//	POST /alert-rules/:id                     save a rule (form)
//	GET  /alert-rules/:id/delete              confirm the deletion
//	POST /alert-rules/:id/delete              delete a rule
//	GET  /orgs/:id/notification-channels      an organization's channels, and the create form
//	POST /orgs/:id/notification-channels      create a channel (form)
//	GET  /notification-channels/:id           a channel's edit form
//	POST /notification-channels/:id           save a channel (form)
//	GET  /notification-channels/:id/delete    confirm the deletion
//	POST /notification-channels/:id/delete    delete a channel (refused while rules notify it)
//
// Forms call the same service methods as the API; inputs are named after the
// API's JSON fields (scope.label_selector, notify), so each validation error
// is shown next to its input. A channel's secret input is a password field,
// never filled back in: a page never holds a stored or submitted secret.

// SectionChannels is the organization's notification-channels tab.
const SectionChannels = orgs.SectionChannels

// uiAlertPages is how many alerts the history shows per page.
const uiAlertPages = 25

// alertPages are the alert and notification-channel pages: the holder
// shape of the module's other pages (ui.go).
type alertPages struct {
	svc    *Service
	alerts *AlertService
	ui     *app.Pages
}

func (m *Module) mountAlertUI(ui *app.Router) {
	p := &alertPages{svc: m.svc, alerts: m.alerts, ui: m.pages}
	ws := orgs.ScopeWorkspace(m.db, "id")
	rule := m.scopeRule("id")
	org := orgs.ScopeOrg(m.db, "id")
	ch := app.ScopeOrgRow(m.db, "id", "notification_channels", "organization_id", ErrChannelNotFound)
	ui.Get("/workspaces/:id/alerts", app.Require(ObjAlert, authz.Read, ws),
		app.Doc{Summary: "Alerts page: firing alerts, the history and the rules", Query: []string{"state", "page", "per_page"}}, p.uiAlerts)
	ui.Get("/workspaces/:id/alert-rules/new", app.Require(ObjAlertRule, authz.Write, ws),
		app.Doc{Summary: "New alert rule form"}, p.uiNewRule)
	ui.Post("/workspaces/:id/alert-rules", app.Require(ObjAlertRule, authz.Write, ws),
		app.Doc{Summary: "Create an alert rule (form)"}, p.uiCreateRule)
	ui.Get("/alert-rules/:id", app.Require(ObjAlertRule, authz.Read, rule),
		app.Doc{Summary: "Alert rule page with its edit form"}, p.uiShowRule)
	ui.Post("/alert-rules/:id", app.Require(ObjAlertRule, authz.Write, rule),
		app.Doc{Summary: "Save an alert rule (form)"}, p.uiUpdateRule)
	ui.Get("/alert-rules/:id/delete", app.Require(ObjAlertRule, authz.Delete, rule),
		app.Doc{Summary: "Confirm the deletion of an alert rule"}, p.uiConfirmDeleteRule)
	ui.Post("/alert-rules/:id/delete", app.Require(ObjAlertRule, authz.Delete, rule),
		app.Doc{Summary: "Delete an alert rule (form)"}, p.uiDeleteRule)
	ui.Get("/orgs/:id/notification-channels", app.Require(ObjNotificationChannel, authz.Read, org),
		app.Doc{Summary: "Notification channels page of an organization", Query: []string{"page", "per_page"}}, p.uiChannels)
	ui.Post("/orgs/:id/notification-channels", app.Require(ObjNotificationChannel, authz.Write, org),
		app.Doc{Summary: "Create a notification channel (form)"}, p.uiCreateChannel)
	ui.Get("/notification-channels/:id", app.Require(ObjNotificationChannel, authz.Read, ch),
		app.Doc{Summary: "Notification channel page with its edit form"}, p.uiShowChannel)
	ui.Post("/notification-channels/:id", app.Require(ObjNotificationChannel, authz.Write, ch),
		app.Doc{Summary: "Save a notification channel (form)"}, p.uiUpdateChannel)
	ui.Get("/notification-channels/:id/delete", app.Require(ObjNotificationChannel, authz.Delete, ch),
		app.Doc{Summary: "Confirm the deletion of a notification channel"}, p.uiConfirmDeleteChannel)
	ui.Post("/notification-channels/:id/delete", app.Require(ObjNotificationChannel, authz.Delete, ch),
		app.Doc{Summary: "Delete a notification channel (form)"}, p.uiDeleteChannel)
}

func uiAlertsPath(ws uuid.UUID) string  { return "/workspaces/" + ws.String() + "/alerts" }
func uiRulesPath(ws uuid.UUID) string   { return "/workspaces/" + ws.String() + "/alert-rules" }
func uiRulePath(id uuid.UUID) string    { return "/alert-rules/" + id.String() }
func uiChannelsPath(o uuid.UUID) string { return "/orgs/" + o.String() + "/notification-channels" }
func uiChannelPath(id uuid.UUID) string { return "/notification-channels/" + id.String() }

func uiWhen(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// ---- Alerts page ----

type uiAlertRow struct {
	Alert   Alert
	Subject string
}

type uiRuleRow struct {
	Rule      AlertRule
	Condition string
	Scope     string
	Notify    string
}

type alertsPageData struct {
	WorkspaceID uuid.UUID
	Firing      []uiAlertRow
	History     []uiAlertRow
	State       string
	Pager       views.Pager
	Rules       []uiRuleRow
	CanWrite    bool
	CanDelete   bool
	CanRules    bool
}

func (p *alertPages) uiAlerts(c *fiber.Ctx) error {
	ctx := app.Ctx(c)
	ws := app.ScopeOf(c).WorkspaceID
	q, err := ParseAlertQuery(func(n string) string {
		if n == "state" {
			return c.Query(n)
		}
		return ""
	})
	if err != nil {
		return err
	}
	if q.Page, err = app.ParsePage(c); err != nil {
		return err
	}
	if c.Query("per_page") == "" {
		q.Page.PerPage = uiAlertPages
	}
	q.WorkspaceID = ws
	names, err := p.subjectNames(ctx, ws)
	if err != nil {
		return err
	}
	d := alertsPageData{WorkspaceID: ws, State: q.State,
		CanRules:  p.ui.Allowed(c, ObjAlertRule, authz.Read),
		CanWrite:  p.ui.Allowed(c, ObjAlertRule, authz.Write),
		CanDelete: p.ui.Allowed(c, ObjAlertRule, authz.Delete)}
	firing, _, err := p.alerts.Alerts(ctx, AlertQuery{WorkspaceID: ws, State: AlertFiring, Page: app.Page{Page: 1, PerPage: 100}})
	if err != nil {
		return err
	}
	for _, a := range firing {
		d.Firing = append(d.Firing, uiAlertRow{Alert: a, Subject: names.subject(a)})
	}
	hist, total, err := p.alerts.Alerts(ctx, q)
	if err != nil {
		return err
	}
	for _, a := range hist {
		d.History = append(d.History, uiAlertRow{Alert: a, Subject: names.subject(a)})
	}
	query := url.Values{}
	if q.State != "" {
		query.Set("state", q.State)
	}
	d.Pager = views.NewPager(q.Page, total, uiAlertsPath(ws), query)
	if d.CanRules {
		rules, _, err := p.alerts.Rules(ctx, ws, app.Page{Page: 1, PerPage: maxRulesPerSpace})
		if err != nil {
			return err
		}
		channels, err := p.channelNames(ctx, app.ScopeOf(c).OrgID)
		if err != nil {
			return err
		}
		for _, r := range rules {
			var notify []string
			for _, id := range r.Notify {
				notify = append(notify, channels[id])
			}
			if r.Channels.Webhook != nil {
				notify = append(notify, "rule webhook")
			}
			notify = append(notify, r.Channels.Emails...)
			d.Rules = append(d.Rules, uiRuleRow{Rule: r, Condition: uiCondition(r), Scope: names.scope(r.Scope), Notify: strings.Join(notify, ", ")})
		}
	}
	shell, err := p.ui.Shell(c, "Alerts", views.SectionAlerts)
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, alertsPage(d))
}

func uiCondition(r AlertRule) string {
	s := fmt.Sprintf("%s %s %s", r.Metric, r.Operator, formatValue(r.Threshold))
	if r.For != "0s" {
		s += " for " + r.For
	}
	if alertMetrics[r.Metric] == kindTraffic {
		s += " over " + r.Window
	}
	return s
}

// uiNames are the names of a workspace's agents, virtual hosts and
// certificates, for the pages.
type uiNames map[uuid.UUID]string

func (p *alertPages) subjectNames(ctx context.Context, ws uuid.UUID) (uiNames, error) {
	out := uiNames{}
	rows, err := p.svc.pool.Query(ctx, `SELECT id, 'agent ' || name FROM agents WHERE workspace_id = $1
		UNION ALL SELECT id, 'virtual host ' || name FROM virtual_hosts WHERE workspace_id = $1
		UNION ALL SELECT id, 'stream ' || name FROM streams WHERE workspace_id = $1
		UNION ALL SELECT id, 'certificate ' || domain FROM certificates WHERE workspace_id = $1`, ws)
	if err != nil {
		return nil, fmt.Errorf("read names of workspace %s: %w", ws, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			return nil, fmt.Errorf("read names: %w", err)
		}
		out[id] = name
	}
	return out, rows.Err()
}

func (n uiNames) name(id uuid.UUID) string {
	if s, ok := n[id]; ok {
		return s
	}
	return id.String()
}

// subject is what an alert is about.
func (n uiNames) subject(a Alert) string {
	var parts []string
	for _, id := range []*uuid.UUID{a.AgentID, a.VirtualHostID, a.CertificateID} {
		if id != nil {
			parts = append(parts, n.name(*id))
		}
	}
	if len(parts) == 0 {
		return "the workspace"
	}
	return strings.Join(parts, ", ")
}

// scope summarizes a rule's scope.
func (n uiNames) scope(s AlertScope) string {
	switch s.Type {
	case ScopeLabels:
		return "agents with labels " + s.LabelSelector
	case ScopeAgents:
		var names []string
		for _, raw := range s.AgentIDs {
			id, _ := uuid.Parse(raw)
			names = append(names, strings.TrimPrefix(n.name(id), "agent "))
		}
		return "agents " + strings.Join(names, ", ")
	case ScopeVirtualHost:
		id, _ := uuid.Parse(s.VirtualHostID)
		return n.name(id)
	}
	return "the whole workspace"
}

func (p *alertPages) channelNames(ctx context.Context, org uuid.UUID) (map[uuid.UUID]string, error) {
	list, _, err := p.alerts.Channels(ctx, org, app.Page{Page: 1, PerPage: maxChannelsPerOrg})
	if err != nil {
		return nil, err
	}
	out := map[uuid.UUID]string{}
	for _, c := range list {
		out[c.ID] = c.Name
	}
	return out, nil
}

// ---- Rule editor ----

// Input names of the rule editor (the API's JSON fields).
const (
	fRuleName      = "name"
	fRuleMetric    = "metric"
	fRuleOperator  = "operator"
	fRuleThreshold = "threshold"
	fRuleFor       = "for"
	fRuleWindow    = "window"
	fRuleSeverity  = "severity"
	fRuleEnabled   = "enabled"
	fScopeType     = "scope.type"
	fScopeSelector = "scope.label_selector"
	fScopeAgents   = "scope.agent_ids"
	fScopeVHost    = "scope.virtual_host_id"
	fNotify        = "notify"
)

var ruleFields = []string{fRuleName, fRuleMetric, fRuleOperator, fRuleThreshold, fRuleFor, fRuleWindow, fRuleSeverity,
	fRuleEnabled, fScopeType, fScopeSelector, fScopeAgents, fScopeVHost, fNotify, "scope"}

var uiMetricLabels = map[string]string{
	MetricErrorRate: "Error rate (5xx ÷ requests, 0-1)", MetricClientErrorRate: "Client error rate (4xx ÷ requests, 0-1)",
	MetricRequestsPerSecond: "Requests per second", MetricLatencyP50: "Latency p50 (ms)", MetricLatencyP95: "Latency p95 (ms)",
	MetricLatencyP99: "Latency p99 (ms)", MetricCPUPercent: "CPU (%)", MetricMemoryPercent: "Memory (%)", MetricDiskPercent: "Disk (%)",
	MetricLoadAverage1m: "Load average (1 min)", MetricActiveConnections: "Active connections",
	MetricAgentOffline: "Agent offline (1 when offline)",
	MetricAgentAlert:   "Agent's own alert (severity: info 1 … critical 4)", MetricCertificateDaysLeft: "Certificate days left",
}

func uiMetricOptions() []views.Option {
	var out []views.Option
	for _, m := range AlertMetricNames {
		out = append(out, views.Option{Value: m, Label: uiMetricLabels[m]})
	}
	return out
}

var uiOperatorOptions = []views.Option{{Value: ">", Label: "above (>)"}, {Value: ">=", Label: "at or above (>=)"},
	{Value: "<", Label: "below (<)"}, {Value: "<=", Label: "at or below (<=)"}}

func uiSeverityOptions() []views.Option {
	var out []views.Option
	for _, s := range severities {
		out = append(out, views.Option{Value: s, Label: s})
	}
	return out
}

var uiScopeOptions = []views.Option{
	{Value: ScopeAll, Label: "The whole workspace"},
	{Value: ScopeLabels, Label: "Agents matching a label selector"},
	{Value: ScopeAgents, Label: "Listed agents"},
	{Value: ScopeVirtualHost, Label: "One virtual host or stream"},
}

// uiChoice is a checkbox of a group.
type uiChoice struct {
	Value, Label, Note string
	Checked            bool
}

type ruleFormData struct {
	WorkspaceID uuid.UUID
	// Rule is the rule edited, nil on the create form.
	Rule     *AlertRule
	Form     views.Form
	Agents   []uiChoice
	VHosts   []views.Option
	Channels []uiChoice
	// ChannelsPath is the organization's channels page.
	ChannelsPath string
	CSRF         string
	CanWrite     bool
	CanDelete    bool
}

func (d ruleFormData) action() string {
	if d.Rule != nil {
		return uiRulePath(d.Rule.ID)
	}
	return uiRulesPath(d.WorkspaceID)
}

// ruleForm is the rule editor as typed: its inputs, and the agents and
// channels ticked.
type ruleForm struct {
	vals   map[string]string
	agents []string
	notify []string
}

func ruleFormOf(r AlertRule) ruleForm {
	f := ruleForm{vals: map[string]string{
		fRuleName: r.Name, fRuleMetric: r.Metric, fRuleOperator: r.Operator, fRuleThreshold: formatValue(r.Threshold),
		fRuleFor: r.For, fRuleWindow: r.Window, fRuleSeverity: r.Severity, fRuleEnabled: views.CheckedValue(r.Enabled),
		fScopeType: r.Scope.Type, fScopeSelector: r.Scope.LabelSelector, fScopeVHost: r.Scope.VirtualHostID,
	}, agents: r.Scope.AgentIDs}
	for _, id := range r.Notify {
		f.notify = append(f.notify, id.String())
	}
	return f
}

func newRuleForm() ruleForm {
	return ruleForm{vals: map[string]string{fRuleMetric: MetricErrorRate, fRuleOperator: ">", fRuleFor: "0s",
		fRuleWindow: durationText(defaultWindow), fRuleSeverity: "warning", fRuleEnabled: "true", fScopeType: ScopeAll}}
}

func readRuleForm(c *fiber.Ctx) ruleForm {
	vals := views.PostedValues(c)
	f := ruleForm{vals: map[string]string{}}
	for _, n := range ruleFields {
		f.vals[n] = strings.TrimSpace(vals[n])
	}
	for _, v := range c.Request().PostArgs().PeekMulti(fScopeAgents) {
		f.agents = append(f.agents, string(v))
	}
	for _, v := range c.Request().PostArgs().PeekMulti(fNotify) {
		f.notify = append(f.notify, string(v))
	}
	return f
}

// input is the service's input for the form: every field (the inputs of
// the scope types not chosen are ignored).
func (f ruleForm) input() (AlertRuleInput, error) {
	v := f.vals
	in := AlertRuleInput{}
	str := func(name string) *string { s := v[name]; return &s }
	in.Name, in.Metric, in.Operator, in.For, in.Window, in.Severity = str(fRuleName), str(fRuleMetric), str(fRuleOperator),
		str(fRuleFor), str(fRuleWindow), str(fRuleSeverity)
	if v[fRuleName] == "" {
		in.Name = nil // the service names it after its condition
	}
	enabled := views.Checked(v, fRuleEnabled)
	in.Enabled = &enabled
	sc := AlertScope{Type: v[fScopeType]}
	switch sc.Type {
	case ScopeLabels:
		sc.LabelSelector = v[fScopeSelector]
	case ScopeAgents:
		sc.AgentIDs = append([]string{}, f.agents...)
	case ScopeVirtualHost:
		sc.VirtualHostID = v[fScopeVHost]
	}
	in.Scope = &sc
	notify := append([]string{}, f.notify...)
	in.Notify = &notify
	t, err := strconv.ParseFloat(v[fRuleThreshold], 64)
	if err != nil {
		return in, app.Invalid(fRuleThreshold, app.FieldInvalidFormat, "must be a number")
	}
	in.Threshold = &t
	return in, nil
}

// indexed matches a field of a list element: notify[2], scope.agent_ids[0].
var indexed = regexp.MustCompile(`^(.*)\[\d+\]$`)

// groupErrors names the list inputs (one checkbox group each) in err's
// fields instead of their elements.
func groupErrors(err error) error {
	var ve *app.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	out := &app.ValidationError{}
	for _, fe := range ve.Fields {
		if m := indexed.FindStringSubmatch(fe.Field); m != nil {
			fe.Field = m[1]
		}
		out.Fields = append(out.Fields, fe)
	}
	return out
}

func (p *alertPages) renderRuleForm(c *fiber.Ctx, status int, rule *AlertRule, f ruleForm, form views.Form) error {
	ctx := app.Ctx(c)
	scope := app.ScopeOf(c)
	title := "New alert rule"
	if rule != nil {
		title = rule.Name
	}
	shell, err := p.ui.Shell(c, title, views.SectionAlerts)
	if err != nil {
		return err
	}
	form.Values = f.vals
	d := ruleFormData{WorkspaceID: scope.WorkspaceID, Rule: rule, Form: form, CSRF: shell.CSRF,
		ChannelsPath: uiChannelsPath(scope.OrgID),
		CanWrite:     p.ui.Allowed(c, ObjAlertRule, authz.Write),
		CanDelete:    rule != nil && p.ui.Allowed(c, ObjAlertRule, authz.Delete)}
	ticked := func(list []string) map[string]bool {
		out := map[string]bool{}
		for _, s := range list {
			out[strings.ToLower(s)] = true
		}
		return out
	}
	agentSel, notifySel := ticked(f.agents), ticked(f.notify)
	rows, err := p.svc.pool.Query(ctx, `SELECT id, name, state, labels FROM agents WHERE workspace_id = $1 ORDER BY lower(name), id LIMIT 500`, scope.WorkspaceID)
	if err != nil {
		return fmt.Errorf("list agents of workspace %s: %w", scope.WorkspaceID, err)
	}
	for rows.Next() {
		var id uuid.UUID
		var name, state string
		var labels map[string]string
		if err := rows.Scan(&id, &name, &state, &labels); err != nil {
			rows.Close()
			return fmt.Errorf("list agents: %w", err)
		}
		var ls []string
		for k, v := range labels {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		note := state
		if len(ls) > 0 {
			note += " · " + strings.Join(ls, ", ")
		}
		d.Agents = append(d.Agents, uiChoice{Value: id.String(), Label: name, Note: note, Checked: agentSel[id.String()]})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list agents: %w", err)
	}
	d.VHosts = []views.Option{{Value: "", Label: "Choose…"}}
	for _, g := range []struct{ table, kind string }{{"virtual_hosts", "virtual host"}, {"streams", "stream"}} {
		list, err := p.svc.workspaceNames(ctx, g.table, scope.WorkspaceID)
		if err != nil {
			return err
		}
		for _, n := range list {
			d.VHosts = append(d.VHosts, views.Option{Value: n.ID.String(), Label: n.Name + " (" + g.kind + ")"})
		}
	}
	channels, _, err := p.alerts.Channels(ctx, scope.OrgID, app.Page{Page: 1, PerPage: maxChannelsPerOrg})
	if err != nil {
		return err
	}
	for _, ch := range channels {
		note := ch.URL
		if ch.Type == ChannelEmail {
			note = strings.Join(ch.Addresses, ", ")
		}
		d.Channels = append(d.Channels, uiChoice{Value: ch.ID.String(), Label: ch.Name, Note: ch.Type + " · " + note, Checked: notifySel[ch.ID.String()]})
	}
	return views.Page(c, status, shell, ruleFormPage(d))
}

func (p *alertPages) ruleFailed(c *fiber.Ctx, rule *AlertRule, f ruleForm, err error) error {
	form, status, ok := views.FormFromError(groupErrors(err), f.vals, ruleFields...)
	if !ok {
		return err
	}
	return p.renderRuleForm(c, status, rule, f, form)
}

func (p *alertPages) uiNewRule(c *fiber.Ctx) error {
	return p.renderRuleForm(c, http.StatusOK, nil, newRuleForm(), views.Form{})
}

func (p *alertPages) uiCreateRule(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	f := readRuleForm(c)
	in, err := f.input()
	if err == nil {
		var r AlertRule
		if r, err = p.alerts.CreateRule(app.Ctx(c), ws, in); err == nil {
			views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Alert rule %q created.", r.Name)})
			return views.SeeOther(c, uiAlertsPath(ws))
		}
	}
	return p.ruleFailed(c, nil, f, err)
}

func (p *alertPages) uiRule(c *fiber.Ctx) (AlertRule, error) {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return AlertRule{}, ErrRuleNotFound
	}
	return p.alerts.Rule(app.Ctx(c), id)
}

func (p *alertPages) uiShowRule(c *fiber.Ctx) error {
	r, err := p.uiRule(c)
	if err != nil {
		return err
	}
	return p.renderRuleForm(c, http.StatusOK, &r, ruleFormOf(r), views.Form{})
}

func (p *alertPages) uiUpdateRule(c *fiber.Ctx) error {
	r, err := p.uiRule(c)
	if err != nil {
		return err
	}
	f := readRuleForm(c)
	in, err := f.input()
	if err == nil {
		if in.Name == nil {
			in.Name = &r.Name
		}
		var saved AlertRule
		if saved, err = p.alerts.UpdateRule(app.Ctx(c), r.ID, in); err == nil {
			views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Alert rule %q saved.", saved.Name)})
			return views.SeeOther(c, uiAlertsPath(saved.WorkspaceID))
		}
	}
	return p.ruleFailed(c, &r, f, err)
}

func (p *alertPages) uiConfirmDeleteRule(c *fiber.Ctx) error {
	r, err := p.uiRule(c)
	if err != nil {
		return err
	}
	shell, err := p.ui.Shell(c, "Delete alert rule", views.SectionAlerts)
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, views.Confirm(views.ConfirmProps{
		Question: fmt.Sprintf("Delete alert rule %q?", r.Name),
		Details:  []string{"Its alerts stay in the history; firing ones are marked resolved without notifications."},
		Action:   uiRulePath(r.ID) + "/delete", CSRF: shell.CSRF, Button: "Delete alert rule", Cancel: uiRulePath(r.ID),
	}))
}

func (p *alertPages) uiDeleteRule(c *fiber.Ctx) error {
	r, err := p.uiRule(c)
	if err != nil {
		return err
	}
	if err := p.alerts.DeleteRule(app.Ctx(c), r.ID); err != nil {
		return err
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Alert rule %q deleted.", r.Name)})
	return views.SeeOther(c, uiAlertsPath(r.WorkspaceID))
}

// ---- Notification channels ----

// Input names of the channel form (the API's JSON fields).
const (
	fChName      = "name"
	fChType      = "type"
	fChURL       = "url"
	fChSecret    = "secret"
	fChAddresses = "addresses"
)

var channelFields = []string{fChName, fChType, fChURL, fChSecret, fChAddresses}

var uiChannelTypes = []views.Option{{Value: ChannelWebhook, Label: "Webhook (signed JSON POST)"}, {Value: ChannelEmail, Label: "E-mail"}}

type channelsPageData struct {
	OrgID    uuid.UUID
	Channels []NotificationChannel
	Pager    views.Pager
	// Form is the create form.
	Form      views.Form
	CSRF      string
	CanWrite  bool
	CanDelete bool
}

type channelFormData struct {
	Channel   NotificationChannel
	Form      views.Form
	CSRF      string
	CanWrite  bool
	CanDelete bool
}

// channelInput is the service's input for a submitted channel form; an
// empty secret keeps the stored one (edit), addresses are one per line or
// comma-separated.
func channelInput(vals map[string]string, create bool) NotificationChannelInput {
	in := NotificationChannelInput{}
	str := func(name string) *string { s := strings.TrimSpace(vals[name]); return &s }
	in.Name = str(fChName)
	typ := strings.TrimSpace(vals[fChType])
	if create {
		in.Type = &typ
	}
	switch typ {
	case ChannelWebhook:
		in.URL = str(fChURL)
		if vals[fChSecret] != "" {
			sec := vals[fChSecret]
			in.Secret = &sec
		}
	case ChannelEmail:
		addrs := strings.FieldsFunc(vals[fChAddresses], func(r rune) bool { return r == ',' || r == '\n' || r == '\r' || r == ' ' || r == '\t' })
		if addrs == nil {
			addrs = []string{}
		}
		in.Addresses = &addrs
	}
	return in
}

// channelValues are the form's values of a submission, without the secret.
func channelValues(c *fiber.Ctx) map[string]string {
	vals := views.PostedValues(c)
	out := map[string]string{}
	for _, n := range channelFields {
		if n != fChSecret {
			out[n] = vals[n]
		}
	}
	return out
}

func (p *alertPages) renderChannels(c *fiber.Ctx, status int, form views.Form) error {
	org := app.ScopeOf(c).OrgID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	list, total, err := p.alerts.Channels(app.Ctx(c), org, page)
	if err != nil {
		return err
	}
	shell, err := p.ui.Shell(c, "Notification channels", SectionChannels)
	if err != nil {
		return err
	}
	if form.Values == nil {
		form.Values = map[string]string{fChType: ChannelWebhook}
	}
	return views.Page(c, status, shell, channelsPage(channelsPageData{OrgID: org, Channels: list, Form: form, CSRF: shell.CSRF,
		Pager:     views.NewPager(page, total, uiChannelsPath(org), nil),
		CanWrite:  p.ui.Allowed(c, ObjNotificationChannel, authz.Write),
		CanDelete: p.ui.Allowed(c, ObjNotificationChannel, authz.Delete)}))
}

func (p *alertPages) uiChannels(c *fiber.Ctx) error {
	return p.renderChannels(c, http.StatusOK, views.Form{})
}

func (p *alertPages) uiCreateChannel(c *fiber.Ctx) error {
	org := app.ScopeOf(c).OrgID
	vals := channelValues(c)
	ch, err := p.alerts.CreateChannel(app.Ctx(c), org, channelInput(views.PostedValues(c), true))
	if err != nil {
		form, status, ok := views.FormFromError(groupErrors(err), vals, channelFields...)
		if !ok {
			return err
		}
		return p.renderChannels(c, status, form)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Notification channel %q created.", ch.Name)})
	return views.SeeOther(c, uiChannelsPath(org))
}

func (p *alertPages) uiChannel(c *fiber.Ctx) (NotificationChannel, error) {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return NotificationChannel{}, ErrChannelNotFound
	}
	return p.alerts.Channel(app.Ctx(c), id)
}

func channelFormOf(ch NotificationChannel) map[string]string {
	return map[string]string{fChName: ch.Name, fChType: ch.Type, fChURL: ch.URL, fChAddresses: strings.Join(ch.Addresses, "\n")}
}

func (p *alertPages) renderChannel(c *fiber.Ctx, status int, ch NotificationChannel, form views.Form) error {
	shell, err := p.ui.Shell(c, ch.Name, SectionChannels)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, channelFormPage(channelFormData{Channel: ch, Form: form, CSRF: shell.CSRF,
		CanWrite:  p.ui.Allowed(c, ObjNotificationChannel, authz.Write),
		CanDelete: p.ui.Allowed(c, ObjNotificationChannel, authz.Delete)}))
}

func (p *alertPages) uiShowChannel(c *fiber.Ctx) error {
	ch, err := p.uiChannel(c)
	if err != nil {
		return err
	}
	return p.renderChannel(c, http.StatusOK, ch, views.Form{Values: channelFormOf(ch)})
}

func (p *alertPages) uiUpdateChannel(c *fiber.Ctx) error {
	ch, err := p.uiChannel(c)
	if err != nil {
		return err
	}
	posted := views.PostedValues(c)
	posted[fChType] = ch.Type
	vals := channelValues(c)
	vals[fChType] = ch.Type
	saved, err := p.alerts.UpdateChannel(app.Ctx(c), ch.ID, channelInput(posted, false))
	if err != nil {
		form, status, ok := views.FormFromError(groupErrors(err), vals, channelFields...)
		if !ok {
			return err
		}
		return p.renderChannel(c, status, ch, form)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Notification channel %q saved.", saved.Name)})
	return views.SeeOther(c, uiChannelsPath(saved.OrganizationID))
}

func (p *alertPages) renderConfirmChannel(c *fiber.Ctx, status int, ch NotificationChannel, form views.Form) error {
	shell, err := p.ui.Shell(c, "Delete notification channel", SectionChannels)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, views.Confirm(views.ConfirmProps{
		Question: fmt.Sprintf("Delete notification channel %q?", ch.Name),
		Details:  []string{"Alert rules that notify it must stop notifying it first."},
		Form:     form, Action: uiChannelPath(ch.ID) + "/delete", CSRF: shell.CSRF, Button: "Delete channel", Cancel: uiChannelPath(ch.ID),
	}))
}

func (p *alertPages) uiConfirmDeleteChannel(c *fiber.Ctx) error {
	ch, err := p.uiChannel(c)
	if err != nil {
		return err
	}
	return p.renderConfirmChannel(c, http.StatusOK, ch, views.Form{})
}

func (p *alertPages) uiDeleteChannel(c *fiber.Ctx) error {
	ch, err := p.uiChannel(c)
	if err != nil {
		return err
	}
	if err := p.alerts.DeleteChannel(app.Ctx(c), ch.ID); err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderConfirmChannel(c, status, ch, form)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Notification channel %q deleted.", ch.Name)})
	return views.SeeOther(c, uiChannelsPath(ch.OrganizationID))
}
