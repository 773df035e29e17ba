package vhosts

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/views"
)

// The configuration history: the list of versions, a version with its
// rendered files and its diff against another, and the rollback.

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
	shell, err := p.ui.Shell(c, "Configuration history", views.SectionConfig)
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, versionListPage(versionListData{
		WorkspaceID: ws,
		Versions:    list,
		Current:     current,
		Pager:       views.NewPager(page, total, uiWorkspacePath(ws, "/config/versions"), nil),
		CanWrite:    p.ui.Allowed(c, ObjConfig, authz.Write),
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
	shell, err := p.ui.Shell(c, fmt.Sprintf("Configuration version %d", n), views.SectionConfig)
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
		CanWrite:    p.ui.Allowed(c, ObjConfig, authz.Write),
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
	views.SetSavedFlash(c, ws, out.Version, fmt.Sprintf("Rolled back to version %d.", n))
	return views.SeeOther(c, uiWorkspacePath(ws, "/config/versions"))
}
