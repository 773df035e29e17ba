package upstreams

import (
	"fmt"
	"maps"
	"net/http"
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

// The admin pages of upstreams, one tab of a workspace's configuration
// (views.WorkspaceSections):
//
//	GET  /workspaces/:id/upstreams             the list
//	GET  /workspaces/:id/upstreams/new         the create form
//	POST /workspaces/:id/upstreams             create
//	GET  /workspaces/:id/upstreams/server-row  an empty server row (htmx)
//	POST /workspaces/:id/upstreams/servers     the servers editor without a row (htmx)
//	GET  /upstreams/:id                        the upstream and its edit form
//	POST /upstreams/:id                        update
//	GET  /upstreams/:id/delete                 the confirmation step
//	POST /upstreams/:id/delete                 delete
//
// Handlers call the same service methods as the API. Inputs are named after
// the JSON paths of the service's fields (servers[1].address), so a validation
// error lands next to its input; a refused delete (409, the upstream is in use)
// is shown on the confirmation step naming the users.
//
// The servers editor works without JavaScript: "Add server" and "Remove" are
// submit buttons named _op that re-render the form with one row more or less
// and save nothing. With htmx, "Add server" fetches one empty row (and the
// button for the next one, out of band) and "Remove" posts the form to the
// servers endpoint, which renders the editor without the row. Blank rows are
// dropped when the form is read, and rows are numbered from 0 again, which is
// also how the service numbers its errors.

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
	up := ScopeUpstream(m.db, "id")
	ui.Get("/workspaces/:id/upstreams", app.Require(ObjUpstream, authz.Read, ws),
		app.Doc{Summary: "Upstreams page", Query: []string{"page", "per_page"}}, p.list)
	ui.Get("/workspaces/:id/upstreams/new", app.Require(ObjUpstream, authz.Write, ws),
		app.Doc{Summary: "New upstream form"}, p.newForm)
	ui.Post("/workspaces/:id/upstreams", app.Require(ObjUpstream, authz.Write, ws),
		app.Doc{Summary: "Create an upstream (form)", ConfigVersion: true}, p.create)
	ui.Get("/workspaces/:id/upstreams/server-row", app.Require(ObjUpstream, authz.Write, ws),
		app.Doc{Summary: "An empty row of the servers editor (htmx fragment)", Query: []string{"index"}}, p.serverRow)
	ui.Post("/workspaces/:id/upstreams/servers", app.Require(ObjUpstream, authz.Write, ws),
		app.Doc{Summary: "The servers editor re-rendered from the submitted form after removing a row (htmx fragment)"}, p.serversEditor)
	ui.Get("/upstreams/:id", app.Require(ObjUpstream, authz.Read, up),
		app.Doc{Summary: "Upstream page with its edit form"}, p.show)
	ui.Post("/upstreams/:id", app.Require(ObjUpstream, authz.Write, up),
		app.Doc{Summary: "Update an upstream (form)", ConfigVersion: true}, p.update)
	ui.Get("/upstreams/:id/delete", app.Require(ObjUpstream, authz.Delete, up),
		app.Doc{Summary: "Confirm the deletion of an upstream"}, p.confirmDelete)
	ui.Post("/upstreams/:id/delete", app.Require(ObjUpstream, authz.Delete, up),
		app.Doc{Summary: "Delete an upstream (form)", ConfigVersion: true}, p.delete)
}

// ---- Helpers ----

func uiListPath(ws uuid.UUID) string   { return "/workspaces/" + ws.String() + "/upstreams" }
func uiPath(id uuid.UUID) string       { return "/upstreams/" + id.String() }
func uiDeletePath(id uuid.UUID) string { return uiPath(id) + "/delete" }

// uiAlgorithms are the algorithm choices. nginx's round robin already
// honours server weights, so weighted_round_robin renders the same config;
// the labels say so rather than offer two choices that look different.
var uiAlgorithms = []views.Option{
	{Value: string(RoundRobin), Label: "Round robin (weights honoured)"},
	{Value: string(LeastConnections), Label: "Least connections"},
	{Value: string(IPHash), Label: "IP hash"},
	{Value: string(WeightedRoundRobin), Label: "Weighted round robin (same as round robin)"},
}

// uiAlgorithmLabel is the label of an algorithm in tables.
func uiAlgorithmLabel(a Algorithm) string {
	for _, o := range uiAlgorithms {
		if o.Value == string(a) {
			return o.Label
		}
	}
	return string(a)
}

// uiHealthCheck summarizes a health check for the list.
func uiHealthCheck(h HealthCheck) string {
	if !h.Enabled {
		return "Off"
	}
	return fmt.Sprintf("GET %s every %ds", h.Path, h.Interval)
}

func uiWhen(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// ---- The form ----

// serverRow is one server as typed.
type serverRow struct {
	Address, Weight, MaxFails, FailTimeout string
	Backup, Down                           bool
}

func (r serverRow) blank() bool {
	return strings.TrimSpace(r.Address+r.Weight+r.MaxFails+r.FailTimeout) == "" && !r.Backup && !r.Down
}

// upstreamForm is the upstream form as typed: the text of every input.
type upstreamForm struct {
	Name, Algorithm, Keepalive string
	Servers                    []serverRow
	HCEnabled                  bool
	HCPath, HCInterval         string
	HCTimeout                  string
	HCHealthy, HCUnhealthy     string
}

// Input names of the form's fields.
const (
	fName        = "name"
	fAlgorithm   = "algorithm"
	fKeepalive   = "keepalive_connections"
	fServers     = "servers"
	fHCEnabled   = "health_check.enabled"
	fHCPath      = "health_check.path"
	fHCInterval  = "health_check.interval"
	fHCTimeout   = "health_check.timeout"
	fHCHealthy   = "health_check.healthy_threshold"
	fHCUnhealthy = "health_check.unhealthy_threshold"
)

// serverField is the input name of field of server i.
func serverField(i int, field string) string { return views.RowField(fServers, i, field) }

// newUpstreamForm is the create form: defaults filled in, one empty server.
func newUpstreamForm() upstreamForm {
	h := DefaultHealthCheck()
	return upstreamForm{
		Algorithm:   string(RoundRobin),
		Keepalive:   "0",
		Servers:     []serverRow{{}},
		HCPath:      h.Path,
		HCInterval:  strconv.Itoa(h.Interval),
		HCTimeout:   strconv.Itoa(h.Timeout),
		HCHealthy:   strconv.Itoa(h.HealthyThreshold),
		HCUnhealthy: strconv.Itoa(h.UnhealthyThreshold),
	}
}

// upstreamFormOf is the edit form of u.
func upstreamFormOf(u Upstream) upstreamForm {
	f := upstreamForm{
		Name:        u.Name,
		Algorithm:   string(u.Algorithm),
		Keepalive:   strconv.Itoa(u.KeepaliveConnections),
		HCEnabled:   u.HealthCheck.Enabled,
		HCPath:      u.HealthCheck.Path,
		HCInterval:  strconv.Itoa(u.HealthCheck.Interval),
		HCTimeout:   strconv.Itoa(u.HealthCheck.Timeout),
		HCHealthy:   strconv.Itoa(u.HealthCheck.HealthyThreshold),
		HCUnhealthy: strconv.Itoa(u.HealthCheck.UnhealthyThreshold),
	}
	for _, s := range u.Servers {
		f.Servers = append(f.Servers, serverRow{
			Address:     s.Address,
			Weight:      strconv.Itoa(s.Weight),
			MaxFails:    strconv.Itoa(s.MaxFails),
			FailTimeout: strconv.Itoa(s.FailTimeout),
			Backup:      s.Backup,
			Down:        s.Down,
		})
	}
	return f
}

// readUpstreamForm reads a submitted form: servers in the order of their
// indexes, blank ones dropped.
func readUpstreamForm(vals map[string]string) upstreamForm {
	f := upstreamForm{
		Name:        vals[fName],
		Algorithm:   vals[fAlgorithm],
		Keepalive:   vals[fKeepalive],
		HCEnabled:   views.Checked(vals, fHCEnabled),
		HCPath:      vals[fHCPath],
		HCInterval:  vals[fHCInterval],
		HCTimeout:   vals[fHCTimeout],
		HCHealthy:   vals[fHCHealthy],
		HCUnhealthy: vals[fHCUnhealthy],
	}
	for _, i := range views.RowIndexes(vals, fServers) {
		r := serverRow{
			Address:     vals[serverField(i, "address")],
			Weight:      vals[serverField(i, "weight")],
			MaxFails:    vals[serverField(i, "max_fails")],
			FailTimeout: vals[serverField(i, "fail_timeout")],
			Backup:      views.Checked(vals, serverField(i, "backup")),
			Down:        views.Checked(vals, serverField(i, "down")),
		}
		if !r.blank() {
			f.Servers = append(f.Servers, r)
		}
	}
	return f
}

// values are the form's inputs by name, servers numbered from 0.
func (f upstreamForm) values() map[string]string {
	v := map[string]string{
		fName:        f.Name,
		fAlgorithm:   f.Algorithm,
		fKeepalive:   f.Keepalive,
		fHCEnabled:   views.CheckedValue(f.HCEnabled),
		fHCPath:      f.HCPath,
		fHCInterval:  f.HCInterval,
		fHCTimeout:   f.HCTimeout,
		fHCHealthy:   f.HCHealthy,
		fHCUnhealthy: f.HCUnhealthy,
	}
	for i, s := range f.Servers {
		maps.Copy(v, serverValues(i, s))
	}
	return v
}

func serverValues(i int, s serverRow) map[string]string {
	return map[string]string{
		serverField(i, "address"):      s.Address,
		serverField(i, "weight"):       s.Weight,
		serverField(i, "max_fails"):    s.MaxFails,
		serverField(i, "fail_timeout"): s.FailTimeout,
		serverField(i, "backup"):       views.CheckedValue(s.Backup),
		serverField(i, "down"):         views.CheckedValue(s.Down),
	}
}

// fields are the names errors may be shown at: every input and the servers
// list.
func (f upstreamForm) fields() []string {
	return append(slices.Collect(maps.Keys(f.values())), fServers)
}

// decode turns the typed text into the service's inputs; a number that is not
// one is a validation error at its input.
func (f upstreamForm) decode() ([]ServerInput, *int, *HealthCheckInput, error) {
	v := &app.Validator{}
	servers := make([]ServerInput, 0, len(f.Servers))
	for i, s := range f.Servers {
		servers = append(servers, ServerInput{
			Address:     strings.TrimSpace(s.Address),
			Weight:      views.OptionalInt(v, serverField(i, "weight"), s.Weight),
			MaxFails:    views.OptionalInt(v, serverField(i, "max_fails"), s.MaxFails),
			FailTimeout: views.OptionalInt(v, serverField(i, "fail_timeout"), s.FailTimeout),
			Backup:      s.Backup,
			Down:        s.Down,
		})
	}
	keepalive := views.OptionalInt(v, fKeepalive, f.Keepalive)
	if keepalive == nil {
		keepalive = new(int)
	}
	enabled := f.HCEnabled
	path := strings.TrimSpace(f.HCPath)
	hc := &HealthCheckInput{
		Enabled:            &enabled,
		Interval:           views.OptionalInt(v, fHCInterval, f.HCInterval),
		Timeout:            views.OptionalInt(v, fHCTimeout, f.HCTimeout),
		HealthyThreshold:   views.OptionalInt(v, fHCHealthy, f.HCHealthy),
		UnhealthyThreshold: views.OptionalInt(v, fHCUnhealthy, f.HCUnhealthy),
	}
	if path != "" {
		hc.Path = &path
	}
	return servers, keepalive, hc, v.Err()
}

// createParams are the inputs of Service.Create.
func (f upstreamForm) createParams(ws uuid.UUID) (CreateParams, error) {
	servers, keepalive, hc, err := f.decode()
	return CreateParams{
		WorkspaceID: ws, Name: f.Name, Algorithm: Algorithm(f.Algorithm), Servers: servers,
		KeepaliveConnections: *keepalive, HealthCheck: hc,
	}, err
}

// updateParams are the inputs of Service.Update: every field of the form.
func (f upstreamForm) updateParams() (UpdateParams, error) {
	servers, keepalive, hc, err := f.decode()
	name, alg := f.Name, Algorithm(f.Algorithm)
	return UpdateParams{Name: &name, Algorithm: &alg, Servers: servers, KeepaliveConnections: keepalive, HealthCheck: hc}, err
}

// editorOp applies the editor step a submit button asked for (_op), if any:
// "add-server" appends an empty row, "remove:servers[i]" drops row i. It
// reports whether there was one.
func editorOp(vals map[string]string) (upstreamForm, bool) {
	op := vals["_op"]
	if prefix, ok := strings.CutPrefix(op, "remove:"); ok {
		for k := range vals {
			if strings.HasPrefix(k, prefix+".") {
				delete(vals, k)
			}
		}
	}
	f := readUpstreamForm(vals)
	if op == "add-server" {
		f.Servers = append(f.Servers, serverRow{})
	}
	if len(f.Servers) == 0 {
		f.Servers = []serverRow{{}}
	}
	return f, op != ""
}

// ---- Pages ----

type listData struct {
	WorkspaceID uuid.UUID
	Upstreams   []Upstream
	Pager       views.Pager
	// Filter is the search (q).
	Filter    views.Form
	CanWrite  bool
	CanDelete bool
}

func (p *pages) list(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	filter := views.SearchForm(c, "q")
	status := http.StatusOK
	ups, total, err := p.svc.Search(app.Ctx(c), ws, Filter{Q: filter.Value("q")}, page)
	if err != nil {
		f, fstatus, ok := views.FormFromError(err, filter.Values, "q")
		if !ok {
			return err
		}
		filter, status = f, fstatus
	}
	d := listData{
		WorkspaceID: ws,
		Upstreams:   ups,
		Pager:       views.NewPager(page, total, uiListPath(ws), filter.Query()),
		Filter:      filter,
		CanWrite:    p.ui.Allowed(c, ObjUpstream, authz.Write),
		CanDelete:   p.ui.Allowed(c, ObjUpstream, authz.Delete),
	}
	if views.IsFragmentFor(c, uiListTarget) {
		return views.Render(c, status, upstreamTable(d))
	}
	shell, err := p.ui.Shell(c, "Upstreams", views.SectionUpstreams)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, listPage(d))
}

// uiListTarget is the id of the list's table, which the search form
// replaces as the user types.
const uiListTarget = "upstream-list"

// formData is what the form template needs.
type formData struct {
	WorkspaceID uuid.UUID
	// Upstream is the upstream being edited, nil on the create form.
	Upstream *Upstream
	Form     views.Form
	Servers  int
	CSRF     string
	CanWrite bool
	// CanDelete shows the delete button.
	CanDelete bool
	// Health is what the agents report about the servers (health.go).
	Health []ServerHealth
}

// action is the path the form posts to.
func (d formData) action() string {
	if d.Upstream != nil {
		return uiPath(d.Upstream.ID)
	}
	return uiListPath(d.WorkspaceID)
}

func (p *pages) newForm(c *fiber.Ctx) error {
	f := newUpstreamForm()
	return p.renderForm(c, http.StatusOK, nil, views.Form{Values: f.values()}, len(f.Servers))
}

// renderForm renders the create form (u nil) or the page of u.
func (p *pages) renderForm(c *fiber.Ctx, status int, u *Upstream, form views.Form, servers int) error {
	title := "New upstream"
	if u != nil {
		title = u.Name
	}
	shell, err := p.ui.Shell(c, title, views.SectionUpstreams)
	if err != nil {
		return err
	}
	var health []ServerHealth
	if u != nil {
		if health, err = p.svc.Health(app.Ctx(c), *u); err != nil {
			return err
		}
	}
	return views.Page(c, status, shell, formPage(formData{
		Health:      health,
		WorkspaceID: app.ScopeOf(c).WorkspaceID,
		Upstream:    u,
		Form:        form,
		Servers:     servers,
		CSRF:        shell.CSRF,
		CanWrite:    p.ui.Allowed(c, ObjUpstream, authz.Write),
		CanDelete:   u != nil && p.ui.Allowed(c, ObjUpstream, authz.Delete),
	}))
}

// failed re-renders the form of f with the error's messages, or returns err
// when it is not one the form can show.
func (p *pages) failed(c *fiber.Ctx, u *Upstream, f upstreamForm, err error) error {
	form, status, ok := views.FormFromError(err, f.values(), f.fields()...)
	if !ok {
		return err
	}
	return p.renderForm(c, status, u, form, max(len(f.Servers), 1))
}

func (p *pages) create(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	vals := views.PostedValues(c)
	if f, ok := editorOp(vals); ok {
		return p.renderForm(c, http.StatusOK, nil, views.Form{Values: f.values()}, len(f.Servers))
	}
	f := readUpstreamForm(vals)
	params, err := f.createParams(ws)
	if err == nil {
		var u Upstream
		if u, err = p.svc.Create(app.Ctx(c), params); err == nil {
			views.SetSavedFlash(c, ws, app.ConfigVersion(c), fmt.Sprintf("Upstream %q created.", u.Name))
			return views.SeeOther(c, uiListPath(ws))
		}
	}
	return p.failed(c, nil, f, err)
}

func (p *pages) show(c *fiber.Ctx) error {
	u, err := p.upstream(c)
	if err != nil {
		return err
	}
	f := upstreamFormOf(u)
	return p.renderForm(c, http.StatusOK, &u, views.Form{Values: f.values()}, len(f.Servers))
}

func (p *pages) update(c *fiber.Ctx) error {
	u, err := p.upstream(c)
	if err != nil {
		return err
	}
	vals := views.PostedValues(c)
	if f, ok := editorOp(vals); ok {
		return p.renderForm(c, http.StatusOK, &u, views.Form{Values: f.values()}, len(f.Servers))
	}
	f := readUpstreamForm(vals)
	params, err := f.updateParams()
	if err == nil {
		var saved Upstream
		if saved, err = p.svc.Update(app.Ctx(c), u.ID, params); err == nil {
			views.SetSavedFlash(c, saved.WorkspaceID, app.ConfigVersion(c), fmt.Sprintf("Upstream %q saved.", saved.Name))
			return views.SeeOther(c, uiPath(saved.ID))
		}
	}
	return p.failed(c, &u, f, err)
}

// upstream loads the upstream the route addresses.
func (p *pages) upstream(c *fiber.Ctx) (Upstream, error) {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return Upstream{}, ErrNotFound
	}
	return p.svc.Get(app.Ctx(c), id)
}

// serverRow answers "Add server": the empty row index and, out of band, the
// button that adds the next one.
func (p *pages) serverRow(c *fiber.Ctx) error {
	i, err := strconv.Atoi(c.Query("index"))
	if err != nil || i < 0 || i > MaxServers*10 {
		return app.Invalid("index", app.FieldInvalidValue, "must be a row number")
	}
	form := views.Form{Values: serverValues(i, serverRow{})}
	return views.Render(c, http.StatusOK, addedServerRow(app.ScopeOf(c).WorkspaceID, form, i))
}

// serversEditor answers "Remove": the servers editor of the submitted form
// without the row.
func (p *pages) serversEditor(c *fiber.Ctx) error {
	f, _ := editorOp(views.PostedValues(c))
	return views.Render(c, http.StatusOK, serversEditor(app.ScopeOf(c).WorkspaceID, views.Form{Values: f.values()}, len(f.Servers)))
}

// ---- Delete ----

func (p *pages) confirmDelete(c *fiber.Ctx) error {
	u, err := p.upstream(c)
	if err != nil {
		return err
	}
	var form views.Form
	users, err := p.svc.users(app.Ctx(c), u.ID)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		form.Message = "This upstream is used by " + strings.Join(users, ", ") + "; it cannot be deleted until they stop using it."
	}
	return p.renderConfirm(c, http.StatusOK, u, form)
}

func (p *pages) renderConfirm(c *fiber.Ctx, status int, u Upstream, form views.Form) error {
	shell, err := p.ui.Shell(c, "Delete upstream", views.SectionUpstreams)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, views.Confirm(views.ConfirmProps{
		Question: fmt.Sprintf("Delete upstream %q?", u.Name),
		Details: []string{fmt.Sprintf("Its %d server(s) are removed from the configuration of every agent of the workspace. "+
			"The change is recorded as a new configuration version, which can be rolled back.", len(u.Servers))},
		Form:   form,
		Action: uiDeletePath(u.ID),
		CSRF:   shell.CSRF,
		Button: "Delete upstream",
		Cancel: uiPath(u.ID),
	}))
}

func (p *pages) delete(c *fiber.Ctx) error {
	u, err := p.upstream(c)
	if err != nil {
		return err
	}
	if err := p.svc.Delete(app.Ctx(c), u.ID); err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderConfirm(c, status, u, form)
	}
	views.SetSavedFlash(c, u.WorkspaceID, app.ConfigVersion(c), fmt.Sprintf("Upstream %q deleted.", u.Name))
	return views.SeeOther(c, uiListPath(u.WorkspaceID))
}

func uiYesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}
