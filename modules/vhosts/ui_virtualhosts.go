package vhosts

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/views"
)

// The virtual host pages: list, create and edit form with its editor
// fragments, preview and delete.

type vhostListData struct {
	WorkspaceID  uuid.UUID
	VirtualHosts []VirtualHost
	Pager        views.Pager
	// Filter is the search (q).
	Filter    views.Form
	CanWrite  bool
	CanDelete bool
}

func (p *pages) vhostList(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	filter := views.SearchForm(c, "q")
	status := http.StatusOK
	list, total, err := p.svc.SearchVirtualHosts(app.Ctx(c), ws, ListFilter{Q: filter.Value("q")}, page)
	if err != nil {
		f, fstatus, ok := views.FormFromError(err, filter.Values, "q")
		if !ok {
			return err
		}
		filter, status = f, fstatus
	}
	d := vhostListData{
		WorkspaceID:  ws,
		VirtualHosts: list,
		Pager:        views.NewPager(page, total, uiWorkspacePath(ws, "/virtual-hosts"), filter.Query()),
		Filter:       filter,
		CanWrite:     p.ui.Allowed(c, ObjVirtualHost, authz.Write),
		CanDelete:    p.ui.Allowed(c, ObjVirtualHost, authz.Delete),
	}
	if views.IsFragmentFor(c, uiVhostListTarget) {
		return views.Render(c, status, vhostTable(d))
	}
	shell, err := p.ui.Shell(c, "Virtual hosts", views.SectionVirtualHosts)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, vhostListPage(d))
}

// uiVhostListTarget is the id of the list's table, which the search form
// replaces as the user types.
const uiVhostListTarget = "virtual-host-list"

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
	shell, err := p.ui.Shell(c, title, views.SectionVirtualHosts)
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
	return views.Page(c, status, shell, vhostPage(vhostFormData{
		editor:       ed,
		VirtualHost:  vh,
		Shape:        f,
		Certificates: certOpts,
		CSRF:         shell.CSRF,
		CanWrite:     p.ui.Allowed(c, ObjVirtualHost, authz.Write),
		CanDelete:    vh != nil && p.ui.Allowed(c, ObjVirtualHost, authz.Delete),
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
	form, status, ok := formFromError(f.Access.formErrors(err), f.values(), f.errorFields())
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
			views.SetSavedFlash(c, ws, app.ConfigVersion(c), fmt.Sprintf("Virtual host %q created.", vh.Name))
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
	views.SetSavedFlash(c, saved.WorkspaceID, app.ConfigVersion(c), fmt.Sprintf("Virtual host %q saved.", saved.Name))
	return views.SeeOther(c, uiVhostPath(saved.ID))
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

func (p *pages) vhostDelete(c *fiber.Ctx) error {
	vh, err := p.virtualHost(c)
	if err != nil {
		return err
	}
	if err := p.svc.DeleteVirtualHost(app.Ctx(c), vh.ID); err != nil {
		return err
	}
	views.SetSavedFlash(c, vh.WorkspaceID, app.ConfigVersion(c), fmt.Sprintf("Virtual host %q deleted.", vh.Name))
	return views.SeeOther(c, uiWorkspacePath(vh.WorkspaceID, "/virtual-hosts"))
}
