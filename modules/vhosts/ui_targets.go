package vhosts

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/views"
)

// The target agents selector of the virtual host and stream forms. Listed
// agents are ids in a text input; the picker below it (GET
// /workspaces/:id/target-agents, fetched by htmx when the form loads) lists
// the workspace's agents with their state and labels, each with a checkbox
// that static/targets.js keeps in step with the ids, and a filter by name,
// label or state. Without JavaScript the list shows the ids to copy.

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

// TargetAgent is an agent the target picker offers.
type TargetAgent struct {
	ID     uuid.UUID
	Name   string
	State  string
	Labels map[string]string
}

// AgentsFunc lists a workspace's agents for the target picker. It is the
// agents module's Service.TargetAgents; the agents module needs this
// module's service, so main.go passes a closure (like KnownAgentsFunc). nil:
// the picker says the list is unavailable.
type AgentsFunc func(ctx context.Context, workspaceID uuid.UUID) ([]TargetAgent, error)

// uiTargetAgentsURL is the picker fragment of a workspace with ids listed.
func uiTargetAgentsURL(ws uuid.UUID, ids string) string {
	return uiWorkspacePath(ws, "/target-agents") + "?" + url.Values{fTargetAgents: {ids}}.Encode()
}

// targetPickerData is the picker: the agents and which of them are listed.
type targetPickerData struct {
	Agents    []TargetAgent
	Selected  map[string]bool
	Available bool
}

// targetAgentLabels are an agent's labels as key=value, sorted.
func targetAgentLabels(l map[string]string) []string {
	out := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		out = append(out, k+"="+l[k])
	}
	return out
}

// targetAgentSearch is the text the picker's filter matches.
func targetAgentSearch(a TargetAgent) string {
	return strings.ToLower(a.Name + " " + a.State + " " + strings.Join(targetAgentLabels(a.Labels), " ") + " " + a.ID.String())
}

// targetAgents answers the picker fragment; the query's
// target_agents.agent_ids are the ids already listed.
func (p *pages) targetAgents(c *fiber.Ctx) error {
	d := targetPickerData{Selected: map[string]bool{}}
	for _, id := range (targetForm{Type: TargetAgentList, AgentIDs: c.Query(fTargetAgents)}).targetAgents().AgentIDs {
		d.Selected[strings.ToLower(id)] = true
	}
	if p.svc.agents != nil {
		list, err := p.svc.agents(app.Ctx(c), app.ScopeOf(c).WorkspaceID)
		if err != nil {
			return err
		}
		d.Agents, d.Available = list, true
	}
	return views.Render(c, http.StatusOK, targetPicker(d))
}
