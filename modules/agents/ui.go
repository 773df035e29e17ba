package agents

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
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

// The admin pages of agents, a tab of each workspace:
//
//	GET  /workspaces/:id/agents   the agents with their live state, and "Add agent"
//	POST /workspaces/:id/agents   add an agent: its registration token and install command, shown once
//	GET  /agents/:id              an agent: health, configuration state, commands, settings
//	POST /agents/:id              rename, relabel (re-targets it at once), auto-restart
//	POST /agents/:id/reload       reload nginx and show the agent's answer
//	POST /agents/:id/commands     restart, validate_config or get_status; results appear below
//	POST /agents/:id/tokens       a new registration token (reinstall), shown once
//	POST /agents/:id/delete       delete the agent
//
// Handlers call the same service methods as the API. The list and the
// agent's state refresh themselves: the page opens the live event stream
// (/v1/events/stream, htmx's SSE extension, authenticated by the session
// cookie) for the workspace's agent.*, config.* and health.* events, and each
// event makes the live part re-fetch itself from the same route (the
// handler answers an htmx request targeting it with that fragment only). A
// slow poll covers what sends no event (heartbeat numbers) and browsers that
// lost the stream; the commands table polls every 2 s while a command waits
// for its answer.

const (
	uiListTarget     = "agent-list"
	uiLiveTarget     = "agent-live"
	uiCommandsTarget = "agent-commands"
	uiCommandsShown  = 10
)

// pages holds the admin handlers: the service and the shared navigation and
// permission checks of the admin.
type pages struct {
	svc *Service
	ui  *app.Pages
}

// mountUI mounts the admin pages; Routes calls it with the UI router.
func (m *Module) mountUI(ui *app.Router) {
	p := &pages{svc: m.svc, ui: m.pages}
	ws := orgs.ScopeWorkspace(m.db, "id")
	agent := ScopeAgent(m.db, "id")
	ui.Get("/workspaces/:id/agents", app.Require(ObjAgent, authz.Read, ws),
		app.Doc{Summary: "Agents page (live)", Query: []string{"state", "label_selector", "page", "per_page"}}, p.list)
	ui.Post("/workspaces/:id/agents", app.Require(ObjAgent, authz.Write, ws),
		app.Doc{Summary: "Add an agent (form; shows its install command once)"}, p.create)
	ui.Get("/agents/:id", app.Require(ObjAgent, authz.Read, agent),
		app.Doc{Summary: "Agent page (live)"}, p.show)
	ui.Post("/agents/:id", app.Require(ObjAgent, authz.Write, agent),
		app.Doc{Summary: "Rename or relabel an agent, or set its auto-restart (form)"}, p.update)
	ui.Post("/agents/:id/reload", app.Require(ObjCommand, authz.Write, agent),
		app.Doc{Summary: "Reload nginx on an agent (form)"}, p.reload)
	ui.Post("/agents/:id/commands", app.Require(ObjCommand, authz.Write, agent),
		app.Doc{Summary: "Send restart, validate_config or get_status to an agent (form)"}, p.command)
	ui.Post("/agents/:id/tokens", app.Require(ObjAgent, authz.Write, agent),
		app.Doc{Summary: "Issue a new registration token for an agent (form; shows it once)"}, p.newToken)
	ui.Post("/agents/:id/delete", app.Require(ObjAgent, authz.Delete, agent),
		app.Doc{Summary: "Delete an agent (form)"}, p.delete)
}

// ---- Helpers ----

func uiListPath(ws uuid.UUID) string  { return "/workspaces/" + ws.String() + "/agents" }
func uiAgentPath(id uuid.UUID) string { return "/agents/" + id.String() }

// uiStreamURL is the live event stream of a workspace's agents.
func uiStreamURL(ws uuid.UUID) string {
	return "/v1/events/stream?" + url.Values{
		"workspace_id": {ws.String()},
		"events":       {"agent.*,config.*,health.*"},
	}.Encode()
}

// uiFragmentFor reports whether c is htmx refreshing the element with id target.
func uiFragmentFor(c *fiber.Ctx, target string) bool {
	return views.IsHTMX(c) && c.Get("HX-Target") == target
}

func uiFormValues(c *fiber.Ctx, names ...string) map[string]string {
	out := make(map[string]string, len(names))
	for _, n := range names {
		out[n] = c.FormValue(n)
	}
	return out
}

// uiParseLabels reads "key=value" pairs separated by commas or new lines.
func uiParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, line := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' || r == ',' }) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, app.Invalid("labels", app.FieldInvalidFormat, fmt.Sprintf("%q: write one key=value per line", line))
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// uiFormatLabels is the editor's text of labels, one key=value per line.
func uiFormatLabels(l map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(l)) {
		b.WriteString(k + "=" + l[k] + "\n")
	}
	return b.String()
}

// uiParseHours reads an optional expires_in_hours field.
func uiParseHours(s string) (*int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	h, err := strconv.Atoi(s)
	if err != nil {
		return nil, app.Invalid("expires_in_hours", app.FieldInvalidFormat, "must be a whole number of hours")
	}
	return &h, nil
}

// uiFormError re-renders a form's errors: the service names label errors
// labels.<key>, which the labels editor shows as one field.
func uiFormError(err error, vals map[string]string, fields ...string) (views.Form, int, bool) {
	var ve *app.ValidationError
	if errors.As(err, &ve) {
		cp := &app.ValidationError{Fields: slices.Clone(ve.Fields)}
		for i, f := range cp.Fields {
			if strings.HasPrefix(f.Field, "labels.") {
				cp.Fields[i].Field = "labels"
				cp.Fields[i].Message = fmt.Sprintf("label %q %s", strings.TrimPrefix(f.Field, "labels."), f.Message)
			}
		}
		err = cp
	}
	return views.FormFromError(err, vals, fields...)
}

func uiWhen(t *app.Time) string {
	if t == nil || t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// uiAgo is a short relative time ("12s ago").
func uiAgo(t *app.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	d := now.Sub(t.Time).Round(time.Second)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func uiDuration(seconds uint64) string {
	d := time.Duration(seconds) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", seconds)
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours()/24), int(d.Hours())%24)
}

// uiStateClass is the badge style of an agent state.
func uiStateClass(state string) string {
	switch state {
	case StateOnline:
		return "badge operator"
	case StateDegraded:
		return "badge owner"
	case StateOffline:
		return "badge revoked"
	}
	return "badge admin"
}

// uiApplyClass is the badge style of an apply or command status.
func uiApplyClass(status string) string {
	switch status {
	case ApplySuccess, CommandSucceeded:
		return "badge operator"
	case ApplyFailed, ApplyRolledBack: // CommandFailed is "failed" too
		return "badge revoked"
	case "":
		return "badge"
	}
	return "badge admin"
}

func uiApplyLabel(status string) string {
	if status == "" {
		return "not pushed yet"
	}
	return strings.ReplaceAll(status, "_", " ")
}

func uiLabels(l map[string]string) []string {
	out := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		out = append(out, k+"="+l[k])
	}
	return out
}

func uiInt[T ~int64 | ~uint64 | ~uint32](v T) string { return fmt.Sprint(v) }

func uiFloat(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// ---- The list ----

type uiListData struct {
	WorkspaceID uuid.UUID
	Agents      []Agent
	Pager       views.Pager
	Filter      views.Form
	// RefreshURL is the list's own URL with its filters, re-fetched on events.
	RefreshURL string
	Create     views.Form
	Shown      *uiShownToken
	CSRF       string
	Now        time.Time
	CanWrite   bool
}

// uiShownToken is a registration token to show this once.
type uiShownToken struct {
	Name  string
	Token RegistrationToken
	// Install are the ways to install the agent, one tab each.
	Install Onboarding
	// Reinstall is true for a new token of an existing agent.
	Reinstall bool
}

type uiListState struct {
	create views.Form
	shown  *uiShownToken
}

// shown is tok to show once, with its install commands for the master as
// the admin reached it.
func (p *pages) shown(c *fiber.Ctx, name string, tok RegistrationToken, reinstall bool) *uiShownToken {
	e := p.svc.onboard.endpointsFor(c)
	return &uiShownToken{Name: name, Token: p.svc.tokenAt(tok, e), Install: p.svc.OnboardingFor(e, tok), Reinstall: reinstall}
}

func (p *pages) list(c *fiber.Ctx) error { return p.renderList(c, http.StatusOK, uiListState{}) }

func (p *pages) renderList(c *fiber.Ctx, status int, st uiListState) error {
	ws := app.ScopeOf(c).WorkspaceID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	filter := views.SearchForm(c, "q", "state", "label_selector")
	query := filter.Query()
	agents, total, err := p.svc.List(app.Ctx(c), ws, ListAgentsParams{Page: page, State: filter.Value("state"), LabelSelector: filter.Value("label_selector"), Q: filter.Value("q")})
	if err != nil {
		f, fstatus, ok := views.FormFromError(err, filter.Values, "q", "state", "label_selector")
		if !ok {
			return err
		}
		filter, agents = f, nil
		if status == http.StatusOK {
			status = fstatus
		}
	}
	refresh := uiListPath(ws)
	if page.Page > 1 {
		query.Set("page", strconv.Itoa(page.Page))
	}
	if len(query) > 0 {
		refresh += "?" + query.Encode()
	}
	query.Del("page")
	if st.create.Values == nil {
		st.create.Values = map[string]string{"expires_in_hours": strconv.Itoa(DefaultTokenHours)}
	}
	d := uiListData{
		WorkspaceID: ws,
		Agents:      agents,
		Pager:       views.NewPager(page, total, uiListPath(ws), query),
		Filter:      filter,
		RefreshURL:  refresh,
		Create:      st.create,
		Shown:       st.shown,
		Now:         p.svc.now(),
		CanWrite:    p.ui.Allowed(c, ObjAgent, authz.Write),
	}
	if uiFragmentFor(c, uiListTarget) {
		return views.Render(c, status, uiAgentTable(d))
	}
	shell, err := p.ui.Shell(c, "Agents", views.SectionAgents)
	if err != nil {
		return err
	}
	d.CSRF = shell.CSRF
	return views.Page(c, status, shell, uiListPage(d))
}

func (p *pages) create(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	vals := uiFormValues(c, "name", "labels", "expires_in_hours")
	fail := func(err error) error {
		form, status, ok := uiFormError(err, vals, "name", "labels", "expires_in_hours")
		if !ok {
			return err
		}
		return p.renderList(c, status, uiListState{create: form})
	}
	lbls, err := uiParseLabels(vals["labels"])
	if err != nil {
		return fail(err)
	}
	hours, err := uiParseHours(vals["expires_in_hours"])
	if err != nil {
		return fail(err)
	}
	tok, err := p.svc.CreateToken(app.Ctx(c), CreateTokenParams{WorkspaceID: ws, Name: vals["name"], Labels: lbls, ExpiresInHours: hours})
	if err != nil {
		return fail(err)
	}
	return p.renderList(c, http.StatusCreated, uiListState{shown: p.shown(c, strings.TrimSpace(vals["name"]), tok, false)})
}

// ---- One agent ----

type uiAgentData struct {
	Agent    AgentDetail
	Commands []Command
	// Waiting is true while a command has no answer yet.
	Waiting  bool
	Settings views.Form
	Shown    *uiShownToken
	CSRF     string
	Now      time.Time
	CanWrite bool
	CanAct   bool
	CanDel   bool
}

type uiAgentState struct {
	settings views.Form
	shown    *uiShownToken
}

func (p *pages) show(c *fiber.Ctx) error { return p.renderAgent(c, http.StatusOK, uiAgentState{}) }

func (p *pages) renderAgent(c *fiber.Ctx, status int, st uiAgentState) error {
	ctx := app.Ctx(c)
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrAgentNotFound
	}
	a, err := p.svc.Get(ctx, id)
	if err != nil {
		return err
	}
	cmds, _, err := p.svc.ListCommands(ctx, id, app.Page{Page: 1, PerPage: uiCommandsShown})
	if err != nil {
		return err
	}
	if st.settings.Values == nil {
		st.settings.Values = map[string]string{"name": a.Name, "labels": uiFormatLabels(a.Labels)}
		if a.AutoRestart {
			st.settings.Values["auto_restart"] = "on"
		}
	}
	d := uiAgentData{
		Agent:    a,
		Commands: cmds,
		Settings: st.settings,
		Shown:    st.shown,
		Now:      p.svc.now(),
		CanWrite: p.ui.Allowed(c, ObjAgent, authz.Write),
		CanAct:   p.ui.Allowed(c, ObjCommand, authz.Write),
		CanDel:   p.ui.Allowed(c, ObjAgent, authz.Delete),
	}
	for _, cmd := range cmds {
		if cmd.Status == CommandPending || cmd.Status == CommandSent {
			d.Waiting = true
		}
	}
	switch {
	case uiFragmentFor(c, uiLiveTarget):
		return views.Render(c, status, uiAgentLive(d))
	case uiFragmentFor(c, uiCommandsTarget):
		return views.Render(c, status, uiAgentCommands(d))
	}
	shell, err := p.ui.Shell(c, a.Name, views.SectionAgents)
	if err != nil {
		return err
	}
	d.CSRF = shell.CSRF
	return views.Page(c, status, shell, uiAgentPage(d))
}

func (p *pages) update(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrAgentNotFound
	}
	vals := uiFormValues(c, "name", "labels", "auto_restart")
	fail := func(err error) error {
		form, status, ok := uiFormError(err, vals, "name", "labels")
		if !ok {
			return err
		}
		return p.renderAgent(c, status, uiAgentState{settings: form})
	}
	lbls, err := uiParseLabels(vals["labels"])
	if err != nil {
		return fail(err)
	}
	name, restart := vals["name"], vals["auto_restart"] == "on"
	a, err := p.svc.Update(app.Ctx(c), id, UpdateAgentParams{Name: &name, Labels: &lbls, AutoRestart: &restart})
	if err != nil {
		return fail(err)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Agent %q saved; its configuration follows its labels.", a.Name)})
	return views.SeeOther(c, uiAgentPath(id))
}

// uiFlashError shows a refused action (offline agent, no answer, invalid
// input) as a flash message on the agent's page; other errors go to the
// error page.
func uiFlashError(c *fiber.Ctx, id uuid.UUID, err error) error {
	var msg string
	var ve *app.ValidationError
	if errors.As(err, &ve) && len(ve.Fields) > 0 {
		msg = strings.ReplaceAll(ve.Fields[0].Field, "_", " ") + " " + ve.Fields[0].Message
	} else {
		status, m, known := views.ErrorMessage(err)
		if !known || status == http.StatusNotFound {
			return err
		}
		msg = m
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashError, Message: msg})
	return views.SeeOther(c, uiAgentPath(id))
}

func (p *pages) reload(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrAgentNotFound
	}
	res, err := p.svc.Reload(app.Ctx(c), id)
	if err != nil {
		return uiFlashError(c, id, err)
	}
	// The agent's answer says what happened ("nginx reloaded"); it is shown
	// as is, not after a prefix that repeats it.
	msg := res.Message
	if msg == "" {
		msg = "nginx reloaded"
	}
	f := views.Flash{Kind: views.FlashSuccess, Message: msg}
	if !res.Success {
		f = views.Flash{Kind: views.FlashError, Message: "Reload failed: " + res.Message}
	}
	views.SetFlash(c, f)
	return views.SeeOther(c, uiAgentPath(id))
}

// uiCommands are the commands the page offers besides reload.
var uiCommands = map[string]string{
	CommandRestart:        "Restart nginx",
	CommandValidateConfig: "Validate configuration",
	CommandGetStatus:      "Get status",
}

func (p *pages) command(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrAgentNotFound
	}
	kind := c.FormValue("command")
	label, ok := uiCommands[kind]
	if !ok {
		return uiFlashError(c, id, app.Invalid("command", app.FieldInvalidValue, "must be restart, validate_config or get_status"))
	}
	if _, err := p.svc.CreateCommand(app.Ctx(c), CreateCommandParams{AgentID: id, Command: kind}); err != nil {
		return uiFlashError(c, id, err)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashInfo, Message: label + ": sent; the agent's answer appears under Commands."})
	return views.SeeOther(c, uiAgentPath(id))
}

func (p *pages) newToken(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrAgentNotFound
	}
	hours, err := uiParseHours(c.FormValue("expires_in_hours"))
	if err != nil {
		return uiFlashError(c, id, err)
	}
	tok, err := p.svc.NewToken(app.Ctx(c), id, hours)
	if err != nil {
		return uiFlashError(c, id, err)
	}
	a, err := p.svc.Get(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return p.renderAgent(c, http.StatusCreated, uiAgentState{shown: p.shown(c, a.Name, tok, true)})
}

func (p *pages) delete(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrAgentNotFound
	}
	a, err := p.svc.Get(app.Ctx(c), id)
	if err != nil {
		return err
	}
	if err := p.svc.Delete(app.Ctx(c), id); err != nil {
		return uiFlashError(c, id, err)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Agent %q deleted; its certificate is no longer accepted.", a.Name)})
	return views.SeeOther(c, uiListPath(a.WorkspaceID))
}

func uiNginxClass(status string) string {
	if status == "running" {
		return "badge operator"
	}
	return "badge revoked"
}

func uiAlertClass(severity string) string {
	if severity == "critical" || severity == "error" {
		return "badge revoked"
	}
	return "badge owner"
}

// uiCommandMessage is what a command's row says before and after its answer.
func uiCommandMessage(c Command) string {
	switch {
	case c.Message != "":
		return c.Message
	case c.Status == CommandPending || c.Status == CommandSent:
		return "waiting for the agent…"
	}
	return "—"
}
