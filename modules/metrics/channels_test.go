package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
)

// expect422 posts body and checks the answer is a 422 naming field.
func expect422(t *testing.T, c *apptest.Client, method, path, body, field string) {
	t.Helper()
	resp := c.Do(t, method, path, body)
	if resp.Status != http.StatusUnprocessableEntity {
		t.Fatalf("status %d, want 422: %s", resp.Status, resp.Body)
	}
	var env apptest.ErrorEnvelope
	if err := json.Unmarshal(resp.Body, &env); err != nil {
		t.Fatal(err)
	}
	for _, d := range env.Error.Details {
		if d.Field == field {
			return
		}
	}
	t.Fatalf("details %+v do not name %s", env.Error.Details, field)
}

// TestAPI_ChannelsBadInput creates and changes channels with bad input: each is
// a 422 naming the field, and nothing is stored or changed.
func TestAPI_ChannelsBadInput(t *testing.T) {
	l := newLab(t, labOpts{})
	path := "/v1/organizations/" + l.org.String() + "/notification-channels"
	const sec = `"secret":"0123456789abcdef"`
	for _, tc := range []struct{ name, body, field string }{
		{"NameMissing", `{"type":"webhook","url":"https://hooks.example.com/",` + sec + `}`, "name"},
		{"NameEmpty", `{"name":" ","type":"webhook","url":"https://hooks.example.com/",` + sec + `}`, "name"},
		{"NameTooLong", `{"name":"` + strings.Repeat("n", 101) + `","type":"webhook","url":"https://hooks.example.com/",` + sec + `}`, "name"},
		{"NameTwoLines", `{"name":"a\nb","type":"webhook","url":"https://hooks.example.com/",` + sec + `}`, "name"},
		{"TypeMissing", `{"name":"x","url":"https://hooks.example.com/",` + sec + `}`, "type"},
		{"TypeUnknown", `{"name":"x","type":"pager"}`, "type"},
		{"WebhookWithoutURL", `{"name":"x","type":"webhook",` + sec + `}`, "url"},
		{"WebhookNotHTTP", `{"name":"x","type":"webhook","url":"ftp://hooks.example.com/",` + sec + `}`, "url"},
		{"WebhookEmptyURL", `{"name":"x","type":"webhook","url":"",` + sec + `}`, "url"},
		{"WebhookMetadata", `{"name":"x","type":"webhook","url":"http://169.254.169.254/latest",` + sec + `}`, "url"},
		{"WebhookUserInfo", `{"name":"x","type":"webhook","url":"https://u:p@hooks.example.com/",` + sec + `}`, "url"},
		{"WebhookWithoutSecret", `{"name":"x","type":"webhook","url":"https://hooks.example.com/"}`, "secret"},
		{"WebhookShortSecret", `{"name":"x","type":"webhook","url":"https://hooks.example.com/","secret":"short"}`, "secret"},
		{"WebhookWithAddresses", `{"name":"x","type":"webhook","url":"https://hooks.example.com/",` + sec + `,"addresses":["a@example.com"]}`, "addresses"},
		{"EmailWithoutAddresses", `{"name":"x","type":"email"}`, "addresses"},
		{"EmailNoAddress", `{"name":"x","type":"email","addresses":[]}`, "addresses"},
		{"EmailBadAddress", `{"name":"x","type":"email","addresses":["ops@example.com","not an address"]}`, "addresses[1]"},
		{"EmailHeaderInjection", `{"name":"x","type":"email","addresses":["ops@example.com\r\nBcc: x@example.com"]}`, "addresses[0]"},
		{"EmailWithURL", `{"name":"x","type":"email","addresses":["ops@example.com"],"url":"https://hooks.example.com/"}`, "url"},
		{"EmailWithSecret", `{"name":"x","type":"email","addresses":["ops@example.com"],` + sec + `}`, "secret"},
		{"AddressesNotAList", `{"name":"x","type":"email","addresses":"ops@example.com"}`, "addresses"},
		{"UnknownField", `{"name":"x","type":"email","addresses":["ops@example.com"],"colour":"red"}`, "colour"},
	} {
		t.Run(tc.name, func(t *testing.T) { expect422(t, l.owner, http.MethodPost, path, tc.body, tc.field) })
	}
	var n int
	if err := l.a.Deps.Pool.QueryRow(context.Background(), "SELECT count(*) FROM notification_channels").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d channels stored (%v), want none", n, err)
	}
	hook := l.createChannel(t, l.owner, l.org, map[string]any{"name": "Hook", "type": "webhook", "url": "https://hooks.example.com/a", "secret": "0123456789abcdef"})
	mail := l.createChannel(t, l.owner, l.org, map[string]any{"name": "Mail", "type": "email", "addresses": []string{"ops@example.com"}})
	for _, tc := range []struct {
		name string
		ch   NotificationChannel
		body string
		fld  string
	}{
		{"ChangeType", hook, `{"type":"email"}`, "type"},
		{"BadURL", hook, `{"url":"mailto:ops@example.com"}`, "url"},
		{"ShortSecret", hook, `{"secret":"x"}`, "secret"},
		{"EmptyName", mail, `{"name":""}`, "name"},
		{"BadAddress", mail, `{"addresses":["ok@example.com","nope"]}`, "addresses[1]"},
		{"URLOnMail", mail, `{"url":"https://hooks.example.com/"}`, "url"},
	} {
		t.Run("Patch"+tc.name, func(t *testing.T) {
			expect422(t, l.owner, http.MethodPatch, "/v1/notification-channels/"+tc.ch.ID.String(), tc.body, tc.fld)
		})
	}
	var got NotificationChannel
	l.viewer.Call(t, http.MethodGet, "/v1/notification-channels/"+hook.ID.String(), nil, http.StatusOK, &got)
	if got.URL != "https://hooks.example.com/a" || got.Name != "Hook" || !got.SecretSet {
		t.Fatalf("a refused PATCH changed the channel: %+v", got)
	}
	if resp := l.owner.Do(t, http.MethodPost, path, `{"name":"hook","type":"email","addresses":["x@example.com"]}`); resp.Status != http.StatusConflict {
		t.Fatalf("a second channel named hook: %d %s", resp.Status, resp.Body)
	}
}

// TestAPI_ChannelsCRUD creates, lists, changes and deletes channels: the
// secret is sealed and never in a response, members read, only admins
// write, other organizations see nothing, a channel in use is not deleted.
func TestAPI_ChannelsCRUD(t *testing.T) {
	l := newLab(t, labOpts{})
	ctx := context.Background()
	const secret = "channel-secret-0123456789"
	path := "/v1/organizations/" + l.org.String() + "/notification-channels"
	hook := l.createChannel(t, l.owner, l.org, map[string]any{"name": " Hook ", "type": "webhook", "url": "https://hooks.example.com/a", "secret": secret})
	if hook.Name != "Hook" || hook.Type != ChannelWebhook || hook.URL != "https://hooks.example.com/a" || !hook.SecretSet ||
		hook.OrganizationID != l.org || len(hook.Addresses) != 0 {
		t.Fatalf("created %+v", hook)
	}
	mail := l.createChannel(t, l.owner, l.org, map[string]any{"name": "Mail", "type": "email",
		"addresses": []string{"ops@example.com", "ops@example.com", "oncall@example.com"}})
	if len(mail.Addresses) != 2 || mail.SecretSet || mail.URL != "" {
		t.Fatalf("created %+v", mail)
	}
	var sealed []byte
	if err := l.a.Deps.Pool.QueryRow(ctx, "SELECT secret_sealed FROM notification_channels WHERE id = $1", hook.ID).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(secret)) {
		t.Fatal("the secret is stored in clear")
	}
	if opened, err := l.a.Deps.Secrets.Open(sealed); err != nil || string(opened) != secret {
		t.Fatalf("sealed secret opens to %q, %v", opened, err)
	}
	for _, p := range []string{path, "/v1/notification-channels/" + hook.ID.String()} {
		resp := l.viewer.Do(t, http.MethodGet, p, nil)
		if resp.Status != http.StatusOK || bytes.Contains(resp.Body, []byte(secret)) || !bytes.Contains(resp.Body, []byte(hook.ID.String())) {
			t.Fatalf("GET %s: %d %s", p, resp.Status, resp.Body)
		}
	}
	var list app.List[NotificationChannel]
	l.viewer.Call(t, http.MethodGet, path, nil, http.StatusOK, &list)
	if list.Meta.Total != 2 || list.Data[0].Name != "Hook" || list.Data[1].Name != "Mail" {
		t.Fatalf("list %+v", list)
	}
	// An operator writes rules but not channels.
	operator := l.member(t, authz.RoleOperator)
	if resp := operator.Do(t, http.MethodPost, path, map[string]any{"name": "x", "type": "email", "addresses": []string{"a@example.com"}}); resp.Status != http.StatusForbidden {
		t.Fatalf("operator create: %d %s", resp.Status, resp.Body)
	}
	if resp := l.viewer.Do(t, http.MethodPatch, "/v1/notification-channels/"+hook.ID.String(), map[string]any{"name": "y"}); resp.Status != http.StatusForbidden {
		t.Fatalf("viewer patch: %d %s", resp.Status, resp.Body)
	}
	outsider := apptest.NewClient(l.a).As(l.tokens["outsider"])
	for _, p := range []string{path, "/v1/notification-channels/" + hook.ID.String()} {
		if resp := outsider.Do(t, http.MethodGet, p, nil); resp.Status != http.StatusNotFound {
			t.Fatalf("outsider GET %s: %d", p, resp.Status)
		}
	}
	// PATCH keeps the secret unless given.
	var changed NotificationChannel
	l.owner.Call(t, http.MethodPatch, "/v1/notification-channels/"+hook.ID.String(), map[string]any{"url": "http://hooks.example.com/b", "name": "Hook 2"}, http.StatusOK, &changed)
	if changed.URL != "http://hooks.example.com/b" || changed.Name != "Hook 2" || !changed.SecretSet {
		t.Fatalf("changed %+v", changed)
	}
	l.owner.Call(t, http.MethodPatch, "/v1/notification-channels/"+mail.ID.String(), map[string]any{"addresses": []string{"new@example.com"}}, http.StatusOK, &changed)
	if len(changed.Addresses) != 1 || changed.Addresses[0] != "new@example.com" {
		t.Fatalf("changed %+v", changed)
	}
	// In use: refused, naming the rule; free again once the rule lets go.
	rule := l.createRule(t, map[string]any{"name": "Busy", "metric": "error_rate", "operator": ">", "threshold": 0.5, "notify": []string{hook.ID.String()}})
	resp := l.owner.Do(t, http.MethodDelete, "/v1/notification-channels/"+hook.ID.String(), nil)
	if resp.Status != http.StatusConflict || !bytes.Contains(resp.Body, []byte("Busy")) {
		t.Fatalf("delete in use: %d %s", resp.Status, resp.Body)
	}
	l.owner.Call(t, http.MethodPatch, "/v1/alert-rules/"+rule.ID.String(), map[string]any{"notify": []string{}}, http.StatusOK, &rule)
	if len(rule.Notify) != 0 {
		t.Fatalf("notify %v", rule.Notify)
	}
	if resp := l.viewer.Do(t, http.MethodDelete, "/v1/notification-channels/"+hook.ID.String(), nil); resp.Status != http.StatusForbidden {
		t.Fatalf("viewer delete: %d", resp.Status)
	}
	if resp := l.owner.Do(t, http.MethodDelete, "/v1/notification-channels/"+hook.ID.String(), nil); resp.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", resp.Status, resp.Body)
	}
	if resp := l.owner.Do(t, http.MethodGet, "/v1/notification-channels/"+hook.ID.String(), nil); resp.Status != http.StatusNotFound {
		t.Fatalf("deleted channel: %d", resp.Status)
	}
	// Deleting the organization takes its channels and rules with it.
	l.createRule(t, map[string]any{"metric": "error_rate", "operator": ">", "threshold": 0.5, "notify": []string{mail.ID.String()}})
	if _, err := l.a.Deps.Pool.Exec(ctx, "DELETE FROM organizations WHERE id = $1", l.org); err != nil {
		t.Fatalf("delete organization: %v", err)
	}
}

// member is a client of a new member of l's organization with role.
func (l *lab) member(t *testing.T, role string) *apptest.Client {
	t.Helper()
	ctx := context.Background()
	email := role + "-" + uuid.NewString()[:8] + "@example.com"
	u, err := l.auth.CreateUser(ctx, auth.CreateUserParams{Email: email, Password: "password-member"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.orgs.AddMember(ctx, orgs.AddMemberParams{OrgID: l.org, Email: u.Email, Role: role}); err != nil {
		t.Fatal(err)
	}
	pair, err := l.auth.Login(ctx, auth.LoginParams{Email: email, Password: "password-member", IP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return apptest.NewClient(l.a).As(pair.AccessToken)
}
