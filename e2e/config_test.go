package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/upstreams"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	"github.com/nxmesh/nxmesh/modules/wire/wiretest"
)

// The configuration pages (upstreams, certificates, virtual hosts, streams,
// configuration history) run on a master with every module wired as main.go
// wires them (modules/wire): the lower modules' ChangeFunc and UsageFunc call
// the vhosts service built after them.

// configMaster is a running master with the configuration modules, a
// superadmin and the superadmin's "Default" organization and workspace.
type configMaster struct {
	*master
	ws     orgs.Workspace
	ups    *upstreams.Service
	certs  *certs.Service
	vhosts *vhosts.Service
}

func startConfigMaster(t *testing.T) *configMaster {
	t.Helper()
	ctx := context.Background()
	m := wiretest.New(t, wiretest.WithConfig(func(cfg *app.Config) { cfg.HTTP.SecureCookies = false }))
	a, authMod, orgsMod := m.App, m.Modules.Auth, m.Modules.Orgs
	upsMod, certsMod, vh := m.Modules.Upstreams, m.Modules.Certs, m.Modules.VHosts
	base := apptest.Serve(t, a)
	u, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: adminEmail, Password: adminPassword, Superadmin: true})
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	org, ws, _, err := orgsMod.Service().EnsureDefaultOrganization(ctx, u.ID)
	if err != nil {
		t.Fatalf("default organization: %v", err)
	}
	return &configMaster{
		master: &master{baseURL: base, auth: authMod.Service(), orgs: orgsMod.Service(), org: org},
		ws:     ws,
		ups:    upsMod.Service(),
		certs:  certsMod.Service(),
		vhosts: vh.Service(),
	}
}

// wsPath is a path under the workspace's pages.
func (m *configMaster) wsPath(rest string) string {
	return "/workspaces/" + m.ws.ID.String() + rest
}

// openBrowser starts a headless Chromium with its own profile for the test;
// on failure the current page is saved as a screenshot. Start the master
// first: the browser's cleanups then run before the master's, which gives
// Chromium time to leave its profile directory before it is removed.
func openBrowser(t *testing.T) context.Context {
	t.Helper()
	browser := apptest.Browser(t, 1280, 900, browserTimeout)
	t.Cleanup(func() {
		if t.Failed() {
			screenshot(t, browser)
		}
	})
	return browser
}

// signInAt signs in through the sign-in page that path redirects to, and
// waits for path's page.
func (m *configMaster) signInAt(path, waitFor string) chromedp.Tasks {
	return chromedp.Tasks{
		chromedp.Navigate(m.baseURL + path),
		chromedp.WaitVisible(`input[name="email"]`, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="email"]`, adminEmail, chromedp.ByQuery),
		chromedp.SendKeys(`input[name="password"]`, adminPassword, chromedp.ByQuery),
		chromedp.Click(`form[action="/login"] button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(waitFor, chromedp.ByQuery),
	}
}

// setSelect chooses value in the select sel and fires its change event, as a
// person choosing an option does (chromedp.SetValue fires no event).
func setSelect(sel, value string) chromedp.Action {
	js := `(() => { const el = document.querySelector(` + strconv.Quote(sel) + `);
		el.value = ` + strconv.Quote(value) + `;
		el.dispatchEvent(new Event("change", {bubbles: true}));
		return el.value; })()`
	var got string
	return chromedp.ActionFunc(func(ctx context.Context) error {
		if err := chromedp.Evaluate(js, &got).Do(ctx); err != nil {
			return err
		}
		if got != value {
			return fmt.Errorf("select %s has no option %q", sel, value)
		}
		return nil
	})
}

// byName is the CSS selector of the input named name.
func byName(name string) string { return `[name="` + name + `"]` }

// errorOf is the CSS selector of the message shown under the input named name.
func errorOf(name string) string { return `[id="f-` + name + `-error"]` }

func TestConfig_Browser(t *testing.T) {
	t.Parallel()
	chromiumPath(t) // a missing browser fails (or skips) every subtest at once

	t.Run("CreatesUpstreamAndVirtualHostAndShowsPreview", func(t *testing.T) {
		t.Parallel()
		m := startConfigMaster(t)
		b := openBrowser(t)
		ctx := context.Background()

		// An upstream with two servers, the second row added by htmx.
		var table string
		var marker bool
		err := chromedp.Run(b,
			m.signInAt(m.wsPath("/upstreams/new"), "#upstream-form"),
			chromedp.Evaluate(`window.e2eMarker = true`, nil),
			chromedp.SendKeys(byName("name"), "api-backend", chromedp.ByQuery),
			chromedp.SendKeys(byName("servers[0].address"), "127.0.0.1:8081", chromedp.ByQuery),
			chromedp.Click(`#add-server`, chromedp.ByQuery),
			chromedp.WaitVisible(byName("servers[1].address"), chromedp.ByQuery),
			chromedp.SendKeys(byName("servers[1].address"), "127.0.0.1:8082", chromedp.ByQuery),
			chromedp.SendKeys(byName("servers[1].weight"), "3", chromedp.ByQuery),
			// A third row, removed again.
			chromedp.Click(`#add-server`, chromedp.ByQuery),
			chromedp.WaitVisible(byName("servers[2].address"), chromedp.ByQuery),
			chromedp.SendKeys(byName("servers[2].address"), "127.0.0.1:8083", chromedp.ByQuery),
			chromedp.Click(`#server-2 button[value="remove:servers[2]"]`, chromedp.ByQuery),
			chromedp.WaitNotPresent(byName("servers[2].address"), chromedp.ByQuery),
			chromedp.Click(`#save-upstream`, chromedp.ByQuery),
			chromedp.WaitVisible(`//table//a[normalize-space()="api-backend"]`, chromedp.BySearch),
			textOf(`table`, &table),
			chromedp.Evaluate(`window.e2eMarker === true`, &marker),
		)
		if err != nil {
			t.Fatalf("create upstream: %v", err)
		}
		mustContain(t, "upstreams table", table, "api-backend", "Round robin")
		if !marker {
			t.Errorf("the page was reloaded; want htmx to swap the content")
		}
		ups, _, err := m.ups.List(ctx, m.ws.ID, app.Page{Page: 1, PerPage: 10})
		if err != nil || len(ups) != 1 {
			t.Fatalf("upstreams after the form: %v, %v", ups, err)
		}
		if s := ups[0].Servers; len(s) != 2 || s[0].Address != "127.0.0.1:8081" || s[1].Address != "127.0.0.1:8082" || s[1].Weight != 3 {
			t.Fatalf("servers = %+v, want 127.0.0.1:8081 and 127.0.0.1:8082 (weight 3)", s)
		}

		// A virtual host with a location to the upstream and one proxy_pass.
		var preview, location string
		err = chromedp.Run(b,
			chromedp.Navigate(m.baseURL+m.wsPath("/virtual-hosts/new")),
			chromedp.WaitVisible(`#vhost-form`, chromedp.ByQuery),
			chromedp.SendKeys(byName("name"), "web", chromedp.ByQuery),
			chromedp.SendKeys(byName("server_name"), "www.example.test", chromedp.ByQuery),
			chromedp.SendKeys(byName("locations[0].path"), "/api/", chromedp.ByQuery),
			setSelect(byName("locations[0].target"), "upstream"),
			chromedp.WaitVisible(byName("locations[0].upstream_id"), chromedp.ByQuery),
			setSelect(byName("locations[0].upstream_id"), ups[0].ID.String()),
			chromedp.Click(`#add-location`, chromedp.ByQuery),
			chromedp.WaitVisible(byName("locations[1].path"), chromedp.ByQuery),
			chromedp.SendKeys(byName("locations[1].path"), "/", chromedp.ByQuery),
			chromedp.SendKeys(byName("locations[1].proxy_pass"), "http://127.0.0.1:9000", chromedp.ByQuery),
			chromedp.Click(`#save-virtual-host`, chromedp.ByQuery),
			chromedp.WaitVisible(`#preview-panel pre`, chromedp.ByQuery),
			textOf(`#preview-panel pre`, &preview),
			chromedp.Location(&location),
		)
		if err != nil {
			t.Fatalf("create virtual host: %v", err)
		}
		if !strings.Contains(location, "/virtual-hosts/") {
			t.Errorf("location after creating the virtual host = %s, want its page", location)
		}
		mustContain(t, "preview", preview,
			"upstream u_", "server 127.0.0.1:8081", "server 127.0.0.1:8082 weight=3",
			"server_name www.example.test;", "location /api/ {", "location / {", "proxy_pass http://127.0.0.1:9000;")
	})

	t.Run("ShowsServerAddressErrorNextToField", func(t *testing.T) {
		t.Parallel()
		m := startConfigMaster(t)
		b := openBrowser(t)
		var msg, kept, invalid string
		err := chromedp.Run(b,
			m.signInAt(m.wsPath("/upstreams/new"), "#upstream-form"),
			chromedp.SendKeys(byName("name"), "bad", chromedp.ByQuery),
			chromedp.SendKeys(byName("servers[0].address"), "10.0.0.1:8080", chromedp.ByQuery),
			chromedp.Click(`#add-server`, chromedp.ByQuery),
			chromedp.WaitVisible(byName("servers[1].address"), chromedp.ByQuery),
			chromedp.SendKeys(byName("servers[1].address"), "not a host", chromedp.ByQuery),
			chromedp.Click(`#save-upstream`, chromedp.ByQuery),
			chromedp.WaitVisible(errorOf("servers[1].address"), chromedp.ByQuery),
			textOf(errorOf("servers[1].address"), &msg),
			chromedp.Value(byName("servers[1].address"), &kept, chromedp.ByQuery),
			chromedp.AttributeValue(byName("servers[1].address"), "aria-invalid", &invalid, nil, chromedp.ByQuery),
		)
		if err != nil {
			t.Fatalf("submit a bad server address: %v", err)
		}
		mustContain(t, "address error", msg, "host:port")
		if kept != "not a host" || invalid != "true" {
			t.Errorf("address input value %q aria-invalid %q, want the submitted value marked invalid", kept, invalid)
		}
		if ups, total, err := m.ups.List(context.Background(), m.ws.ID, app.Page{Page: 1, PerPage: 10}); err != nil || total != 0 {
			t.Errorf("upstreams after the refused form: %v (%d), %v", ups, total, err)
		}
	})

	t.Run("UploadsCertificateAndDeletesItAfterConfirming", func(t *testing.T) {
		t.Parallel()
		m := startConfigMaster(t)
		b := openBrowser(t)
		certPEM, keyPEM := apptest.SelfSignedCertUntil(t, time.Now().Add(20*24*time.Hour), "shop.example.test")
		// Accept the hx-confirm dialog of the delete button.
		chromedp.ListenTarget(b, func(ev any) {
			if _, ok := ev.(*cdppage.EventJavascriptDialogOpening); ok {
				go func() { _ = chromedp.Run(b, cdppage.HandleJavaScriptDialog(true)) }()
			}
		})
		var details, flash, list string
		err := chromedp.Run(b,
			m.signInAt(m.wsPath("/certificates/new"), "#certificate-form"),
			chromedp.SetValue(byName("certificate_pem"), certPEM, chromedp.ByQuery),
			chromedp.SetValue(byName("private_key_pem"), keyPEM, chromedp.ByQuery),
			chromedp.Click(`#save-certificate`, chromedp.ByQuery),
			chromedp.WaitVisible(`//h1[normalize-space()="shop.example.test"]`, chromedp.BySearch),
			textOf(`#certificate-live article`, &details),
			chromedp.Click(`button[hx-confirm]`, chromedp.ByQuery),
			chromedp.WaitVisible(`//h1[normalize-space()="Certificates"]`, chromedp.BySearch),
			textOf(`#flash`, &flash),
			textOf(`table`, &list),
		)
		if err != nil {
			t.Fatalf("upload and delete a certificate: %v", err)
		}
		mustContain(t, "certificate page", details, "shop.example.test", "Expiring", "never shown")
		if strings.Contains(details, "PRIVATE KEY") {
			t.Error("the certificate page shows key material")
		}
		mustContain(t, "flash", flash, `Certificate "shop.example.test" deleted.`)
		mustContain(t, "list", list, "No certificates")
	})

	t.Run("EditsServersWithoutJavaScript", func(t *testing.T) {
		t.Parallel()
		m := startConfigMaster(t)
		b := openBrowser(t)
		var location string
		err := chromedp.Run(b,
			emulation.SetScriptExecutionDisabled(true),
			m.signInAt(m.wsPath("/upstreams/new"), "#upstream-form"),
			chromedp.SendKeys(byName("name"), "plain", chromedp.ByQuery),
			chromedp.SendKeys(byName("servers[0].address"), "10.0.0.1:8080", chromedp.ByQuery),
			chromedp.Click(`#add-server`, chromedp.ByQuery),
			chromedp.WaitVisible(byName("servers[1].address"), chromedp.ByQuery),
			chromedp.SendKeys(byName("servers[1].address"), "10.0.0.2:8080", chromedp.ByQuery),
			chromedp.Click(`#save-upstream`, chromedp.ByQuery),
			chromedp.WaitVisible(`//table//a[normalize-space()="plain"]`, chromedp.BySearch),
			chromedp.Location(&location),
		)
		if err != nil {
			t.Fatalf("create an upstream without JavaScript: %v", err)
		}
		if !strings.HasSuffix(location, m.wsPath("/upstreams")) {
			t.Errorf("location after the form = %s, want the upstreams page", location)
		}
		ups, _, err := m.ups.List(context.Background(), m.ws.ID, app.Page{Page: 1, PerPage: 10})
		if err != nil || len(ups) != 1 || len(ups[0].Servers) != 2 {
			t.Fatalf("upstreams after the form: %+v, %v; want one with two servers", ups, err)
		}
	})
}

// postMultipart sends a multipart form, as the certificate upload form does.
func (c *client) postMultipart(path string, fields map[string]string, headers ...string) page {
	c.t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		c.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, c.base+path, &body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("POST %s: read body: %v", path, err)
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

// configBundle is a config master and a client signed in to it.
type configBundle struct {
	*configMaster
	c    *client
	csrf string
}

func setupConfig(t *testing.T) configBundle {
	t.Helper()
	m := startConfigMaster(t)
	c := newClient(t, m.baseURL)
	return configBundle{configMaster: m, c: c, csrf: c.signIn()}
}

// upstream creates an upstream with the given server addresses.
func (b configBundle) upstream(t *testing.T, name string, addrs ...string) upstreams.Upstream {
	t.Helper()
	var servers []upstreams.ServerInput
	for _, a := range addrs {
		servers = append(servers, upstreams.ServerInput{Address: a})
	}
	u, err := b.ups.Create(context.Background(), upstreams.CreateParams{WorkspaceID: b.ws.ID, Name: name, Servers: servers})
	if err != nil {
		t.Fatalf("create upstream: %v", err)
	}
	return u
}

// vhost creates a virtual host whose only location proxies to upstream.
func (b configBundle) vhost(t *testing.T, name string, upstream uuid.UUID) vhosts.VirtualHost {
	t.Helper()
	vh, err := b.vhosts.CreateVirtualHost(context.Background(), b.ws.ID, vhosts.VirtualHostInput{
		Name: name, ServerName: name + ".example.test",
		Locations: []vhosts.Location{{Path: "/", UpstreamID: upstream.String()}},
	})
	if err != nil {
		t.Fatalf("create virtual host: %v", err)
	}
	return vh
}

func TestConfig_Forms(t *testing.T) {
	t.Parallel()

	t.Run("CreatesUpstreamWithRedirectAndFlash", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		p := b.c.post(b.wsPath("/upstreams"), url.Values{
			"_csrf": {b.csrf}, "name": {"api"}, "algorithm": {"least_connections"}, "keepalive_connections": {"16"},
			// Rows keep the indexes the browser gave them; blank rows are dropped.
			"servers[0].address": {"10.0.0.1:80"}, "servers[4].address": {"10.0.0.2:80"}, "servers[4].backup": {"true"},
			"servers[7].address": {""}, "servers[7].weight": {""},
			"health_check.enabled": {"true"}, "health_check.path": {"/healthz"}, "health_check.interval": {"5"},
			"health_check.timeout": {"2"}, "health_check.healthy_threshold": {"2"}, "health_check.unhealthy_threshold": {"3"},
		})
		expectStatus(t, p, http.StatusSeeOther)
		if got := p.header.Get("Location"); got != b.wsPath("/upstreams") {
			t.Fatalf("Location = %q, want the upstreams page", got)
		}
		p = b.c.get(b.wsPath("/upstreams"))
		mustContain(t, "list", p.body, `Upstream &#34;api&#34; created.`, "Least connections", "GET /healthz every 5s")
		ups, _, err := b.ups.List(context.Background(), b.ws.ID, app.Page{Page: 1, PerPage: 10})
		if err != nil || len(ups) != 1 {
			t.Fatalf("upstreams: %+v, %v", ups, err)
		}
		u := ups[0]
		if len(u.Servers) != 2 || !u.Servers[1].Backup || u.KeepaliveConnections != 16 || !u.HealthCheck.Enabled || u.HealthCheck.Timeout != 2 {
			t.Errorf("stored upstream = %+v", u)
		}
	})

	t.Run("ShowsServiceErrorsAtRenumberedRows", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		p := b.c.post(b.wsPath("/upstreams"), url.Values{
			"_csrf": {b.csrf}, "name": {"api"}, "algorithm": {"round_robin"},
			"servers[2].address": {"10.0.0.1:80"}, "servers[5].address": {"10.0.0.2:http"}, "servers[5].weight": {"heavy"},
		})
		expectStatus(t, p, http.StatusUnprocessableEntity)
		mustContain(t, "form", p.body, "<html", `id="f-servers[1].weight-error"`, "Must be a whole number",
			`name="servers[1].address" type="text" value="10.0.0.2:http"`, `value="10.0.0.1:80"`)
		p = b.c.post(b.wsPath("/upstreams"), url.Values{
			"_csrf": {b.csrf}, "name": {"api"}, "algorithm": {"round_robin"},
			"servers[2].address": {"10.0.0.1:80"}, "servers[5].address": {"10.0.0.2:http"},
		}, "HX-Request", "true")
		expectStatus(t, p, http.StatusUnprocessableEntity)
		mustContain(t, "fragment", p.body, `id="f-servers[1].address-error"`, "host:port", `aria-invalid="true"`)
		if strings.Contains(p.body, "<html") {
			t.Errorf("htmx answer is a full page")
		}
	})

	t.Run("AddsAndRemovesRowsWithoutSaving", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		form := url.Values{"_csrf": {b.csrf}, "name": {"api"}, "servers[0].address": {"192.0.2.1:80"}, "servers[1].address": {"192.0.2.2:80"}}
		form.Set("_op", "add-server")
		p := b.c.post(b.wsPath("/upstreams"), form)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "form", p.body, `name="servers[2].address"`, `value="192.0.2.2:80"`)
		form.Set("_op", "remove:servers[0]")
		p = b.c.post(b.wsPath("/upstreams"), form)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "form", p.body, `name="servers[0].address" type="text" value="192.0.2.2:80"`)
		if strings.Contains(p.body, "192.0.2.1:80") {
			t.Error("the removed row is still in the form")
		}
		// htmx: the editor alone.
		p = b.c.post(b.wsPath("/upstreams/servers"), form, "HX-Request", "true", "X-CSRF-Token", b.csrf)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "editor", p.body, `id="servers-editor"`, `value="192.0.2.2:80"`, `server-row?index=1`)
		p = b.c.get(b.wsPath("/upstreams/server-row?index=3"), "HX-Request", "true")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "row", p.body, `name="servers[3].address"`, `id="add-server"`, `hx-swap-oob="true"`, `server-row?index=4`)
		if _, total, _ := b.ups.List(context.Background(), b.ws.ID, app.Page{Page: 1, PerPage: 10}); total != 0 {
			t.Errorf("%d upstreams saved by editor steps", total)
		}
	})

	t.Run("RefusesToDeleteUpstreamInUse", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		u := b.upstream(t, "api", "10.0.0.1:80")
		vh := b.vhost(t, "web", u.ID)
		p := b.c.get("/upstreams/" + u.ID.String() + "/delete")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "confirmation", p.body, `virtual host &#34;web&#34;`, "Delete upstream")
		p = b.c.post("/upstreams/"+u.ID.String()+"/delete", url.Values{"_csrf": {b.csrf}})
		expectStatus(t, p, http.StatusConflict)
		mustContain(t, "confirmation", p.body, `class="form-error"`, `Upstream is used by virtual host &#34;web&#34; (`+vh.ID.String()+`)`)
		if err := b.vhosts.DeleteVirtualHost(context.Background(), vh.ID); err != nil {
			t.Fatal(err)
		}
		p = b.c.post("/upstreams/"+u.ID.String()+"/delete", url.Values{"_csrf": {b.csrf}}, "HX-Request", "true", "X-CSRF-Token", b.csrf)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "HX-Location", p.header.Get("HX-Location"), b.wsPath("/upstreams"))
	})

	t.Run("UploadsCertificateAndNeverShowsKey", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		certPEM, keyPEM := apptest.SelfSignedCertUntil(t, time.Now().Add(90*24*time.Hour), "api.example.test")
		_, otherKey := apptest.SelfSignedCertUntil(t, time.Now().Add(90*24*time.Hour), "api.example.test")
		p := b.c.postMultipart(b.wsPath("/certificates"), map[string]string{"_csrf": b.csrf, "certificate_pem": certPEM, "private_key_pem": otherKey})
		expectStatus(t, p, http.StatusUnprocessableEntity)
		mustContain(t, "form", p.body, `id="f-private_key_pem-error"`, "BEGIN CERTIFICATE")
		if strings.Contains(p.body, strings.Split(otherKey, "\n")[1]) {
			t.Error("the refused private key is echoed into the page")
		}
		p = b.c.postMultipart(b.wsPath("/certificates"), map[string]string{"_csrf": b.csrf, "name": "API", "certificate_pem": certPEM, "private_key_pem": keyPEM})
		expectStatus(t, p, http.StatusSeeOther)
		certPage := p.header.Get("Location")
		if !strings.HasPrefix(certPage, "/certificates/") {
			t.Fatalf("Location = %q, want the certificate's page", certPage)
		}
		p = b.c.get(certPage)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "page", p.body, "api.example.test", "SHA-256 fingerprint", "Active")
		for _, page := range []string{p.body, b.c.get(b.wsPath("/certificates")).body} {
			if strings.Contains(page, "PRIVATE KEY") || strings.Contains(page, strings.Split(keyPEM, "\n")[1]) {
				t.Error("a page shows key material")
			}
		}
	})

	t.Run("HighlightsExpiringCertificates", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		ctx := context.Background()
		for _, c := range []struct {
			domain string
			left   time.Duration
		}{{"fresh.example.test", 200 * 24 * time.Hour}, {"soon.example.test", 10 * 24 * time.Hour}} {
			certPEM, keyPEM := apptest.SelfSignedCertUntil(t, time.Now().Add(c.left), c.domain)
			if _, err := b.certs.Create(ctx, certs.CreateParams{WorkspaceID: b.ws.ID, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM}); err != nil {
				t.Fatal(err)
			}
		}
		p := b.c.get(b.wsPath("/certificates"))
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "list", p.body, `class="cert-expiring"`, "<mark", "in 10 days", "due for renewal (highlighted)")
		if n := strings.Count(p.body, `class="cert-expiring"`); n != 1 {
			t.Errorf("%d rows highlighted, want 1", n)
		}
	})

	t.Run("ShowsPreviewPanelToHTMX", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		vh := b.vhost(t, "web", b.upstream(t, "api", "10.0.0.1:80").ID)
		path := "/virtual-hosts/" + vh.ID.String()
		p := b.c.get(path)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "page", p.body, `id="preview-panel"`, `hx-get="`+path+`/preview"`)
		p = b.c.get(path+"/preview", "HX-Request", "true", "HX-Target", "preview-panel")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "panel", p.body, "<pre", "server_name web.example.test;", "location / {")
		if strings.Contains(p.body, "<html") || strings.Contains(p.body, `id="flash"`) {
			t.Error("the panel answer is more than the panel")
		}
		p = b.c.get(path + "/preview")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "page", p.body, "<html", "server 10.0.0.1:80 ")
	})

	t.Run("ShowsSideBySideDiffAndRollsBack", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		ctx := context.Background()
		u := b.upstream(t, "api", "10.0.0.1:80")
		b.vhost(t, "web", u.ID)
		if _, err := b.ups.Update(ctx, u.ID, upstreams.UpdateParams{Servers: []upstreams.ServerInput{{Address: "10.0.0.9:80"}}}); err != nil {
			t.Fatal(err)
		}
		p := b.c.get(b.wsPath("/config/versions"))
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "history", p.body, `upstream &#34;api&#34; updated`, `virtual host &#34;web&#34; created`, adminEmail)
		p = b.c.get(b.wsPath("/config/versions/3"))
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "diff", p.body, `class="diff"`)
		for _, re := range []string{`class="diff-old"><samp>[^<]*<del>server 10\.0\.0\.1:80 `, `class="diff-new"><samp>[^<]*<ins>server 10\.0\.0\.9:80 `} {
			if !regexp.MustCompile(re).MatchString(p.body) {
				t.Errorf("diff does not match %s", re)
			}
		}
		p = b.c.get(b.wsPath("/config/versions/3?against=0"))
		expectStatus(t, p, http.StatusOK)
		if strings.Contains(p.body, "<del>") {
			t.Error("a diff against the empty configuration removes lines")
		}
		p = b.c.get(b.wsPath("/config/versions/2/rollback"))
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "confirmation", p.body, "Roll back to version 2")
		p = b.c.post(b.wsPath("/config/versions/2/rollback"), url.Values{"_csrf": {b.csrf}})
		expectStatus(t, p, http.StatusSeeOther)
		p = b.c.get(b.wsPath("/config/versions"))
		mustContain(t, "history", p.body, "Saved as version 4: Rolled back to version 2.", "rollback to version 2")
		got, err := b.ups.Get(ctx, u.ID)
		if err != nil || got.Servers[0].Address != "10.0.0.1:80" {
			t.Errorf("upstream after the rollback: %+v, %v", got, err)
		}
	})

	t.Run("ShowsVirtualHostErrorsAtNestedInputs", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		u := b.upstream(t, "api", "10.0.0.1:80")
		p := b.c.post(b.wsPath("/virtual-hosts"), url.Values{
			"_csrf": {b.csrf}, "name": {"web"}, "server_name": {"www.example.test"}, "target_agents.type": {"all"},
			"locations[0].path": {"/"}, "locations[0].match": {"prefix"}, "locations[0].target": {"upstream"},
			"locations[0].upstream_id":             {u.ID.String()},
			"locations[0].custom_headers[3].name":  {"X-Ok"},
			"locations[0].custom_headers[3].value": {"fine"},
			"locations[0].custom_headers[8].name":  {"X-Bad"},
			"locations[0].custom_headers[8].value": {"a; include /etc/passwd; {"},
			"locations[2].path":                    {"/static/"}, "locations[2].match": {"prefix"}, "locations[2].target": {"proxy"},
		})
		expectStatus(t, p, http.StatusUnprocessableEntity)
		mustContain(t, "form", p.body,
			`id="f-locations[0].custom_headers[1].value-error"`, `value="X-Bad"`,
			`id="f-locations[1].proxy_pass-error"`, "This field is required")
		if _, total, _ := b.vhosts.ListVirtualHosts(context.Background(), b.ws.ID, app.Page{Page: 1, PerPage: 10}); total != 0 {
			t.Errorf("%d virtual hosts stored by a refused form", total)
		}
		// The target type's inputs, and the location editor's steps.
		p = b.c.get(b.wsPath("/virtual-hosts/location-target?index=2&locations%5B2%5D.target=static&locations%5B2%5D.root=%2Fsrv%2Fwww"), "HX-Request", "true")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "target inputs", p.body, `name="locations[2].root"`, `value="/srv/www"`, `name="locations[2].index"`)
		p = b.c.get(b.wsPath("/virtual-hosts/header-row?location=1&index=4"), "HX-Request", "true")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "header row", p.body, `name="locations[1].custom_headers[4].name"`, `id="add-header-1"`, "index=5")
		form := url.Values{
			"_csrf": {b.csrf}, "name": {"web"}, "locations[0].path": {"/a/"}, "locations[0].target": {"proxy"},
			"locations[5].path": {"/b/"}, "locations[5].target": {"proxy"}, "_op": {"remove:locations[0]"},
		}
		p = b.c.post(b.wsPath("/virtual-hosts"), form)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "form", p.body, `name="locations[0].path" type="text" value="/b/"`)
		if strings.Contains(p.body, `value="/a/"`) {
			t.Error("the removed location is still in the form")
		}
		form.Set("_op", "add-header:0")
		p = b.c.post(b.wsPath("/virtual-hosts/locations"), form, "HX-Request", "true", "X-CSRF-Token", b.csrf)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "editor", p.body, `id="locations-editor"`, `name="locations[0].custom_headers[0].name"`, `value="/b/"`)
	})

	t.Run("CreatesStreamAndShowsItsConfiguration", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		u := b.upstream(t, "db", "10.0.0.5:5432")
		p := b.c.post(b.wsPath("/streams"), url.Values{
			"_csrf": {b.csrf}, "name": {"postgres"}, "listen_port": {"5432"}, "protocol": {"tcp"}, "upstream_id": {u.ID.String()},
			"proxy_protocol": {"true"}, "timeout": {"300"}, "bandwidth_limit": {"bad"}, "target_agents.type": {"all"},
		})
		expectStatus(t, p, http.StatusUnprocessableEntity)
		mustContain(t, "form", p.body, `id="f-bandwidth_limit-error"`)
		p = b.c.post(b.wsPath("/streams"), url.Values{
			"_csrf": {b.csrf}, "name": {"postgres"}, "listen_port": {"5432"}, "protocol": {"tcp"}, "upstream_id": {u.ID.String()},
			"proxy_protocol": {"true"}, "timeout": {"300"}, "bandwidth_limit": {"1m"}, "target_agents.type": {"all"},
		})
		expectStatus(t, p, http.StatusSeeOther)
		path := p.header.Get("Location")
		p = b.c.get(path+"/preview", "HX-Request", "true", "HX-Target", "preview-panel")
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "preview", p.body, "listen 5432;", "proxy_protocol on;", "proxy_timeout 300s;")
	})

	t.Run("ShowsViewersReadOnlyPages", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		ctx := context.Background()
		u := b.upstream(t, "api", "10.0.0.1:80")
		vh := b.vhost(t, "web", u.ID)
		st, err := b.vhosts.CreateStream(ctx, b.ws.ID, vhosts.StreamInput{Name: "tcp", ListenPort: 7000, UpstreamID: u.ID.String()})
		if err != nil {
			t.Fatal(err)
		}
		const email, password = "viewer@example.com", "viewer-password-123"
		if _, err := b.auth.CreateUser(ctx, auth.CreateUserParams{Email: email, Password: password}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.orgs.AddMember(ctx, orgs.AddMemberParams{OrgID: b.org.ID, Email: email, Role: "viewer"}); err != nil {
			t.Fatal(err)
		}
		c := newClient(t, b.baseURL)
		expectStatus(t, c.post("/login", c.loginForm(email, password, "/")), http.StatusSeeOther)
		for _, tc := range []struct{ path, want, notWant string }{
			{b.wsPath("/upstreams"), "api", `id="new-upstream"`},
			{"/upstreams/" + u.ID.String(), "10.0.0.1:80", `id="upstream-form"`},
			{b.wsPath("/virtual-hosts"), "web", `id="new-virtual-host"`},
			{"/virtual-hosts/" + vh.ID.String(), `id="preview-panel"`, `id="vhost-form"`},
			{"/streams/" + st.ID.String(), `id="preview-panel"`, `id="stream-form"`},
			{b.wsPath("/certificates"), "No certificates", `id="upload-certificate"`},
			{b.wsPath("/config/versions"), "current", "Roll back"},
			{b.wsPath("/config/versions/2"), `class="diff"`, "Roll back"},
		} {
			p := c.get(tc.path)
			expectStatus(t, p, http.StatusOK)
			mustContain(t, tc.path, p.body, tc.want)
			if strings.Contains(p.body, tc.notWant) {
				t.Errorf("%s shows %s to a viewer", tc.path, tc.notWant)
			}
		}
		for _, path := range []string{b.wsPath("/upstreams/new"), "/upstreams/" + u.ID.String() + "/delete", b.wsPath("/config/versions/1/rollback")} {
			expectStatus(t, c.get(path), http.StatusForbidden)
		}
	})

	t.Run("RequiresCSRFTokenOnConfigForms", func(t *testing.T) {
		t.Parallel()
		b := setupConfig(t)
		u := b.upstream(t, "api", "10.0.0.1:80")
		for _, path := range []string{b.wsPath("/upstreams"), "/upstreams/" + u.ID.String() + "/delete", b.wsPath("/config/versions/1/rollback")} {
			expectStatus(t, b.c.post(path, url.Values{"name": {"x"}}), http.StatusForbidden)
		}
		if _, err := b.ups.Get(context.Background(), u.ID); err != nil {
			t.Errorf("upstream after forged requests: %v", err)
		}
	})
}
