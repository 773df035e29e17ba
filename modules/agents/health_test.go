package agents

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// TestGRPC_UpstreamHealth: the servers' health-check verdicts in an agent's
// health report are stored, shown on the agent (health.upstreams), on the
// upstream across agents (health) and on its page, and each change is
// published as upstream.health.
func TestGRPC_UpstreamHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("ReportIsShownOnAgentAndUpstreamAndChangesArePublished", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		on := true
		up, err := b.ups.Create(b.ctx, upstreams.CreateParams{WorkspaceID: b.ws, Name: "api", Servers: []upstreams.ServerInput{
			{Address: "10.0.1.20:8080"}, {Address: "10.0.1.21:8080"},
		}, HealthCheck: &upstreams.HealthCheckInput{Enabled: &on}})
		if err != nil {
			t.Fatalf("create upstream: %v", err)
		}
		web, sWeb, _ := b.online(t, "web", nil)
		edge, sEdge, _ := b.online(t, "edge", nil)
		seenWeb, seenEdge := b.obs.watch(t, web.id), b.obs.watch(t, edge.id)
		checked := time.Now().Add(-2 * time.Second).Unix()
		changed := checked - 30
		sWeb.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}, UpstreamHealth: []*agentv1.UpstreamServerHealth{
			{UpstreamId: up.ID.String(), Address: "10.0.1.20:8080", Healthy: true, CheckedAt: checked},
			{UpstreamId: up.ID.String(), Address: "10.0.1.21:8080", Healthy: false, MarkedDown: true,
				LastError: "GET /: 503", ChangedAt: changed, CheckedAt: checked},
		}})
		awaitKind(t, seenWeb, "message")
		sEdge.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}, UpstreamHealth: []*agentv1.UpstreamServerHealth{
			{UpstreamId: up.ID.String(), Address: "10.0.1.21:8080", Healthy: true, CheckedAt: checked},
		}})
		awaitKind(t, seenEdge, "message")

		// The agent.
		var agent struct {
			Health struct {
				Upstreams []map[string]any `json:"upstreams"`
			} `json:"health"`
		}
		b.as(t, "viewer", http.MethodGet, agentPath(web.id), nil, http.StatusOK, &agent)
		if len(agent.Health.Upstreams) != 2 {
			t.Fatalf("health.upstreams = %v", agent.Health.Upstreams)
		}
		down := agent.Health.Upstreams[1]
		expectKeys(t, "health.upstreams[1]", down, "upstream_id", "address", "healthy", "marked_down", "last_error", "changed_at", "checked_at")
		if down["upstream_id"] != up.ID.String() || down["address"] != "10.0.1.21:8080" || down["healthy"] != false ||
			down["marked_down"] != true || down["last_error"] != "GET /: 503" ||
			down["changed_at"] != time.Unix(changed, 0).UTC().Format(time.RFC3339) || down["checked_at"] != time.Unix(checked, 0).UTC().Format(time.RFC3339) {
			t.Errorf("health.upstreams[1] = %v", down)
		}
		if first := agent.Health.Upstreams[0]; first["healthy"] != true || first["marked_down"] != false || first["changed_at"] != nil {
			t.Errorf("health.upstreams[0] = %v", first)
		}

		// The upstream: per server (in order), then by agent name.
		var detail struct {
			Name   string           `json:"name"`
			Health []map[string]any `json:"health"`
		}
		b.as(t, "viewer", http.MethodGet, "/v1/upstreams/"+up.ID.String(), nil, http.StatusOK, &detail)
		type row struct {
			addr, agent string
			healthy     bool
			markedDown  bool
		}
		var got []row
		for _, h := range detail.Health {
			got = append(got, row{h["address"].(string), h["agent_id"].(string), h["healthy"].(bool), h["marked_down"].(bool)})
		}
		want := []row{
			{"10.0.1.20:8080", web.id.String(), true, false},
			{"10.0.1.21:8080", edge.id.String(), true, false},
			{"10.0.1.21:8080", web.id.String(), false, true},
		}
		if detail.Name != "api" || len(got) != len(want) {
			t.Fatalf("upstream = %s, health %v", detail.Name, detail.Health)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("health[%d] = %v, want %v", i, got[i], want[i])
			}
		}
		if detail.Health[2]["agent_name"] != "web" || detail.Health[2]["last_error"] != "GET /: 503" {
			t.Errorf("health[2] = %v", detail.Health[2])
		}

		// The upstream's page.
		page := e.browser(t, "viewer").do(t, http.MethodGet, "/upstreams/"+up.ID.String(), nil)
		if page.status != http.StatusOK || !strings.Contains(page.body, "Server health") || !strings.Contains(page.body, "marked down") ||
			!strings.Contains(page.body, "GET /: 503") {
			t.Errorf("upstream page %d does not show the servers' health:\n%s", page.status, page.body)
		}

		// Events: only the server that is not healthy and up changed.
		ev := b.events.await(t, EventUpstreamHealth, web.id, nil)
		expectKeys(t, "upstream.health data", ev.Data, "agent_id", "upstream_id", "address", "healthy", "marked_down", "last_error")
		if ev.Data["upstream_id"] != up.ID.String() || ev.Data["address"] != "10.0.1.21:8080" || ev.Data["healthy"] != false || ev.Data["marked_down"] != true {
			t.Errorf("upstream.health = %v", ev.Data)
		}
		count := func() int {
			b.events.mu.Lock()
			defer b.events.mu.Unlock()
			n := 0
			for _, ev := range b.events.events {
				if ev.Type == EventUpstreamHealth && (ev.Data["agent_id"] == web.id.String() || ev.Data["agent_id"] == edge.id.String()) {
					n++
				}
			}
			return n
		}
		if n := count(); n != 1 {
			t.Errorf("%d upstream.health events after the first reports, want 1", n)
		}

		// The same verdicts again publish nothing; the server's recovery does.
		sWeb.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}, UpstreamHealth: []*agentv1.UpstreamServerHealth{
			{UpstreamId: up.ID.String(), Address: "10.0.1.20:8080", Healthy: true, CheckedAt: checked + 1},
			{UpstreamId: up.ID.String(), Address: "10.0.1.21:8080", Healthy: false, MarkedDown: true, LastError: "GET /: 503", ChangedAt: changed, CheckedAt: checked + 1},
		}})
		awaitKind(t, seenWeb, "message")
		if n := count(); n != 1 {
			t.Errorf("%d upstream.health events after an unchanged report, want 1", n)
		}
		sWeb.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}, UpstreamHealth: []*agentv1.UpstreamServerHealth{
			{UpstreamId: up.ID.String(), Address: "10.0.1.20:8080", Healthy: true, CheckedAt: checked + 2},
			{UpstreamId: up.ID.String(), Address: "10.0.1.21:8080", Healthy: true, ChangedAt: checked + 2, CheckedAt: checked + 2},
		}})
		awaitKind(t, seenWeb, "message")
		b.events.await(t, EventUpstreamHealth, web.id, func(ev app.Event) bool {
			return ev.Data["address"] == "10.0.1.21:8080" && ev.Data["healthy"] == true && ev.Data["marked_down"] == false
		})
		if r := b.row(t, web.id); len(r.UpstreamHealth) != 2 || !r.UpstreamHealth[1].Healthy || r.State != StateOnline {
			t.Errorf("row after recovery: state %s, upstream_health %v", r.State, r.UpstreamHealth)
		}
	})
}
