package agents

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	"github.com/nxmesh/nxmesh/views"
)

// The rollout panel of a configuration version,
//
//	GET /workspaces/:id/config/versions/:version/rollout   (views.RolloutPath)
//
// is a fragment the page a change lands on loads under its "Saved as version
// N" message (views.SetSavedFlash): each registered agent's status for the
// version (pending, applied, failed, rolled back with nginx's own text),
// live. This module owns it because it holds the agents; the vhosts,
// upstreams and certs pages only name its path. With ?part=body it answers
// the panel's live part only.

// uiRolloutData is the panel of one version.
type uiRolloutData struct {
	WorkspaceID uuid.UUID
	Version     int64
	Agents      []vhosts.AgentRollout
	BodyURL     string
}

// Done reports whether every agent has a final status.
func (d uiRolloutData) Done() bool {
	for _, a := range d.Agents {
		if !a.Final() {
			return false
		}
	}
	return true
}

// Summary counts the agents by status ("1 applied, 1 rolled back").
func (d uiRolloutData) Summary() string {
	if len(d.Agents) == 0 {
		return ""
	}
	order := []string{vhosts.RolloutPending, vhosts.RolloutApplied, vhosts.RolloutFailed, vhosts.RolloutRolledBack, vhosts.RolloutSuperseded}
	n := map[string]int{}
	for _, a := range d.Agents {
		n[a.Status]++
	}
	out := ""
	for _, s := range order {
		if n[s] == 0 {
			continue
		}
		if out != "" {
			out += ", "
		}
		out += fmt.Sprintf("%d %s", n[s], uiRolloutLabel(s))
	}
	return out + fmt.Sprintf(" (of %d agents)", len(d.Agents))
}

func (m *Module) mountRolloutUI(ui *app.Router) {
	p := &pages{svc: m.svc, ui: m.pages}
	ui.Get("/workspaces/:id/config/versions/:version/rollout", app.Require(ObjAgent, authz.Read, orgs.ScopeWorkspace(m.db, "id")),
		app.Doc{Summary: "A configuration version's rollout to the agents, live (htmx fragment)", Query: []string{"part"}}, p.rollout)
}

func (p *pages) rollout(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	s := c.Params("version")
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 || strconv.FormatInt(v, 10) != s {
		return vhosts.ErrVersionNotFound
	}
	cur, err := p.svc.vh.CurrentVersion(app.Ctx(c), ws)
	if err != nil {
		return err
	}
	if v > cur {
		return vhosts.ErrVersionNotFound
	}
	agents, err := p.svc.Rollout(app.Ctx(c), ws, v)
	if err != nil {
		return err
	}
	d := uiRolloutData{WorkspaceID: ws, Version: v, Agents: agents, BodyURL: views.RolloutPath(ws, v) + "?part=body"}
	if c.Query("part") == "body" {
		return views.Render(c, http.StatusOK, uiRolloutBody(d))
	}
	return views.Render(c, http.StatusOK, uiRollout(d))
}

// uiRolloutStreamURL is the live event stream the panel listens to.
func uiRolloutStreamURL(ws uuid.UUID) string {
	return "/v1/events/stream?" + url.Values{
		"workspace_id": {ws.String()},
		"events":       {"config.*,agent.*"},
	}.Encode()
}

func uiRolloutID(v int64) string { return "rollout-v" + strconv.FormatInt(v, 10) }

// uiRolloutTrigger re-fetches the body on connecting to the stream and on
// every event; while an agent is pending, also every 3 seconds.
func uiRolloutTrigger(d uiRolloutData) string {
	t := "sse:initial, sse:update"
	if !d.Done() {
		t += ", every 3s"
	}
	return t
}

func uiRolloutClass(status string) string {
	switch status {
	case vhosts.RolloutApplied:
		return "badge operator"
	case vhosts.RolloutFailed, vhosts.RolloutRolledBack:
		return "badge revoked"
	case vhosts.RolloutSuperseded:
		return "badge"
	}
	return "badge admin"
}

func uiRolloutLabel(status string) string {
	switch status {
	case vhosts.RolloutRolledBack:
		return "rolled back"
	}
	return status
}

func uiBool(b bool) string { return strconv.FormatBool(b) }
