// Package e2e holds tests that span the whole master, real agents and nginx, and
// a real browser.
//
// The admin tests start the master in-process on 127.0.0.1 (a free port) with
// the auth and orgs modules wired as main.go wires them, on a fresh PostgreSQL
// database (apptest), with an SMTP server capturing the one-time codes. The
// browser tests drive headless Chromium (chromedp) through the sign-in and the
// workspace pages; they need /usr/bin/chromium (or NXMESH_CHROMIUM) and fail
// without it, unless NXMESH_SKIP_BROWSER=1. On failure a screenshot is written
// to the test's artifact directory (go test -artifacts keeps it). The HTTP tests
// check the same pages' contract (redirects, cookies, CSRF, status codes, full
// page or htmx fragment) with a plain client.
//
// The master serves plain HTTP on 127.0.0.1 with the default
// http.secure_cookies=true: browsers (and Go's cookie jar) treat loopback as a
// secure context, so Secure cookies work there as they do behind TLS.
package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	"github.com/nxmesh/nxmesh/static"
	"github.com/nxmesh/nxmesh/views"
)

func TestMain(m *testing.M) { apptest.Main(m) }

const (
	adminEmail    = "admin@example.com"
	adminPassword = "correct-horse-battery-staple"
	// browserTimeout bounds one scenario in the browser.
	browserTimeout = 90 * time.Second
)

// master is a running master with a superadmin, the superadmin's "Default"
// organization (with a "Default" workspace) and a mailbox for one-time codes.
type master struct {
	baseURL string
	auth    *auth.Service
	orgs    *orgs.Service
	org     orgs.Organization
	mail    *apptest.Mailbox
}

// startMaster runs the master's HTTP side with the auth and orgs modules wired
// as main.go wires them, on a free loopback port. mutate (may be nil) adjusts
// the configuration.
func startMaster(t *testing.T, mutate func(*app.Config)) *master {
	t.Helper()
	ctx := context.Background()
	mb := apptest.StartMailbox(t, "", "")
	a := apptest.NewApp(t, func(cfg *app.Config) {
		cfg.HTTP.SecureCookies = true
		host, port, _ := net.SplitHostPort(mb.Addr)
		cfg.SMTP = app.SMTPConfig{Host: host, From: "nxmesh@example.test", TLS: "none"}
		cfg.SMTP.Port, _ = strconv.Atoi(port)
		if mutate != nil {
			mutate(cfg)
		}
	})
	lower := orgstest.New(t, a)
	authMod, orgsMod := lower.Auth, lower.Orgs
	w := lower.Wiring()
	w.ErrorPage, w.Static, w.Version = views.ErrorPage, static.FS, "e2e"
	lower.MountWith(t, w)
	baseURL := apptest.Serve(t, a)

	u, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: adminEmail, Password: adminPassword, Superadmin: true})
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	org, _, _, err := orgsMod.Service().EnsureDefaultOrganization(ctx, u.ID)
	if err != nil {
		t.Fatalf("default organization: %v", err)
	}
	return &master{
		baseURL: baseURL,
		auth:    authMod.Service(),
		orgs:    orgsMod.Service(),
		org:     org,
		mail:    mb,
	}
}

func (m *master) workspacesPath() string { return "/orgs/" + m.org.ID.String() + "/workspaces" }

// ---- Browser ----

// chromiumPath returns the browser to drive (see apptest.ChromiumPath).
func chromiumPath(t *testing.T) string { return apptest.ChromiumPath(t) }

// browserBundle is a master and a fresh headless Chromium (own profile).
type browserBundle struct {
	*master
	browser context.Context
}

func setupBrowser(t *testing.T) browserBundle {
	t.Helper()
	chromiumPath(t)
	m := startMaster(t, nil)
	return browserBundle{master: m, browser: openBrowser(t)}
}

// screenshot saves the current page as PNG in the test's artifact directory.
func screenshot(t *testing.T, browser context.Context) {
	ctx, cancel := context.WithTimeout(browser, 10*time.Second)
	defer cancel()
	var png []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	path := filepath.Join(t.ArtifactDir(), "failure.png")
	if err := os.WriteFile(path, png, 0o600); err != nil {
		t.Logf("write screenshot: %v", err)
		return
	}
	t.Logf("screenshot of the failing page: %s", path)
}

// fillLogin types the credentials into the sign-in form and submits it.
func fillLogin() chromedp.Tasks {
	return chromedp.Tasks{
		chromedp.WaitVisible(`input[name="email"]`, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="email"]`, adminEmail, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="password"]`, adminPassword, chromedp.ByQuery),
		chromedp.Click(`form[action="/login"] button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#create-workspace`, chromedp.ByQuery),
	}
}

// signIn opens / (which sends an anonymous visitor to /login) and signs in.
func (b browserBundle) signIn() chromedp.Tasks {
	return chromedp.Tasks{chromedp.Navigate(b.baseURL + "/"), fillLogin()}
}

// htmxLoaded fails unless the page runs htmx (the vendored script was served).
func (b browserBundle) htmxLoaded(t *testing.T) {
	t.Helper()
	var kind string
	if err := chromedp.Run(b.browser, chromedp.Evaluate(`typeof htmx`, &kind)); err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	if kind != "object" {
		t.Fatalf("htmx is not loaded on the page (typeof htmx = %q): are /static/ assets served?", kind)
	}
}

func textOf(sel string, out *string) chromedp.Action {
	return chromedp.Text(sel, out, chromedp.ByQuery)
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

func TestAdmin_Browser(t *testing.T) {
	t.Parallel()

	t.Run("SignsInAndCreatesWorkspace", func(t *testing.T) {
		t.Parallel()
		b := setupBrowser(t)
		var title, nav, location string
		err := chromedp.Run(b.browser,
			b.signIn(),
			textOf(`h1.page-title`, &title),
			textOf(`#org-switcher summary`, &nav),
			chromedp.Location(&location),
		)
		if err != nil {
			t.Fatalf("sign in: %v", err)
		}
		mustContain(t, "page title", title, "Workspaces")
		mustContain(t, "organization switcher", nav, b.org.Name)
		mustContain(t, "location", location, b.workspacesPath())
		b.htmxLoaded(t)

		// The marker survives only if htmx swaps the content instead of the
		// browser loading a new page.
		var flash, table string
		var marker bool
		err = chromedp.Run(b.browser,
			chromedp.Evaluate(`window.e2eMarker = true`, nil),
			chromedp.SendKeys(`#create-workspace input[name="name"]`, "Staging e2e", chromedp.ByQuery),
			chromedp.Click(`#create-workspace button[type="submit"]`, chromedp.ByQuery),
			chromedp.WaitVisible(`//table//a[normalize-space()="Staging e2e"]`, chromedp.BySearch),
			textOf(`#flash`, &flash),
			textOf(`table`, &table),
			chromedp.Evaluate(`window.e2eMarker === true`, &marker),
		)
		if err != nil {
			t.Fatalf("create workspace: %v", err)
		}
		mustContain(t, "flash", flash, `Workspace "Staging e2e" created.`)
		mustContain(t, "workspaces table", table, "Staging e2e", "staging-e2e", "Default")
		if !marker {
			t.Errorf("the page was reloaded; want htmx to swap the content")
		}
	})

	t.Run("ShowsValidationErrorNextToField", func(t *testing.T) {
		t.Parallel()
		b := setupBrowser(t)
		if err := chromedp.Run(b.browser, b.signIn()); err != nil {
			t.Fatalf("sign in: %v", err)
		}
		b.htmxLoaded(t)
		var fieldErr, kept, table string
		err := chromedp.Run(b.browser,
			chromedp.SendKeys(`#create-workspace input[name="name"]`, "QA", chromedp.ByQuery),
			chromedp.SendKeys(`#create-workspace input[name="slug"]`, "-bad-", chromedp.ByQuery),
			chromedp.Click(`#create-workspace button[type="submit"]`, chromedp.ByQuery),
			chromedp.WaitVisible(`#f-slug-error`, chromedp.ByQuery),
			textOf(`#f-slug-error`, &fieldErr),
			chromedp.Value(`#create-workspace input[name="name"]`, &kept, chromedp.ByQuery),
			textOf(`table`, &table),
		)
		if err != nil {
			t.Fatalf("submit invalid workspace: %v", err)
		}
		mustContain(t, "slug error", fieldErr, "lowercase letters, digits or '-'")
		if kept != "QA" {
			t.Errorf("name input = %q after the failed submission, want the submitted %q", kept, "QA")
		}
		if strings.Contains(table, "QA") {
			t.Errorf("invalid workspace was listed:\n%s", table)
		}
	})

	t.Run("WorksWithoutJavaScript", func(t *testing.T) {
		t.Parallel()
		b := setupBrowser(t)
		var flash, table, location string
		err := chromedp.Run(b.browser,
			emulation.SetScriptExecutionDisabled(true),
			b.signIn(),
			chromedp.SendKeys(`#create-workspace input[name="name"]`, "Plain form", chromedp.ByQuery),
			chromedp.Click(`#create-workspace button[type="submit"]`, chromedp.ByQuery),
			chromedp.WaitVisible(`//table//a[normalize-space()="Plain form"]`, chromedp.BySearch),
			textOf(`#flash`, &flash),
			textOf(`table`, &table),
			chromedp.Location(&location),
		)
		if err != nil {
			t.Fatalf("create workspace without JavaScript: %v", err)
		}
		mustContain(t, "flash", flash, `Workspace "Plain form" created.`)
		mustContain(t, "workspaces table", table, "Plain form", "plain-form")
		// Redirect-after-post: the browser shows the page, not the POST answer.
		if !strings.HasSuffix(location, b.workspacesPath()) {
			t.Errorf("location after the form = %s, want the workspaces page", location)
		}
	})

	t.Run("ReturnsToRequestedPageAfterSignIn", func(t *testing.T) {
		t.Parallel()
		b := setupBrowser(t)
		var location, title string
		err := chromedp.Run(b.browser,
			chromedp.Navigate(b.baseURL+"/orgs/"+b.org.ID.String()+"/members"),
			chromedp.WaitVisible(`input[name="email"]`, chromedp.ByQuery),
			chromedp.SendKeys(`input[name="email"]`, adminEmail, chromedp.ByQuery),
			chromedp.SendKeys(`input[name="password"]`, adminPassword, chromedp.ByQuery),
			chromedp.Click(`form[action="/login"] button[type="submit"]`, chromedp.ByQuery),
			chromedp.WaitVisible(`#add-member`, chromedp.ByQuery),
			chromedp.Location(&location),
			textOf(`h1.page-title`, &title),
		)
		if err != nil {
			t.Fatalf("sign in from a deep link: %v", err)
		}
		if location != b.baseURL+"/orgs/"+b.org.ID.String()+"/members" {
			t.Errorf("signed in to %s, want the members page", location)
		}
		mustContain(t, "page title", title, "Members")
	})
}

// ---- HTTP ----

// client is a cookie-keeping HTTP client that does not follow redirects.
type client struct {
	t    *testing.T
	base string
	jar  *cookiejar.Jar
	http *http.Client
}

type page struct {
	status int
	header http.Header
	body   string
}

func newClient(t *testing.T, base string) *client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, base: base, jar: jar, http: &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends a request; headers are name, value pairs.
func (c *client) do(method, path string, form url.Values, headers ...string) page {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

func (c *client) get(path string, headers ...string) page {
	return c.do(http.MethodGet, path, nil, headers...)
}

func (c *client) post(path string, form url.Values, headers ...string) page {
	return c.do(http.MethodPost, path, form, headers...)
}

// cookie returns the value of the named cookie the client would send to path.
func (c *client) cookie(path, name string) string {
	u, _ := url.Parse(c.base + path)
	for _, ck := range c.jar.Cookies(u) {
		if ck.Name == name {
			return ck.Value
		}
	}
	return ""
}

// loginForm opens the sign-in page (receiving its CSRF cookie) and returns the
// form to post.
func (c *client) loginForm(email, password, next string) url.Values {
	c.t.Helper()
	p := c.get("/login")
	if p.status != http.StatusOK {
		c.t.Fatalf("GET /login: status %d", p.status)
	}
	return url.Values{"_csrf": {c.cookie("/login", "nxmesh_csrf")}, "email": {email}, "password": {password}, "next": {next}}
}

// signIn signs in as the superadmin and returns the session's CSRF token, read
// from a page's hidden field.
func (c *client) signIn() string {
	c.t.Helper()
	p := c.post("/login", c.loginForm(adminEmail, adminPassword, "/orgs"))
	if p.status != http.StatusSeeOther {
		c.t.Fatalf("POST /login: status %d\n%s", p.status, p.body)
	}
	return c.csrf("/orgs")
}

var csrfField = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)

// csrf returns the session's CSRF token from the page at path.
func (c *client) csrf(path string) string {
	c.t.Helper()
	p := c.get(path)
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		c.t.Fatalf("GET %s: no CSRF field (status %d)", path, p.status)
	}
	return m[1]
}

func expectStatus(t *testing.T, p page, status int) {
	t.Helper()
	if p.status != status {
		t.Fatalf("status %d, want %d\n%s", p.status, status, p.body)
	}
}

func setCookie(p page, name string) *http.Cookie {
	for _, ck := range (&http.Response{Header: p.header}).Cookies() {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

func TestAdmin_SignIn(t *testing.T) {
	t.Parallel()

	t.Run("RedirectsAnonymousToLogin", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		p := c.get("/orgs")
		expectStatus(t, p, http.StatusSeeOther)
		if got := p.header.Get("Location"); got != "/login?next=%2Forgs" {
			t.Errorf("Location = %q, want /login?next=%%2Forgs", got)
		}
		p = c.get("/orgs", "HX-Request", "true")
		expectStatus(t, p, http.StatusUnauthorized)
		if got := p.header.Get("HX-Redirect"); got != "/login" {
			t.Errorf("HX-Redirect = %q, want /login", got)
		}
	})

	t.Run("SetsSessionCookie", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		p := c.post("/login", c.loginForm(adminEmail, adminPassword, m.workspacesPath()))
		expectStatus(t, p, http.StatusSeeOther)
		if got := p.header.Get("Location"); got != m.workspacesPath() {
			t.Errorf("Location = %q, want %q", got, m.workspacesPath())
		}
		ck := setCookie(p, auth.SessionCookie)
		if ck == nil || ck.Value == "" {
			t.Fatalf("no %s cookie set; Set-Cookie: %v", auth.SessionCookie, p.header.Values("Set-Cookie"))
		}
		if !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || !ck.Secure {
			t.Errorf("session cookie HttpOnly=%v SameSite=%v Path=%q Secure=%v, want HttpOnly, Lax, /, Secure",
				ck.HttpOnly, ck.SameSite, ck.Path, ck.Secure)
		}
		expectStatus(t, c.get(m.workspacesPath()), http.StatusOK)
	})

	t.Run("RejectsMissingLoginCSRF", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		form := c.loginForm(adminEmail, adminPassword, "/")
		form.Set("_csrf", "forged")
		p := c.post("/login", form)
		expectStatus(t, p, http.StatusForbidden)
		mustContain(t, "page", p.body, "expired")
		if setCookie(p, auth.SessionCookie) != nil {
			t.Error("a session cookie was set despite the CSRF mismatch")
		}
	})

	t.Run("ShowsWrongPasswordAndKeepsEmail", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		p := c.post("/login", c.loginForm(adminEmail, "not-the-password", "/"))
		expectStatus(t, p, http.StatusUnauthorized)
		mustContain(t, "page", p.body, "Invalid email or password", `value="`+adminEmail+`"`)
		if strings.Contains(p.body, "not-the-password") {
			t.Error("the page echoes the password")
		}
	})

	t.Run("RedirectsOnlyToLocalPaths", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		for _, tc := range []struct{ next, want string }{
			{"//evil.example/x", "/"},
			{"https://evil.example/", "/"},
			{`/\evil.example`, "/"},
			{"javascript:alert(1)", "/"},
			{"/login/code", "/"},
			{"/orgs?page=2", "/orgs?page=2"},
		} {
			c := newClient(t, m.baseURL)
			p := c.post("/login", c.loginForm(adminEmail, adminPassword, tc.next))
			expectStatus(t, p, http.StatusSeeOther)
			if got := p.header.Get("Location"); got != tc.want {
				t.Errorf("next=%q: Location = %q, want %q", tc.next, got, tc.want)
			}
		}
	})

	t.Run("ConfirmsEmailedCode", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, func(cfg *app.Config) { cfg.Auth.RequireEmailCode = true })
		c := newClient(t, m.baseURL)
		p := c.post("/login", c.loginForm(adminEmail, adminPassword, "/orgs"))
		expectStatus(t, p, http.StatusSeeOther)
		if got := p.header.Get("Location"); got != "/login/code?next=%2Forgs" {
			t.Fatalf("Location = %q, want the code step", got)
		}
		if setCookie(p, auth.SessionCookie) != nil {
			t.Fatal("a session started before the code was confirmed")
		}
		code := m.mail.Next(t).Code(t)

		p = c.get("/login/code?next=%2Forgs")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "code page", p.body, auth.MaskEmail(adminEmail))

		wrong := "000000"
		if code == wrong {
			wrong = "111111"
		}
		form := url.Values{"_csrf": {c.cookie("/login", "nxmesh_csrf")}, "code": {wrong}, "next": {"/orgs"}}
		p = c.post("/login/code", form)
		expectStatus(t, p, http.StatusUnauthorized)
		mustContain(t, "code page", p.body, `id="f-code-error"`, "Invalid or expired code")

		form.Set("code", code)
		p = c.post("/login/code", form)
		expectStatus(t, p, http.StatusSeeOther)
		if got := p.header.Get("Location"); got != "/orgs" {
			t.Errorf("Location = %q, want /orgs", got)
		}
		if ck := setCookie(p, auth.SessionCookie); ck == nil || ck.Value == "" {
			t.Fatal("no session cookie after the code")
		}
		expectStatus(t, c.get("/orgs"), http.StatusOK)
	})

	t.Run("LogoutEndsSession", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		csrf := c.signIn()
		expectStatus(t, c.post("/logout", url.Values{}), http.StatusForbidden)
		p := c.post("/logout", url.Values{"_csrf": {csrf}})
		expectStatus(t, p, http.StatusSeeOther)
		if got := p.header.Get("Location"); got != "/login" {
			t.Errorf("Location = %q, want /login", got)
		}
		expectStatus(t, c.get("/orgs"), http.StatusSeeOther)
	})
}

func TestAdmin_Forms(t *testing.T) {
	t.Parallel()

	t.Run("RequiresCSRFToken", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		c.signIn()
		p := c.post(m.workspacesPath(), url.Values{"name": {"Forged"}})
		expectStatus(t, p, http.StatusForbidden)
		mustContain(t, "error page", p.body, "<html", "CSRF")
	})

	t.Run("RerendersPageWithFieldErrors", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		csrf := c.signIn()
		p := c.post(m.workspacesPath(), url.Values{"_csrf": {csrf}, "name": {"QA team"}, "slug": {"-bad-"}})
		expectStatus(t, p, http.StatusUnprocessableEntity)
		mustContain(t, "page", p.body, "<html", `id="f-slug-error"`, `value="QA team"`, `value="-bad-"`, `aria-invalid="true"`)
	})

	t.Run("RerendersFragmentForHTMX", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		csrf := c.signIn()
		p := c.post(m.workspacesPath(), url.Values{"name": {""}, "slug": {""}}, "HX-Request", "true", "X-CSRF-Token", csrf)
		expectStatus(t, p, http.StatusUnprocessableEntity)
		mustContain(t, "fragment", p.body, `id="f-name-error"`, "This field is required")
		if strings.Contains(p.body, "<html") {
			t.Errorf("htmx answer is a full page:\n%s", p.body)
		}
	})

	t.Run("ShowsConflictAsFormMessage", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		csrf := c.signIn()
		p := c.post(m.workspacesPath(), url.Values{"_csrf": {csrf}, "name": {"Another default"}, "slug": {"default"}})
		expectStatus(t, p, http.StatusConflict)
		mustContain(t, "page", p.body, `class="form-error"`, "already exists")
	})

	t.Run("RedirectsAfterPostWithFlash", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		csrf := c.signIn()
		p := c.post(m.workspacesPath(), url.Values{"_csrf": {csrf}, "name": {"Edge EU"}})
		expectStatus(t, p, http.StatusSeeOther)
		if got := p.header.Get("Location"); got != m.workspacesPath() {
			t.Fatalf("Location = %q, want %q", got, m.workspacesPath())
		}
		p = c.get(m.workspacesPath())
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "page", p.body, `Workspace &#34;Edge EU&#34; created.`, "edge-eu")
		if p = c.get(m.workspacesPath()); strings.Contains(p.body, "created.") {
			t.Error("the flash message is shown twice")
		}
	})

	t.Run("AnswersHTMXWithLocation", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		csrf := c.signIn()
		p := c.post(m.workspacesPath(), url.Values{"name": {"Edge US"}}, "HX-Request", "true", "X-CSRF-Token", csrf)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "HX-Location", p.header.Get("HX-Location"), `"path":"`+m.workspacesPath()+`"`, `"target":"#content"`)
		p = c.get(m.workspacesPath(), "HX-Request", "true")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "fragment", p.body, "Edge US", `id="flash"`)
		if strings.Contains(p.body, "<html") {
			t.Errorf("htmx answer is a full page:\n%s", p.body)
		}
	})

	t.Run("ShowsErrorPageForUnknownOrganization", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		c.signIn()
		path := "/orgs/" + uuid.NewString() + "/workspaces"
		p := c.get(path)
		expectStatus(t, p, http.StatusNotFound)
		mustContain(t, "error page", p.body, "<html", "Not Found", "No such organization")
		p = c.get(path, "HX-Request", "true")
		expectStatus(t, p, http.StatusNotFound)
		if got := p.header.Get("HX-Retarget"); got != "#flash" {
			t.Errorf("HX-Retarget = %q, want #flash", got)
		}
		mustContain(t, "fragment", p.body, "No such organization")
	})

	t.Run("ShowsAPIKeyOnce", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		csrf := c.signIn()
		path := "/orgs/" + m.org.ID.String() + "/api-keys"
		p := c.post(path, url.Values{"_csrf": {csrf}, "name": {"ci"}, "role": {"operator"}})
		expectStatus(t, p, http.StatusCreated)
		secret := regexp.MustCompile(`nxm_[A-Za-z0-9]{40}`).FindString(p.body)
		if secret == "" {
			t.Fatalf("no key shown after creation:\n%s", p.body)
		}
		if p = c.get(path); strings.Contains(p.body, secret) {
			t.Error("the key is shown again on the list")
		}
		mustContain(t, "list", p.body, "ci", secret[:12])
	})

	t.Run("ServesVendoredAssets", func(t *testing.T) {
		t.Parallel()
		m := startMaster(t, nil)
		c := newClient(t, m.baseURL)
		for _, path := range []string{static.HTMX, static.Pico, static.AppCSS} {
			if p := c.get(path); p.status != http.StatusOK {
				t.Errorf("GET %s: status %d", path, p.status)
			}
		}
	})
}

// ---- Mail ----
