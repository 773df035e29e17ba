package orgs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/a-h/templ"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/views"
)

// The admin pages of organizations, workspaces, members, API keys and the audit
// log. Each page handler builds its data through the same service methods as the
// API and renders a full page, or only the content for htmx (views.Page). A form
// posts to its own route: on success the handler redirects back to the page with
// a flash message (views.SeeOther); on a validation error, a conflict or a rule of
// the service it re-renders the page with the form's values and messages.
//
// Workspace-level routes address the workspace alone (/workspaces/:ws/...), so
// the guard resolves its organization from the row and a workspace of another
// organization cannot be reached through a foreign /orgs/:org/ prefix.

// Sections of the navigation (the tab marked current).
const (
	SectionWorkspaces = "workspaces"
	SectionMembers    = "members"
	SectionAPIKeys    = "api-keys"
	SectionAudit      = "audit"
	SectionOverview   = "overview"
	// SectionACMESettings is the organization's ACME settings page, served
	// by the certs module.
	SectionACMESettings = "acme-settings"
	// SectionChannels is the organization's notification channels page,
	// served by the metrics module.
	SectionChannels = "notification-channels"
)

// objACMESettings is the certs module's object of the ACME settings (this
// module cannot import it): the navigation links its page for those who may
// read it.
const objACMESettings = "certs.acme_settings"

// objChannels is the metrics module's object of the notification channels,
// linked in the navigation for those who may read them.
const objChannels = "metrics.notification_channel"

// navLimit bounds the entries of each switcher.
const navLimit = 50

// pages holds the admin handlers: the service and the shared navigation and
// permission checks of the admin.
type pages struct {
	svc      *Service
	ui       *app.Pages
	overview OverviewFunc
}

// mountUI mounts the admin pages; Routes calls it with the UI router.
func (m *Module) mountUI(ui *app.Router) {
	p := &pages{svc: m.svc, ui: m.pages, overview: m.overview}
	org := ScopeOrg(m.db, "id")
	ws := ScopeWorkspace(m.db, "id")

	ui.Get("/", app.Authenticated(), app.Doc{Summary: "Admin home: the first organization, or the organizations page"}, p.uiHome)
	ui.Get("/orgs", app.Authenticated(), app.Doc{Summary: "Organizations page"}, p.uiOrganizations)
	ui.Post("/orgs", app.Authenticated(), app.Doc{Summary: "Create an organization (form)"}, p.uiCreateOrganization)
	ui.Get("/orgs/:id", app.Require(ObjOrganization, authz.Read, org), app.Doc{Summary: "An organization's landing page"}, p.uiOrganization)

	ui.Get("/orgs/:id/workspaces", app.Require(ObjWorkspace, authz.Read, org), app.Doc{Summary: "Workspaces page"}, p.uiWorkspaces)
	ui.Post("/orgs/:id/workspaces", app.Require(ObjWorkspace, authz.Write, org), app.Doc{Summary: "Create a workspace (form)"}, p.uiCreateWorkspace)
	ui.Get("/workspaces/:id", app.Require(ObjWorkspace, authz.Read, ws), app.Doc{Summary: "Workspace overview page"}, p.uiWorkspace)
	ui.Post("/workspaces/:id/rename", app.Require(ObjWorkspace, authz.Write, ws), app.Doc{Summary: "Rename a workspace (form)"}, p.uiRenameWorkspace)
	ui.Post("/workspaces/:id/delete", app.Require(ObjWorkspace, authz.Delete, ws), app.Doc{Summary: "Delete a workspace (form)"}, p.uiDeleteWorkspace)

	ui.Get("/orgs/:id/members", app.Require(ObjMember, authz.Read, org), app.Doc{Summary: "Members page"}, p.uiMembers)
	ui.Post("/orgs/:id/members", app.Require(ObjMember, authz.Write, org), app.Doc{Summary: "Invite a member (form)"}, p.uiAddMember)
	ui.Post("/orgs/:id/invitations/:invitation_id/revoke", app.Require(ObjMember, authz.Delete, org), app.Doc{Summary: "Revoke a pending invitation (form)"}, p.uiRevokeInvitation)
	ui.Get(AcceptInvitationPath, app.Public(), app.Doc{Summary: "Page of an invitation link: choose a password and join", Query: []string{"token"}}, p.uiInvitationLink)
	ui.Post(AcceptInvitationPath, app.Public(), app.Doc{Summary: "Accept an invitation link: create the account and join (form)"}, p.uiAcceptInvitationLink)
	ui.Post("/invitations/:id/accept", app.Authenticated(), app.Doc{Summary: "Accept one of the caller's invitations (form)"}, p.uiAcceptInvitation)
	ui.Post("/invitations/:id/decline", app.Authenticated(), app.Doc{Summary: "Decline one of the caller's invitations (form)"}, p.uiDeclineInvitation)
	ui.Post("/orgs/:id/members/:user_id/role", app.Require(ObjMember, authz.Write, org), app.Doc{Summary: "Change a member's role (form)"}, p.uiChangeRole)
	ui.Post("/orgs/:id/members/:user_id/remove", app.Require(ObjMember, authz.Delete, org), app.Doc{Summary: "Remove a member (form)"}, p.uiRemoveMember)

	ui.Get("/orgs/:id/api-keys", app.Require(ObjAPIKey, authz.Read, org), app.Doc{Summary: "API keys page"}, p.uiAPIKeys)
	ui.Post("/orgs/:id/api-keys", app.Require(ObjAPIKey, authz.Write, org), app.Doc{Summary: "Create an API key (form; shows the key once)"}, p.uiCreateAPIKey)
	ui.Post("/orgs/:id/api-keys/:key_id/revoke", app.Require(ObjAPIKey, authz.Delete, org), app.Doc{Summary: "Revoke an API key (form)"}, p.uiRevokeAPIKey)
	ui.Post("/orgs/:id/api-keys/:key_id/rotate", app.Require(ObjAPIKey, authz.Write, org), app.Doc{Summary: "Rotate an API key (form; shows the new key once)"}, p.uiRotateAPIKey)

	ui.Get("/orgs/:id/audit", app.Require(ObjAudit, authz.Read, org), app.Doc{Summary: "Audit log page", Query: []string{"page", "per_page", "actor", "object_type", "workspace_id"}}, p.uiAudit)
}

// ---- Shell and helpers ----

var _ app.NavFunc = (*Module)(nil).Shell

// Shell builds the layout around a page of organization orgID (uuid.Nil: none)
// and workspace wsID (uuid.Nil: none): the user, the CSRF token, the switchers
// and the section tabs, with section marked current. It is the admin's
// navigation (an app.NavFunc): main.go hands it to app.Wiring.Nav, and every
// module's pages reach it through app.Pages.Shell, so every page shares one
// navigation.
func (m *Module) Shell(c *fiber.Ctx, title string, orgID, wsID uuid.UUID, section string) (views.Shell, error) {
	ctx := app.Ctx(c)
	p := app.Caller(c)
	s := views.Shell{Title: title, Nav: views.Nav{AllOrgs: "/orgs"}}
	if p != nil {
		s.User, s.CSRF = p.Email, p.CSRFToken
	}
	orgs, _, err := m.svc.ListOrganizations(ctx, p, app.Page{Page: 1, PerPage: navLimit})
	if err != nil {
		return s, fmt.Errorf("navigation: %w", err)
	}
	for _, o := range orgs {
		s.Nav.Orgs = append(s.Nav.Orgs, views.Link{Label: o.Name, Href: uiOrgPath(o.ID), Active: o.ID == orgID})
	}
	if orgID == uuid.Nil {
		return s, nil
	}
	org, err := m.svc.GetOrganization(ctx, orgID)
	if err != nil {
		return s, err
	}
	s.Nav.Org = &views.Link{Label: org.Name, Href: uiOrgPath(org.ID), Active: true}
	wss, _, err := m.svc.ListWorkspaces(ctx, orgID, app.Page{Page: 1, PerPage: navLimit})
	if err != nil {
		return s, fmt.Errorf("navigation: %w", err)
	}
	for _, w := range wss {
		l := views.Link{Label: w.Name, Href: uiWorkspacePath(w.ID), Active: w.ID == wsID}
		s.Nav.Workspaces = append(s.Nav.Workspaces, l)
		if l.Active {
			s.Nav.Workspace = &l
		}
	}
	if wsID != uuid.Nil && s.Nav.Workspace == nil {
		w, err := m.svc.GetWorkspace(ctx, wsID)
		if err != nil {
			return s, err
		}
		s.Nav.Workspace = &views.Link{Label: w.Name, Href: uiWorkspacePath(w.ID), Active: true}
	}
	if wsID != uuid.Nil {
		s.Nav.Sections = append([]views.Link{
			{Label: "Overview", Href: uiWorkspacePath(wsID), Active: section == SectionOverview},
		}, views.WorkspaceSections(wsID, section)...)
		return s, nil
	}
	add := func(label, href, key, object string) {
		if m.pages.Allowed(c, object, authz.Read) {
			s.Nav.Sections = append(s.Nav.Sections, views.Link{Label: label, Href: href, Active: section == key})
		}
	}
	add("Workspaces", uiOrgPath(orgID)+"/workspaces", SectionWorkspaces, ObjWorkspace)
	add("Members", uiOrgPath(orgID)+"/members", SectionMembers, ObjMember)
	add("API keys", uiOrgPath(orgID)+"/api-keys", SectionAPIKeys, ObjAPIKey)
	add("Audit log", uiOrgPath(orgID)+"/audit", SectionAudit, ObjAudit)
	add("ACME settings", uiOrgPath(orgID)+"/acme-settings", SectionACMESettings, objACMESettings)
	add("Notification channels", uiOrgPath(orgID)+"/notification-channels", SectionChannels, objChannels)
	return s, nil
}

func uiOrgPath(id uuid.UUID) string       { return "/orgs/" + id.String() }
func uiWorkspacePath(id uuid.UUID) string { return "/workspaces/" + id.String() }

// formValues reads the named fields of a submitted form.
func uiFormValues(c *fiber.Ctx, names ...string) map[string]string {
	out := make(map[string]string, len(names))
	for _, n := range names {
		out[n] = c.FormValue(n)
	}
	return out
}

// slugify derives a slug from a name: lowercase ASCII letters and digits, other
// runs of characters become '-'.
func uiSlugify(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			b.WriteRune(r)
			dash = false
		case b.Len() > 0 && !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > MaxSlugLength {
		s = strings.Trim(s[:MaxSlugLength], "-")
	}
	return s
}

// when formats a timestamp for tables.
func uiWhen(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func uiWhenPtr(t *app.Time) string {
	if t == nil {
		return "—"
	}
	return uiWhen(t.Time)
}

func uiShortID(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

func uiPrettyJSON(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

var uiRoleOptions = []views.Option{
	{Value: authz.RoleViewer, Label: "Viewer"},
	{Value: authz.RoleOperator, Label: "Operator"},
	{Value: authz.RoleAdmin, Label: "Admin"},
	{Value: authz.RoleOwner, Label: "Owner"},
}

// ---- Home and organizations ----

func (p *pages) uiHome(c *fiber.Ctx) error {
	orgs, _, err := p.svc.ListOrganizations(app.Ctx(c), app.Caller(c), app.Page{Page: 1, PerPage: 1})
	if err != nil {
		return err
	}
	if len(orgs) == 0 {
		return c.Redirect("/orgs", http.StatusSeeOther)
	}
	return c.Redirect(uiOrgPath(orgs[0].ID)+"/workspaces", http.StatusSeeOther)
}

func (p *pages) uiOrganization(c *fiber.Ctx) error {
	return c.Redirect(uiOrgPath(app.ScopeOf(c).OrgID)+"/workspaces", http.StatusSeeOther)
}

func (p *pages) uiOrganizations(c *fiber.Ctx) error {
	return p.renderOrganizations(c, http.StatusOK, views.Form{})
}

func (p *pages) renderOrganizations(c *fiber.Ctx, status int, form views.Form) error {
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	orgs, total, err := p.svc.ListOrganizations(app.Ctx(c), app.Caller(c), page)
	if err != nil {
		return err
	}
	invs, _, err := p.svc.ListMyInvitations(app.Ctx(c), app.Page{Page: 1, PerPage: app.MaxPerPage})
	if err != nil {
		return err
	}
	shell, err := p.ui.Shell(c, "Organizations", "")
	if err != nil {
		return err
	}
	caller := app.Caller(c)
	return views.Page(c, status, shell, organizationsPage(organizationsData{
		Invitations: invs,
		Orgs:        orgs,
		Pager:       views.NewPager(page, total, "/orgs", nil),
		Form:        form,
		CSRF:        shell.CSRF,
		CanCreate:   caller != nil && caller.APIKey == nil,
		Superadmin:  caller != nil && caller.APIKey == nil && caller.Superadmin,
	}))
}

func (p *pages) uiCreateOrganization(c *fiber.Ctx) error {
	vals := uiFormValues(c, "name", "slug")
	slug := strings.TrimSpace(vals["slug"])
	if slug == "" {
		slug = uiSlugify(vals["name"])
	}
	org, err := p.svc.CreateOrganization(app.Ctx(c), CreateOrganizationParams{
		Name: vals["name"], Slug: slug, OwnerID: app.Caller(c).UserID,
	})
	if err != nil {
		form, status, ok := views.FormFromError(err, vals, "name", "slug")
		if !ok {
			return err
		}
		return p.renderOrganizations(c, status, form)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Organization %q created.", org.Name)})
	return views.SeeOther(c, uiOrgPath(org.ID)+"/workspaces")
}

// ---- Workspaces ----

type workspacesState struct {
	create   views.Form
	rename   views.Form
	renameID uuid.UUID
}

func (p *pages) uiWorkspaces(c *fiber.Ctx) error {
	return p.renderWorkspaces(c, http.StatusOK, workspacesState{})
}

func (p *pages) renderWorkspaces(c *fiber.Ctx, status int, st workspacesState) error {
	orgID := app.ScopeOf(c).OrgID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	wss, total, err := p.svc.ListWorkspaces(app.Ctx(c), orgID, page)
	if err != nil {
		return err
	}
	shell, err := p.ui.Shell(c, "Workspaces", SectionWorkspaces)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, workspacesPage(workspacesData{
		OrgID:      orgID,
		Workspaces: wss,
		Pager:      views.NewPager(page, total, uiOrgPath(orgID)+"/workspaces", nil),
		Create:     st.create,
		Rename:     st.rename,
		RenameID:   st.renameID,
		CSRF:       shell.CSRF,
		CanWrite:   p.ui.Allowed(c, ObjWorkspace, authz.Write),
		CanDelete:  p.ui.Allowed(c, ObjWorkspace, authz.Delete),
	}))
}

func (p *pages) uiCreateWorkspace(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	vals := uiFormValues(c, "name", "slug")
	slug := strings.TrimSpace(vals["slug"])
	if slug == "" {
		slug = uiSlugify(vals["name"])
	}
	ws, err := p.svc.CreateWorkspace(app.Ctx(c), CreateWorkspaceParams{OrgID: orgID, Name: vals["name"], Slug: slug})
	if err != nil {
		form, status, ok := views.FormFromError(err, vals, "name", "slug")
		if !ok {
			return err
		}
		return p.renderWorkspaces(c, status, workspacesState{create: form})
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Workspace %q created.", ws.Name)})
	return views.SeeOther(c, uiOrgPath(orgID)+"/workspaces")
}

func (p *pages) uiRenameWorkspace(c *fiber.Ctx) error {
	scope := app.ScopeOf(c)
	vals := uiFormValues(c, "name")
	name := vals["name"]
	ws, err := p.svc.UpdateWorkspace(app.Ctx(c), scope.WorkspaceID, UpdateWorkspaceParams{Name: &name})
	if err != nil {
		form, status, ok := views.FormFromError(err, vals, "name")
		if !ok {
			return err
		}
		return p.renderWorkspaces(c, status, workspacesState{rename: form, renameID: scope.WorkspaceID})
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Workspace renamed to %q.", ws.Name)})
	return views.SeeOther(c, uiOrgPath(scope.OrgID)+"/workspaces")
}

func (p *pages) uiDeleteWorkspace(c *fiber.Ctx) error {
	scope := app.ScopeOf(c)
	ws, err := p.svc.GetWorkspace(app.Ctx(c), scope.WorkspaceID)
	if err != nil {
		return err
	}
	if err := p.svc.DeleteWorkspace(app.Ctx(c), scope.WorkspaceID); err != nil {
		return err
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Workspace %q deleted.", ws.Name)})
	return views.SeeOther(c, uiOrgPath(scope.OrgID)+"/workspaces")
}

func (p *pages) uiWorkspace(c *fiber.Ctx) error {
	scope := app.ScopeOf(c)
	ws, err := p.svc.GetWorkspace(app.Ctx(c), scope.WorkspaceID)
	if err != nil {
		return err
	}
	shell, err := p.ui.Shell(c, ws.Name, SectionOverview)
	if err != nil {
		return err
	}
	d := workspaceData{Workspace: ws}
	if p.overview != nil {
		if d.Panels, err = p.overview(app.Ctx(c), ws.ID); err != nil {
			return err
		}
	}
	if p.ui.Allowed(c, ObjAudit, authz.Read) {
		d.CanAudit = true
		d.AuditURL = uiOrgPath(ws.OrganizationID) + "/audit?workspace_id=" + ws.ID.String()
		d.Changes, _, err = p.svc.ListAudit(app.Ctx(c), AuditFilter{OrgID: ws.OrganizationID, WorkspaceID: ws.ID}, app.Page{Page: 1, PerPage: overviewChanges})
		if err != nil {
			return err
		}
	}
	return views.Page(c, http.StatusOK, shell, workspacePage(d))
}

// overviewChanges is how many audit entries the workspace overview shows.
const overviewChanges = 10

// workspaceData is the workspace overview: the higher modules' panels
// (Options.OverviewFunc) and the workspace's last changes from the audit log.
type workspaceData struct {
	Workspace Workspace
	Panels    templ.Component
	Changes   []AuditEntry
	CanAudit  bool
	AuditURL  string
}

// ---- Members ----

type membersState struct {
	// link is an invitation link that could not be mailed, shown this once.
	link   *Invitation
	add    views.Form
	role   views.Form
	roleOf uuid.UUID
}

func (p *pages) uiMembers(c *fiber.Ctx) error {
	return p.renderMembers(c, http.StatusOK, membersState{})
}

func (p *pages) renderMembers(c *fiber.Ctx, status int, st membersState) error {
	orgID := app.ScopeOf(c).OrgID
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	members, total, err := p.svc.ListMembers(app.Ctx(c), orgID, page)
	if err != nil {
		return err
	}
	invs, _, err := p.svc.ListInvitations(app.Ctx(c), orgID, app.Page{Page: 1, PerPage: app.MaxPerPage})
	if err != nil {
		return err
	}
	shell, err := p.ui.Shell(c, "Members", SectionMembers)
	if err != nil {
		return err
	}
	if st.add.Values == nil {
		st.add.Values = map[string]string{"role": authz.RoleViewer}
	}
	return views.Page(c, status, shell, membersPage(membersData{
		OrgID:       orgID,
		Members:     members,
		Invitations: invs,
		Pager:       views.NewPager(page, total, uiOrgPath(orgID)+"/members", nil),
		Add:         st.add,
		Role:        st.role,
		RoleOf:      st.roleOf,
		Link:        st.link,
		CSRF:        shell.CSRF,
		CanWrite:    p.ui.Allowed(c, ObjMember, authz.Write),
		CanDelete:   p.ui.Allowed(c, ObjMember, authz.Delete),
	}))
}

func (p *pages) uiAddMember(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	vals := uiFormValues(c, "email", "role")
	inv, err := p.svc.InviteMember(app.Ctx(c), AddMemberParams{OrgID: orgID, Email: vals["email"], Role: vals["role"]})
	if err != nil {
		form, status, ok := views.FormFromError(err, vals, "email", "role")
		if !ok {
			return err
		}
		return p.renderMembers(c, status, membersState{add: form})
	}
	if inv.AcceptURL != "" {
		c.Set(fiber.HeaderCacheControl, "no-store")
		return p.renderMembers(c, http.StatusOK, membersState{link: &inv})
	}
	if inv.Mailed {
		views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("%s has no account yet: an invitation link was sent by e-mail; they choose a password and join as %s.", inv.Email, inv.Role)})
		return views.SeeOther(c, uiOrgPath(orgID)+"/members")
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("%s invited as %s; they become a member when they accept.", inv.Email, inv.Role)})
	return views.SeeOther(c, uiOrgPath(orgID)+"/members")
}

func (p *pages) uiRevokeInvitation(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	id, err := app.ParamUUID(c, "invitation_id")
	if err != nil {
		return ErrInvitationNotFound
	}
	if err := p.svc.RevokeInvitation(app.Ctx(c), orgID, id); err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderMembers(c, status, membersState{add: form})
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: "Invitation revoked."})
	return views.SeeOther(c, uiOrgPath(orgID)+"/members")
}

func (p *pages) uiAcceptInvitation(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrInvitationNotFound
	}
	inv, err := p.svc.AcceptInvitation(app.Ctx(c), id)
	if err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderOrganizations(c, status, form)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("You joined %q as %s.", inv.OrganizationName, inv.Role)})
	return views.SeeOther(c, uiOrgPath(inv.OrganizationID)+"/workspaces")
}

func (p *pages) uiDeclineInvitation(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return ErrInvitationNotFound
	}
	if err := p.svc.DeclineInvitation(app.Ctx(c), id); err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderOrganizations(c, status, form)
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashInfo, Message: "Invitation declined."})
	return views.SeeOther(c, "/orgs")
}

func (p *pages) uiChangeRole(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	userID, err := app.ParamUUID(c, "user_id")
	if err != nil {
		return ErrMemberNotFound
	}
	vals := uiFormValues(c, "role")
	mem, err := p.svc.UpdateMember(app.Ctx(c), UpdateMemberParams{OrgID: orgID, UserID: userID, Role: vals["role"]})
	if err != nil {
		form, status, ok := views.FormFromError(err, vals, "role")
		if !ok {
			return err
		}
		return p.renderMembers(c, status, membersState{role: form, roleOf: userID})
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("%s is now %s.", mem.Email, mem.Role)})
	return views.SeeOther(c, uiOrgPath(orgID)+"/members")
}

func (p *pages) uiRemoveMember(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	userID, err := app.ParamUUID(c, "user_id")
	if err != nil {
		return ErrMemberNotFound
	}
	mem, err := p.svc.GetMember(app.Ctx(c), orgID, userID)
	if err != nil {
		return err
	}
	if err := p.svc.RemoveMember(app.Ctx(c), orgID, userID); err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderMembers(c, status, membersState{role: form, roleOf: userID})
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("%s removed from the organization.", mem.Email)})
	return views.SeeOther(c, uiOrgPath(orgID)+"/members")
}

// ---- Audit log ----

// auditObjectType is an object type of the audit log: its label in the
// filter and where its page is.
type auditObjectType struct {
	Type, Label string
	// href returns the path of the object's page, "" when it has none.
	href func(e AuditEntry, orgID uuid.UUID) string
}

// auditByID links to prefix + the object's id.
func auditByID(prefix string) func(AuditEntry, uuid.UUID) string {
	return func(e AuditEntry, _ uuid.UUID) string {
		if _, err := uuid.Parse(e.ObjectID); err != nil {
			return ""
		}
		return prefix + e.ObjectID
	}
}

// auditOrgPage links to a page of the organization.
func auditOrgPage(suffix string) func(AuditEntry, uuid.UUID) string {
	return func(_ AuditEntry, orgID uuid.UUID) string { return uiOrgPath(orgID) + suffix }
}

// auditWorkspacePage links to a page of the entry's workspace.
func auditWorkspacePage(suffix string) func(AuditEntry, uuid.UUID) string {
	return func(e AuditEntry, _ uuid.UUID) string {
		if e.WorkspaceID == nil {
			return ""
		}
		return uiWorkspacePath(*e.WorkspaceID) + suffix
	}
}

// auditObjectTypes are the object types the modules audit, offered in the
// filter in this order; any other type can be asked for in the query.
var auditObjectTypes = []auditObjectType{
	{"virtual_host", "Virtual hosts", auditByID("/virtual-hosts/")},
	{"upstream", "Upstreams", auditByID("/upstreams/")},
	{"stream", "Streams", auditByID("/streams/")},
	{"certificate", "Certificates", auditByID("/certificates/")},
	{"acme_settings", "ACME settings", auditOrgPage("/acme-settings")},
	{"agent", "Agents", auditByID("/agents/")},
	{"agent_token", "Agent tokens", auditWorkspacePage("/agents")},
	{"agent_command", "Agent commands", auditWorkspacePage("/agents")},
	{"registration_policy", "Agent registration", auditWorkspacePage("/agents")},
	{"config", "Configuration", func(e AuditEntry, _ uuid.UUID) string {
		if e.WorkspaceID == nil {
			return ""
		}
		if v := uiAuditVersion(e.After); v != "" {
			return uiWorkspacePath(*e.WorkspaceID) + "/config/versions/" + v
		}
		return uiWorkspacePath(*e.WorkspaceID) + "/config/versions"
	}},
	{ObjectMember, "Members", auditOrgPage("/members")},
	{ObjectInvitation, "Invitations", auditOrgPage("/members")},
	{"apikey", "API keys", auditOrgPage("/api-keys")},
	{ObjectWorkspace, "Workspaces", auditByID("/workspaces/")},
	{ObjectOrganization, "Organizations", func(e AuditEntry, orgID uuid.UUID) string {
		if e.ObjectID != orgID.String() {
			return ""
		}
		return uiOrgPath(orgID) + "/workspaces"
	}},
	{"user", "Users", func(AuditEntry, uuid.UUID) string { return "/users" }},
}

// uiAuditVersion is the configuration version an entry's state names.
func uiAuditVersion(raw json.RawMessage) string {
	var v struct {
		Version *int64 `json:"version"`
	}
	if json.Unmarshal(raw, &v) != nil || v.Version == nil {
		return ""
	}
	return fmt.Sprint(*v.Version)
}

// auditObject is how the audit page shows an entry's object.
type auditObject struct {
	Label string
	Name  string
	// Href is the object's page; empty for a deleted object or a type
	// without a page.
	Href string
}

func uiAuditObject(e AuditEntry, orgID uuid.UUID) auditObject {
	o := auditObject{Label: e.ObjectType, Name: e.ObjectName}
	if o.Name == "" && e.ObjectType == "config" {
		if v := uiAuditVersion(e.After); v != "" {
			o.Name = "version " + v
		}
	}
	for _, t := range auditObjectTypes {
		if t.Type != e.ObjectType {
			continue
		}
		if !strings.HasSuffix(e.Action, ".delete") || t.Type == "config" {
			o.Href = t.href(e, orgID)
		}
		break
	}
	return o
}

func (p *pages) uiAudit(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	ctx := app.Ctx(c)
	vals := map[string]string{"actor": c.Query("actor"), "object_type": c.Query("object_type")}
	filter := views.Form{Values: vals}
	status := http.StatusOK
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	f, err := parseAuditFilter(c, orgID)
	if err != nil {
		var ok bool
		if filter, status, ok = views.FormFromError(err, vals, "actor", "object_type", "workspace_id"); !ok {
			return err
		}
		f = AuditFilter{OrgID: orgID}
	}
	var entries []AuditEntry
	var total int64
	if status == http.StatusOK {
		if entries, total, err = p.svc.ListAudit(ctx, f, page); err != nil {
			return err
		}
	}
	members, _, err := p.svc.ListMembers(ctx, orgID, app.Page{Page: 1, PerPage: app.MaxPerPage})
	if err != nil {
		return err
	}
	actors := []views.Option{{Value: "", Label: "Anyone"}}
	for _, mem := range members {
		actors = append(actors, views.Option{Value: mem.UserID.String(), Label: mem.Email})
	}
	types := []views.Option{{Value: "", Label: "Any"}}
	known := make([]string, 0, len(auditObjectTypes))
	for _, t := range auditObjectTypes {
		types = append(types, views.Option{Value: t.Type, Label: t.Label})
		known = append(known, t.Type)
	}
	if t := vals["object_type"]; t != "" && !uiContains(known, t) {
		types = append(types, views.Option{Value: t, Label: t})
	}
	shell, err := p.ui.Shell(c, "Audit log", SectionAudit)
	if err != nil {
		return err
	}
	query := url.Values{}
	for k, v := range vals {
		if v != "" {
			query.Set(k, v)
		}
	}
	return views.Page(c, status, shell, auditPage(auditData{
		OrgID:   orgID,
		Entries: entries,
		Pager:   views.NewPager(page, total, uiOrgPath(orgID)+"/audit", query),
		Filter:  filter,
		Actors:  actors,
		Types:   types,
	}))
}

func uiContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ---- API keys ----

// apiKeysState is what a submission adds to the API keys page: the create
// form's values and errors, or a key secret to show this once.
type apiKeysState struct {
	create views.Form
	shown  *shownKey
	flash  *views.Flash
}

type shownKey struct {
	Name    string
	Secret  string
	Rotated bool
}

func (p *pages) uiAPIKeys(c *fiber.Ctx) error {
	return p.renderAPIKeys(c, http.StatusOK, apiKeysState{})
}

func (p *pages) renderAPIKeys(c *fiber.Ctx, status int, st apiKeysState) error {
	orgID := app.ScopeOf(c).OrgID
	ctx := app.Ctx(c)
	page, err := app.ParsePage(c)
	if err != nil {
		return err
	}
	keys, total, err := p.svc.ListAPIKeys(ctx, orgID, page)
	if err != nil {
		return err
	}
	wss, _, err := p.svc.ListWorkspaces(ctx, orgID, app.Page{Page: 1, PerPage: app.MaxPerPage})
	if err != nil {
		return err
	}
	names := make(map[uuid.UUID]string, len(wss))
	scopes := []views.Option{{Value: "", Label: "Whole organization"}}
	for _, w := range wss {
		names[w.ID] = w.Name
		scopes = append(scopes, views.Option{Value: w.ID.String(), Label: "Workspace: " + w.Name})
	}
	shell, err := p.ui.Shell(c, "API keys", SectionAPIKeys)
	if err != nil {
		return err
	}
	shell.Flash = st.flash
	if st.create.Values == nil {
		st.create.Values = map[string]string{"role": authz.RoleViewer}
	}
	return views.Page(c, status, shell, apiKeysPage(apiKeysData{
		OrgID:          orgID,
		Keys:           keys,
		WorkspaceNames: names,
		Pager:          views.NewPager(page, total, uiOrgPath(orgID)+"/api-keys", nil),
		Create:         st.create,
		Scopes:         scopes,
		Shown:          st.shown,
		CSRF:           shell.CSRF,
		Now:            p.svc.clock(),
		CanWrite:       p.ui.Allowed(c, ObjAPIKey, authz.Write),
		CanDelete:      p.ui.Allowed(c, ObjAPIKey, authz.Delete),
	}))
}

func (p *pages) uiCreateAPIKey(c *fiber.Ctx) error {
	scope := app.ScopeOf(c)
	vals := uiFormValues(c, "name", "role", "workspace_id", "expires_at")
	fail := func(err error) error {
		form, status, ok := views.FormFromError(err, vals, "name", "role", "workspace_id", "expires_at")
		if !ok {
			return err
		}
		return p.renderAPIKeys(c, status, apiKeysState{create: form})
	}
	v := &app.Validator{}
	params := CreateAPIKeyParams{OrgID: scope.OrgID, Name: vals["name"], Role: vals["role"], CreatedBy: app.Caller(c).UserID}
	if s := vals["workspace_id"]; s != "" {
		id, err := uuid.Parse(s)
		v.Check(err == nil, "workspace_id", app.FieldInvalidFormat, "must be a workspace of this organization")
		params.WorkspaceID = id
	}
	if s := strings.TrimSpace(vals["expires_at"]); s != "" {
		t, err := time.Parse(time.DateOnly, s)
		v.Check(err == nil, "expires_at", app.FieldInvalidFormat, "must be a date (YYYY-MM-DD)")
		params.ExpiresAt = &t
	}
	if err := v.Err(); err != nil {
		return fail(err)
	}
	key, err := p.svc.CreateAPIKey(app.Ctx(c), params)
	if err != nil {
		return fail(err)
	}
	return p.renderAPIKeys(c, http.StatusCreated, apiKeysState{shown: &shownKey{Name: key.Name, Secret: key.Key}})
}

func (p *pages) uiRevokeAPIKey(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	keyID, err := app.ParamUUID(c, "key_id")
	if err != nil {
		return auth.ErrAPIKeyNotFound
	}
	if err := p.svc.RevokeAPIKey(app.Ctx(c), orgID, keyID); err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderAPIKeys(c, status, apiKeysState{flash: &views.Flash{Kind: views.FlashError, Message: form.Message}})
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: "API key revoked."})
	return views.SeeOther(c, uiOrgPath(orgID)+"/api-keys")
}

func (p *pages) uiRotateAPIKey(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	keyID, err := app.ParamUUID(c, "key_id")
	if err != nil {
		return auth.ErrAPIKeyNotFound
	}
	key, err := p.svc.RotateAPIKey(app.Ctx(c), orgID, keyID)
	if err != nil {
		form, status, ok := views.FormFromError(err, nil)
		if !ok {
			return err
		}
		return p.renderAPIKeys(c, status, apiKeysState{flash: &views.Flash{Kind: views.FlashError, Message: form.Message}})
	}
	return p.renderAPIKeys(c, http.StatusOK, apiKeysState{shown: &shownKey{Name: key.Name, Secret: key.Key, Rotated: true}})
}

// uiFirst returns the first non-empty string.
func uiFirst(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// ---- Invitation links ----

func (p *pages) uiInvitationLink(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("Referrer-Policy", "no-referrer")
	token := c.Query("token")
	inv, err := p.svc.InvitationByToken(app.Ctx(c), token)
	if err != nil {
		if _, status, ok := views.FormFromError(err, nil); ok {
			return views.Render(c, status, invitationLinkPage(invitationLinkData{Invalid: true}))
		}
		return err
	}
	return views.Render(c, http.StatusOK, invitationLinkPage(invitationLinkData{Invitation: inv, Token: token}))
}

func (p *pages) uiAcceptInvitationLink(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("Referrer-Policy", "no-referrer")
	token := c.FormValue("token")
	vals := map[string]string{"name": c.FormValue("name")}
	inv, err := p.svc.AcceptInvitationToken(app.Ctx(c), AcceptInvitationTokenParams{
		Token: token, Name: vals["name"], Password: c.FormValue("password"),
	})
	if err != nil {
		form, status, ok := views.FormFromError(err, vals, "name", "password")
		if !ok {
			return err
		}
		shown, lerr := p.svc.InvitationByToken(app.Ctx(c), token)
		if lerr != nil {
			return views.Render(c, status, invitationLinkPage(invitationLinkData{Invalid: true, Form: form}))
		}
		return views.Render(c, status, invitationLinkPage(invitationLinkData{Invitation: shown, Token: token, Form: form}))
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Your account %s is ready and you joined %s. Sign in with your new password.", inv.Email, inv.OrganizationName)})
	return c.Redirect("/login", http.StatusSeeOther)
}
