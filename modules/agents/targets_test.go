package agents

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/static"
)

// The virtual host and stream forms offer the workspace's agents to tick,
// with their state and labels, through the vhosts module's AgentsFunc.
func TestUI_TargetAgentPicker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	web := b.token(t, "web-01", map[string]string{"env": "prod", "role": "web"})
	edge := b.token(t, "edge-01", map[string]string{"env": "staging"})
	other := e.setup(t).token(t, "elsewhere", nil)
	admin := e.browser(t, "admin")
	ws := b.ws.String()

	for _, form := range []string{"/workspaces/" + ws + "/virtual-hosts/new", "/workspaces/" + ws + "/streams/new"} {
		admin.do(t, http.MethodGet, form, nil).expect(t, http.StatusOK,
			`id="target-agent-picker"`, `hx-get="/workspaces/`+ws+`/target-agents?target_agents.agent_ids="`, `hx-trigger="load"`, `hx-target="this"`)
	}

	q := url.Values{"target_agents.agent_ids": {web.AgentID.String() + ", not-an-id"}}
	r := admin.do(t, http.MethodGet, "/workspaces/"+ws+"/target-agents?"+q.Encode(), nil, "HX-Request", "true")
	r.expect(t, http.StatusOK, `<script src="`+static.Targets+`" defer>`, `data-target-picker="f-target_agents.agent_ids"`,
		"web-01", "edge-01", "<code>env=prod</code>", "<code>role=web</code>", "<code>env=staging</code>", "pending",
		`value="`+web.AgentID.String()+`" checked`, `value="`+edge.AgentID.String()+`" data-target-agent`)
	if strings.Contains(r.body, other.AgentID.String()) || strings.Contains(r.body, "elsewhere") {
		t.Fatal("the picker lists another workspace's agent")
	}
	if strings.Contains(r.body, "<html") {
		t.Fatal("the picker fragment carries the page")
	}

	// Someone outside the organization sees nothing.
	e.browser(t, "outsider").do(t, http.MethodGet, "/workspaces/"+ws+"/target-agents", nil).expect(t, http.StatusNotFound)
}
