package auth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// browser is one cookie jar talking to the admin pages.
type browser struct {
	b       *bundle
	cookies map[string]string
	csrf    string
}

func (b *bundle) browser() *browser { return &browser{b: b, cookies: map[string]string{}} }

var csrfInput = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)

// send makes a request with the jar's cookies; a POST form gets the page's
// CSRF token.
func (br *browser) send(t *testing.T, method, path string, form url.Values) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		if form.Get("_csrf") == "" {
			form.Set("_csrf", br.csrf)
		}
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range br.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	resp := apptest.Do(t, br.b.app, req)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, c := range resp.Cookies() {
		br.cookies[c.Name] = c.Value
	}
	if m := csrfInput.FindStringSubmatch(string(raw)); m != nil {
		br.csrf = m[1]
	}
	return resp, string(raw)
}

// signIn signs in through the sign-in form.
func (br *browser) signIn(t *testing.T, email, password string) {
	t.Helper()
	br.send(t, http.MethodGet, "/login", nil)
	resp, page := br.send(t, http.MethodPost, "/login", url.Values{
		"_csrf": {br.cookies[uiCSRFCookie]}, "email": {email}, "password": {password}, "next": {"/account"},
	})
	if resp.StatusCode != http.StatusSeeOther || br.cookies[SessionCookie] == "" {
		t.Fatalf("sign in as %s: %d\n%s", email, resp.StatusCode, page)
	}
	br.get(t, "/account", http.StatusOK)
}

// get loads path and requires status.
func (br *browser) get(t *testing.T, path string, status int) string {
	t.Helper()
	resp, page := br.send(t, http.MethodGet, path, nil)
	if resp.StatusCode != status {
		t.Fatalf("GET %s = %d, want %d\n%s", path, resp.StatusCode, status, page)
	}
	return page
}

// post submits form to path and requires status.
func (br *browser) post(t *testing.T, path string, form url.Values, status int) string {
	t.Helper()
	resp, page := br.send(t, http.MethodPost, path, form)
	if resp.StatusCode != status {
		t.Fatalf("POST %s = %d, want %d\n%s", path, resp.StatusCode, status, page)
	}
	return page
}

// signedIn reports whether the jar's session still opens the account page.
func (br *browser) signedIn(t *testing.T) bool {
	t.Helper()
	resp, _ := br.send(t, http.MethodGet, "/account", nil)
	return resp.StatusCode == http.StatusOK
}

const newTestPassword = "violet tractor moonlight"

// TestUI_UsersAndAccount: a superadmin creates a user on /users; the user signs
// in twice and changes their password on /account; the session it was changed
// from stays, the other session and the API refresh token are revoked, and
// only the new password signs in.
func TestUI_UsersAndAccount(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.createUser(t, "root@example.com", true)
	admin := b.browser()
	admin.signIn(t, "root@example.com", testPassword)
	admin.get(t, "/users", http.StatusOK)

	// Bad input: the form comes back with the field's message.
	for _, tc := range []struct {
		name  string
		form  url.Values
		field string
	}{
		{"weak password", url.Values{"email": {"bob@example.com"}, "password": {"password1"}}, "password"},
		{"bad email", url.Values{"email": {"bob"}, "password": {testPassword}}, "email"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := admin.post(t, "/users", tc.form, http.StatusUnprocessableEntity)
			if !strings.Contains(page, `id="f-`+tc.field+`-error"`) {
				t.Fatalf("form does not mark %s:\n%s", tc.field, page)
			}
		})
	}
	if _, err := b.svc.UserByEmail(b.ctx, "bob@example.com"); err == nil {
		t.Fatal("a refused form created the user")
	}

	admin.post(t, "/users", url.Values{"email": {"Bob@Example.com"}, "name": {"Bob"}, "password": {testPassword}}, http.StatusSeeOther)
	page := admin.get(t, "/users?q=bob", http.StatusOK)
	if !strings.Contains(page, "bob@example.com") || strings.Contains(page, "<td>root@example.com</td>") {
		t.Fatalf("search for bob:\n%s", page)
	}

	bob1, bob2 := b.browser(), b.browser()
	bob1.signIn(t, "bob@example.com", testPassword)
	bob2.signIn(t, "bob@example.com", testPassword)
	pair := b.login(t, "bob@example.com")

	// A non-superadmin may not manage users.
	bob1.get(t, "/users", http.StatusForbidden)
	bob1.post(t, "/users", url.Values{"email": {"eve@example.com"}, "password": {testPassword}}, http.StatusForbidden)

	for _, tc := range []struct {
		name          string
		current, next string
		field         string
	}{
		{"wrong current", "not the password", newTestPassword, "current_password"},
		{"missing current", "", newTestPassword, "current_password"},
		{"weak new", testPassword, "qwertyuiop", "new_password"},
		{"new is email", testPassword, "bob@example.com", "new_password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := bob1.post(t, "/account/password", url.Values{"current_password": {tc.current}, "new_password": {tc.next}},
				http.StatusUnprocessableEntity)
			if !strings.Contains(page, `id="f-`+tc.field+`-error"`) {
				t.Fatalf("form does not mark %s:\n%s", tc.field, page)
			}
		})
	}
	if !bob2.signedIn(t) {
		t.Fatal("a refused change signed the other session out")
	}

	bob1.post(t, "/account/password", url.Values{"current_password": {testPassword}, "new_password": {newTestPassword}}, http.StatusSeeOther)
	if !bob1.signedIn(t) {
		t.Fatal("the session the password was changed from was signed out")
	}
	if bob2.signedIn(t) {
		t.Fatal("the other session survived the password change")
	}
	b.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": pair.RefreshToken}).expect(t, http.StatusUnauthorized, "")
	b.do(t, "GET", "/v1/users/me", nil, bearer(pair.AccessToken)...).expect(t, http.StatusUnauthorized, "")
	b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "bob@example.com", "password": testPassword}).
		expect(t, http.StatusUnauthorized, "")
	b.do(t, "POST", "/v1/auth/login", map[string]string{"email": "bob@example.com", "password": newTestPassword}).
		expect(t, http.StatusOK, "")

	// Disabling bob on /users revokes his session at once.
	bob, err := b.svc.UserByEmail(b.ctx, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	admin.get(t, "/users", http.StatusOK)
	admin.post(t, "/users/"+bob.ID.String()+"/disable", url.Values{}, http.StatusSeeOther)
	if bob1.signedIn(t) {
		t.Fatal("the disabled user's session still works")
	}
	admin.post(t, "/users/"+bob.ID.String()+"/enable", url.Values{}, http.StatusSeeOther)
	if bob1.signedIn(t) {
		t.Fatal("enabling brought the revoked session back")
	}

	// Superadmin role: the last one stays protected.
	root, _ := b.svc.UserByEmail(b.ctx, "root@example.com")
	page = admin.post(t, "/users/"+root.ID.String()+"/superadmin/remove", url.Values{}, http.StatusConflict)
	if !strings.Contains(page, "last active superadmin") {
		t.Fatalf("no message for the last superadmin:\n%s", page)
	}
	admin.post(t, "/users/"+bob.ID.String()+"/superadmin", url.Values{}, http.StatusSeeOther)
	if u, _ := b.svc.GetUser(b.ctx, bob.ID); !u.IsSuperadmin {
		t.Fatal("bob is not a superadmin")
	}
	admin.post(t, "/users/"+bob.ID.String()+"/superadmin/remove", url.Values{}, http.StatusSeeOther)

	// Reset: a weak password is refused, a good one signs bob out.
	page = admin.post(t, "/users/"+bob.ID.String()+"/password", url.Values{"password": {"short"}}, http.StatusUnprocessableEntity)
	if !strings.Contains(page, "at least 8 characters") {
		t.Fatalf("no message for the weak reset:\n%s", page)
	}
	bob1.signIn(t, "bob@example.com", newTestPassword)
	admin.post(t, "/users/"+bob.ID.String()+"/password", url.Values{"password": {"amber lantern orchard"}}, http.StatusSeeOther)
	if bob1.signedIn(t) {
		t.Fatal("the session survived a password reset")
	}
	bob1.signIn(t, "bob@example.com", "amber lantern orchard")
}

// TestAPI_PasswordChange: POST /v1/auth/password and POST /v1/users/:id/password
// refuse bad input with 422 naming the field and change nothing.
func TestAPI_PasswordChange(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.createUser(t, "root@example.com", true)
	alice := b.createUser(t, "alice@example.com", false)
	root := b.login(t, "root@example.com")
	a1, a2 := b.login(t, "alice@example.com"), b.login(t, "alice@example.com")

	for _, tc := range []struct {
		name  string
		path  string
		token string
		body  any
		field string
	}{
		{"wrong current", "/v1/auth/password", a1.AccessToken, map[string]string{"current_password": "nope nope", "new_password": newTestPassword}, "current_password"},
		{"no new", "/v1/auth/password", a1.AccessToken, map[string]string{"current_password": testPassword}, "new_password"},
		{"weak new", "/v1/auth/password", a1.AccessToken, map[string]string{"current_password": testPassword, "new_password": "12345678"}, "new_password"},
		{"same", "/v1/auth/password", a1.AccessToken, map[string]string{"current_password": testPassword, "new_password": testPassword}, "new_password"},
		{"unknown field", "/v1/auth/password", a1.AccessToken, map[string]string{"password": newTestPassword}, "password"},
		{"reset weak", "/v1/users/" + alice.ID.String() + "/password", root.AccessToken, map[string]string{"password": "abc"}, "password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := b.do(t, "POST", tc.path, tc.body, bearer(tc.token)...)
			r.expect(t, http.StatusUnprocessableEntity, "")
			found := false
			for _, d := range r.errorBody(t).Error.Details {
				found = found || d.Field == tc.field
			}
			if !found {
				t.Fatalf("details do not name %s: %s", tc.field, r.Body)
			}
		})
	}
	b.do(t, "GET", "/v1/users?q="+strings.Repeat("x", 101), nil, bearer(root.AccessToken)...).expect(t, http.StatusUnprocessableEntity, "")
	b.do(t, "POST", "/v1/users/"+alice.ID.String()+"/password", map[string]string{"password": newTestPassword}, bearer(a1.AccessToken)...).
		expect(t, http.StatusForbidden, "")
	b.do(t, "GET", "/v1/users/me", nil, bearer(a2.AccessToken)...).expect(t, http.StatusOK, "")

	b.do(t, "POST", "/v1/auth/password", map[string]string{"current_password": testPassword, "new_password": newTestPassword}, bearer(a1.AccessToken)...).
		expect(t, http.StatusNoContent, "")
	b.do(t, "GET", "/v1/users/me", nil, bearer(a1.AccessToken)...).expect(t, http.StatusOK, "")
	b.do(t, "GET", "/v1/users/me", nil, bearer(a2.AccessToken)...).expect(t, http.StatusUnauthorized, "")
	b.do(t, "POST", "/v1/auth/refresh", map[string]string{"refresh_token": a1.RefreshToken}).expect(t, http.StatusOK, "")
}
