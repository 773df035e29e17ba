package agents

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
	"github.com/nxmesh/nxmesh/static"
)

// uiClient is a signed-in admin browser session.
type uiClient struct {
	e       *env
	session string
	csrf    string
}

func (e *env) browser(t *testing.T, role string) *uiClient {
	t.Helper()
	tok, csrf, err := auth.NewService(e.app.Deps, auth.Options{}).CreateWebSession(context.Background(), e.users[role].ID, "127.0.0.1", "test")
	if err != nil {
		t.Fatalf("web session for %s: %v", role, err)
	}
	return &uiClient{e: e, session: tok, csrf: csrf}
}

type uiResponse struct {
	status int
	body   string
	header http.Header
}

// do sends an admin request; form (may be nil) is posted with the CSRF token;
// headers are name, value pairs.
func (u *uiClient) do(t *testing.T, method, path string, form url.Values, headers ...string) uiResponse {
	t.Helper()
	var body io.Reader
	if form != nil {
		form.Set("_csrf", u.csrf)
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: u.session})
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		}
	}
	resp := apptest.Do(t, u.e.app, req)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return uiResponse{status: resp.StatusCode, body: string(raw), header: resp.Header}
}

func (r uiResponse) expect(t *testing.T, status int, contains ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %.2000s", r.status, status, r.body)
	}
	for _, s := range contains {
		if !strings.Contains(r.body, s) {
			t.Fatalf("body does not contain %q: %.4000s", s, r.body)
		}
	}
}

// follow loads the page a form redirected to, with the flash message it set.
func (u *uiClient) follow(t *testing.T, r uiResponse) uiResponse {
	t.Helper()
	if r.status != http.StatusSeeOther {
		t.Fatalf("status %d, want 303; body %.2000s", r.status, r.body)
	}
	var flash string
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "nxmesh_flash" {
			flash = c.Name + "=" + c.Value
		}
	}
	return u.do(t, http.MethodGet, r.header.Get("Location"), nil, "Cookie", auth.SessionCookie+"="+u.session+"; "+flash)
}

func (b *bundle) agentRowByName(t *testing.T, name string) agentRow {
	t.Helper()
	var r agentRow
	if err := b.db.Take(&r, "workspace_id = ? AND name = ?", b.ws, name).Error; err != nil {
		t.Fatalf("read agent %s: %v", name, err)
	}
	return r
}

func TestUI_Agents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("ListIsLiveAndAddAgentShowsInstallCommand", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		admin := e.browser(t, "admin")
		list := "/workspaces/" + b.ws.String() + "/agents"
		admin.do(t, http.MethodGet, list, nil).expect(t, http.StatusOK,
			static.HTMXSSE, `hx-ext="sse"`, "/v1/events/stream?", b.ws.String(), `id="add-agent"`, "No agents here yet")

		r := admin.do(t, http.MethodPost, list, url.Values{"name": {"web-01"}, "labels": {"env=prod\nrole=web"}, "expires_in_hours": {"2"}})
		r.expect(t, http.StatusCreated, `id="new-agent-token"`,
			"nxmesh-agent --master master.test.internal:9443 --token nxmesh_agent_",
			"--ca-fingerprint "+b.svc.CAFingerprint(), "--labels env=prod,role=web")
		row := b.agentRowByName(t, "web-01")
		if row.State != StatePending || row.Labels["env"] != "prod" || row.Labels["role"] != "web" {
			t.Fatalf("agent %+v", row)
		}
		admin.do(t, http.MethodGet, list, nil).expect(t, http.StatusOK, "web-01", "pending", "env=prod")

		// The live part alone, as the event stream makes htmx fetch it.
		frag := admin.do(t, http.MethodGet, list+"?state=pending", nil, "HX-Request", "true", "HX-Target", uiListTarget)
		frag.expect(t, http.StatusOK, `id="agent-list"`, "web-01", `hx-get="`+list+`?state=pending"`)
		if strings.Contains(frag.body, "<html") || strings.Contains(frag.body, "add-agent") {
			t.Fatalf("fragment carries the page: %.2000s", frag.body)
		}
		// A filter matching nothing says so and offers to clear it.
		admin.do(t, http.MethodGet, list+"?state=online", nil, "HX-Request", "true", "HX-Target", uiListTarget).
			expect(t, http.StatusOK, "No matches", `class="clear-filter"`, `href="`+list+`"`)
		admin.do(t, http.MethodGet, list+"?q=WEB-0", nil, "HX-Request", "true", "HX-Target", uiListTarget).
			expect(t, http.StatusOK, "web-01")
	})

	t.Run("AddAgentShowsErrorsNextToFields", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		admin := e.browser(t, "admin")
		list := "/workspaces/" + b.ws.String() + "/agents"
		admin.do(t, http.MethodPost, list, url.Values{"name": {"web"}, "labels": {"no-value-here"}}).
			expect(t, http.StatusUnprocessableEntity, `id="f-labels-error"`, "one key=value per line", "no-value-here")
		admin.do(t, http.MethodPost, list, url.Values{"name": {"web"}, "labels": {"env=has space"}}).
			expect(t, http.StatusUnprocessableEntity, `id="f-labels-error"`, "Label &#34;env&#34; must be")
		admin.do(t, http.MethodPost, list, url.Values{"name": {""}, "expires_in_hours": {"9999"}}).
			expect(t, http.StatusUnprocessableEntity, `id="f-name-error"`, `id="f-expires_in_hours-error"`)
	})

	t.Run("ViewerSeesNoForms", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web-02", nil)
		viewer := e.browser(t, "viewer")
		list := viewer.do(t, http.MethodGet, "/workspaces/"+b.ws.String()+"/agents", nil)
		list.expect(t, http.StatusOK, "web-02")
		detail := viewer.do(t, http.MethodGet, "/agents/"+tok.AgentID.String(), nil)
		detail.expect(t, http.StatusOK, "web-02", `id="agent-live"`)
		for _, hidden := range []string{`id="add-agent"`, `id="agent-actions"`, `id="agent-settings"`, `id="agent-delete"`} {
			if strings.Contains(list.body+detail.body, hidden) {
				t.Errorf("viewer sees %s", hidden)
			}
		}
		viewer.do(t, http.MethodPost, "/agents/"+tok.AgentID.String()+"/reload", url.Values{}).expect(t, http.StatusForbidden)
		e.browser(t, "outsider").do(t, http.MethodGet, "/agents/"+tok.AgentID.String(), nil).expect(t, http.StatusNotFound)
	})

	t.Run("DetailShowsHealthAndNginxError", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, u := b.online(t, "web-03", map[string]string{"env": "prod"})
		seen := e.obs.watch(t, a.id)
		s.health(t, &agentv1.HealthReport{
			Nginx:         &agentv1.NginxStatus{IsRunning: true, ActiveConnections: 7, UptimeSeconds: 3600},
			Alerts:        []*agentv1.Alert{{Id: "a1", Severity: "warning", Message: "disk almost full"}},
			AgentInfo:     &agentv1.AgentInfo{Version: "1.2.3", Commit: "abc123", Features: []string{"http2"}},
			ConfigVersion: u.GetVersion(),
		})
		awaitKind(t, seen, "message")
		s.status(t, u, agentv1.ConfigApplyStatus_FAILED, "nginx: [emerg] unknown directive in /etc/nginx/x.conf:3")
		awaitKind(t, seen, "message")
		browser := e.browser(t, "operator")
		page := browser.do(t, http.MethodGet, "/agents/"+a.id.String(), nil)
		page.expect(t, http.StatusOK, "web-03", "running", "disk almost full", "abc123",
			`id="agent-peer-address">127.0.0.1`, `id="agent-ip-address">10.0.1.10`,
			`id="apply-status">failed`, "[emerg] unknown directive in /etc/nginx/x.conf:3",
			`id="agent-actions"`, "Reload nginx", "Validate configuration", static.HTMXSSE)
		if strings.Contains(page.body, `id="agent-settings"`) {
			t.Error("an operator sees the settings form (admins only)")
		}
		browser.do(t, http.MethodGet, "/workspaces/"+b.ws.String()+"/agents", nil).expect(t, http.StatusOK, "127.0.0.1 / 10.0.1.10")
		live := browser.do(t, http.MethodGet, "/agents/"+a.id.String(), nil, "HX-Request", "true", "HX-Target", uiLiveTarget)
		live.expect(t, http.StatusOK, `id="agent-live"`, "[emerg] unknown directive")
		if strings.Contains(live.body, "<html") || strings.Contains(live.body, "agent-actions") {
			t.Fatalf("live fragment carries the page: %.2000s", live.body)
		}
	})

	t.Run("LabelsEditorSaves", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web-04", map[string]string{"env": "prod"})
		admin := e.browser(t, "admin")
		path := "/agents/" + tok.AgentID.String()
		admin.do(t, http.MethodGet, path, nil).expect(t, http.StatusOK, `id="agent-settings"`, "env=prod\n", "checked")
		r := admin.do(t, http.MethodPost, path, url.Values{"name": {"web-04b"}, "labels": {"env=staging\ntier=edge"}})
		admin.follow(t, r).expect(t, http.StatusOK, `Agent &#34;web-04b&#34; saved`, "env=staging")
		row := b.row(t, tok.AgentID)
		if row.Name != "web-04b" || len(row.Labels) != 2 || row.Labels["tier"] != "edge" || row.AutoRestart {
			t.Fatalf("agent %+v", row)
		}
		admin.do(t, http.MethodPost, path, url.Values{"name": {"x"}, "labels": {"bad label=1"}}).
			expect(t, http.StatusUnprocessableEntity, `id="f-labels-error"`)
	})

	t.Run("ReloadShowsTheAgentsAnswer", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web-05", nil)
		operator := e.browser(t, "operator")
		path := "/agents/" + a.id.String()
		done := make(chan uiResponse, 1)
		go func() { done <- operator.do(t, http.MethodPost, path+"/reload", url.Values{}) }()
		cmd := s.command(t)
		if cmd.GetReload() == nil {
			t.Fatalf("command %v, want reload", cmd)
		}
		s.send(t, &agentv1.AgentMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.AgentMessage_CommandResult{
			CommandResult: &agentv1.CommandResult{CommandId: cmd.GetCommandId(), Success: false, Message: "nginx: [emerg] bind() failed"},
		}})
		var r uiResponse
		select {
		case r = <-done:
		case <-time.After(wait):
			t.Fatal("reload did not answer")
		}
		operator.follow(t, r).expect(t, http.StatusOK, "Reload failed: nginx: [emerg] bind() failed")
	})

	t.Run("ReloadSuccessShowsTheAgentsAnswerOnce", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web-05b", nil)
		operator := e.browser(t, "operator")
		done := make(chan uiResponse, 1)
		go func() { done <- operator.do(t, http.MethodPost, "/agents/"+a.id.String()+"/reload", url.Values{}) }()
		cmd := s.command(t)
		// The agent answers a successful reload with "nginx reloaded".
		s.send(t, &agentv1.AgentMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.AgentMessage_CommandResult{
			CommandResult: &agentv1.CommandResult{CommandId: cmd.GetCommandId(), Success: true, Message: "nginx reloaded"},
		}})
		var r uiResponse
		select {
		case r = <-done:
		case <-time.After(wait):
			t.Fatal("reload did not answer")
		}
		page := operator.follow(t, r)
		page.expect(t, http.StatusOK, "nginx reloaded")
		if strings.Contains(page.body, "nginx reloaded: nginx reloaded") {
			t.Error(`flash repeats itself: "nginx reloaded: nginx reloaded"`)
		}
	})

	t.Run("CommandsShowTheirAnswer", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web-06", nil)
		seen := e.obs.watch(t, a.id)
		operator := e.browser(t, "operator")
		path := "/agents/" + a.id.String()
		r := operator.do(t, http.MethodPost, path+"/commands", url.Values{"command": {CommandValidateConfig}})
		operator.follow(t, r).expect(t, http.StatusOK, "Validate configuration: sent", "waiting for the agent", `hx-trigger="every 2s"`)
		cmd := s.command(t)
		if cmd.GetValidateConfig() == nil {
			t.Fatalf("command %v, want validate_config", cmd)
		}
		s.send(t, &agentv1.AgentMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.AgentMessage_CommandResult{
			CommandResult: &agentv1.CommandResult{CommandId: cmd.GetCommandId(), Success: true, Message: "configuration is valid", Output: "nginx: configuration file test is successful"},
		}})
		awaitKind(t, seen, "message")
		frag := operator.do(t, http.MethodGet, path, nil, "HX-Request", "true", "HX-Target", uiCommandsTarget)
		frag.expect(t, http.StatusOK, "configuration is valid", "test is successful", "succeeded")
		if strings.Contains(frag.body, "every 2s") {
			t.Fatal("commands table still polls after the answer")
		}
		operator.do(t, http.MethodPost, path+"/commands", url.Values{"command": {"rm -rf"}}).expect(t, http.StatusSeeOther)
	})

	t.Run("OfflineAgentRefusesCommands", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web-07", nil)
		operator := e.browser(t, "operator")
		r := operator.do(t, http.MethodPost, "/agents/"+tok.AgentID.String()+"/reload", url.Values{})
		operator.follow(t, r).expect(t, http.StatusOK, "Agent is offline")
	})

	t.Run("NewTokenAndDelete", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web-08", nil)
		admin := e.browser(t, "admin")
		path := "/agents/" + tok.AgentID.String()
		admin.do(t, http.MethodPost, path+"/tokens", url.Values{}).
			expect(t, http.StatusCreated, "New registration token for", "--token nxmesh_agent_")
		r := admin.do(t, http.MethodPost, path+"/delete", url.Values{})
		admin.follow(t, r).expect(t, http.StatusOK, "deleted")
		if err := b.db.Take(&agentRow{}, "id = ?", tok.AgentID).Error; err == nil {
			t.Fatal("agent still exists")
		}
		admin.do(t, http.MethodGet, path, nil).expect(t, http.StatusNotFound)
	})
}
