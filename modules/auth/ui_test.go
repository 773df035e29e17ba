package auth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// TestUI_EmailCodeOptIn: the admin's sign-in form lets a user confirm with an
// emailed code although nothing requires it, and marks that session so.
func TestUI_EmailCodeOptIn(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.createUser(t, "alice@example.com", false)
	cookies := map[string]string{}
	send := func(method, path string, form url.Values) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req := httptest.NewRequest(method, path, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		for k, v := range cookies {
			req.AddCookie(&http.Cookie{Name: k, Value: v})
		}
		resp := apptest.Do(t, b.app, req)
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		for _, c := range resp.Cookies() {
			cookies[c.Name] = c.Value
		}
		return resp, string(raw)
	}

	_, page := send(http.MethodGet, "/login?email_code=true", nil)
	if !strings.Contains(page, `name="email_code"`) || !strings.Contains(page, "checked") {
		t.Fatalf("sign-in form does not offer the ticked email_code box:\n%s", page)
	}
	resp, _ := send(http.MethodPost, "/login", url.Values{
		"_csrf": {cookies[uiCSRFCookie]}, "email": {"alice@example.com"}, "password": {testPassword}, "email_code": {"true"}, "next": {"/"},
	})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login/code") {
		t.Fatalf("password step: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = send(http.MethodPost, "/login/code", url.Values{"_csrf": {cookies[uiCSRFCookie]}, "code": {b.mail.Next(t).Code(t)}, "next": {"/"}})
	if resp.StatusCode != http.StatusSeeOther || cookies[SessionCookie] == "" {
		t.Fatalf("code step: %d, session cookie %q", resp.StatusCode, cookies[SessionCookie])
	}
	p, err := b.svc.AuthenticateWebSession(b.ctx, cookies[SessionCookie])
	if err != nil || !p.EmailCodeVerified {
		t.Fatalf("session = %+v, %v; want one confirmed by the code", p, err)
	}

	// Without the box, the password alone signs in, unconfirmed.
	delete(cookies, SessionCookie)
	send(http.MethodGet, "/login", nil)
	resp, _ = send(http.MethodPost, "/login", url.Values{
		"_csrf": {cookies[uiCSRFCookie]}, "email": {"alice@example.com"}, "password": {testPassword}, "next": {"/"},
	})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("password sign-in: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if p, err := b.svc.AuthenticateWebSession(b.ctx, cookies[SessionCookie]); err != nil || p.EmailCodeVerified {
		t.Fatalf("password session = %+v, %v", p, err)
	}
	b.mail.Empty(t)
}
