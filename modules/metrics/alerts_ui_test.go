package metrics

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
)

// TestUI_AlertPages creates a notification channel and an alert rule
// through the admin's forms: bad input is shown next to its input, the
// secret never appears in a page, the buttons appear only for the roles
// whose routes accept them, and the alerts page lists the rule.
func TestUI_AlertPages(t *testing.T) {
	w := setupWide(t)
	const secret = "page-secret-0123456789"
	channels := "/orgs/" + w.org.String() + "/notification-channels"
	alerts := "/workspaces/" + w.ws.String() + "/alerts"

	t.Run("Navigation", func(t *testing.T) {
		_, body, _ := w.page(t, authz.RoleViewer, http.MethodGet, "/workspaces/"+w.ws.String()+"/metrics", nil)
		if !strings.Contains(body, `href="`+alerts+`"`) {
			t.Error("the workspace's tabs do not link the alerts page")
		}
		_, body, _ = w.page(t, authz.RoleViewer, http.MethodGet, "/orgs/"+w.org.String()+"/workspaces", nil)
		if !strings.Contains(body, `href="`+channels+`"`) {
			t.Error("the organization's tabs do not link the notification channels")
		}
	})

	// Channels: only admins see the create form.
	for _, role := range []string{authz.RoleViewer, authz.RoleOperator} {
		status, body, _ := w.page(t, role, http.MethodGet, channels, nil)
		if status != http.StatusOK || strings.Contains(body, `id="channel-form"`) {
			t.Fatalf("%s: channels page %d, create form shown: %v", role, status, strings.Contains(body, `id="channel-form"`))
		}
	}
	status, body, _ := w.page(t, authz.RoleOwner, http.MethodPost, channels, url.Values{"name": {"Hook"}, "type": {"webhook"}, "url": {"ftp://x"}, "secret": {secret}})
	if status != http.StatusUnprocessableEntity || !strings.Contains(body, `id="f-url-error"`) || strings.Contains(body, secret) {
		t.Fatalf("bad channel: %d, url error shown %v, secret echoed %v", status, strings.Contains(body, `id="f-url-error"`), strings.Contains(body, secret))
	}
	status, _, hdr := w.page(t, authz.RoleOwner, http.MethodPost, channels, url.Values{"name": {"Hook"}, "type": {"webhook"},
		"url": {"https://hooks.example.com/x"}, "secret": {secret}})
	if status != http.StatusSeeOther || hdr.Get("Location") != channels {
		t.Fatalf("create channel: %d %v", status, hdr)
	}
	var list app.List[NotificationChannel]
	w.clients[authz.RoleViewer].Call(t, http.MethodGet, "/v1/organizations/"+w.org.String()+"/notification-channels", nil, http.StatusOK, &list)
	if len(list.Data) != 1 || !list.Data[0].SecretSet {
		t.Fatalf("channels %+v", list.Data)
	}
	ch := list.Data[0]
	status, body, _ = w.page(t, authz.RoleOwner, http.MethodGet, channels, nil)
	if status != http.StatusOK || !strings.Contains(body, "https://hooks.example.com/x") || strings.Contains(body, secret) || !strings.Contains(body, `id="channel-form"`) {
		t.Fatalf("channels page %d: %.1500s", status, body)
	}
	status, body, _ = w.page(t, authz.RoleOwner, http.MethodGet, "/notification-channels/"+ch.ID.String(), nil)
	if status != http.StatusOK || strings.Contains(body, secret) || !strings.Contains(body, `type="password"`) {
		t.Fatalf("channel page %d: %.1500s", status, body)
	}
	// Saving without a secret keeps it.
	status, _, _ = w.page(t, authz.RoleOwner, http.MethodPost, "/notification-channels/"+ch.ID.String(), url.Values{"name": {"Hook 2"}, "url": {"https://hooks.example.com/y"}, "secret": {""}})
	if status != http.StatusSeeOther {
		t.Fatalf("save channel: %d", status)
	}
	if got, err := w.mod.Alerts().Channel(t.Context(), ch.ID); err != nil || got.Name != "Hook 2" || !got.SecretSet {
		t.Fatalf("saved channel %+v, %v", got, err)
	}

	// Rules: the viewer has no "New alert rule"; the operator does.
	_, body, _ = w.page(t, authz.RoleViewer, http.MethodGet, alerts, nil)
	if strings.Contains(body, `id="new-alert-rule"`) || !strings.Contains(body, `id="firing-alerts"`) {
		t.Fatal("the viewer's alerts page offers a new rule, or lacks the firing alerts")
	}
	_, body, _ = w.page(t, authz.RoleOperator, http.MethodGet, alerts, nil)
	if !strings.Contains(body, `id="new-alert-rule"`) {
		t.Fatal("the operator's alerts page offers no new rule")
	}
	status, body, _ = w.page(t, authz.RoleOperator, http.MethodGet, "/workspaces/"+w.ws.String()+"/alert-rules/new", nil)
	if status != http.StatusOK || !strings.Contains(body, `value="`+w.online.String()+`"`) || !strings.Contains(body, `value="`+ch.ID.String()+`"`) ||
		!strings.Contains(body, `value="`+w.vh.String()+`"`) {
		t.Fatalf("rule form %d lacks the agent, channel or virtual host choices: %.2000s", status, body)
	}
	form := func(extra url.Values) url.Values {
		v := url.Values{"name": {"CPU hot"}, "metric": {"cpu_percent"}, "operator": {">"}, "threshold": {"85"}, "for": {"1m"},
			"window": {"5m"}, "severity": {"critical"}, "enabled": {"true"}, "scope.type": {"agents"},
			"scope.agent_ids": {w.online.String()}, "notify": {ch.ID.String()}}
		for k, vs := range extra {
			v[k] = vs
		}
		return v
	}
	rules := "/workspaces/" + w.ws.String() + "/alert-rules"
	for _, tc := range []struct {
		name  string
		extra url.Values
		field string
	}{
		{"ThresholdNotANumber", url.Values{"threshold": {"hot"}}, "threshold"},
		{"BadFor", url.Values{"for": {"soon"}}, "for"},
		{"NoAgentTicked", url.Values{"scope.agent_ids": nil}, "scope.agent_ids"},
		{"BadSelector", url.Values{"scope.type": {"labels"}, "scope.label_selector": {"env prod"}}, "scope.label_selector"},
		{"NoVirtualHost", url.Values{"scope.type": {"virtual_host"}, "scope.virtual_host_id": {""}}, "scope.virtual_host_id"},
	} {
		t.Run("Form"+tc.name, func(t *testing.T) {
			status, body, _ := w.page(t, authz.RoleOperator, http.MethodPost, rules, form(tc.extra))
			if status != http.StatusUnprocessableEntity || !strings.Contains(body, `id="f-`+tc.field+`-error"`) {
				t.Fatalf("status %d, want 422 with the message at %s: %.3000s", status, tc.field, body)
			}
		})
	}
	status, _, hdr = w.page(t, authz.RoleOperator, http.MethodPost, rules, form(nil))
	if status != http.StatusSeeOther || hdr.Get("Location") != alerts {
		t.Fatalf("create rule: %d %v", status, hdr)
	}
	var got app.List[AlertRule]
	w.clients[authz.RoleViewer].Call(t, http.MethodGet, "/v1/workspaces/"+w.ws.String()+"/alert-rules", nil, http.StatusOK, &got)
	if len(got.Data) != 1 {
		t.Fatalf("rules %+v", got.Data)
	}
	r := got.Data[0]
	if r.Name != "CPU hot" || r.Metric != "cpu_percent" || r.Threshold != 85 || r.For != "1m" || r.Severity != "critical" || !r.Enabled ||
		r.Scope.Type != ScopeAgents || len(r.Scope.AgentIDs) != 1 || r.Scope.AgentIDs[0] != w.online.String() ||
		len(r.Notify) != 1 || r.Notify[0] != ch.ID {
		t.Fatalf("rule %+v", r)
	}
	_, body, _ = w.page(t, authz.RoleViewer, http.MethodGet, alerts, nil)
	if !strings.Contains(body, "CPU hot") || !strings.Contains(body, "agents edge-1") || !strings.Contains(body, "Hook 2") {
		t.Fatalf("alerts page lacks the rule: %.3000s", body)
	}
	// The editor shows what is stored; saving it as a virtual-host rule, disabled.
	_, body, _ = w.page(t, authz.RoleOperator, http.MethodGet, "/alert-rules/"+r.ID.String(), nil)
	if !strings.Contains(body, `value="`+w.online.String()+`" checked`) || !strings.Contains(body, `value="`+ch.ID.String()+`" checked`) {
		t.Fatalf("editor does not tick the stored agent and channel: %.3000s", body)
	}
	status, _, _ = w.page(t, authz.RoleOperator, http.MethodPost, "/alert-rules/"+r.ID.String(), form(url.Values{"enabled": nil,
		"scope.type": {"virtual_host"}, "scope.virtual_host_id": {w.vh.String()}, "notify": nil}))
	if status != http.StatusSeeOther {
		t.Fatalf("save rule: %d", status)
	}
	saved, err := w.mod.Alerts().Rule(t.Context(), r.ID)
	if err != nil || saved.Enabled || saved.Scope.Type != ScopeVirtualHost || saved.Scope.VirtualHostID != w.vh.String() || len(saved.Notify) != 0 {
		t.Fatalf("saved %+v, %v", saved, err)
	}
	// Deleting the channel is refused while a rule notifies it.
	if _, err := w.mod.Alerts().UpdateRule(t.Context(), r.ID, AlertRuleInput{Notify: &[]string{ch.ID.String()}}); err != nil {
		t.Fatal(err)
	}
	status, body, _ = w.page(t, authz.RoleOwner, http.MethodPost, "/notification-channels/"+ch.ID.String()+"/delete", url.Values{})
	if status != http.StatusConflict || !strings.Contains(body, "CPU hot") {
		t.Fatalf("delete channel in use: %d %.1500s", status, body)
	}
	status, _, _ = w.page(t, authz.RoleOperator, http.MethodPost, "/alert-rules/"+r.ID.String()+"/delete", url.Values{})
	if status != http.StatusSeeOther {
		t.Fatalf("delete rule: %d", status)
	}
	status, _, _ = w.page(t, authz.RoleOwner, http.MethodPost, "/notification-channels/"+ch.ID.String()+"/delete", url.Values{})
	if status != http.StatusSeeOther {
		t.Fatalf("delete channel: %d", status)
	}
}
