package agents

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
	"github.com/nxmesh/nxmesh/static"
)

// bindError is nginx's text for a port another process holds.
const bindError = "nginx: [emerg] bind() to 0.0.0.0:19002 failed (98: Address already in use)\nnginx: configuration file /etc/nginx/nginx.conf test failed"

// write calls the API as role and returns the status, the X-Config-Version
// header and the decoded JSON object (nil without a body).
func (b *bundle) write(t *testing.T, role, method, path string, body any) (int, string, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, path, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+b.tokens[role])
	resp := apptest.Do(t, b.app, req)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &obj); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, resp.Header.Get(app.HeaderConfigVersion), obj
}

// versionAgents reads GET …/config/versions/{v} and returns its agents by name.
func (b *bundle) versionAgents(t *testing.T, v int64) map[string]map[string]any {
	t.Helper()
	var out struct {
		Version int64            `json:"version"`
		Agents  []map[string]any `json:"agents"`
	}
	b.as(t, "viewer", http.MethodGet, fmt.Sprintf("/v1/workspaces/%s/config/versions/%d", b.ws, v), nil, http.StatusOK, &out)
	if out.Version != v {
		t.Fatalf("version %d, want %d", out.Version, v)
	}
	by := map[string]map[string]any{}
	for _, a := range out.Agents {
		expectKeys(t, "rollout agent", a, "agent_id", "name", "state", "status", "error_message", "updated_at")
		by[a["name"].(string)] = a
	}
	return by
}

// awaitStatuses polls version v's rollout until every named agent has its
// status.
func (b *bundle) awaitStatuses(t *testing.T, v int64, want map[string]string) map[string]map[string]any {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		got := b.versionAgents(t, v)
		ok := len(got) == len(want)
		for name, st := range want {
			if got[name] == nil || got[name]["status"] != st {
				ok = false
			}
		}
		if ok {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("version %d rollout %v, want statuses %v", v, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// configVersion checks that a write's answer names the same new version in
// its header and (when it has a body) its config_version field, and returns it.
func configVersion(t *testing.T, header string, obj map[string]any, wantBody bool) int64 {
	t.Helper()
	v, err := strconv.ParseInt(header, 10, 64)
	if err != nil || v < 1 {
		t.Fatalf("%s %q, want a version", app.HeaderConfigVersion, header)
	}
	if wantBody {
		if got, _ := obj[app.FieldConfigVersion].(float64); int64(got) != v {
			t.Fatalf("config_version %v, want %d (body %v)", obj[app.FieldConfigVersion], v, obj)
		}
	}
	return v
}

// certValidFor returns a self-signed certificate for domain that expires in
// days days, and its key.
func certValidFor(t *testing.T, domain string, days int) (string, string) {
	t.Helper()
	return apptest.SelfSignedCertUntil(t, time.Now().Add(time.Duration(days)*24*time.Hour-time.Hour), domain)
}

func TestAPI_Rollout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("WritesAnswerTheirVersionAndVersionsShowEachAgent", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, s1, _ := b.online(t, "edge-1", nil)
		_, s2, _ := b.online(t, "edge-2", nil)

		st, h, obj := b.write(t, "operator", http.MethodPost, fmt.Sprintf("/v1/workspaces/%s/virtual-hosts", b.ws), map[string]any{
			"name": "clash", "server_name": "clash.example.com", "listen_port": 19002,
			"locations": []map[string]any{{"path": "/", "proxy_pass": "http://10.0.0.1:8080"}},
		})
		if st != http.StatusCreated {
			t.Fatalf("create virtual host: %d %v", st, obj)
		}
		v := configVersion(t, h, obj, true)
		if obj["name"] != "clash" || obj["id"] == nil {
			t.Fatalf("the virtual host's fields are kept: %v", obj)
		}
		vhID := obj["id"].(string)

		// Both pushed, nothing answered yet.
		b.awaitStatuses(t, v, map[string]string{"edge-1": vhosts.RolloutPending, "edge-2": vhosts.RolloutPending})
		u1, u2 := s1.config(t), s2.config(t)
		if u1.GetVersion() != v || u2.GetVersion() != v {
			t.Fatalf("pushed versions %d, %d, want %d", u1.GetVersion(), u2.GetVersion(), v)
		}
		s1.status(t, u1, agentv1.ConfigApplyStatus_VALIDATING, "")
		s1.status(t, u1, agentv1.ConfigApplyStatus_SUCCESS, "")
		s2.status(t, u2, agentv1.ConfigApplyStatus_ROLLED_BACK, bindError)
		got := b.awaitStatuses(t, v, map[string]string{"edge-1": vhosts.RolloutApplied, "edge-2": vhosts.RolloutRolledBack})
		if got["edge-2"]["error_message"] != bindError || got["edge-1"]["error_message"] != "" {
			t.Fatalf("error messages: %v", got)
		}
		if got["edge-1"]["updated_at"] == nil || got["edge-1"]["state"] != StateOnline {
			t.Fatalf("edge-1: %v", got["edge-1"])
		}

		// A version that leaves edge-2's configuration as it is: edge-2
		// gets nothing and the version shows what it runs (rolled back).
		target := map[string]any{"type": "agents", "agent_ids": []string{b.agentRowByName(t, "edge-1").ID.String()}}
		st, h, obj = b.write(t, "operator", http.MethodPost, fmt.Sprintf("/v1/workspaces/%s/virtual-hosts", b.ws), map[string]any{
			"name": "only-one", "server_name": "one.example.com", "target_agents": target,
			"locations": []map[string]any{{"path": "/", "proxy_pass": "http://10.0.0.1:8080"}},
		})
		if st != http.StatusCreated {
			t.Fatalf("create virtual host: %d %v", st, obj)
		}
		v2 := configVersion(t, h, obj, true)
		u1 = s1.config(t)
		s1.status(t, u1, agentv1.ConfigApplyStatus_SUCCESS, "")
		got = b.awaitStatuses(t, v2, map[string]string{"edge-1": vhosts.RolloutApplied, "edge-2": vhosts.RolloutRolledBack})
		if got["edge-2"]["error_message"] != bindError {
			t.Fatalf("edge-2 on the unchanged version: %v", got["edge-2"])
		}

		// Deleting answers 204 with the header only; the earlier version
		// keeps its results.
		st, h, obj = b.write(t, "operator", http.MethodDelete, "/v1/virtual-hosts/"+vhID, nil)
		if st != http.StatusNoContent || obj != nil {
			t.Fatalf("delete: %d %v", st, obj)
		}
		v3 := configVersion(t, h, nil, false)
		if v3 != v2+1 {
			t.Fatalf("delete made version %d, want %d", v3, v2+1)
		}
		u1, u2 = s1.config(t), s2.config(t)
		s1.status(t, u1, agentv1.ConfigApplyStatus_SUCCESS, "")
		s2.status(t, u2, agentv1.ConfigApplyStatus_SUCCESS, "")
		b.awaitStatuses(t, v3, map[string]string{"edge-1": vhosts.RolloutApplied, "edge-2": vhosts.RolloutApplied})
		b.awaitStatuses(t, v, map[string]string{"edge-1": vhosts.RolloutApplied, "edge-2": vhosts.RolloutRolledBack})
	})

	t.Run("AVersionLeftUnansweredIsSupersededOnceALaterOneIsAnswered", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, s, _ := b.online(t, "edge-1", nil)
		create := func(name string) int64 {
			t.Helper()
			st, h, obj := b.write(t, "operator", http.MethodPost, fmt.Sprintf("/v1/workspaces/%s/virtual-hosts", b.ws), map[string]any{
				"name": name, "server_name": name + ".example.com",
				"locations": []map[string]any{{"path": "/", "proxy_pass": "http://10.0.0.1:8080"}},
			})
			if st != http.StatusCreated {
				t.Fatalf("create virtual host %s: %d %v", name, st, obj)
			}
			return configVersion(t, h, obj, true)
		}
		// The agent gets v1 and, before applying it, v2: its client applies
		// only v2, so v1 is never answered.
		v1 := create("first")
		if u := s.config(t); u.GetVersion() != v1 {
			t.Fatalf("pushed version %d, want %d", u.GetVersion(), v1)
		}
		v2 := create("second")
		u2 := s.config(t)
		if u2.GetVersion() != v2 {
			t.Fatalf("pushed version %d, want %d", u2.GetVersion(), v2)
		}
		// While v2 is not answered either, v1 may still be.
		b.awaitStatuses(t, v1, map[string]string{"edge-1": vhosts.RolloutPending})
		s.status(t, u2, agentv1.ConfigApplyStatus_SUCCESS, "")
		b.awaitStatuses(t, v2, map[string]string{"edge-1": vhosts.RolloutApplied})
		b.awaitStatuses(t, v1, map[string]string{"edge-1": vhosts.RolloutSuperseded})

		// A later push not answered yet leaves the earlier ones as they are.
		v3 := create("third")
		if u := s.config(t); u.GetVersion() != v3 {
			t.Fatalf("pushed version %d, want %d", u.GetVersion(), v3)
		}
		b.awaitStatuses(t, v3, map[string]string{"edge-1": vhosts.RolloutPending})
		b.awaitStatuses(t, v2, map[string]string{"edge-1": vhosts.RolloutApplied})
		b.awaitStatuses(t, v1, map[string]string{"edge-1": vhosts.RolloutSuperseded})
	})

	t.Run("UpstreamsCertificatesRollbackAnswerTheirVersion", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		st, h, obj := b.write(t, "operator", http.MethodPost, fmt.Sprintf("/v1/workspaces/%s/upstreams", b.ws), map[string]any{
			"name": "pool", "servers": []map[string]any{{"address": "10.0.1.20:8080"}},
		})
		if st != http.StatusCreated {
			t.Fatalf("create upstream: %d %v", st, obj)
		}
		v1 := configVersion(t, h, obj, true)
		st, h, obj = b.write(t, "operator", http.MethodPatch, "/v1/upstreams/"+obj["id"].(string), map[string]any{"algorithm": "least_connections"})
		if st != http.StatusOK || configVersion(t, h, obj, true) != v1+1 || obj["algorithm"] != "least_connections" {
			t.Fatalf("update upstream: %d %s %v", st, h, obj)
		}
		certPEM, keyPEM := apptest.SelfSignedCert(t, "www.example.com")
		st, h, obj = b.write(t, "operator", http.MethodPost, fmt.Sprintf("/v1/workspaces/%s/certificates", b.ws), map[string]any{
			"certificate_pem": certPEM, "private_key_pem": keyPEM,
		})
		if st != http.StatusCreated || configVersion(t, h, obj, true) != v1+2 {
			t.Fatalf("upload certificate: %d %s %v", st, h, obj)
		}
		st, h, obj = b.write(t, "operator", http.MethodPost, fmt.Sprintf("/v1/workspaces/%s/config/rollback", b.ws), map[string]any{"version": v1})
		if st != http.StatusCreated {
			t.Fatalf("rollback: %d %v", st, obj)
		}
		if v := configVersion(t, h, obj, true); v != v1+3 || int64(obj["version"].(float64)) != v {
			t.Fatalf("rollback answered %s, %v", h, obj)
		}
		// A refused write names no version.
		st, h, _ = b.write(t, "operator", http.MethodPost, fmt.Sprintf("/v1/workspaces/%s/upstreams", b.ws), map[string]any{"name": "pool"})
		if st != http.StatusUnprocessableEntity && st != http.StatusConflict || h != "" {
			t.Fatalf("refused write: %d, header %q", st, h)
		}
		// No agent registered: the rollout is empty.
		if got := b.versionAgents(t, v1); len(got) != 0 {
			t.Fatalf("rollout without agents: %v", got)
		}
	})

	t.Run("OpenAPIDocumentsTheVersion", func(t *testing.T) {
		t.Parallel()
		_, raw := e.do(t, "", http.MethodGet, "/v1/openapi.json", nil)
		for _, want := range []string{app.HeaderConfigVersion, `"` + app.FieldConfigVersion + `"`, "AgentRollout"} {
			if !strings.Contains(string(raw), want) {
				t.Fatalf("OpenAPI document lacks %q", want)
			}
		}
	})
}

func TestUI_Rollout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("SavingShowsTheVersionAndItsLiveRollout", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, s1, _ := b.online(t, "edge-1", nil)
		op := e.browser(t, "operator")
		r := op.do(t, http.MethodPost, "/workspaces/"+b.ws.String()+"/virtual-hosts", url.Values{
			"name": {"clash"}, "server_name": {"clash.example.com"}, "listen_port": {"19002"},
			"target_agents.type": {vhosts.TargetAll},
			"locations[0].path":  {"/"}, "locations[0].match": {vhosts.MatchPrefix}, "locations[0].target": {"proxy"},
			"locations[0].proxy_pass": {"http://10.0.0.1:8080"},
		})
		if r.status != http.StatusSeeOther {
			t.Fatalf("create: %d %.3000s", r.status, r.body)
		}
		v, err := b.vh.CurrentVersion(b.ctx, b.ws)
		if err != nil {
			t.Fatal(err)
		}
		rollout := fmt.Sprintf("/workspaces/%s/config/versions/%d/rollout", b.ws, v)
		page := op.follow(t, r)
		page.expect(t, http.StatusOK, fmt.Sprintf(`Saved as version %d: Virtual host &#34;clash&#34; created.`, v), `hx-get="`+rollout+`"`)
		if strings.Contains(page.body, "flash-success") {
			t.Fatalf("the flash claims success before the agents answered: %.3000s", page.body)
		}

		// The panel: live over the event stream, pending until the agent answers.
		panel := op.do(t, http.MethodGet, rollout, nil, "HX-Request", "true")
		panel.expect(t, http.StatusOK, `hx-ext="sse"`, "/v1/events/stream?", static.HTMXSSE, "sse:update", "edge-1",
			`data-status="pending"`, "every 3s")
		u := s1.config(t)
		s1.status(t, u, agentv1.ConfigApplyStatus_ROLLED_BACK, bindError)
		deadline := time.Now().Add(wait)
		for {
			body := op.do(t, http.MethodGet, rollout+"?part=body", nil, "HX-Request", "true")
			if strings.Contains(body.body, `data-status="rolled_back"`) {
				body.expect(t, http.StatusOK, "rolled back", "bind() to 0.0.0.0:19002 failed (98: Address already in use)", `data-rollout-done="true"`)
				if strings.Contains(body.body, "sse-connect") || strings.Contains(body.body, "every 3s") {
					t.Fatalf("the live part alone, without polling once final: %.3000s", body.body)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rollout never showed the rollback: %.3000s", body.body)
			}
			time.Sleep(20 * time.Millisecond)
		}

		op.do(t, http.MethodGet, fmt.Sprintf("/workspaces/%s/config/versions/%d/rollout", b.ws, v+1), nil).expect(t, http.StatusNotFound)
		e.browser(t, "outsider").do(t, http.MethodGet, rollout, nil).expect(t, http.StatusNotFound)
	})

	t.Run("OverviewCountsAgentsVersionFailuresCertificatesChanges", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, s1, _ := b.online(t, "edge-1", nil)
		_, s2, _ := b.online(t, "edge-2", nil)
		b.token(t, "edge-3", nil) // never registers: pending
		for domain, days := range map[string]int{"soon.example.com": 12, "later.example.com": 60} {
			certPEM, keyPEM := certValidFor(t, domain, days)
			b.as(t, "operator", http.MethodPost, fmt.Sprintf("/v1/workspaces/%s/certificates", b.ws),
				map[string]any{"certificate_pem": certPEM, "private_key_pem": keyPEM}, http.StatusCreated, nil)
		}
		// The last version changes the agents' configuration.
		b.vhost(t, "www", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		v, err := b.vh.CurrentVersion(b.ctx, b.ws)
		if err != nil {
			t.Fatal(err)
		}
		// Each agent answers the last version it got.
		answer := func(s *session, st agentv1.ConfigApplyStatus, msg string) {
			for {
				u := s.config(t)
				if u.GetVersion() == v {
					s.status(t, u, st, msg)
					return
				}
			}
		}
		answer(s1, agentv1.ConfigApplyStatus_SUCCESS, "")
		answer(s2, agentv1.ConfigApplyStatus_ROLLED_BACK, bindError)
		b.awaitStatuses(t, v, map[string]string{"edge-1": vhosts.RolloutApplied, "edge-2": vhosts.RolloutRolledBack})

		page := e.browser(t, "viewer").do(t, http.MethodGet, "/workspaces/"+b.ws.String(), nil)
		page.expect(t, http.StatusOK, `id="overview-agents"`, `id="overview-config"`, `id="overview-failing"`,
			`id="overview-certificates"`, `id="overview-changes"`,
			fmt.Sprintf(`Version <strong data-version>%d</strong>: <strong data-on-version>1</strong> of 2 registered agents run it.`, v),
			"edge-2", "bind() to 0.0.0.0:19002 failed", "soon.example.com", "in 11 days",
			"certificate.create", "virtual_host.create")
		for state, n := range map[string]int{StateOnline: 1, StateDegraded: 1, StateOffline: 0, StatePending: 1} {
			want := fmt.Sprintf(`<li data-state="%s"><span class="%s">%s</span> <strong>%d</strong></li>`, state, uiStateClass(state), state, n)
			if !strings.Contains(page.body, want) {
				t.Fatalf("overview lacks %s; body %.6000s", want, page.body)
			}
		}
		if strings.Contains(page.body, "placeholder-grid") || strings.Contains(page.body, "later.example.com") {
			t.Fatalf("the overview shows link cards or a certificate valid for 60 days: %.6000s", page.body)
		}
	})
}
