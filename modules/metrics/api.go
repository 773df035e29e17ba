package metrics

import (
	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// bindRoutes mounts the JSON API: a workspace's traffic and one agent's.
func (m *Module) bindRoutes(r app.Routers) {
	ws := orgs.ScopeWorkspace(m.db, "id")
	ag := agents.ScopeAgent(m.db, "id")
	r.API.Get("/workspaces/:id/metrics", app.Require(ObjMetrics, authz.Read, ws),
		app.Doc{Summary: "A workspace's traffic over a range (from, to): totals, rate, error rate, bandwidth, status classes, latency percentiles; with interval (1m, 5m, 1h, 1d) a series",
			Response: Summary{}, Query: WorkspaceParamNames},
		func(c *fiber.Ctx) error {
			q, err := ParseQuery(func(n string) string { return c.Query(n) }, m.svc.now())
			if err != nil {
				return err
			}
			q.WorkspaceID = app.ScopeOf(c).WorkspaceID
			sum, err := m.svc.Traffic(app.Ctx(c), q)
			if err != nil {
				return err
			}
			return c.JSON(sum)
		})
	r.API.Get("/agents/:id/metrics", app.Require(ObjMetrics, authz.Read, ag),
		app.Doc{Summary: "One agent's traffic over a range, as the workspace's, and its latest host metrics (system)",
			Response: AgentSummary{}, Query: AgentParamNames},
		func(c *fiber.Ctx) error {
			q, err := ParseQuery(func(n string) string {
				if n == "agent_id" {
					return ""
				}
				return c.Query(n)
			}, m.svc.now())
			if err != nil {
				return err
			}
			q.WorkspaceID = app.ScopeOf(c).WorkspaceID
			if q.AgentID, err = app.ParamUUID(c, "id"); err != nil {
				return err
			}
			sum, err := m.svc.AgentTraffic(app.Ctx(c), q)
			if err != nil {
				return err
			}
			return c.JSON(sum)
		})
}
