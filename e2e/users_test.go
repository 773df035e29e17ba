package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/chromedp/chromedp"
)

// postJSON posts body to the master's API and returns the status and the
// decoded answer.
func postJSON(t *testing.T, base, path string, body any) (int, map[string]any) {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+path, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestAdmin_BrowserUsers: in Chromium, the superadmin creates a user on
// /users and signs out; the user signs in and changes their password on
// /account; the browser session stays, the user's other session (an API
// refresh token) is revoked, and only the new password signs in.
func TestAdmin_BrowserUsers(t *testing.T) {
	t.Parallel()
	b := setupBrowser(t)
	const (
		email    = "dana@example.com"
		first    = "saffron kettle uphill"
		changed  = "cobalt meadow lantern"
		userName = "Dana Scully"
	)
	var flash, table string
	err := chromedp.Run(b.browser,
		b.signIn(),
		chromedp.Navigate(b.baseURL+"/users"),
		chromedp.WaitVisible(`#create-user`, chromedp.ByQuery),
		chromedp.SendKeys(`#create-user input[name="email"]`, email, chromedp.ByQuery),
		chromedp.SendKeys(`#create-user input[name="name"]`, userName, chromedp.ByQuery),
		chromedp.SendKeys(`#create-user input[name="password"]`, first, chromedp.ByQuery),
		chromedp.Click(`#create-user button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`//table//td[normalize-space()="`+email+`"]`, chromedp.BySearch),
		textOf(`#flash`, &flash),
		textOf(`table`, &table),
	)
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	mustContain(t, "flash", flash, "User "+email+" created.")
	mustContain(t, "users table", table, email, userName, adminEmail)

	// Another session of the new user, through the API.
	status, pair := postJSON(t, b.baseURL, "/v1/auth/login", map[string]string{"email": email, "password": first})
	if status != http.StatusOK {
		t.Fatalf("API login: %d %v", status, pair)
	}

	var heading string
	err = chromedp.Run(b.browser,
		chromedp.Click(`form[action="/logout"] button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`form[action="/login"]`, chromedp.ByQuery),
		chromedp.Navigate(b.baseURL+"/login?next=/account"),
		chromedp.WaitVisible(`input[name="email"]`, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="email"]`, email, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="password"]`, first, chromedp.ByQuery),
		chromedp.Click(`form[action="/login"] button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#change-password`, chromedp.ByQuery),
		textOf(`main article header h2`, &heading),
		// A wrong current password is refused on the form.
		chromedp.SendKeys(`#change-password input[name="current_password"]`, "not my password", chromedp.ByQuery),
		chromedp.SendKeys(`#change-password input[name="new_password"]`, changed, chromedp.ByQuery),
		chromedp.Click(`#change-password button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#f-current_password-error`, chromedp.ByQuery),
		chromedp.SetValue(`#change-password input[name="current_password"]`, first, chromedp.ByQuery),
		chromedp.SetValue(`#change-password input[name="new_password"]`, changed, chromedp.ByQuery),
		chromedp.Click(`#change-password button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`//div[@id="flash"][contains(., "Password changed")]`, chromedp.BySearch),
		// The session it was changed from still works.
		chromedp.Navigate(b.baseURL+"/account"),
		chromedp.WaitVisible(`#change-password`, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("change password: %v", err)
	}
	mustContain(t, "account heading", heading, email)

	if status, _ := postJSON(t, b.baseURL, "/v1/auth/refresh", map[string]any{"refresh_token": pair["refresh_token"]}); status != http.StatusUnauthorized {
		t.Fatalf("refresh token of the other session: %d, want 401", status)
	}
	if status, _ := postJSON(t, b.baseURL, "/v1/auth/login", map[string]string{"email": email, "password": first}); status != http.StatusUnauthorized {
		t.Fatalf("old password: %d, want 401", status)
	}
	if status, _ := postJSON(t, b.baseURL, "/v1/auth/login", map[string]string{"email": email, "password": changed}); status != http.StatusOK {
		t.Fatalf("new password: %d, want 200", status)
	}
}
