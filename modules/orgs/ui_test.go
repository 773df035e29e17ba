package orgs

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// uiSession is a signed-in admin browser of u.
type uiSession struct {
	b            *bundle
	cookie, csrf string
}

func (b *bundle) browser(u testUser) *uiSession {
	b.t.Helper()
	tok, csrf, err := b.auth.CreateWebSession(context.Background(), u.ID, "127.0.0.1", "test")
	if err != nil {
		b.t.Fatalf("web session of %s: %v", u.Email, err)
	}
	return &uiSession{b: b, cookie: tok, csrf: csrf}
}

// do sends an admin request; a non-nil form is posted with csrf as _csrf.
func (s *uiSession) do(method, path string, form url.Values, csrf string) (int, string, http.Header) {
	s.b.t.Helper()
	var body io.Reader
	if form != nil {
		form.Set("_csrf", csrf)
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: s.cookie})
	resp := apptest.Do(s.b.t, s.b.app, req)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), resp.Header
}

func TestUI_Invitations(t *testing.T) {
	t.Parallel()

	t.Run("InviteeAcceptsFromTheOrganizationsPage", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		org := b.createOrg(alice, "acme")
		admin, invitee := b.browser(alice), b.browser(bob)
		members := "/orgs/" + org.ID.String() + "/members"

		status, _, hdr := admin.do(http.MethodPost, members, url.Values{"email": {bob.Email}, "role": {"operator"}}, admin.csrf)
		if status != http.StatusSeeOther || hdr.Get("Location") != members {
			t.Fatalf("invite form: %d to %q", status, hdr.Get("Location"))
		}
		_, page, _ := admin.do(http.MethodGet, members, nil, "")
		if !strings.Contains(page, `id="invitations"`) || !strings.Contains(page, bob.Email) || !strings.Contains(page, "/revoke") {
			t.Fatalf("members page does not list the pending invitation:\n%s", page)
		}
		id := b.call(http.MethodGet, "/v1/invitations", bob.Token, nil).expect(http.StatusOK).object()["data"].([]any)[0].(map[string]any)["id"].(string)

		_, page, _ = invitee.do(http.MethodGet, "/orgs", nil, "")
		if !strings.Contains(page, `id="my-invitations"`) || !strings.Contains(page, "/invitations/"+id+"/accept") || !strings.Contains(page, "/invitations/"+id+"/decline") {
			t.Fatalf("organizations page does not offer the invitation:\n%s", page)
		}
		// Forms need the session's CSRF token.
		if status, _, _ := invitee.do(http.MethodPost, "/invitations/"+id+"/accept", url.Values{}, "wrong"); status != http.StatusForbidden {
			t.Fatalf("accept without CSRF: %d", status)
		}
		status, _, hdr = invitee.do(http.MethodPost, "/invitations/"+id+"/accept", url.Values{}, invitee.csrf)
		if status != http.StatusSeeOther || hdr.Get("Location") != "/orgs/"+org.ID.String()+"/workspaces" {
			t.Fatalf("accept: %d to %q", status, hdr.Get("Location"))
		}
		b.call(http.MethodGet, "/v1/organizations/"+org.ID.String(), bob.Token, nil).expect(http.StatusOK)
	})

	t.Run("InviteeDeclinesAndAdminRevokes", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob, carol := b.user("alice", false), b.user("bob", false), b.user("carol", false)
		org := b.createOrg(alice, "acme")
		admin, invitee := b.browser(alice), b.browser(bob)
		declined := b.invite(alice, org.ID, bob, "viewer")
		revoked := b.invite(alice, org.ID, carol, "viewer")

		if status, _, hdr := invitee.do(http.MethodPost, "/invitations/"+declined+"/decline", url.Values{}, invitee.csrf); status != http.StatusSeeOther || hdr.Get("Location") != "/orgs" {
			t.Fatalf("decline: %d to %q", status, hdr.Get("Location"))
		}
		path := "/orgs/" + org.ID.String() + "/invitations/" + revoked + "/revoke"
		if status, _, _ := invitee.do(http.MethodPost, path, url.Values{}, invitee.csrf); status != http.StatusNotFound {
			t.Fatalf("revoke by an outsider: %d, want 404", status)
		}
		if status, _, _ := admin.do(http.MethodPost, path, url.Values{}, admin.csrf); status != http.StatusSeeOther {
			t.Fatalf("revoke: %d", status)
		}
		if _, meta := b.call(http.MethodGet, "/v1/organizations/"+org.ID.String()+"/invitations", alice.Token, nil).expect(http.StatusOK).list(); meta.Total != 0 {
			t.Fatalf("%d invitations left", meta.Total)
		}
		if _, meta := b.call(http.MethodGet, "/v1/organizations/"+org.ID.String()+"/members", alice.Token, nil).expect(http.StatusOK).list(); meta.Total != 1 {
			t.Fatalf("%d members, want only the owner", meta.Total)
		}
	})
}
