package logs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/views"
)

// The admin's Logs page of a workspace:
//
//	GET /workspaces/:id/logs         access logs with filters (time range, host, status,
//	                                 virtual host, agent), newest first, paginated by
//	                                 cursor; the live tail; the chosen agent's error log
//	GET /workspaces/:id/logs/stream  the live tail as SSE, table rows for htmx's SSE
//	                                 extension (the filters of the page)
//
// The page loads no script of its own: htmx's SSE extension (vendored under
// /static) prepends each row the stream sends to the live table.

const (
	uiPageSize   = 50
	uiErrorLines = 100
	// uiChoices bounds the agents and virtual hosts offered in the filters.
	uiChoices = 500
)

// uiFilterFields are the filter form's fields.
var uiFilterFields = []string{"from", "to", "host", "status", "virtual_host_id", "agent_id"}

// pages holds the admin handlers: the service, the shared navigation and
// permission checks of the admin, and the live tail the page streams.
type pages struct {
	svc *Service
	ui  *app.Pages
	// tail answers with the SSE tail of the lines a filter selects
	// (Module.serveTail).
	tail func(c *fiber.Ctx, f LiveFilter, render func(Line) []byte) error
}

// mountUI mounts the admin pages; Routes calls it with the UI router.
func (m *Module) mountUI(ui *app.Router) {
	p := &pages{svc: m.svc, ui: m.pages, tail: m.serveTail}
	ws := orgs.ScopeWorkspace(m.db, "id")
	ui.Get("/workspaces/:id/logs", app.Require(ObjLog, authz.Read, ws),
		app.Doc{Summary: "Logs page: access logs with filters, live tail, an agent's error log", Query: append(slices.Clip(uiFilterFields), "cursor")}, p.logs)
	ui.Get("/workspaces/:id/logs/stream", app.Require(ObjLog, authz.Read, ws),
		app.Doc{Summary: "Live tail of the Logs page (Server-Sent Events of table rows)", Query: uiFilterFields}, p.stream)
}

func uiLogsPath(ws uuid.UUID) string { return "/workspaces/" + ws.String() + "/logs" }

// uiParams turns the page's form values into the API's query parameters: a
// status of "5xx" is status_class, "500" status_code; a time from a
// datetime-local input ("2026-03-02T10:30") is UTC.
func uiParams(vals map[string]string) Params {
	return func(name string) string {
		switch name {
		case "status_code", "status_class":
			s := strings.ToLower(strings.TrimSpace(vals["status"]))
			if strings.HasSuffix(s, "xx") == (name == "status_class") {
				return s
			}
			return ""
		case "from", "to":
			s := strings.TrimSpace(vals[name])
			switch len(s) {
			case len("2006-01-02T15:04"):
				return s + ":00Z"
			case len("2006-01-02T15:04:05"):
				return s + "Z"
			}
			return s
		}
		return vals[name]
	}
}

// uiFormError shows the API's field errors on the page's fields.
func uiFormError(err error, vals map[string]string) (views.Form, int, bool) {
	var ve *app.ValidationError
	if errors.As(err, &ve) {
		cp := &app.ValidationError{Fields: slices.Clone(ve.Fields)}
		for i, f := range cp.Fields {
			if f.Field == "status_code" || f.Field == "status_class" {
				cp.Fields[i].Field = "status"
				cp.Fields[i].Message = "must be a status code such as 404 or a class such as 5xx"
			}
		}
		err = cp
	}
	return views.FormFromError(err, vals, uiFilterFields...)
}

// uiChoice is an agent or virtual host offered in a filter.
type uiChoice = app.Named

func choiceOptions(any string, cs []uiChoice) []views.Option {
	opts := []views.Option{{Value: "", Label: any}}
	for _, c := range cs {
		opts = append(opts, views.Option{Value: c.ID.String(), Label: c.Name})
	}
	return opts
}

func hasChoice(cs []uiChoice, id uuid.UUID) bool {
	return slices.ContainsFunc(cs, func(c uiChoice) bool { return c.ID == id })
}

// uiData is what the Logs page shows.
type uiData struct {
	WorkspaceID uuid.UUID
	Filter      views.Form
	AgentOpts   []views.Option
	VHostOpts   []views.Option
	AgentNames  map[uuid.UUID]string
	Page        Page[Entry]
	// NewestURL is the first page with the filters; OlderURL the next one.
	NewestURL, OlderURL string
	// StreamURL is the live tail with the page's filters.
	StreamURL string
	// ErrorAgent is the agent whose error log is shown (uuid.Nil: none).
	ErrorAgent  uuid.UUID
	ErrorLines  []ErrorLine
	ErrorsTotal int64
	HasCursor   bool
}

func (p *pages) logs(c *fiber.Ctx) error {
	ctx := app.Ctx(c)
	ws := app.ScopeOf(c).WorkspaceID
	vals := map[string]string{}
	query := url.Values{}
	for _, f := range uiFilterFields {
		vals[f] = strings.TrimSpace(c.Query(f))
		if vals[f] != "" {
			query.Set(f, vals[f])
		}
	}
	agentList, err := p.svc.workspaceNames(ctx, "agents", ws, uiChoices)
	if err != nil {
		return err
	}
	vhostList, err := p.svc.workspaceNames(ctx, "virtual_hosts", ws, uiChoices)
	if err != nil {
		return err
	}
	d := uiData{
		WorkspaceID: ws, Filter: views.Form{Values: vals},
		AgentOpts: choiceOptions("Every agent", agentList), VHostOpts: choiceOptions("Every virtual host", vhostList),
		AgentNames: map[uuid.UUID]string{}, Page: Page[Entry]{Data: []Entry{}},
		NewestURL: uiLogsPath(ws), HasCursor: c.Query("cursor") != "",
	}
	for _, a := range agentList {
		d.AgentNames[a.ID] = a.Name
	}
	if len(query) > 0 {
		d.NewestURL += "?" + query.Encode()
	}
	status := http.StatusOK
	get := uiParams(vals)
	q, err := ParseQuery(func(n string) string {
		switch n {
		case "cursor":
			return c.Query("cursor")
		case "limit":
			return strconv.Itoa(uiPageSize)
		}
		return get(n)
	}, p.svc.now())
	if err == nil && q.AgentID != uuid.Nil && !hasChoice(agentList, q.AgentID) {
		err = app.Invalid("agent_id", app.FieldInvalidValue, "is not an agent of this workspace")
	}
	if err == nil && q.VirtualHostID != uuid.Nil && !hasChoice(vhostList, q.VirtualHostID) {
		err = app.Invalid("virtual_host_id", app.FieldInvalidValue, "is not a virtual host of this workspace")
	}
	if err != nil {
		f, fstatus, ok := uiFormError(err, vals)
		if !ok {
			return err
		}
		d.Filter, status = f, fstatus
		return p.render(c, status, d)
	}
	q.WorkspaceID = ws
	if d.Page, err = p.svc.AccessLogs(ctx, q); err != nil {
		return err
	}
	if d.Page.Meta.NextCursor != "" {
		older := url.Values{}
		for k, v := range query {
			older[k] = v
		}
		older.Set("cursor", d.Page.Meta.NextCursor)
		d.OlderURL = uiLogsPath(ws) + "?" + older.Encode()
	}
	live := url.Values{}
	for _, k := range []string{"host", "status", "virtual_host_id", "agent_id"} {
		if v := query.Get(k); v != "" {
			live.Set(k, v)
		}
	}
	d.StreamURL = uiLogsPath(ws) + "/stream"
	if len(live) > 0 {
		d.StreamURL += "?" + live.Encode()
	}
	if q.AgentID != uuid.Nil {
		d.ErrorAgent = q.AgentID
		page, err := p.svc.ErrorLogs(ctx, ErrorQuery{AgentID: q.AgentID, From: q.From, To: q.To, Limit: uiErrorLines})
		if err != nil {
			return err
		}
		d.ErrorLines, d.ErrorsTotal = page.Data, page.Meta.Total
	}
	return p.render(c, status, d)
}

// render answers with the Logs page in the admin's layout, its tab marked
// current.
func (p *pages) render(c *fiber.Ctx, status int, d uiData) error {
	shell, err := p.ui.Shell(c, "Logs", views.SectionLogs)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, uiLogsPage(d))
}

func (p *pages) stream(c *fiber.Ctx) error {
	vals := map[string]string{}
	for _, f := range uiFilterFields {
		vals[f] = strings.TrimSpace(c.Query(f))
	}
	f, err := parseLiveFilter(uiParams(vals), p.svc.now())
	if err != nil {
		return err
	}
	return p.tail(c, f, func(l Line) []byte {
		var b bytes.Buffer
		_ = uiLiveRow(l).Render(context.Background(), &b)
		return b.Bytes()
	})
}

// ---- Formatting ----

func uiTime(t Millis) string { return t.UTC().Format("2006-01-02 15:04:05.000") }

func uiLevelClass(level string) string {
	switch strings.ToLower(level) {
	case "error", "crit", "alert", "emerg":
		return "badge revoked"
	case "warn":
		return "badge owner"
	}
	return "badge"
}

func uiStatusClass(status int) string {
	switch {
	case status >= 500:
		return "badge revoked"
	case status >= 400:
		return "badge owner"
	case status >= 200 && status < 400:
		return "badge operator"
	}
	return "badge"
}

func uiAgentName(names map[uuid.UUID]string, id uuid.UUID) string {
	if n, ok := names[id]; ok {
		return n
	}
	return id.String()[:8]
}

func uiMs(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + " ms" }

func uiInt(n int64) string { return strconv.FormatInt(n, 10) }

func uiTotal(p Page[Entry]) string {
	return fmt.Sprintf("%d of %d entries in the window", len(p.Data), p.Meta.Total)
}

func uiUpper(s string) string { return strings.ToUpper(s) }

// uiSince is the window's description under the table.
func uiSince(d uiData) string {
	if d.Filter.Value("from") == "" && d.Filter.Value("to") == "" {
		return fmt.Sprintf("the last %s", DefaultWindow)
	}
	return "the chosen window (UTC)"
}

func (d uiData) hasErrorAgent() bool { return d.ErrorAgent != uuid.Nil }
