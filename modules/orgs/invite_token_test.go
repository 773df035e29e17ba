package orgs

import (
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
)

var linkPattern = regexp.MustCompile(`https?://\S+/invitations/accept\?token=[A-Za-z0-9_\-%]+`)

// setupMail is setup with SMTP sending to a real test mailbox.
func setupMail(t *testing.T) (*bundle, *apptest.Mailbox) {
	t.Helper()
	mb := apptest.StartMailbox(t, "", "")
	b := setupWith(t, func(cfg *app.Config) {
		host, port, _ := net.SplitHostPort(mb.Addr)
		cfg.SMTP.Host = host
		cfg.SMTP.Port, _ = strconv.Atoi(port)
		cfg.SMTP.From = "nxmesh@example.test"
		cfg.SMTP.TLS = "none"
		cfg.HTTP.PublicURL = "https://mesh.example.test"
	})
	return b, mb
}

// public sends an admin request without a session.
func (b *bundle) public(method, path string, form url.Values) (int, string, http.Header) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp := apptest.Do(b.t, b.app, req)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), resp.Header
}

// TestUI_InvitationLink: an admin invites an address without an account on
// the members page; the invitee gets a mail with a link, chooses a password
// (the policy applies) and is a member; the link then no longer works, nor
// does an expired one.
func TestUI_InvitationLink(t *testing.T) {
	t.Parallel()
	b, mb := setupMail(t)
	alice := b.user("alice", false)
	org := b.createOrg(alice, "acme")
	admin := b.browser(alice)
	members := "/orgs/" + org.ID.String() + "/members"

	status, page, _ := admin.do(http.MethodPost, members, url.Values{"email": {"not-an-address"}, "role": {"operator"}}, admin.csrf)
	if status != http.StatusUnprocessableEntity || !strings.Contains(page, `id="f-email-error"`) {
		t.Fatalf("bad address: %d\n%s", status, page)
	}
	status, _, hdr := admin.do(http.MethodPost, members, url.Values{"email": {"carol@example.com"}, "role": {"operator"}}, admin.csrf)
	if status != http.StatusSeeOther || hdr.Get("Location") != members {
		t.Fatalf("invite: %d to %q", status, hdr.Get("Location"))
	}
	msg := mb.Next(t)
	if len(msg.To) != 1 || msg.To[0] != "carol@example.com" {
		t.Fatalf("mail to %v", msg.To)
	}
	link := linkPattern.FindString(strings.ReplaceAll(msg.Data, "=\r\n", ""))
	if !strings.HasPrefix(link, "https://mesh.example.test/invitations/accept?token=") {
		t.Fatalf("no link in the mail:\n%s", msg.Data)
	}
	u, _ := url.Parse(link)
	token := u.Query().Get("token")
	var stored []byte
	if err := b.db.Raw("SELECT token_hash FROM invitations WHERE email = ?", "carol@example.com").Row().Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 32 || strings.Contains(string(stored), token) {
		t.Fatalf("stored token hash = %x", stored)
	}
	_, page, _ = admin.do(http.MethodGet, members, nil, "")
	if !strings.Contains(page, "carol@example.com") || strings.Contains(page, token) {
		t.Fatalf("members page does not list the invitation or shows the token:\n%s", page)
	}

	status, page, _ = b.public(http.MethodGet, u.RequestURI(), nil)
	if status != http.StatusOK || !strings.Contains(page, "carol@example.com") || !strings.Contains(page, html.EscapeString(org.Name)) {
		t.Fatalf("link page: %d\n%s", status, page)
	}
	for _, tc := range []struct {
		name, password, field string
	}{
		{"weak", "password123", "password"},
		{"short", "abc", "password"},
		{"email", "carol@example.com", "password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, page, _ := b.public(http.MethodPost, "/invitations/accept", url.Values{"token": {token}, "password": {tc.password}})
			if status != http.StatusUnprocessableEntity || !strings.Contains(page, `id="f-`+tc.field+`-error"`) {
				t.Fatalf("%d\n%s", status, page)
			}
		})
	}
	var n int64
	b.db.Table("users").Where("email = ?", "carol@example.com").Count(&n)
	if n != 0 {
		t.Fatal("a refused password created the account")
	}

	status, _, hdr = b.public(http.MethodPost, "/invitations/accept", url.Values{"token": {token}, "name": {"Carol"}, "password": {"lilac harbour evening"}})
	if status != http.StatusSeeOther || hdr.Get("Location") != "/login" {
		t.Fatalf("accept: %d to %q", status, hdr.Get("Location"))
	}
	_, page, _ = admin.do(http.MethodGet, members, nil, "")
	if !strings.Contains(page, "<td>carol@example.com</td>") || strings.Contains(page, `id="invitations"`) {
		t.Fatalf("carol is not a member:\n%s", page)
	}
	carol := b.call(http.MethodPost, "/v1/auth/login", "", map[string]string{"email": "carol@example.com", "password": "lilac harbour evening"}).
		expect(http.StatusOK).object()
	b.call(http.MethodGet, "/v1/organizations/"+org.ID.String(), carol["access_token"].(string), nil).expect(http.StatusOK)

	// Single use.
	status, page, _ = b.public(http.MethodPost, "/invitations/accept", url.Values{"token": {token}, "password": {"another fine password"}})
	if status != http.StatusNotFound || !strings.Contains(page, "not valid") {
		t.Fatalf("used link: %d\n%s", status, page)
	}
	if status, _, _ = b.public(http.MethodGet, u.RequestURI(), nil); status != http.StatusNotFound {
		t.Fatalf("used link page: %d", status)
	}

	// Expired.
	admin.do(http.MethodPost, members, url.Values{"email": {"dave@example.com"}, "role": {"viewer"}}, admin.csrf)
	u, _ = url.Parse(linkPattern.FindString(mb.Next(t).Data))
	if err := b.db.Exec("UPDATE invitations SET expires_at = ? WHERE email = ?", time.Now().Add(-time.Minute), "dave@example.com").Error; err != nil {
		t.Fatal(err)
	}
	status, _, _ = b.public(http.MethodPost, "/invitations/accept", url.Values{"token": {u.Query().Get("token")}, "password": {"another fine password"}})
	if status != http.StatusNotFound {
		t.Fatalf("expired link: %d", status)
	}
	b.call(http.MethodPost, "/v1/invitations/accept", "", map[string]string{"token": u.Query().Get("token"), "password": "another fine password"}).
		expectError(http.StatusNotFound, app.CodeNotFound, "")
	mb.Empty(t)
}

// TestUI_InvitationLinkWithoutSMTP: without smtp.* the members page shows the
// link once, and the API answers bad input with 422 naming the field.
func TestUI_InvitationLinkWithoutSMTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.user("alice", false)
	org := b.createOrg(alice, "acme")
	admin := b.browser(alice)
	members := "/orgs/" + org.ID.String() + "/members"
	status, page, _ := admin.do(http.MethodPost, members, url.Values{"email": {"erin@example.com"}, "role": {"viewer"}}, admin.csrf)
	link := linkPattern.FindString(html.UnescapeString(page))
	if status != http.StatusOK || link == "" || !strings.Contains(page, `id="invitation-link"`) {
		t.Fatalf("invite without SMTP: %d\n%s", status, page)
	}
	_, page, _ = admin.do(http.MethodGet, members, nil, "")
	if strings.Contains(page, `id="invitation-link"`) {
		t.Fatal("the link is shown again")
	}
	u, _ := url.Parse(link)
	token := u.Query().Get("token")
	for _, tc := range []struct {
		name  string
		body  map[string]string
		field string
	}{
		{"no token", map[string]string{"password": "lilac harbour evening"}, "token"},
		{"weak password", map[string]string{"token": token, "password": "12345678"}, "password"},
		{"unknown field", map[string]string{"token": token, "password": "lilac harbour evening", "role": "owner"}, "role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.call(http.MethodPost, "/v1/invitations/accept", "", tc.body).expectError(http.StatusUnprocessableEntity, app.CodeValidation, tc.field)
		})
	}
	inv := b.call(http.MethodPost, "/v1/invitations/accept", "", map[string]string{"token": token, "name": "Erin", "password": "lilac harbour evening"}).
		expect(http.StatusCreated).object()
	if inv["status"] != InvitationAccepted || inv["email"] != "erin@example.com" || inv["role"] != "viewer" {
		t.Fatalf("accepted = %v", inv)
	}
	b.call(http.MethodPost, "/v1/invitations/accept", "", map[string]string{"token": token, "password": "lilac harbour evening"}).
		expectError(http.StatusNotFound, app.CodeNotFound, "")
}
