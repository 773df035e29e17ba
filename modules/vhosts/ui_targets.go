package vhosts

import (
	"fmt"
	"strings"

	"github.com/nxmesh/nxmesh/views"
)

// The target agents selector of the virtual host and stream forms.

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
