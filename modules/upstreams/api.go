package upstreams

import (
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// Request bodies: the service's params under API names (the OpenAPI document
// names schemas after Go types).
type (
	createUpstreamRequest CreateParams
	updateUpstreamRequest UpdateParams
)

func (m *Module) bindUpstreams(r *app.Router) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	up := ScopeUpstream(m.db, "id")
	r.Get("/workspaces/:id/upstreams", app.Require(ObjUpstream, authz.Read, ws),
		app.Doc{Summary: "List a workspace's upstreams, sorted by name; q matches a part of the name or of a server address (ignoring case); per_page is capped at 100", Response: Upstream{}, List: true, Query: []string{"q"}},
		app.ListHandler(m.listUpstreams))
	r.Post("/workspaces/:id/upstreams", app.Require(ObjUpstream, authz.Write, ws),
		app.Doc{Summary: "Create an upstream; omitted fields take their defaults", Body: createUpstreamRequest{}, Response: Upstream{}, Status: http.StatusCreated, ConfigVersion: true},
		m.createUpstream)
	r.Get("/upstreams/:id", app.Require(ObjUpstream, authz.Read, up),
		app.Doc{Summary: "Get an upstream, with its servers' health as each agent last reported it (health)", Response: UpstreamDetail{}},
		m.getUpstream)
	r.Patch("/upstreams/:id", app.Require(ObjUpstream, authz.Write, up),
		app.Doc{Summary: "Update an upstream; only the fields given change, servers replaces the whole list", Body: updateUpstreamRequest{}, Response: Upstream{}, ConfigVersion: true},
		m.updateUpstream)
	r.Delete("/upstreams/:id", app.Require(ObjUpstream, authz.Delete, up),
		app.Doc{Summary: "Delete an upstream; refused with 409 while a virtual host or stream uses it", Status: http.StatusNoContent, ConfigVersion: true},
		m.deleteUpstream)
}

func (m *Module) listUpstreams(c *fiber.Ctx, page app.Page) ([]Upstream, int64, error) {
	return m.svc.Search(app.Ctx(c), app.ScopeOf(c).WorkspaceID, Filter{Q: strings.TrimSpace(c.Query("q"))}, page)
}

func (m *Module) createUpstream(c *fiber.Ctx) error {
	var req createUpstreamRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	req.WorkspaceID = app.ScopeOf(c).WorkspaceID
	u, err := m.svc.Create(app.Ctx(c), CreateParams(req))
	if err != nil {
		return err
	}
	return c.Status(http.StatusCreated).JSON(u)
}

func (m *Module) getUpstream(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return err
	}
	u, err := m.svc.Detail(app.Ctx(c), id)
	if err != nil {
		return err
	}
	return c.JSON(u)
}

func (m *Module) updateUpstream(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return err
	}
	var req updateUpstreamRequest
	if err := app.Bind(c, &req); err != nil {
		return err
	}
	u, err := m.svc.Update(app.Ctx(c), id, UpdateParams(req))
	if err != nil {
		return err
	}
	return c.JSON(u)
}

func (m *Module) deleteUpstream(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return err
	}
	if err := m.svc.Delete(app.Ctx(c), id); err != nil {
		return err
	}
	return c.SendStatus(http.StatusNoContent)
}
