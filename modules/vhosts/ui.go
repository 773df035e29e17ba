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
//	GET  /workspaces/:id/target-agents                   the forms' agent picker (htmx)
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
//
// This file mounts the pages and holds what they share; each family has its
// file: ui_virtualhosts.go (with the form in ui_virtualhosts_form.go),
// ui_streams.go, ui_versions.go (with ui_diff.go), and ui_targets.go for the
// target agents selector of both forms.

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
	vh := ScopeVirtualHost(m.db, "id")
	st := ScopeStream(m.db, "id")
	page := []string{"page", "per_page"}

	ui.Get("/workspaces/:id/virtual-hosts", app.Require(ObjVirtualHost, authz.Read, ws),
		app.Doc{Summary: "Virtual hosts page", Query: page}, p.vhostList)
	ui.Get("/workspaces/:id/virtual-hosts/new", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "New virtual host form"}, p.vhostNew)
	ui.Post("/workspaces/:id/virtual-hosts", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "Create a virtual host (form)", ConfigVersion: true}, p.vhostCreate)
	ui.Get("/workspaces/:id/virtual-hosts/location-row", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "An empty location of the locations editor (htmx fragment)", Query: []string{"index"}}, p.locationRow)
	ui.Get("/workspaces/:id/virtual-hosts/header-row", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "An empty header row of a location (htmx fragment)", Query: []string{"location", "index"}}, p.headerRow)
	ui.Get("/workspaces/:id/virtual-hosts/rewrite-row", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "An empty rewrite rule row of a location (htmx fragment)", Query: []string{"location", "index"}}, p.rewriteRow)
	ui.Get("/workspaces/:id/target-agents", app.Require(ObjVirtualHost, authz.Read, ws),
		app.Doc{Summary: "The agents a virtual host or stream can be sent to (htmx fragment of the forms)"}, p.targetAgents)
	ui.Get("/workspaces/:id/virtual-hosts/location-target", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "The target inputs of a location for the chosen target type (htmx fragment)", Query: []string{"index"}}, p.locationTarget)
	ui.Post("/workspaces/:id/virtual-hosts/locations", app.Require(ObjVirtualHost, authz.Write, ws),
		app.Doc{Summary: "The locations editor re-rendered from the submitted form after removing a row (htmx fragment)"}, p.locationsEditor)
	ui.Get("/virtual-hosts/:id", app.Require(ObjVirtualHost, authz.Read, vh),
		app.Doc{Summary: "Virtual host page: preview panel and edit form"}, p.vhostShow)
	ui.Post("/virtual-hosts/:id", app.Require(ObjVirtualHost, authz.Write, vh),
		app.Doc{Summary: "Update a virtual host (form)", ConfigVersion: true}, p.vhostUpdate)
	ui.Get("/virtual-hosts/:id/preview", app.Require(ObjVirtualHost, authz.Read, vh),
		app.Doc{Summary: "The nginx configuration rendered for a virtual host (page, or the panel for htmx)"}, p.vhostPreview)
	ui.Get("/virtual-hosts/:id/delete", app.Require(ObjVirtualHost, authz.Delete, vh),
		app.Doc{Summary: "Confirm the deletion of a virtual host"}, p.vhostConfirmDelete)
	ui.Post("/virtual-hosts/:id/delete", app.Require(ObjVirtualHost, authz.Delete, vh),
		app.Doc{Summary: "Delete a virtual host (form)", ConfigVersion: true}, p.vhostDelete)

	ui.Get("/workspaces/:id/streams", app.Require(ObjStream, authz.Read, ws),
		app.Doc{Summary: "Streams page", Query: page}, p.streamList)
	ui.Get("/workspaces/:id/streams/new", app.Require(ObjStream, authz.Write, ws),
		app.Doc{Summary: "New stream form"}, p.streamNew)
	ui.Post("/workspaces/:id/streams", app.Require(ObjStream, authz.Write, ws),
		app.Doc{Summary: "Create a stream (form)", ConfigVersion: true}, p.streamCreate)
	ui.Get("/streams/:id", app.Require(ObjStream, authz.Read, st),
		app.Doc{Summary: "Stream page: preview panel and edit form"}, p.streamShow)
	ui.Post("/streams/:id", app.Require(ObjStream, authz.Write, st),
		app.Doc{Summary: "Update a stream (form)", ConfigVersion: true}, p.streamUpdate)
	ui.Get("/streams/:id/preview", app.Require(ObjStream, authz.Read, st),
		app.Doc{Summary: "The nginx configuration rendered for a stream (page, or the panel for htmx)"}, p.streamPreview)
	ui.Get("/streams/:id/delete", app.Require(ObjStream, authz.Delete, st),
		app.Doc{Summary: "Confirm the deletion of a stream"}, p.streamConfirmDelete)
	ui.Post("/streams/:id/delete", app.Require(ObjStream, authz.Delete, st),
		app.Doc{Summary: "Delete a stream (form)", ConfigVersion: true}, p.streamDelete)

	ui.Get("/workspaces/:id/config/versions", app.Require(ObjConfig, authz.Read, ws),
		app.Doc{Summary: "Configuration history page", Query: page}, p.versionList)
	ui.Get("/workspaces/:id/config/versions/:version", app.Require(ObjConfig, authz.Read, ws),
		app.Doc{Summary: "Configuration version page: side-by-side diff against another version and the rendered files", Query: []string{"against"}}, p.versionShow)
	ui.Get("/workspaces/:id/config/versions/:version/rollback", app.Require(ObjConfig, authz.Write, ws),
		app.Doc{Summary: "Confirm a rollback to a configuration version"}, p.rollbackConfirm)
	ui.Post("/workspaces/:id/config/versions/:version/rollback", app.Require(ObjConfig, authz.Write, ws),
		app.Doc{Summary: "Roll back to a configuration version (form)", ConfigVersion: true}, p.rollback)
}

// ---- Shared helpers ----

func uiWorkspacePath(ws uuid.UUID, rest string) string { return "/workspaces/" + ws.String() + rest }
func uiVhostPath(id uuid.UUID) string                  { return "/virtual-hosts/" + id.String() }
func uiStreamPath(id uuid.UUID) string                 { return "/streams/" + id.String() }
func uiVersionPath(ws uuid.UUID, v int64) string {
	return uiWorkspacePath(ws, "/config/versions/"+strconv.FormatInt(v, 10))
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
	ups, err := p.svc.workspaceUpstreams(ctx, ws)
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
	list, err := p.svc.workspaceCertificates(ctx, ws)
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

// ---- Preview and confirmation, shared by every page family ----

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
	shell, err := p.ui.Shell(c, title, section)
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, previewPage(d))
}

// renderConfirm renders a confirmation step (status shows a refusal).
func (p *pages) renderConfirm(c *fiber.Ctx, status int, section string, props views.ConfirmProps) error {
	shell, err := p.ui.Shell(c, "Please confirm", section)
	if err != nil {
		return err
	}
	props.CSRF = shell.CSRF
	return views.Page(c, status, shell, views.Confirm(props))
}
