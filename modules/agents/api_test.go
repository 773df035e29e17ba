package agents

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

var timestamp = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

func TestAPI_Agents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("CreatesTokenWithSeedShapeAndInstallCommand", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		var got map[string]any
		b.as(t, "admin", http.MethodPost, b.agentsPath()+"/tokens", map[string]any{
			"name": "web server 02", "labels": map[string]string{"region": "us-west-1", "env": "production"}, "expires_in_hours": 48,
		}, http.StatusCreated, &got)
		expectKeys(t, "token", got, "token", "agent_id", "expires_at", "install_command")
		tok := got["token"].(string)
		if !strings.HasPrefix(tok, TokenPrefix) || len(tok) < len(TokenPrefix)+40 || !timestamp.MatchString(got["expires_at"].(string)) {
			t.Fatalf("token = %v", got)
		}
		want := "nxmesh-agent --master master.test.internal:9443 --token " + tok + " --ca-fingerprint " + e.mod.CAFingerprint() +
			" --name 'web server 02' --labels env=production,region=us-west-1"
		if got["install_command"] != want {
			t.Fatalf("install command\n got %s\nwant %s", got["install_command"], want)
		}
		var stored tokenRow
		if err := b.db.Take(&stored, "agent_id = ?", got["agent_id"]).Error; err != nil {
			t.Fatal(err)
		}
		if string(stored.TokenHash) == tok || len(stored.TokenHash) != 32 {
			t.Fatalf("token stored as %x", stored.TokenHash)
		}
		var agent map[string]any
		b.as(t, "viewer", http.MethodGet, agentPath(uuid.MustParse(got["agent_id"].(string))), nil, http.StatusOK, &agent)
		if agent["state"] != "pending" || agent["name"] != "web server 02" || agent["last_seen_at"] != nil {
			t.Fatalf("pending agent = %v", agent)
		}
		var audit []app.AuditEntry
		b.db.Where("object_id = ? AND action = ?", got["agent_id"], "agent.create").Find(&audit)
		if len(audit) != 1 || strings.Contains(string(audit[0].After), tok) {
			t.Fatalf("audit rows %v", audit)
		}
	})

	t.Run("RejectsInvalidTokenRequests", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		cases := []struct {
			name  string
			body  any
			field string
		}{
			{"MissingName", map[string]any{"labels": map[string]string{}}, "name"},
			{"NameTooLong", map[string]any{"name": strings.Repeat("n", 101)}, "name"},
			{"ZeroHours", map[string]any{"name": "w", "expires_in_hours": 0}, "expires_in_hours"},
			{"TooManyHours", map[string]any{"name": "w", "expires_in_hours": 721}, "expires_in_hours"},
			{"BadLabelValue", map[string]any{"name": "w", "labels": map[string]string{"env": "prod uction"}}, "labels.env"},
			{"BadLabelKey", map[string]any{"name": "w", "labels": map[string]string{"e nv": "prod"}}, "labels"},
			{"UnknownField", map[string]any{"name": "w", "token": "x"}, "token"},
		}
		for _, c := range cases {
			raw := b.as(t, "admin", http.MethodPost, b.agentsPath()+"/tokens", c.body, http.StatusUnprocessableEntity, nil)
			if code, _, fields := errorOf(t, raw); code != app.CodeValidation || !slices.Contains(fields, c.field) {
				t.Fatalf("%s: %s %v, want a detail for %s", c.name, code, fields, c.field)
			}
		}
	})

	t.Run("ObjectsTargetOnlyAgentsOfTheirWorkspace", func(t *testing.T) {
		t.Parallel()
		b, other := e.setup(t), e.setup(t)
		mine, theirs := b.token(t, "mine", nil).AgentID, other.token(t, "theirs", nil).AgentID
		up := b.upstream(t, "api")
		vhostBody := func(ids ...uuid.UUID) map[string]any {
			list := make([]string, len(ids))
			for i, id := range ids {
				list[i] = id.String()
			}
			return map[string]any{
				"name": "targeted", "server_name": "targeted.example.com", "listen_port": 80,
				"locations":     []map[string]any{{"path": "/", "upstream_id": up.ID.String()}},
				"target_agents": map[string]any{"type": "agents", "agent_ids": list},
			}
		}
		streamBody := func(ids ...uuid.UUID) map[string]any {
			list := make([]string, len(ids))
			for i, id := range ids {
				list[i] = id.String()
			}
			return map[string]any{
				"name": "targeted", "listen_port": 5432, "protocol": "tcp", "upstream_id": up.ID.String(),
				"target_agents": map[string]any{"type": "agents", "agent_ids": list},
			}
		}
		for _, c := range []struct {
			path string
			body func(...uuid.UUID) map[string]any
		}{
			{fmt.Sprintf("/v1/workspaces/%s/virtual-hosts", b.ws), vhostBody},
			{fmt.Sprintf("/v1/workspaces/%s/streams", b.ws), streamBody},
		} {
			raw := b.as(t, "operator", http.MethodPost, c.path, c.body(theirs, uuid.New(), mine), http.StatusUnprocessableEntity, nil)
			code, _, fields := errorOf(t, raw)
			want := []string{"target_agents.agent_ids[0]", "target_agents.agent_ids[1]"}
			if code != app.CodeValidation || !slices.Equal(fields, want) {
				t.Fatalf("%s with another workspace's agent: %s %v, want %v", c.path, code, fields, want)
			}
			b.as(t, "operator", http.MethodPost, c.path, c.body(mine), http.StatusCreated, nil)
		}
	})

	t.Run("ListsWithSeedShapeAndFilters", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		prod, _, _ := b.online(t, "prod", map[string]string{"env": "production", "region": "us-east-1"})
		b.online(t, "staging", map[string]string{"env": "staging"})
		b.token(t, "pending", map[string]string{"env": "production", "region": "eu"})

		data, meta := b.list(t, "")
		if meta.Total != 3 || len(data) != 3 || data[0]["name"] != "prod" {
			t.Fatalf("list = %v %+v", data, meta)
		}
		expectKeys(t, "listed agent", data[0], "id", "workspace_id", "name", "hostname", "ip_address", "version", "state",
			"deployment_mode", "last_seen_at", "capabilities", "labels", "created_at",
			"updated_at", "peer_address", "auto_restart", "desired_version", "applied_version", "apply_status", "drift")
		// Both addresses: what the agent reported, and where its connection
		// came from.
		if data[0]["ip_address"] != "10.0.1.10" || data[0]["peer_address"] != "127.0.0.1" {
			t.Fatalf("listed agent addresses: ip_address %v, peer_address %v", data[0]["ip_address"], data[0]["peer_address"])
		}
		if data[0]["id"] != prod.id.String() || data[0]["state"] != "online" || data[0]["deployment_mode"] != "docker_sidecar" ||
			!slices.Equal(toStrings(data[0]["capabilities"]), []string{"http2", "websocket"}) || !timestamp.MatchString(data[0]["last_seen_at"].(string)) {
			t.Fatalf("listed agent = %v", data[0])
		}
		for _, c := range []struct {
			query string
			want  []string
		}{
			{"state=online", []string{"prod", "staging"}},
			{"state=pending", []string{"pending"}},
			{"state=offline", nil},
			{"state=all", []string{"prod", "staging", "pending"}},
			{"label_selector=env=production", []string{"prod", "pending"}},
			{"label_selector=env=production,region!=eu", []string{"prod"}},
			{"label_selector=region!=eu", []string{"prod", "staging"}},
			{"label_selector=env=production&state=online", []string{"prod"}},
			{"per_page=1&page=2", []string{"staging"}},
		} {
			data, _ := b.list(t, c.query)
			var got []string
			for _, d := range data {
				got = append(got, d["name"].(string))
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("?%s = %v, want %v", c.query, got, c.want)
			}
		}
		for _, q := range []string{"state=sleeping", "label_selector=env"} {
			raw := b.as(t, "viewer", http.MethodGet, b.agentsPath()+"?"+q, nil, http.StatusUnprocessableEntity, nil)
			if code, _, _ := errorOf(t, raw); code != app.CodeValidation {
				t.Fatalf("?%s: %s", q, code)
			}
		}
	})

	t.Run("GetsWithHealthInSeedShape", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, _, _ := b.online(t, "web", map[string]string{"env": "production"})
		// The push is recorded as the agent receives it.
		b.awaitDetail(t, a.id, "pending", func(d AgentDetail) bool { return d.ApplyStatus == ApplyPending })
		var got map[string]any
		b.as(t, "viewer", http.MethodGet, agentPath(a.id), nil, http.StatusOK, &got)
		expectKeys(t, "agent", got, "id", "workspace_id", "name", "hostname", "ip_address", "version", "state",
			"deployment_mode", "last_seen_at", "capabilities", "labels", "health", "created_at",
			"updated_at", "peer_address", "auto_restart", "desired_version", "applied_version", "apply_status", "drift",
			"last_error", "agent_info", "registered_at", "cert_expires_at", "registration_error")
		if got["ip_address"] != "10.0.1.10" || got["peer_address"] != "127.0.0.1" || got["registration_error"] != "" {
			t.Fatalf("agent addresses: ip_address %v, peer_address %v, registration_error %v", got["ip_address"], got["peer_address"], got["registration_error"])
		}
		expectKeys(t, "health", got["health"].(map[string]any), "nginx_status", "nginx_uptime_seconds", "active_connections",
			"requests_per_second", "cpu_percent", "memory_used_mb", "config_version", "alerts", "reported_at", "upstreams")
		if got["health"].(map[string]any)["nginx_status"] != "unknown" || got["auto_restart"] != true || got["apply_status"] != "pending" {
			t.Fatalf("agent before any report = %v", got)
		}
		b.as(t, "viewer", http.MethodGet, agentPath(uuid.New()), nil, http.StatusNotFound, nil)
		b.as(t, "viewer", http.MethodGet, "/v1/agents/not-a-uuid", nil, http.StatusNotFound, nil)
	})

	t.Run("KeepsTheReportedAddressApartFromThePeerAddress", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		for _, c := range []struct{ reported, want string }{
			{"203.0.113.9", "203.0.113.9"},
			{"not-an-ip", ""},
			{"", ""},
		} {
			tok := b.token(t, "reports-"+c.want, nil)
			a := newAgentClient(t, b.addr, b.svc.CA())
			s := a.open(t, false)
			req := a.hello("web.internal")
			req.Token, req.CsrPem, req.IpAddress = tok.Token, a.csr(t), c.reported
			if resp := s.handshake(t, req); !resp.GetSuccess() {
				t.Fatalf("register: %s", resp.GetErrorMessage())
			}
			var got map[string]any
			b.as(t, "viewer", http.MethodGet, agentPath(tok.AgentID), nil, http.StatusOK, &got)
			if got["ip_address"] != c.want || got["peer_address"] != "127.0.0.1" {
				t.Fatalf("reported %q: ip_address %v, peer_address %v; want %q and the connection's 127.0.0.1",
					c.reported, got["ip_address"], got["peer_address"], c.want)
			}
		}
	})

	t.Run("UpdatesAndAudits", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web", map[string]string{"env": "staging"})
		var got map[string]any
		b.as(t, "admin", http.MethodPatch, agentPath(tok.AgentID), map[string]any{
			"name": "web-renamed", "labels": map[string]string{"env": "production", "tier": "web"}, "auto_restart": false,
		}, http.StatusOK, &got)
		if got["name"] != "web-renamed" || got["auto_restart"] != false || got["labels"].(map[string]any)["tier"] != "web" || got["health"] == nil {
			t.Fatalf("patched = %v", got)
		}
		var audit app.AuditEntry
		if err := b.db.Take(&audit, "object_id = ? AND action = ?", tok.AgentID.String(), "agent.update").Error; err != nil {
			t.Fatalf("no audit row: %v", err)
		}
		if audit.ActorUserID == nil || *audit.ActorUserID != b.users["admin"].ID || !strings.Contains(string(audit.Before), "staging") {
			t.Fatalf("audit = %+v", audit)
		}
		raw := b.as(t, "admin", http.MethodPatch, agentPath(tok.AgentID), map[string]any{"labels": map[string]string{"a b": "c"}}, http.StatusUnprocessableEntity, nil)
		if _, _, fields := errorOf(t, raw); !slices.Contains(fields, "labels") {
			t.Fatalf("bad label fields %v", fields)
		}
	})

	t.Run("DeletesAndAudits", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web", nil)
		b.as(t, "admin", http.MethodDelete, agentPath(tok.AgentID), nil, http.StatusNoContent, nil)
		b.as(t, "viewer", http.MethodGet, agentPath(tok.AgentID), nil, http.StatusNotFound, nil)
		var n int64
		b.db.Model(&tokenRow{}).Where("agent_id = ?", tok.AgentID).Count(&n)
		if n != 0 {
			t.Fatalf("%d tokens of a deleted agent left", n)
		}
		b.db.Model(&app.AuditEntry{}).Where("object_id = ? AND action = ?", tok.AgentID.String(), "agent.delete").Count(&n)
		if n != 1 {
			t.Fatalf("%d delete audit rows", n)
		}
	})

	t.Run("ManagesTheRegistrationPolicy", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		path := b.agentsPath() + "/registration-policy"
		var got RegistrationPolicy
		b.as(t, "admin", http.MethodGet, path, nil, http.StatusOK, &got)
		if got.Allow == nil || got.Deny == nil || len(got.Allow)+len(got.Deny) != 0 {
			t.Fatalf("empty policy = %+v", got)
		}
		b.as(t, "admin", http.MethodPut, path, map[string]any{"allow": []string{"Web-*.internal", "api-?"}, "deny": []string{"*.dmz"}}, http.StatusOK, &got)
		b.as(t, "admin", http.MethodGet, path, nil, http.StatusOK, &got)
		if !slices.Equal(got.Allow, []string{"web-*.internal", "api-?"}) || !slices.Equal(got.Deny, []string{"*.dmz"}) {
			t.Fatalf("policy = %+v", got)
		}
		raw := b.as(t, "admin", http.MethodPut, path, map[string]any{"allow": []string{"ok", "web-["}, "deny": []string{""}}, http.StatusUnprocessableEntity, nil)
		if _, _, fields := errorOf(t, raw); !slices.Equal(fields, []string{"allow[1]", "deny[0]"}) {
			t.Fatalf("fields %v", fields)
		}
		b.as(t, "viewer", http.MethodGet, path, nil, http.StatusOK, nil)
		b.as(t, "operator", http.MethodPut, path, map[string]any{"allow": []string{}, "deny": []string{}}, http.StatusForbidden, nil)
	})

	t.Run("RejectsInvalidCommands", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web", nil)
		for _, c := range []struct {
			body  map[string]any
			field string
		}{
			{map[string]any{"command": "rm -rf /"}, "command"},
			{map[string]any{"command": "restart", "graceful": true}, "graceful"},
			{map[string]any{"command": "reload", "force": true}, "force"},
			{map[string]any{"command": "stop", "timeout_seconds": 0}, "timeout_seconds"},
		} {
			raw := b.as(t, "operator", http.MethodPost, agentPath(tok.AgentID)+"/commands", c.body, http.StatusUnprocessableEntity, nil)
			if _, _, fields := errorOf(t, raw); !slices.Equal(fields, []string{c.field}) {
				t.Fatalf("%v: fields %v", c.body, fields)
			}
		}
		b.as(t, "viewer", http.MethodGet, agentPath(tok.AgentID)+"/commands/"+uuid.NewString(), nil, http.StatusNotFound, nil)
		var list struct {
			Data []any        `json:"data"`
			Meta app.ListMeta `json:"meta"`
		}
		b.as(t, "viewer", http.MethodGet, agentPath(tok.AgentID)+"/commands", nil, http.StatusOK, &list)
		if list.Data == nil || list.Meta.Total != 0 {
			t.Fatalf("commands = %+v", list)
		}
	})

	t.Run("EnforcesRolesAndHidesOtherOrganizations", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web", nil)
		id := tok.AgentID
		routes := []struct {
			method, path string
			body         any
			// minimum role that passes the guard
			min string
		}{
			{http.MethodGet, b.agentsPath(), nil, "viewer"},
			{http.MethodPost, b.agentsPath() + "/tokens", map[string]any{"name": "x"}, "admin"},
			{http.MethodGet, b.agentsPath() + "/registration-policy", nil, "viewer"},
			{http.MethodPut, b.agentsPath() + "/registration-policy", map[string]any{"allow": []string{}, "deny": []string{}}, "admin"},
			{http.MethodGet, agentPath(id), nil, "viewer"},
			{http.MethodPatch, agentPath(id), map[string]any{"name": "y"}, "admin"},
			{http.MethodPost, agentPath(id) + "/tokens", map[string]any{}, "admin"},
			{http.MethodPost, agentPath(id) + "/reload", nil, "operator"},
			{http.MethodPost, agentPath(id) + "/commands", map[string]any{"command": "get_status"}, "operator"},
			{http.MethodGet, agentPath(id) + "/commands", nil, "viewer"},
			{http.MethodGet, agentPath(id) + "/commands/" + uuid.NewString(), nil, "viewer"},
			{http.MethodDelete, agentPath(id) + "/tokens", nil, "admin"},
			{http.MethodDelete, agentPath(id), nil, "admin"},
		}
		rank := map[string]int{"viewer": 0, "operator": 1, "admin": 2}
		for _, r := range routes {
			if st, raw := b.do(t, "", r.method, r.path, r.body); st != http.StatusUnauthorized {
				t.Fatalf("anonymous %s %s: %d %s", r.method, r.path, st, raw)
			}
			if st, raw := b.do(t, b.tokens["outsider"], r.method, r.path, r.body); st != http.StatusNotFound {
				t.Fatalf("outsider %s %s: %d %s", r.method, r.path, st, raw)
			}
			for _, role := range []string{"viewer", "operator"} {
				st, raw := b.do(t, b.tokens[role], r.method, r.path, r.body)
				if rank[role] < rank[r.min] && st != http.StatusForbidden {
					t.Fatalf("%s %s %s: %d %s, want 403", role, r.method, r.path, st, raw)
				}
				if rank[role] >= rank[r.min] && (st == http.StatusForbidden || st == http.StatusUnauthorized) {
					t.Fatalf("%s %s %s: %d %s, want access", role, r.method, r.path, st, raw)
				}
			}
		}
		// Owners pass every guard.
		b.as(t, "owner", http.MethodDelete, agentPath(id), nil, http.StatusNoContent, nil)
	})

	t.Run("EveryRouteIsInTheOpenAPIDocument", func(t *testing.T) {
		t.Parallel()
		_, raw := e.do(t, "", http.MethodGet, "/v1/openapi.json", nil)
		var doc struct {
			Paths map[string]map[string]any `json:"paths"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		for _, r := range e.app.Routes() {
			if r.Module != "agents" || r.Kind != app.KindAPI {
				continue
			}
			if _, ok := doc.Paths[strings.TrimPrefix(r.OpenAPIPath(), "/v1")][strings.ToLower(r.Method)]; !ok {
				t.Fatalf("%s %s is not in the OpenAPI document", r.Method, r.OpenAPIPath())
			}
		}
	})
}

// list lists the bundle's agents as the viewer with query.
func (b *bundle) list(t *testing.T, query string) ([]map[string]any, app.ListMeta) {
	t.Helper()
	var l struct {
		Data []map[string]any `json:"data"`
		Meta app.ListMeta     `json:"meta"`
	}
	b.as(t, "viewer", http.MethodGet, b.agentsPath()+"?"+query, nil, http.StatusOK, &l)
	return l.Data, l.Meta
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
