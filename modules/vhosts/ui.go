package vhosts

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/views"
)

// The admin pages of virtual hosts, streams and the configuration history,
// three tabs of a workspace's configuration (views.WorkspaceSections):
//
//	GET  /workspaces/:id/virtual-hosts                  the list
//	GET  /workspaces/:id/virtual-hosts/new              the create form
//	POST /workspaces/:id/virtual-hosts                  create
//	GET  /workspaces/:id/virtual-hosts/location-row     an empty location (htmx)
//	GET  /workspaces/:id/virtual-hosts/header-row       an empty header row of a location (htmx)
//	GET  /workspaces/:id/virtual-hosts/rewrite-row      an empty rewrite row of a location (htmx)
//	GET  /workspaces/:id/virtual-hosts/location-target  a location's target inputs for the chosen type (htmx)
//	POST /workspaces/:id/virtual-hosts/locations        the locations editor without a row (htmx)
//	GET  /virtual-hosts/:id                             the host: preview panel and edit form
//	POST /virtual-hosts/:id                             update
//	GET  /virtual-hosts/:id/preview                     the rendered nginx configuration
//	GET  /virtual-hosts/:id/delete                      the confirmation step
//	POST /virtual-hosts/:id/delete                      delete
//
//	GET  /workspaces/:id/streams, /streams/new, POST /workspaces/:id/streams,
//	GET|POST /streams/:id, GET /streams/:id/preview, GET|POST /streams/:id/delete
//	     the same for streams (no repeated rows)
//
//	GET  /workspaces/:id/config/versions                     the history
//	GET  /workspaces/:id/config/versions/:version            a version: side-by-side diff (?against=N), files
//	GET  /workspaces/:id/config/versions/:version/rollback   the confirmation step
//	POST /workspaces/:id/config/versions/:version/rollback   roll back
//
// Handlers call the same service methods as the API. Inputs are named after
// the JSON paths of the service's fields (locations[1].custom_headers[0].value),
// so a validation error lands next to its input. An update applies the form's
// fields to the host's current input inside the service's transaction; what
// the form does not edit (access list, rate limit, custom directives) is kept.
//
// The locations editor works without JavaScript: "Add location", "Add
// header", "Add rule", "Remove" and the target type's "Show fields" are submit
// buttons named _op that re-render the form with the change and save nothing.
// With htmx, the add buttons fetch one empty row (and, out of band, the button
// for the next one), "Remove" posts the form to the locations endpoint, which
// renders the editor without the row, and changing a location's target type
// fetches the inputs of that type. Blank rows are dropped when the form is
// read, and rows are numbered from 0 again, which is also how the service
// numbers its errors.

// pages holds the admin handlers; nav builds the workspace navigation (the
// orgs module's Shell).
type pages struct {
	svc *Service
	nav *orgs.Module
}

// mountUI mounts the admin pages; Routes calls it with the UI router.
func (m *Module) mountUI(ui *app.Router) {
	p := &pages{svc: m.svc, nav: m.nav}
	ws := orgs.ScopeWorkspace(m.db, "id")
	vh := ScopeVirtualHost(m.db, "id")
	st := ScopeStream(m.db, "id")
	page := []string{"page", "per_page"}

	ui.Get("/workspaces/:id/virtual-hosts", app.Require(ObjVirtualHost, authz.Read, ws),
		app.Doc{Summary: "Virtual hosts page", Query: page}, p.vhostList)
	ui.Get("/workspaces/:id/virtual-hosts/new", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "New virtual host form"}, p.vhostNew)
	ui.Post("/workspaces/:id/virtual-hosts", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "Create a virtual host (form)"}, p.vhostCreate)
	ui.Get("/workspaces/:id/virtual-hosts/location-row", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "An empty location of the locations editor (htmx fragment)", Query: []string{"index"}}, p.locationRow)
	ui.Get("/workspaces/:id/virtual-hosts/header-row", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "An empty header row of a location (htmx fragment)", Query: []string{"location", "index"}}, p.headerRow)
	ui.Get("/workspaces/:id/virtual-hosts/rewrite-row", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "An empty rewrite rule row of a location (htmx fragment)", Query: []string{"location", "index"}}, p.rewriteRow)
	ui.Get("/workspaces/:id/virtual-hosts/location-target", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "The target inputs of a location for the chosen target type (htmx fragment)", Query: []string{"index"}}, p.locationTarget)
	ui.Post("/workspaces/:id/virtual-hosts/locations", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "The locations editor re-rendered from the submitted form after removing a row (htmx fragment)"}, p.locationsEditor)
	ui.Get("/virtual-hosts/:id", app.Require(ObjVirtualHost, authz.Read, vh),
		app.Doc{Summary: "Virtual host page: preview panel and edit form"}, p.vhostShow)
	ui.Post("/virtual-hosts/:id", app.Require(ObjVirtualHost, authz.Write, vh),
		app.Doc{Summary: "Update a virtual host (form)"}, p.vhostUpdate)
	ui.Get("/virtual-hosts/:id/preview", app.Require(ObjVirtualHost, authz.Read, vh),
		app.Doc{Summary: "The nginx configuration rendered for a virtual host (page, or the panel for htmx)"}, p.vhostPreview)
	ui.Get("/virtual-hosts/:id/delete", app.Require(ObjVirtualHost, authz.Delete, vh),
		app.Doc{Summary: "Confirm the deletion of a virtual host"}, p.vhostConfirmDelete)
	ui.Post("/virtual-hosts/:id/delete", app.Require(ObjVirtualHost, authz.Delete, vh),
		app.Doc{Summary: "Delete a virtual host (form)"}, p.vhostDelete)

	ui.Get("/workspaces/:id/streams", app.Require(ObjStream, authz.Read, ws),
		app.Doc{Summary: "Streams page", Query: page}, p.streamList)
	ui.Get("/workspaces/:id/streams/new", app.Require(ObjStream, authz.Write, ws),
		app.Doc{Summary: "New stream form"}, p.streamNew)
	ui.Post("/workspaces/:id/streams", app.Require(ObjStream, authz.Write, ws),
		app.Doc{Summary: "Create a stream (form)"}, p.streamCreate)
	ui.Get("/streams/:id", app.Require(ObjStream, authz.Read, st),
		app.Doc{Summary: "Stream page: preview panel and edit form"}, p.streamShow)
	ui.Post("/streams/:id", app.Require(ObjStream, authz.Write, st),
		app.Doc{Summary: "Update a stream (form)"}, p.streamUpdate)
	ui.Get("/streams/:id/preview", app.Require(ObjStream, authz.Read, st),
		app.Doc{Summary: "The nginx configuration rendered for a stream (page, or the panel for htmx)"}, p.streamPreview)
	ui.Get("/streams/:id/delete", app.Require(ObjStream, authz.Delete, st),
		app.Doc{Summary: "Confirm the deletion of a stream"}, p.streamConfirmDelete)
	ui.Post("/streams/:id/delete", app.Require(ObjStream, authz.Delete, st),
		app.Doc{Summary: "Delete a stream (form)"}, p.streamDelete)

	ui.Get("/workspaces/:id/config/versions", app.Require(ObjConfig, authz.Read, ws),
		app.Doc{Summary: "Configuration history page", Query: page}, p.versionList)
	ui.Get("/workspaces/:id/config/versions/:version", app.Require(ObjConfig, authz.Read, ws),
		app.Doc{Summary: "Configuration version page: side-by-side diff against another version and the rendered files", Query: []string{"against"}}, p.versionShow)
	ui.Get("/workspaces/:id/config/versions/:version/rollback", app.Require(ObjConfig, authz.Write, ws),
		app.Doc{Summary: "Confirm a rollback to a configuration version"}, p.rollbackConfirm)
	ui.Post("/workspaces/:id/config/versions/:version/rollback", app.Require(ObjConfig, authz.Write, ws),
		app.Doc{Summary: "Roll back to a configuration version (form)"}, p.rollback)
}

// ---- Shared helpers ----

func uiWorkspacePath(ws uuid.UUID, rest string) string { return "/workspaces/" + ws.String() + rest }
func uiVhostPath(id uuid.UUID) string                  { return "/virtual-hosts/" + id.String() }
func uiStreamPath(id uuid.UUID) string                 { return "/streams/" + id.String() }
func uiVersionPath(ws uuid.UUID, v int64) string {
	return uiWorkspacePath(ws, "/config/versions/"+strconv.FormatInt(v, 10))
}

// shell is the layout of a page of the workspace in the request's scope, with
// section current.
func (p *pages) shell(c *fiber.Ctx, title, section string) (views.Shell, error) {
	scope := app.ScopeOf(c)
	s, err := p.nav.Shell(c, title, scope.OrgID, scope.WorkspaceID, "")
	if err != nil {
		return s, err
	}
	s.AddSections(views.WorkspaceSections(scope.WorkspaceID, section))
	return s, nil
}

// uiAllowed reports whether role may act on object by the module's policies;
// pages hide what the guard would refuse.
func uiAllowed(role, object, action string) bool {
	return slices.Contains(policies(), authz.Policy{Role: role, Object: object, Action: action})
}

func uiWhen(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

func uiYesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// editorOp reads the editor step a submit button asked for (_op): "remove:<row>"
// deletes the row's inputs from vals and is done here; an "add-..." step is
// returned for the caller to apply to the form it reads. ok reports whether
// there was a step.
func editorOp(vals map[string]string) (add string, ok bool) {
	op := vals["_op"]
	if row, isRemove := strings.CutPrefix(op, "remove:"); isRemove {
		for k := range vals {
			if strings.HasPrefix(k, row+".") {
				delete(vals, k)
			}
		}
		return "", true
	}
	return op, op != ""
}

// rowIndex reads a non-negative row number from query parameter name.
func rowIndex(c *fiber.Ctx, name string) (int, error) {
	i, err := strconv.Atoi(c.Query(name))
	if err != nil || i < 0 || i > 100_000 {
		return 0, app.Invalid(name, app.FieldInvalidValue, "must be a row number")
	}
	return i, nil
}

// formFields are the names errors may be shown at: every input, plus the
// lists and rows whose errors are shown above them.
func formFields(vals map[string]string, extra ...string) []string {
	return append(slices.Collect(maps.Keys(vals)), extra...)
}

// formFromError is views.FormFromError for the configuration forms: the
// errors of a list's elements (target_agents.agent_ids[2]) are shown at the
// list's input, and a location that lacks its target at the target's input.
func formFromError(err error, vals map[string]string, fields []string) (views.Form, int, bool) {
	var ve *app.ValidationError
	if errors.As(err, &ve) {
		mapped := &app.ValidationError{}
		for _, fe := range ve.Fields {
			if i := strings.Index(fe.Field, ".agent_ids["); i >= 0 {
				fe.Field = fe.Field[:i] + ".agent_ids"
			}
			// A location without a target: the input of the chosen type
			// is empty.
			if target, ok := vals[fe.Field+".target"]; ok && fe.Code == app.FieldRequired {
				if input := targetInputs[target]; input != "" {
					fe.Field, fe.Message = fe.Field+"."+input, "is required"
				}
			}
			mapped.Fields = append(mapped.Fields, fe)
		}
		err = mapped
	}
	return views.FormFromError(err, vals, fields...)
}

// targetInputs are the input each location target type requires.
var targetInputs = map[string]string{targetProxy: "proxy_pass", targetUpstream: "upstream_id", targetStatic: "root"}

// upstreamOptions are the workspace's upstreams for a select, after a
// "Choose…" option.
func (p *pages) upstreamOptions(ctx context.Context, ws uuid.UUID) ([]views.Option, error) {
	ups, err := p.svc.ups.ListAll(ctx, nil, ws)
	if err != nil {
		return nil, err
	}
	out := []views.Option{{Value: "", Label: "Choose an upstream…"}}
	for _, u := range ups {
		out = append(out, views.Option{Value: u.ID.String(), Label: fmt.Sprintf("%s (%d server(s))", u.Name, len(u.Servers))})
	}
	return out, nil
}

// certificateOptions are the workspace's certificates for a select, after a
// "Choose…" option.
func (p *pages) certificateOptions(ctx context.Context, ws uuid.UUID) ([]views.Option, error) {
	list, err := p.svc.certs.ListAll(ctx, nil, ws)
	if err != nil {
		return nil, err
	}
	out := []views.Option{{Value: "", Label: "Choose a certificate…"}}
	for _, c := range list {
		label := c.Name
		if c.Name != c.Domain {
			label += " (" + c.Domain + ")"
		}
		if c.ExpiresAt != nil {
			label += " · expires " + c.ExpiresAt.UTC().Format("2006-01-02")
		}
		if c.Status == certs.StatusExpired {
			label += " · EXPIRED"
		}
		out = append(out, views.Option{Value: c.ID.String(), Label: label})
	}
	return out, nil
}

// optionLabel is the label of value among opts, or value itself.
func optionLabel(opts []views.Option, value string) string {
	for _, o := range opts {
		if o.Value == value && value != "" {
			return o.Label
		}
	}
	return value
}

// ---- Target agents ----

// Input names of the target selector.
const (
	fTargetType     = "target_agents.type"
	fTargetSelector = "target_agents.label_selector"
	fTargetAgents   = "target_agents.agent_ids"
)

var uiTargetTypes = []views.Option{
	{Value: TargetAll, Label: "All agents of the workspace"},
	{Value: TargetSelector, Label: "Agents matching a label selector"},
	{Value: TargetAgentList, Label: "Listed agents"},
}

// targetForm is the target selector as typed.
type targetForm struct {
	Type, LabelSelector, AgentIDs string
}

func targetFormOf(t TargetAgents) targetForm {
	f := targetForm{Type: t.Type, LabelSelector: t.LabelSelector, AgentIDs: strings.Join(t.AgentIDs, ", ")}
	if f.Type == "" {
		f.Type = TargetAll
	}
	return f
}

func readTargetForm(vals map[string]string) targetForm {
	return targetForm{Type: vals[fTargetType], LabelSelector: vals[fTargetSelector], AgentIDs: vals[fTargetAgents]}
}

func (f targetForm) values(v map[string]string) {
	v[fTargetType], v[fTargetSelector], v[fTargetAgents] = f.Type, f.LabelSelector, f.AgentIDs
}

// targetAgents is the selector the form describes; the input of the other
// type is ignored.
func (f targetForm) targetAgents() *TargetAgents {
	t := &TargetAgents{Type: f.Type}
	switch f.Type {
	case TargetSelector:
		t.LabelSelector = strings.TrimSpace(f.LabelSelector)
	case TargetAgentList:
		t.AgentIDs = strings.FieldsFunc(f.AgentIDs, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
		if t.AgentIDs == nil {
			t.AgentIDs = []string{}
		}
	}
	return t
}

// uiTarget summarizes a selector for tables.
func uiTarget(t TargetAgents) string {
	switch t.Type {
	case TargetSelector:
		return "Labels " + t.LabelSelector
	case TargetAgentList:
		return fmt.Sprintf("%d agent(s)", len(t.AgentIDs))
	}
	return "All agents"
}

// ---- Virtual host form ----

// Target types of a location in the form (one of proxy_pass, upstream_id and
// root is set).
const (
	targetProxy    = "proxy"
	targetUpstream = "upstream"
	targetStatic   = "static"
)

var uiLocationTargets = []views.Option{
	{Value: targetProxy, Label: "Proxy to a URL"},
	{Value: targetUpstream, Label: "Proxy to an upstream"},
	{Value: targetStatic, Label: "Serve static files"},
}

var uiMatches = []views.Option{
	{Value: MatchPrefix, Label: "Prefix"},
	{Value: MatchExact, Label: "Exact"},
}

var uiRewriteFlags = []views.Option{
	{Value: "", Label: "None"},
	{Value: "last", Label: "last"},
	{Value: "break", Label: "break"},
	{Value: "redirect", Label: "redirect (302)"},
	{Value: "permanent", Label: "permanent (301)"},
}

var uiRedirectCodes = []views.Option{
	{Value: "301", Label: "301 Moved Permanently"},
	{Value: "302", Label: "302 Found"},
	{Value: "307", Label: "307 Temporary Redirect"},
	{Value: "308", Label: "308 Permanent Redirect"},
}

// Input names of the virtual host form.
const (
	fName           = "name"
	fServerName     = "server_name"
	fListenPort     = "listen_port"
	fDefaultServer  = "default_server"
	fSSL            = "ssl_enabled"
	fCertificate    = "ssl_certificate_id"
	fHTTP2          = "http2_enabled"
	fRedirectHTTPS  = "redirect_https"
	fRedirectTo     = "redirect_to"
	fRedirectCode   = "redirect_code"
	fBodySize       = "client_max_body_size"
	fConnectTimeout = "proxy_connect_timeout"
	fReadTimeout    = "proxy_read_timeout"
	fSendTimeout    = "proxy_send_timeout"
	fLocations      = "locations"
)

type headerRow struct {
	Name, Value string
	Always      bool
}

func (h headerRow) blank() bool { return strings.TrimSpace(h.Name+h.Value) == "" }

type rewriteRow struct {
	Pattern, Replacement, Flag string
}

func (r rewriteRow) blank() bool { return strings.TrimSpace(r.Pattern+r.Replacement) == "" }

// locationRow is one location as typed.
type locationRow struct {
	Path, Match, Target   string
	ProxyPass, UpstreamID string
	Root, Index           string
	Websocket             bool
	Headers               []headerRow
	Rewrites              []rewriteRow
}

func (l locationRow) blank() bool {
	return strings.TrimSpace(l.Path+l.ProxyPass+l.UpstreamID+l.Root+l.Index) == "" &&
		len(l.Headers) == 0 && len(l.Rewrites) == 0
}

func newLocationRow() locationRow { return locationRow{Match: MatchPrefix, Target: targetProxy} }

// vhostForm is the virtual host form as typed: the text of every input.
type vhostForm struct {
	Name, ServerName, ListenPort string
	DefaultServer                bool
	SSL                          bool
	Certificate                  string
	HTTP2, RedirectHTTPS         bool
	RedirectTo, RedirectCode     string
	BodySize                     string
	ConnectTimeout, ReadTimeout  string
	SendTimeout                  string
	Locations                    []locationRow
	Target                       targetForm
}

func locationField(i int, field string) string { return views.RowField(fLocations, i, field) }

func headersName(i int) string  { return locationField(i, "custom_headers") }
func rewritesName(i int) string { return locationField(i, "rewrite_rules") }

func newVhostForm() vhostForm {
	return vhostForm{RedirectCode: "301", Locations: []locationRow{newLocationRow()}, Target: targetForm{Type: TargetAll}}
}

func locationRowOf(l Location) locationRow {
	r := locationRow{Path: l.Path, Match: l.Match, ProxyPass: l.ProxyPass, UpstreamID: l.UpstreamID, Root: l.Root, Index: l.Index, Websocket: l.Websocket}
	switch {
	case l.UpstreamID != "":
		r.Target = targetUpstream
	case l.Root != "":
		r.Target = targetStatic
	default:
		r.Target = targetProxy
	}
	for _, h := range l.CustomHeaders {
		r.Headers = append(r.Headers, headerRow(h))
	}
	for _, rr := range l.RewriteRules {
		r.Rewrites = append(r.Rewrites, rewriteRow(rr))
	}
	return r
}

func vhostFormOf(v VirtualHost) vhostForm {
	f := vhostForm{
		Name:           v.Name,
		ServerName:     v.ServerName,
		ListenPort:     strconv.Itoa(v.ListenPort),
		DefaultServer:  v.DefaultServer,
		SSL:            v.SSLEnabled,
		HTTP2:          v.HTTP2Enabled,
		RedirectHTTPS:  v.RedirectHTTPS,
		RedirectTo:     v.RedirectTo,
		RedirectCode:   "301",
		BodySize:       v.ClientMaxBodySize,
		ConnectTimeout: views.IntValue(v.ProxyConnectTimeout),
		ReadTimeout:    views.IntValue(v.ProxyReadTimeout),
		SendTimeout:    views.IntValue(v.ProxySendTimeout),
		Target:         targetFormOf(v.TargetAgents),
	}
	if v.SSLCertificateID != nil {
		f.Certificate = v.SSLCertificateID.String()
	}
	if v.RedirectCode != 0 {
		f.RedirectCode = strconv.Itoa(v.RedirectCode)
	}
	for _, l := range v.Locations {
		f.Locations = append(f.Locations, locationRowOf(l))
	}
	return f
}

// readLocation reads location i of a submitted form, blank header and rewrite
// rows dropped.
func readLocation(vals map[string]string, i int) locationRow {
	l := locationRow{
		Path:       vals[locationField(i, "path")],
		Match:      vals[locationField(i, "match")],
		Target:     vals[locationField(i, "target")],
		ProxyPass:  vals[locationField(i, "proxy_pass")],
		UpstreamID: vals[locationField(i, "upstream_id")],
		Root:       vals[locationField(i, "root")],
		Index:      vals[locationField(i, "index")],
		Websocket:  views.Checked(vals, locationField(i, "websocket")),
	}
	for _, j := range views.RowIndexes(vals, headersName(i)) {
		h := headerRow{
			Name:   vals[views.RowField(headersName(i), j, "name")],
			Value:  vals[views.RowField(headersName(i), j, "value")],
			Always: views.Checked(vals, views.RowField(headersName(i), j, "always")),
		}
		if !h.blank() {
			l.Headers = append(l.Headers, h)
		}
	}
	for _, j := range views.RowIndexes(vals, rewritesName(i)) {
		r := rewriteRow{
			Pattern:     vals[views.RowField(rewritesName(i), j, "pattern")],
			Replacement: vals[views.RowField(rewritesName(i), j, "replacement")],
			Flag:        vals[views.RowField(rewritesName(i), j, "flag")],
		}
		if !r.blank() {
			l.Rewrites = append(l.Rewrites, r)
		}
	}
	return l
}

// readVhostForm reads a submitted form: locations and their rows in the
// order of their indexes, blank ones dropped.
func readVhostForm(vals map[string]string) vhostForm {
	f := vhostForm{
		Name:           vals[fName],
		ServerName:     vals[fServerName],
		ListenPort:     vals[fListenPort],
		DefaultServer:  views.Checked(vals, fDefaultServer),
		SSL:            views.Checked(vals, fSSL),
		Certificate:    vals[fCertificate],
		HTTP2:          views.Checked(vals, fHTTP2),
		RedirectHTTPS:  views.Checked(vals, fRedirectHTTPS),
		RedirectTo:     vals[fRedirectTo],
		RedirectCode:   vals[fRedirectCode],
		BodySize:       vals[fBodySize],
		ConnectTimeout: vals[fConnectTimeout],
		ReadTimeout:    vals[fReadTimeout],
		SendTimeout:    vals[fSendTimeout],
		Target:         readTargetForm(vals),
	}
	for _, i := range views.RowIndexes(vals, fLocations) {
		if l := readLocation(vals, i); !l.blank() {
			f.Locations = append(f.Locations, l)
		}
	}
	return f
}

// applyEditorStep adds the row an "add-..." step asks for; the form always
// shows at least one location.
func (f *vhostForm) applyEditorStep(add string) {
	switch {
	case add == "add-location":
		f.Locations = append(f.Locations, newLocationRow())
	case strings.HasPrefix(add, "add-header:"), strings.HasPrefix(add, "add-rewrite:"):
		kind, num, _ := strings.Cut(add, ":")
		i, err := strconv.Atoi(num)
		if err != nil || i < 0 || i >= len(f.Locations) {
			break
		}
		if kind == "add-header" {
			f.Locations[i].Headers = append(f.Locations[i].Headers, headerRow{})
		} else {
			f.Locations[i].Rewrites = append(f.Locations[i].Rewrites, rewriteRow{})
		}
	}
	if len(f.Locations) == 0 {
		f.Locations = []locationRow{newLocationRow()}
	}
}

func locationValues(v map[string]string, i int, l locationRow) {
	v[locationField(i, "path")] = l.Path
	v[locationField(i, "match")] = l.Match
	v[locationField(i, "target")] = l.Target
	v[locationField(i, "proxy_pass")] = l.ProxyPass
	v[locationField(i, "upstream_id")] = l.UpstreamID
	v[locationField(i, "root")] = l.Root
	v[locationField(i, "index")] = l.Index
	v[locationField(i, "websocket")] = views.CheckedValue(l.Websocket)
	for j, h := range l.Headers {
		headerValues(v, i, j, h)
	}
	for j, r := range l.Rewrites {
		rewriteValues(v, i, j, r)
	}
}

func headerValues(v map[string]string, i, j int, h headerRow) {
	v[views.RowField(headersName(i), j, "name")] = h.Name
	v[views.RowField(headersName(i), j, "value")] = h.Value
	v[views.RowField(headersName(i), j, "always")] = views.CheckedValue(h.Always)
}

func rewriteValues(v map[string]string, i, j int, r rewriteRow) {
	v[views.RowField(rewritesName(i), j, "pattern")] = r.Pattern
	v[views.RowField(rewritesName(i), j, "replacement")] = r.Replacement
	v[views.RowField(rewritesName(i), j, "flag")] = r.Flag
}

// values are the form's inputs by name, rows numbered from 0.
func (f vhostForm) values() map[string]string {
	v := map[string]string{
		fName:           f.Name,
		fServerName:     f.ServerName,
		fListenPort:     f.ListenPort,
		fDefaultServer:  views.CheckedValue(f.DefaultServer),
		fSSL:            views.CheckedValue(f.SSL),
		fCertificate:    f.Certificate,
		fHTTP2:          views.CheckedValue(f.HTTP2),
		fRedirectHTTPS:  views.CheckedValue(f.RedirectHTTPS),
		fRedirectTo:     f.RedirectTo,
		fRedirectCode:   f.RedirectCode,
		fBodySize:       f.BodySize,
		fConnectTimeout: f.ConnectTimeout,
		fReadTimeout:    f.ReadTimeout,
		fSendTimeout:    f.SendTimeout,
	}
	f.Target.values(v)
	for i, l := range f.Locations {
		locationValues(v, i, l)
	}
	return v
}

// errorFields are the names the form shows errors at.
func (f vhostForm) errorFields() []string {
	extra := []string{fLocations, "target_agents"}
	for i := range f.Locations {
		extra = append(extra, views.RowName(fLocations, i), headersName(i), rewritesName(i))
	}
	return formFields(f.values(), extra...)
}

// location is the service's form of location row i; only the input of the
// chosen target type is used.
func (l locationRow) location(v *app.Validator, i int) Location {
	out := Location{
		Path:          strings.TrimSpace(l.Path),
		Match:         l.Match,
		Websocket:     l.Websocket,
		CustomHeaders: []Header{},
		RewriteRules:  []RewriteRule{},
	}
	switch l.Target {
	case targetUpstream:
		out.UpstreamID = l.UpstreamID
	case targetStatic:
		out.Root = strings.TrimSpace(l.Root)
		out.Index = strings.TrimSpace(l.Index)
	case targetProxy:
		out.ProxyPass = strings.TrimSpace(l.ProxyPass)
	default:
		v.Add(locationField(i, "target"), app.FieldInvalidValue, "must be proxy, upstream or static")
	}
	for _, h := range l.Headers {
		out.CustomHeaders = append(out.CustomHeaders, Header{Name: strings.TrimSpace(h.Name), Value: h.Value, Always: h.Always})
	}
	for _, r := range l.Rewrites {
		out.RewriteRules = append(out.RewriteRules, RewriteRule(r))
	}
	return out
}

// apply sets the fields the form edits on in; numbers that are not numbers
// are validation errors at their inputs.
func (f vhostForm) apply(in *VirtualHostInput) error {
	v := &app.Validator{}
	in.Name = f.Name
	in.ServerName = f.ServerName
	in.ListenPort = views.OptionalInt(v, fListenPort, f.ListenPort)
	in.SSLEnabled, in.HTTP2Enabled, in.RedirectHTTPS = f.SSL, f.HTTP2, f.RedirectHTTPS
	in.DefaultServer = f.DefaultServer
	in.SSLCertificateID = ""
	if f.SSL {
		in.SSLCertificateID = f.Certificate
	}
	in.RedirectTo = strings.TrimSpace(f.RedirectTo)
	in.RedirectCode = 0
	if in.RedirectTo != "" {
		if code := views.OptionalInt(v, fRedirectCode, f.RedirectCode); code != nil {
			in.RedirectCode = *code
		}
	}
	in.ClientMaxBodySize = strings.TrimSpace(f.BodySize)
	in.ProxyConnectTimeout = views.OptionalInt(v, fConnectTimeout, f.ConnectTimeout)
	in.ProxyReadTimeout = views.OptionalInt(v, fReadTimeout, f.ReadTimeout)
	in.ProxySendTimeout = views.OptionalInt(v, fSendTimeout, f.SendTimeout)
	in.Locations = make([]Location, 0, len(f.Locations))
	for i, l := range f.Locations {
		in.Locations = append(in.Locations, l.location(v, i))
	}
	in.TargetAgents = f.Target.targetAgents()
	return v.Err()
}

// ---- Virtual host pages ----

type vhostListData struct {
	WorkspaceID  uuid.UUID
	VirtualHosts []VirtualHost
	Pager        views.Pager
	CanWrite     bool
	CanDelete    bool
}

func (p *pages) vhostList(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	list, total, err := p.svc.ListVirtualHosts(app.Ctx(c), ws, page)
	if err != nil {
		return err
	}
	shell, err := p.shell(c, "Virtual hosts", views.SectionVirtualHosts)
	if err != nil {
		return err
	}
	role := app.RoleOf(c)
	return views.Page(c, http.StatusOK, shell, vhostListPage(vhostListData{
		WorkspaceID:  ws,
		VirtualHosts: list,
		Pager:        views.NewPager(page, total, uiWorkspacePath(ws, "/virtual-hosts"), nil),
		CanWrite:     uiAllowed(role, ObjVirtualHost, authz.Write),
		CanDelete:    uiAllowed(role, ObjVirtualHost, authz.Delete),
	}))
}

// editor is what the rows of the locations editor need.
type editor struct {
	WorkspaceID uuid.UUID
	Form        views.Form
	Upstreams   []views.Option
}

type vhostFormData struct {
	editor
	// VirtualHost is the host being edited, nil on the create form.
	VirtualHost  *VirtualHost
	Shape        vhostForm
	Certificates []views.Option
	CSRF         string
	CanWrite     bool
	CanDelete    bool
}

func (d vhostFormData) action() string {
	if d.VirtualHost != nil {
		return uiVhostPath(d.VirtualHost.ID)
	}
	return uiWorkspacePath(d.WorkspaceID, "/virtual-hosts")
}

func (p *pages) newEditor(ctx context.Context, ws uuid.UUID, form views.Form) (editor, error) {
	ups, err := p.upstreamOptions(ctx, ws)
	if err != nil {
		return editor{}, err
	}
	return editor{WorkspaceID: ws, Form: form, Upstreams: ups}, nil
}

// renderVhost renders the create form (vh nil) or the page of vh, with f as
// typed and form's values and messages.
func (p *pages) renderVhost(c *fiber.Ctx, status int, vh *VirtualHost, f vhostForm, form views.Form) error {
	ctx, ws := app.Ctx(c), app.ScopeOf(c).WorkspaceID
	title := "New virtual host"
	if vh != nil {
		title = vh.Name
	}
	shell, err := p.shell(c, title, views.SectionVirtualHosts)
	if err != nil {
		return err
	}
	ed, err := p.newEditor(ctx, ws, form)
	if err != nil {
		return err
	}
	certOpts, err := p.certificateOptions(ctx, ws)
	if err != nil {
		return err
	}
	role := app.RoleOf(c)
	return views.Page(c, status, shell, vhostPage(vhostFormData{
		editor:       ed,
		VirtualHost:  vh,
		Shape:        f,
		Certificates: certOpts,
		CSRF:         shell.CSRF,
		CanWrite:     uiAllowed(role, ObjVirtualHost, authz.Write),
		CanDelete:    vh != nil && uiAllowed(role, ObjVirtualHost, authz.Delete),
	}))
}

func (p *pages) vhostNew(c *fiber.Ctx) error {
	f := newVhostForm()
	return p.renderVhost(c, http.StatusOK, nil, f, views.Form{Values: f.values()})
}

// vhostFailed re-renders the form of f with the error's messages, or returns
// err when the form cannot show it.
func (p *pages) vhostFailed(c *fiber.Ctx, vh *VirtualHost, f vhostForm, err error) error {
	if len(f.Locations) == 0 {
		f.Locations = []locationRow{newLocationRow()}
	}
	form, status, ok := formFromError(err, f.values(), f.errorFields())
	if !ok {
		return err
	}
	return p.renderVhost(c, status, vh, f, form)
}

// vhostStep handles an editor step of a submitted form: the form comes back
// with the change, nothing is saved.
func (p *pages) vhostStep(c *fiber.Ctx, vh *VirtualHost, vals map[string]string) (bool, error) {
	add, ok := editorOp(vals)
	if !ok {
		return false, nil
	}
	f := readVhostForm(vals)
	f.applyEditorStep(add)
	return true, p.renderVhost(c, http.StatusOK, vh, f, views.Form{Values: f.values()})
}

func (p *pages) vhostCreate(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	vals := views.PostedValues(c)
	if done, err := p.vhostStep(c, nil, vals); done {
		return err
	}
	f := readVhostForm(vals)
	var in VirtualHostInput
	err := f.apply(&in)
	if err == nil {
		var vh VirtualHost
		if vh, err = p.svc.CreateVirtualHost(app.Ctx(c), ws, in); err == nil {
			views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Virtual host %q created.", vh.Name)})
			return views.SeeOther(c, uiVhostPath(vh.ID))
		}
	}
	return p.vhostFailed(c, nil, f, err)
}

// virtualHost loads the virtual host the route addresses.
func (p *pages) virtualHost(c *fiber.Ctx) (VirtualHost, error) {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return VirtualHost{}, ErrVirtualHostNotFound
	}
	return p.svc.GetVirtualHost(app.Ctx(c), id)
}

func (p *pages) vhostShow(c *fiber.Ctx) error {
	vh, err := p.virtualHost(c)
	if err != nil {
		return err
	}
	f := vhostFormOf(vh)
	if len(f.Locations) == 0 {
		f.Locations = []locationRow{newLocationRow()}
	}
	return p.renderVhost(c, http.StatusOK, &vh, f, views.Form{Values: f.values()})
}

func (p *pages) vhostUpdate(c *fiber.Ctx) error {
	vh, err := p.virtualHost(c)
	if err != nil {
		return err
	}
	vals := views.PostedValues(c)
	if done, err := p.vhostStep(c, &vh, vals); done {
		return err
	}
	f := readVhostForm(vals)
	saved, err := p.svc.UpdateVirtualHost(app.Ctx(c), vh.ID, f.apply)
	if err != nil {
		return p.vhostFailed(c, &vh, f, err)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Virtual host %q saved.", saved.Name)})
	return views.SeeOther(c, uiVhostPath(saved.ID))
}

// previewData is the rendered configuration of one object.
type previewData struct {
	Files []previewFile
	// Back is the object's page (the full preview page links back to it).
	Back string
}

type previewFile struct{ Name, Content string }

func previewOf(p Preview, back string) previewData {
	d := previewData{Back: back}
	for name, content := range p.Files {
		d.Files = append(d.Files, previewFile{Name: name, Content: content})
	}
	sort.Slice(d.Files, func(i, j int) bool { return d.Files[i].Name < d.Files[j].Name })
	return d
}

// sendPreviewPage answers a preview: the panel for the htmx request of an
// object's page, the whole page otherwise.
func (p *pages) sendPreviewPage(c *fiber.Ctx, title, section string, d previewData) error {
	if views.IsHTMX(c) && c.Get("HX-Target") == "preview-panel" {
		return views.Render(c, http.StatusOK, previewPanel(d))
	}
	shell, err := p.shell(c, title, section)
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, previewPage(d))
}

func (p *pages) vhostPreview(c *fiber.Ctx) error {
	vh, err := p.virtualHost(c)
	if err != nil {
		return err
	}
	pv, err := p.svc.PreviewVirtualHost(app.Ctx(c), vh.ID)
	if err != nil {
		return err
	}
	return p.sendPreviewPage(c, "Preview of "+vh.Name, views.SectionVirtualHosts, previewOf(pv, uiVhostPath(vh.ID)))
}

// locationRow answers "Add location": the empty location index and, out of
// band, the button that adds the next one.
func (p *pages) locationRow(c *fiber.Ctx) error {
	i, err := rowIndex(c, "index")
	if err != nil {
		return err
	}
	l := newLocationRow()
	v := map[string]string{}
	locationValues(v, i, l)
	ed, err := p.newEditor(app.Ctx(c), app.ScopeOf(c).WorkspaceID, views.Form{Values: v})
	if err != nil {
		return err
	}
	return views.Render(c, http.StatusOK, addedLocation(ed, i, l))
}

func (p *pages) headerRow(c *fiber.Ctx) error {
	i, err := rowIndex(c, "location")
	if err != nil {
		return err
	}
	j, err := rowIndex(c, "index")
	if err != nil {
		return err
	}
	v := map[string]string{}
	headerValues(v, i, j, headerRow{})
	ed := editor{WorkspaceID: app.ScopeOf(c).WorkspaceID, Form: views.Form{Values: v}}
	return views.Render(c, http.StatusOK, addedHeader(ed, i, j))
}

func (p *pages) rewriteRow(c *fiber.Ctx) error {
	i, err := rowIndex(c, "location")
	if err != nil {
		return err
	}
	j, err := rowIndex(c, "index")
	if err != nil {
		return err
	}
	v := map[string]string{}
	rewriteValues(v, i, j, rewriteRow{})
	ed := editor{WorkspaceID: app.ScopeOf(c).WorkspaceID, Form: views.Form{Values: v}}
	return views.Render(c, http.StatusOK, addedRewrite(ed, i, j))
}

// locationTarget answers a change of a location's target type: the inputs of
// that type, filled with what the row holds.
func (p *pages) locationTarget(c *fiber.Ctx) error {
	i, err := rowIndex(c, "index")
	if err != nil {
		return err
	}
	vals := map[string]string{}
	c.Context().QueryArgs().VisitAll(func(k, v []byte) { vals[string(k)] = string(v) })
	l := readLocation(vals, i)
	v := map[string]string{}
	locationValues(v, i, l)
	ed, err := p.newEditor(app.Ctx(c), app.ScopeOf(c).WorkspaceID, views.Form{Values: v})
	if err != nil {
		return err
	}
	return views.Render(c, http.StatusOK, locationTargetInputs(ed, i, l))
}

// locationsEditor answers "Remove": the locations editor of the submitted
// form without the row.
func (p *pages) locationsEditor(c *fiber.Ctx) error {
	vals := views.PostedValues(c)
	add, _ := editorOp(vals)
	f := readVhostForm(vals)
	f.applyEditorStep(add)
	ed, err := p.newEditor(app.Ctx(c), app.ScopeOf(c).WorkspaceID, views.Form{Values: f.values()})
	if err != nil {
		return err
	}
	return views.Render(c, http.StatusOK, locationsEditor(ed, f.Locations))
}

func (p *pages) vhostConfirmDelete(c *fiber.Ctx) error {
	vh, err := p.virtualHost(c)
	if err != nil {
		return err
	}
	return p.renderConfirm(c, http.StatusOK, views.SectionVirtualHosts, views.ConfirmProps{
		Question: fmt.Sprintf("Delete virtual host %q?", vh.Name),
		Details: []string{fmt.Sprintf("Agents stop serving %s on port %d with the next configuration version. "+
			"The change can be rolled back from the configuration history.", vh.ServerName, vh.ListenPort)},
		Action: uiVhostPath(vh.ID) + "/delete",
		Button: "Delete virtual host",
		Cancel: uiVhostPath(vh.ID),
	})
}

// renderConfirm renders a confirmation step (status shows a refusal).
func (p *pages) renderConfirm(c *fiber.Ctx, status int, section string, props views.ConfirmProps) error {
	shell, err := p.shell(c, "Please confirm", section)
	if err != nil {
		return err
	}
	props.CSRF = shell.CSRF
	return views.Page(c, status, shell, views.Confirm(props))
}

func (p *pages) vhostDelete(c *fiber.Ctx) error {
	vh, err := p.virtualHost(c)
	if err != nil {
		return err
	}
	if err := p.svc.DeleteVirtualHost(app.Ctx(c), vh.ID); err != nil {
		return err
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Virtual host %q deleted.", vh.Name)})
	return views.SeeOther(c, uiWorkspacePath(vh.WorkspaceID, "/virtual-hosts"))
}

// ---- Streams ----

// Input names of the stream form.
const (
	fProtocol       = "protocol"
	fUpstream       = "upstream_id"
	fProxyProtocol  = "proxy_protocol"
	fAcceptProxy    = "accept_proxy_protocol"
	fStreamConnect  = "connect_timeout"
	fStreamTimeout  = "timeout"
	fBandwidthLimit = "bandwidth_limit"
)

var uiProtocols = []views.Option{{Value: ProtocolTCP, Label: "TCP"}, {Value: ProtocolUDP, Label: "UDP"}}

// streamForm is the stream form as typed.
type streamForm struct {
	Name, ListenPort, Protocol, Upstream string
	SSL                                  bool
	Certificate                          string
	ProxyProtocol, AcceptProxy           bool
	ConnectTimeout, Timeout, Bandwidth   string
	Target                               targetForm
}

func newStreamForm() streamForm {
	return streamForm{Protocol: ProtocolTCP, Target: targetForm{Type: TargetAll}}
}

func streamFormOf(s Stream) streamForm {
	f := streamForm{
		Name: s.Name, ListenPort: strconv.Itoa(s.ListenPort), Protocol: s.Protocol, Upstream: s.UpstreamID.String(),
		SSL: s.SSLEnabled, ProxyProtocol: s.ProxyProtocol, AcceptProxy: s.AcceptProxyProtocol,
		ConnectTimeout: views.IntValue(s.ConnectTimeout), Timeout: views.IntValue(s.Timeout), Bandwidth: s.BandwidthLimit,
		Target: targetFormOf(s.TargetAgents),
	}
	if s.SSLCertificateID != nil {
		f.Certificate = s.SSLCertificateID.String()
	}
	return f
}

func readStreamForm(vals map[string]string) streamForm {
	return streamForm{
		Name: vals[fName], ListenPort: vals[fListenPort], Protocol: vals[fProtocol], Upstream: vals[fUpstream],
		SSL: views.Checked(vals, fSSL), Certificate: vals[fCertificate],
		ProxyProtocol: views.Checked(vals, fProxyProtocol), AcceptProxy: views.Checked(vals, fAcceptProxy),
		ConnectTimeout: vals[fStreamConnect], Timeout: vals[fStreamTimeout], Bandwidth: vals[fBandwidthLimit],
		Target: readTargetForm(vals),
	}
}

func (f streamForm) values() map[string]string {
	v := map[string]string{
		fName: f.Name, fListenPort: f.ListenPort, fProtocol: f.Protocol, fUpstream: f.Upstream,
		fSSL: views.CheckedValue(f.SSL), fCertificate: f.Certificate,
		fProxyProtocol: views.CheckedValue(f.ProxyProtocol), fAcceptProxy: views.CheckedValue(f.AcceptProxy),
		fStreamConnect: f.ConnectTimeout, fStreamTimeout: f.Timeout, fBandwidthLimit: f.Bandwidth,
	}
	f.Target.values(v)
	return v
}

// apply sets every field of in from the form.
func (f streamForm) apply(in *StreamInput) error {
	v := &app.Validator{}
	in.Name = f.Name
	in.ListenPort = 0
	if port := views.OptionalInt(v, fListenPort, f.ListenPort); port != nil {
		in.ListenPort = *port
	}
	in.Protocol = f.Protocol
	in.UpstreamID = f.Upstream
	in.SSLEnabled = f.SSL
	in.SSLCertificateID = ""
	if f.SSL {
		in.SSLCertificateID = f.Certificate
	}
	in.ProxyProtocol, in.AcceptProxyProtocol = f.ProxyProtocol, f.AcceptProxy
	in.ConnectTimeout = views.OptionalInt(v, fStreamConnect, f.ConnectTimeout)
	in.Timeout = views.OptionalInt(v, fStreamTimeout, f.Timeout)
	in.BandwidthLimit = strings.TrimSpace(f.Bandwidth)
	in.TargetAgents = f.Target.targetAgents()
	return v.Err()
}

type streamListData struct {
	WorkspaceID uuid.UUID
	Streams     []Stream
	Upstreams   []views.Option
	Pager       views.Pager
	CanWrite    bool
	CanDelete   bool
}

func (p *pages) streamList(c *fiber.Ctx) error {
	ctx, ws := app.Ctx(c), app.ScopeOf(c).WorkspaceID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	list, total, err := p.svc.ListStreams(ctx, ws, page)
	if err != nil {
		return err
	}
	ups, err := p.upstreamOptions(ctx, ws)
	if err != nil {
		return err
	}
	shell, err := p.shell(c, "Streams", views.SectionStreams)
	if err != nil {
		return err
	}
	role := app.RoleOf(c)
	return views.Page(c, http.StatusOK, shell, streamListPage(streamListData{
		WorkspaceID: ws,
		Streams:     list,
		Upstreams:   ups,
		Pager:       views.NewPager(page, total, uiWorkspacePath(ws, "/streams"), nil),
		CanWrite:    uiAllowed(role, ObjStream, authz.Write),
		CanDelete:   uiAllowed(role, ObjStream, authz.Delete),
	}))
}

type streamFormData struct {
	WorkspaceID  uuid.UUID
	Stream       *Stream
	Form         views.Form
	Upstreams    []views.Option
	Certificates []views.Option
	CSRF         string
	CanWrite     bool
	CanDelete    bool
}

func (d streamFormData) action() string {
	if d.Stream != nil {
		return uiStreamPath(d.Stream.ID)
	}
	return uiWorkspacePath(d.WorkspaceID, "/streams")
}

func (p *pages) renderStream(c *fiber.Ctx, status int, st *Stream, form views.Form) error {
	ctx, ws := app.Ctx(c), app.ScopeOf(c).WorkspaceID
	title := "New stream"
	if st != nil {
		title = st.Name
	}
	shell, err := p.shell(c, title, views.SectionStreams)
	if err != nil {
		return err
	}
	ups, err := p.upstreamOptions(ctx, ws)
	if err != nil {
		return err
	}
	certOpts, err := p.certificateOptions(ctx, ws)
	if err != nil {
		return err
	}
	role := app.RoleOf(c)
	return views.Page(c, status, shell, streamPage(streamFormData{
		WorkspaceID:  ws,
		Stream:       st,
		Form:         form,
		Upstreams:    ups,
		Certificates: certOpts,
		CSRF:         shell.CSRF,
		CanWrite:     uiAllowed(role, ObjStream, authz.Write),
		CanDelete:    st != nil && uiAllowed(role, ObjStream, authz.Delete),
	}))
}

func (p *pages) streamFailed(c *fiber.Ctx, st *Stream, f streamForm, err error) error {
	vals := f.values()
	form, status, ok := formFromError(err, vals, formFields(vals, "target_agents"))
	if !ok {
		return err
	}
	return p.renderStream(c, status, st, form)
}

func (p *pages) streamNew(c *fiber.Ctx) error {
	return p.renderStream(c, http.StatusOK, nil, views.Form{Values: newStreamForm().values()})
}

func (p *pages) streamCreate(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	f := readStreamForm(views.PostedValues(c))
	var in StreamInput
	err := f.apply(&in)
	if err == nil {
		var st Stream
		if st, err = p.svc.CreateStream(app.Ctx(c), ws, in); err == nil {
			views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Stream %q created.", st.Name)})
			return views.SeeOther(c, uiStreamPath(st.ID))
		}
	}
	return p.streamFailed(c, nil, f, err)
}

// stream loads the stream the route addresses.
func (p *pages) stream(c *fiber.Ctx) (Stream, error) {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return Stream{}, ErrStreamNotFound
	}
	return p.svc.GetStream(app.Ctx(c), id)
}

func (p *pages) streamShow(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	return p.renderStream(c, http.StatusOK, &st, views.Form{Values: streamFormOf(st).values()})
}

func (p *pages) streamUpdate(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	f := readStreamForm(views.PostedValues(c))
	saved, err := p.svc.UpdateStream(app.Ctx(c), st.ID, f.apply)
	if err != nil {
		return p.streamFailed(c, &st, f, err)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Stream %q saved.", saved.Name)})
	return views.SeeOther(c, uiStreamPath(saved.ID))
}

func (p *pages) streamPreview(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	pv, err := p.svc.PreviewStream(app.Ctx(c), st.ID)
	if err != nil {
		return err
	}
	return p.sendPreviewPage(c, "Preview of "+st.Name, views.SectionStreams, previewOf(pv, uiStreamPath(st.ID)))
}

func (p *pages) streamConfirmDelete(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	return p.renderConfirm(c, http.StatusOK, views.SectionStreams, views.ConfirmProps{
		Question: fmt.Sprintf("Delete stream %q?", st.Name),
		Details: []string{fmt.Sprintf("Agents stop listening on %d/%s with the next configuration version. "+
			"The change can be rolled back from the configuration history.", st.ListenPort, st.Protocol)},
		Action: uiStreamPath(st.ID) + "/delete",
		Button: "Delete stream",
		Cancel: uiStreamPath(st.ID),
	})
}

func (p *pages) streamDelete(c *fiber.Ctx) error {
	st, err := p.stream(c)
	if err != nil {
		return err
	}
	if err := p.svc.DeleteStream(app.Ctx(c), st.ID); err != nil {
		return err
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Stream %q deleted.", st.Name)})
	return views.SeeOther(c, uiWorkspacePath(st.WorkspaceID, "/streams"))
}

// ---- Configuration history ----

type versionListData struct {
	WorkspaceID uuid.UUID
	Versions    []VersionSummary
	Current     int64
	Pager       views.Pager
	CanWrite    bool
}

func (p *pages) versionList(c *fiber.Ctx) error {
	ctx, ws := app.Ctx(c), app.ScopeOf(c).WorkspaceID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	list, total, err := p.svc.ListVersions(ctx, ws, page)
	if err != nil {
		return err
	}
	current, err := p.svc.CurrentVersion(ctx, ws)
	if err != nil {
		return err
	}
	shell, err := p.shell(c, "Configuration history", views.SectionConfig)
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, versionListPage(versionListData{
		WorkspaceID: ws,
		Versions:    list,
		Current:     current,
		Pager:       views.NewPager(page, total, uiWorkspacePath(ws, "/config/versions"), nil),
		CanWrite:    uiAllowed(app.RoleOf(c), ObjConfig, authz.Write),
	}))
}

// uiActor is who made a change, as the history shows it.
func uiActor(a Actor) string {
	switch {
	case a.Email != "" && a.APIKeyID != nil:
		return a.Email + " (API key)"
	case a.Email != "":
		return a.Email
	case a.APIKeyID != nil:
		return "API key " + a.APIKeyID.String()[:8]
	}
	return "NxMesh"
}

type versionData struct {
	WorkspaceID uuid.UUID
	Version     Version
	Current     int64
	Against     int64
	// Choices are the versions to compare with (0: the empty configuration).
	Choices  []views.Option
	Diff     []diffFile
	Files    []previewFile
	CanWrite bool
}

func (p *pages) versionShow(c *fiber.Ctx) error {
	ctx, ws := app.Ctx(c), app.ScopeOf(c).WorkspaceID
	n, err := paramVersion(c)
	if err != nil {
		return err
	}
	v, err := p.svc.GetVersion(ctx, ws, n)
	if err != nil {
		return err
	}
	against := n - 1
	if s := c.Query("against"); s != "" {
		a, err := strconv.ParseInt(s, 10, 64)
		if err != nil || a < 0 {
			return app.Invalid("against", app.FieldInvalidValue, "must be a version number (0 for the empty configuration)")
		}
		against = a
	}
	d, err := p.svc.DiffVersions(ctx, ws, n, against)
	if err != nil {
		return err
	}
	current, err := p.svc.CurrentVersion(ctx, ws)
	if err != nil {
		return err
	}
	recent, _, err := p.svc.ListVersions(ctx, ws, app.Page{Page: 1, PerPage: app.MaxPerPage})
	if err != nil {
		return err
	}
	choices := []views.Option{}
	seen := false
	for _, r := range recent {
		if r.Version == n {
			continue
		}
		seen = seen || r.Version == against
		choices = append(choices, views.Option{
			Value: strconv.FormatInt(r.Version, 10),
			Label: fmt.Sprintf("Version %d · %s", r.Version, r.Summary),
		})
	}
	if !seen && against != 0 {
		choices = append(choices, views.Option{Value: strconv.FormatInt(against, 10), Label: fmt.Sprintf("Version %d", against)})
	}
	choices = append(choices, views.Option{Value: "0", Label: "Empty configuration"})
	shell, err := p.shell(c, fmt.Sprintf("Configuration version %d", n), views.SectionConfig)
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, versionPage(versionData{
		WorkspaceID: ws,
		Version:     v,
		Current:     current,
		Against:     against,
		Choices:     choices,
		Diff:        parseUnifiedDiff(d.Diff),
		Files:       previewOf(Preview{Files: v.Files}, "").Files,
		CanWrite:    uiAllowed(app.RoleOf(c), ObjConfig, authz.Write),
	}))
}

func (p *pages) rollbackConfirm(c *fiber.Ctx) error {
	return p.renderRollback(c, http.StatusOK, views.Form{})
}

func (p *pages) renderRollback(c *fiber.Ctx, status int, form views.Form) error {
	ctx, ws := app.Ctx(c), app.ScopeOf(c).WorkspaceID
	n, err := paramVersion(c)
	if err != nil {
		return err
	}
	v, err := p.svc.GetVersion(ctx, ws, n)
	if err != nil {
		return err
	}
	return p.renderConfirm(c, status, views.SectionConfig, views.ConfirmProps{
		Question: fmt.Sprintf("Roll back to configuration version %d (%s)?", n, v.Summary),
		Details: []string{
			"The upstreams, virtual hosts and streams of the workspace become what they were in that version; " +
				"the rollback is recorded as a new version and pushed to the agents.",
			"Certificates are not restored: if the version uses one that was deleted since, the rollback is refused.",
		},
		Form:   form,
		Action: uiVersionPath(ws, n) + "/rollback",
		Button: fmt.Sprintf("Roll back to version %d", n),
		Cancel: uiVersionPath(ws, n),
	})
}

func (p *pages) rollback(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	n, err := paramVersion(c)
	if err != nil {
		return err
	}
	out, err := p.svc.Rollback(app.Ctx(c), ws, n)
	if err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderRollback(c, status, form)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess,
		Message: fmt.Sprintf("Rolled back to version %d: the configuration is now version %d.", n, out.Version)})
	return views.SeeOther(c, uiWorkspacePath(ws, "/config/versions"))
}

// ---- Side-by-side diff ----

// diffFile is one file of a unified diff laid out in two columns.
type diffFile struct {
	// Old and New are the file's names before and after ("" when absent).
	Old, New string
	Rows     []diffRow
}

// Name is the file's name.
func (f diffFile) Name() string {
	if f.New != "" {
		return f.New
	}
	return f.Old
}

// diffRow is one row of a side-by-side diff: a hunk header, or a line of each
// side (a number of 0 leaves that side empty).
type diffRow struct {
	Hunk           string
	OldNo, NewNo   int
	Old, New       string
	Removed, Added bool
}

// parseUnifiedDiff lays out a unified diff (the vhosts service's) in two
// columns: unchanged lines on both sides, removed lines on the left facing
// the lines added in their place on the right.
func parseUnifiedDiff(text string) []diffFile {
	var files []diffFile
	var cur *diffFile
	var oldNo, newNo int
	var removed, added []string
	flush := func() {
		if cur == nil {
			return
		}
		for i := 0; i < max(len(removed), len(added)); i++ {
			r := diffRow{}
			if i < len(removed) {
				oldNo++
				r.OldNo, r.Old, r.Removed = oldNo, removed[i], true
			}
			if i < len(added) {
				newNo++
				r.NewNo, r.New, r.Added = newNo, added[i], true
			}
			cur.Rows = append(cur.Rows, r)
		}
		removed, added = nil, nil
	}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "--- ") && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "+++ "):
			flush()
			files = append(files, diffFile{Old: diffName(line[4:]), New: diffName(lines[i+1][4:])})
			cur = &files[len(files)-1]
			i++
		case cur == nil:
		case strings.HasPrefix(line, "@@"):
			flush()
			oldNo, newNo = hunkStart(line)
			cur.Rows = append(cur.Rows, diffRow{Hunk: line})
		case strings.HasPrefix(line, "-"):
			removed = append(removed, line[1:])
		case strings.HasPrefix(line, "+"):
			added = append(added, line[1:])
		case strings.HasPrefix(line, " "):
			flush()
			oldNo++
			newNo++
			cur.Rows = append(cur.Rows, diffRow{OldNo: oldNo, NewNo: newNo, Old: line[1:], New: line[1:]})
		}
	}
	flush()
	return files
}

// diffName strips the a/ or b/ prefix of a file name in a diff header;
// /dev/null (the file is absent on that side) is "".
func diffName(s string) string {
	s, _, _ = strings.Cut(s, "\t")
	if s == "/dev/null" {
		return ""
	}
	if len(s) > 2 && (s[:2] == "a/" || s[:2] == "b/") {
		return s[2:]
	}
	return s
}

// hunkStart returns the line numbers before a hunk's first line, from its
// header "@@ -12,7 +12,9 @@".
func hunkStart(header string) (oldNo, newNo int) {
	fields := strings.Fields(header)
	if len(fields) < 3 {
		return 0, 0
	}
	start := func(s string) int {
		s, _, _ = strings.Cut(s[1:], ",")
		n, _ := strconv.Atoi(s)
		return max(n-1, 0)
	}
	return start(fields[1]), start(fields[2])
}

// uiIndent is a configuration line's indentation as no-break spaces, which an
// HTML table cell keeps (tabs count four).
func uiIndent(line string) string {
	indent := line[:len(line)-len(uiText(line))]
	return strings.Repeat("\u00a0", len(strings.ReplaceAll(indent, "\t", "    ")))
}

// uiText is a configuration line without its indentation.
func uiText(line string) string { return strings.TrimLeft(line, " \t") }

func uiLineNo(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}
