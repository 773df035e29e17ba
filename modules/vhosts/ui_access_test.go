package vhosts

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// webSession is an admin session of a signed-in user: its cookie and CSRF
// token.
type webSession struct{ cookie, csrf string }

func (e *env) webSession(t *testing.T, role string) webSession {
	t.Helper()
	cookie, csrf, err := e.base.Auth.Service().CreateWebSession(context.Background(), e.users[role].ID, "127.0.0.1", "test")
	if err != nil {
		t.Fatalf("web session of %s: %v", role, err)
	}
	return webSession{cookie: cookie, csrf: csrf}
}

// page sends an admin request with the session (no htmx); a non-nil form is
// posted with the session's CSRF token. It returns the status, body and
// Location header.
func (e *env) page(t *testing.T, s webSession, method, path string, form url.Values) (int, string, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		form.Set("_csrf", s.csrf)
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: s.cookie})
	resp := apptest.Do(t, e.app, req)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(raw), resp.Header.Get("Location")
}

// storedHashes are the basic-auth password hashes of host id as stored.
func (b *bundle) storedHashes(t *testing.T, id uuid.UUID) map[string]string {
	t.Helper()
	var r vhostRow
	if err := b.db.Take(&r, "id = ?", id).Error; err != nil {
		t.Fatalf("read virtual host row: %v", err)
	}
	_, hashes := r.virtualHost()
	return hashes
}

const (
	bobPassword   = "bob-secret-1"
	newPassword   = "fresh-pass-42"
	shortPassword = "short7!"
)

// TestUI_VhostFormAccess posts the virtual host form with access list rows,
// basic-auth users, a rate limit and custom directives: good input is stored
// as typed (passwords hashed, an empty password keeps the stored one, a
// ticked "remove" deletes the user); bad input is answered 422 with the
// service's message next to the right row, the typed values kept, and
// nothing stored. No page ever holds a password or its hash.
func TestUI_VhostFormAccess(t *testing.T) {
	e := newEnv(t)
	b := e.setup(t)
	op := e.webSession(t, "operator")

	type check func(t *testing.T, vh VirtualHost, hashes map[string]string)
	users := func(want ...string) check {
		return func(t *testing.T, vh VirtualHost, _ map[string]string) {
			var got []string
			if vh.AccessList != nil {
				for _, u := range vh.AccessList.BasicAuthUsers {
					got = append(got, u.Username)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("basic-auth users = %v, want %v", got, want)
			}
		}
	}
	password := func(user, pw string) check {
		return func(t *testing.T, _ VirtualHost, hashes map[string]string) {
			if err := bcrypt.CompareHashAndPassword([]byte(hashes[user]), []byte(pw)); err != nil {
				t.Errorf("password of %s is not %q: %v (hash %q)", user, pw, err, hashes[user])
			}
		}
	}

	cases := []struct {
		name string
		// set are the inputs typed over the host's current form; "" removes
		// an input.
		set map[string]string
		// field is the input the error is shown at, "" for a valid form.
		field string
		// kept is a typed value the failed form shows again.
		kept   string
		checks []check
		// preview are lines the host's rendered configuration holds after
		// the save.
		preview []string
	}{
		{name: "AllowAndDenyRows", set: map[string]string{
			"access_list.allow[0]": "10.0.0.0/8", "access_list.allow[4]": " 192.0.2.7 ", "access_list.allow[2]": "",
			"access_list.deny[1]": "10.1.0.0/16",
		}, checks: []check{func(t *testing.T, vh VirtualHost, _ map[string]string) {
			if vh.AccessList == nil || !reflect.DeepEqual(vh.AccessList.Allow, []string{"10.0.0.0/8", "192.0.2.7"}) ||
				!reflect.DeepEqual(vh.AccessList.Deny, []string{"10.1.0.0/16"}) {
				t.Errorf("access list = %+v", vh.AccessList)
			}
		}, users("bob")}, preview: []string{"deny 10.1.0.0/16;", "allow 10.0.0.0/8;", "allow 192.0.2.7;", "deny all;"}},
		{name: "NewUserWithPassword", set: map[string]string{
			"access_list.basic_auth_users[1].username": "alice", "access_list.basic_auth_users[1].password": newPassword,
			"access_list.realm": "Staff only",
		}, checks: []check{users("bob", "alice"), password("alice", newPassword), password("bob", bobPassword),
			func(t *testing.T, vh VirtualHost, _ map[string]string) {
				if vh.AccessList.Realm != "Staff only" {
					t.Errorf("realm = %q", vh.AccessList.Realm)
				}
			}}, preview: []string{"auth_basic &#34;Staff only&#34;;", "auth_basic_user_file "}},
		{name: "EmptyPasswordKeepsTheStoredOne", set: map[string]string{
			"access_list.basic_auth_users[0].password": "", "access_list.allow[0]": "192.0.2.0/24",
		}, checks: []check{users("bob"), password("bob", bobPassword)}},
		{name: "NewPasswordReplacesTheStoredOne", set: map[string]string{
			"access_list.basic_auth_users[0].password": newPassword,
		}, checks: []check{users("bob"), password("bob", newPassword)}},
		{name: "RemoveDeletesTheUser", set: map[string]string{
			"access_list.basic_auth_users[0].remove": "true",
		}, checks: []check{func(t *testing.T, vh VirtualHost, hashes map[string]string) {
			if vh.AccessList != nil || len(hashes) != 0 {
				t.Errorf("access list = %+v, hashes %v: want none", vh.AccessList, hashes)
			}
		}}},
		{name: "RateLimit", set: map[string]string{"rate_limit.requests_per_second": "10", "rate_limit.burst": "20"},
			checks: []check{func(t *testing.T, vh VirtualHost, _ map[string]string) {
				if vh.RateLimit == nil || *vh.RateLimit != (RateLimit{RequestsPerSecond: 10, Burst: 20}) {
					t.Errorf("rate limit = %+v", vh.RateLimit)
				}
			}}, preview: []string{"rate=10r/s", "burst=20"}},
		{name: "CustomDirectives", set: map[string]string{
			"custom_directives.gzip": "on", "custom_directives.client_body_timeout": " 30s ", "custom_directives.proxy_buffers": "8 16k",
			"custom_directives.access_log": "off", "custom_directives.proxy_http_version": "1.1",
			// Not allowlisted: never read.
			"custom_directives.include": "/etc/passwd",
		}, checks: []check{func(t *testing.T, vh VirtualHost, _ map[string]string) {
			want := map[string]string{"gzip": "on", "client_body_timeout": "30s", "proxy_buffers": "8 16k", "access_log": "off", "proxy_http_version": "1.1"}
			if !reflect.DeepEqual(vh.CustomDirectives, want) {
				t.Errorf("custom directives = %v, want %v", vh.CustomDirectives, want)
			}
		}}, preview: []string{"gzip on;", "client_body_timeout 30s;", "proxy_buffers 8 16k;"}},

		{name: "AllowWithHostBits", set: map[string]string{"access_list.allow[0]": "10.0.0.0/8", "access_list.allow[3]": "10.0.0.1/8"},
			field: "access_list.allow[1]", kept: `value="10.0.0.1/8"`},
		{name: "DenyNotAnAddress", set: map[string]string{"access_list.deny[0]": "example.com"},
			field: "access_list.deny[0]", kept: `value="example.com"`},
		{name: "NewUserWithoutPassword", set: map[string]string{"access_list.basic_auth_users[1].username": "carol"},
			field: "access_list.basic_auth_users[1].password", kept: `value="carol"`},
		{name: "ShortPassword", set: map[string]string{
			"access_list.basic_auth_users[1].username": "carol", "access_list.basic_auth_users[1].password": shortPassword,
		}, field: "access_list.basic_auth_users[1].password", kept: `value="carol"`},
		{name: "BadUsername", set: map[string]string{
			"access_list.basic_auth_users[1].username": "car ol", "access_list.basic_auth_users[1].password": newPassword,
		}, field: "access_list.basic_auth_users[1].username", kept: `value="car ol"`},
		{name: "ErrorAfterARemovedUserIsAtItsRow", set: map[string]string{
			"access_list.basic_auth_users[0].remove":   "true",
			"access_list.basic_auth_users[1].username": "dave", "access_list.basic_auth_users[1].password": shortPassword,
		}, field: "access_list.basic_auth_users[1].password", kept: `value="dave"`},
		{name: "DuplicateUser", set: map[string]string{
			"access_list.basic_auth_users[1].username": "bob", "access_list.basic_auth_users[1].password": newPassword,
		}, field: "access_list.basic_auth_users[1].username"},
		{name: "RealmOff", set: map[string]string{"access_list.realm": "off"}, field: "access_list.realm", kept: `value="off"`},
		{name: "RateZero", set: map[string]string{"rate_limit.requests_per_second": "0"}, field: "rate_limit.requests_per_second", kept: `value="0"`},
		{name: "RateNotANumber", set: map[string]string{"rate_limit.requests_per_second": "fast"}, field: "rate_limit.requests_per_second", kept: `value="fast"`},
		{name: "BurstWithoutRate", set: map[string]string{"rate_limit.burst": "5"}, field: "rate_limit.requests_per_second", kept: `value="5"`},
		{name: "NegativeBurst", set: map[string]string{"rate_limit.requests_per_second": "5", "rate_limit.burst": "-1"}, field: "rate_limit.burst", kept: `value="-1"`},
		{name: "DirectiveBadValue", set: map[string]string{"custom_directives.gzip": "maybe"}, field: "custom_directives.gzip"},
		{name: "DirectiveOutOfRange", set: map[string]string{"custom_directives.gzip_comp_level": "12"}, field: "custom_directives.gzip_comp_level", kept: `value="12"`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vh, err := b.svc.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
				Name: "access-" + tc.name, ServerName: "h" + uuid.NewString()[:8] + ".example.test",
				Locations:  []Location{{Path: "/", ProxyPass: "http://127.0.0.1:8080"}},
				AccessList: &AccessList{BasicAuthUsers: []BasicAuthUser{{Username: "bob", Password: bobPassword}}},
			})
			if err != nil {
				t.Fatalf("create host %d: %v", i, err)
			}
			hashesBefore := b.storedHashes(t, vh.ID)
			versionBefore := b.version(t)

			form := url.Values{}
			for k, v := range vhostFormOf(vh).values() {
				form.Set(k, v)
			}
			for k, v := range tc.set {
				form.Set(k, v)
			}
			status, body, location := e.page(t, op, http.MethodPost, uiVhostPath(vh.ID), form)
			noSecrets(t, body, hashesBefore)
			after, err := b.svc.GetVirtualHost(b.ctx, vh.ID)
			if err != nil {
				t.Fatal(err)
			}
			hashes := b.storedHashes(t, vh.ID)

			if tc.field != "" {
				if status != http.StatusUnprocessableEntity {
					t.Fatalf("status %d, want 422; body %.2000s", status, body)
				}
				if !strings.Contains(body, `id="f-`+tc.field+`-error"`) {
					t.Errorf("no message at %s in the form:\n%s", tc.field, formSection(body))
				}
				if tc.kept != "" && !strings.Contains(body, tc.kept) {
					t.Errorf("the form lost the typed %s", tc.kept)
				}
				if !reflect.DeepEqual(after, vh) || !reflect.DeepEqual(hashes, hashesBefore) || b.version(t) != versionBefore {
					t.Errorf("a refused form changed the host: %+v → %+v", vh, after)
				}
				return
			}
			if status != http.StatusSeeOther || location != uiVhostPath(vh.ID) {
				t.Fatalf("status %d (Location %q), want 303 to the host; body %.3000s", status, location, formSection(body))
			}
			for _, c := range tc.checks {
				c(t, after, hashes)
			}
			// The saved host's page and preview show its settings and no
			// secret.
			_, show, _ := e.page(t, op, http.MethodGet, uiVhostPath(vh.ID), nil)
			noSecrets(t, show, hashes)
			_, preview, _ := e.page(t, op, http.MethodGet, uiVhostPath(vh.ID)+"/preview", nil)
			noSecrets(t, preview, hashes)
			for _, want := range tc.preview {
				if !strings.Contains(preview, want) {
					t.Errorf("the preview lacks %q:\n%s", want, preview)
				}
			}
		})
	}

	t.Run("CreateFormWithAccessSettings", func(t *testing.T) {
		form := url.Values{
			"name": {"created-with-access"}, "server_name": {"created.example.test"}, "target_agents.type": {"all"},
			"locations[0].path": {"/"}, "locations[0].match": {"prefix"}, "locations[0].target": {"proxy"},
			"locations[0].proxy_pass": {"http://127.0.0.1:9000"},
			"access_list.allow[0]":    {"203.0.113.0/24"}, "access_list.deny[0]": {"203.0.113.9"},
			"access_list.basic_auth_users[0].username": {"erin"}, "access_list.basic_auth_users[0].password": {newPassword},
			"rate_limit.requests_per_second": {"50"}, "custom_directives.server_tokens": {"off"},
		}
		status, body, location := e.page(t, op, http.MethodPost, "/workspaces/"+b.ws.String()+"/virtual-hosts", form)
		if status != http.StatusSeeOther || !strings.HasPrefix(location, "/virtual-hosts/") {
			t.Fatalf("status %d (Location %q); body %.3000s", status, location, formSection(body))
		}
		id := uuid.MustParse(strings.TrimPrefix(location, "/virtual-hosts/"))
		vh, err := b.svc.GetVirtualHost(b.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		hashes := b.storedHashes(t, id)
		users("erin")(t, vh, hashes)
		password("erin", newPassword)(t, vh, hashes)
		if !reflect.DeepEqual(vh.AccessList.Allow, []string{"203.0.113.0/24"}) || !reflect.DeepEqual(vh.AccessList.Deny, []string{"203.0.113.9"}) ||
			vh.RateLimit == nil || vh.RateLimit.RequestsPerSecond != 50 || vh.CustomDirectives["server_tokens"] != "off" {
			t.Errorf("stored %+v %+v %v", vh.AccessList, vh.RateLimit, vh.CustomDirectives)
		}
		_, show, _ := e.page(t, op, http.MethodGet, location, nil)
		noSecrets(t, show, hashes)
		for _, want := range []string{`value="203.0.113.0/24"`, `value="erin"`, `name="access_list.basic_auth_users[0].password"`} {
			if !strings.Contains(show, want) {
				t.Errorf("the host's form lacks %s", want)
			}
		}
	})

	t.Run("AddRowStepsStoreNothing", func(t *testing.T) {
		vh, err := b.svc.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
			Name: "access-steps", ServerName: "steps.example.test",
			Locations: []Location{{Path: "/", ProxyPass: "http://127.0.0.1:8080"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ op, typed, newRow, beyond string }{
			// Typed rows, the added row and the spare empty ones.
			{stepAddAllow, "access_list.allow[0]", `name="access_list.allow[3]"`, `name="access_list.allow[4]"`},
			{stepAddDeny, "access_list.deny[0]", `name="access_list.deny[3]"`, `name="access_list.deny[4]"`},
			{stepAddUser, "access_list.basic_auth_users[0].username", `name="access_list.basic_auth_users[2].username"`, `name="access_list.basic_auth_users[3].username"`},
		} {
			form := url.Values{}
			for k, v := range vhostFormOf(vh).values() {
				form.Set(k, v)
			}
			form.Set(tc.typed, "192.0.2.1")
			form.Set("_op", tc.op)
			status, body, _ := e.page(t, op, http.MethodPost, uiVhostPath(vh.ID), form)
			if status != http.StatusOK || !strings.Contains(body, tc.newRow) || !strings.Contains(body, `value="192.0.2.1"`) {
				t.Errorf("%s: status %d, want 200 with the typed row and %s", tc.op, status, tc.newRow)
			}
			if strings.Contains(body, tc.beyond) {
				t.Errorf("%s: more than one row added", tc.op)
			}
		}
		after, err := b.svc.GetVirtualHost(b.ctx, vh.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(after, vh) {
			t.Errorf("an editor step saved the host: %+v", after)
		}
	})

	t.Run("ViewerSeesTheSettingsReadOnly", func(t *testing.T) {
		rl := RateLimit{RequestsPerSecond: 7, Burst: 3}
		vh, err := b.svc.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
			Name: "access-viewer", ServerName: "viewer.example.test",
			Locations:  []Location{{Path: "/", ProxyPass: "http://127.0.0.1:8080"}},
			AccessList: &AccessList{Deny: []string{"198.51.100.0/24"}, BasicAuthUsers: []BasicAuthUser{{Username: "bob", Password: bobPassword}}},
			RateLimit:  &rl, CustomDirectives: map[string]string{"etag": "off"},
		})
		if err != nil {
			t.Fatal(err)
		}
		status, body, _ := e.page(t, e.webSession(t, "viewer"), http.MethodGet, uiVhostPath(vh.ID), nil)
		if status != http.StatusOK || strings.Contains(body, `id="vhost-form"`) {
			t.Fatalf("status %d; the viewer gets the form: %v", status, strings.Contains(body, `id="vhost-form"`))
		}
		for _, want := range []string{"<code>198.51.100.0/24</code>", "<code>bob</code>", "7 requests per second, burst 3", "<code>etag off;</code>"} {
			if !strings.Contains(body, want) {
				t.Errorf("the read-only page lacks %s", want)
			}
		}
		noSecrets(t, body, b.storedHashes(t, vh.ID))
	})

	t.Run("FailedCreateShowsNoPassword", func(t *testing.T) {
		form := url.Values{
			"name": {"refused"}, "server_name": {"refused.example.test"}, "target_agents.type": {"all"},
			"locations[0].path": {"/"}, "locations[0].match": {"prefix"}, "locations[0].target": {"proxy"},
			"locations[0].proxy_pass":                  {"http://127.0.0.1:9000"},
			"access_list.basic_auth_users[0].username": {"frank"}, "access_list.basic_auth_users[0].password": {newPassword},
			"access_list.deny[0]": {"300.1.1.1"},
		}
		status, body, _ := e.page(t, op, http.MethodPost, "/workspaces/"+b.ws.String()+"/virtual-hosts", form)
		if status != http.StatusUnprocessableEntity || !strings.Contains(body, `id="f-access_list.deny[0]-error"`) {
			t.Fatalf("status %d; form %s", status, formSection(body))
		}
		noSecrets(t, body, nil)
		if !strings.Contains(body, "Type the password again") {
			t.Error("the failed form does not ask to type the password again")
		}
		list, _, err := b.svc.ListVirtualHosts(b.ctx, b.ws, app.Page{Page: 1, PerPage: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range list {
			if v.Name == "refused" {
				t.Error("a refused create stored the host")
			}
		}
	})
}

// noSecrets fails if html holds any test password or any of hashes.
func noSecrets(t *testing.T, html string, hashes map[string]string) {
	t.Helper()
	for _, pw := range []string{bobPassword, newPassword, shortPassword} {
		if strings.Contains(html, pw) {
			t.Errorf("the page holds the password %q", pw)
		}
	}
	for user, h := range hashes {
		if h != "" && strings.Contains(html, h) {
			t.Errorf("the page holds the password hash of %s", user)
		}
	}
	if strings.Contains(html, "$2y$") || strings.Contains(html, "$2a$") {
		t.Error("the page holds a bcrypt hash")
	}
}

// formSection is the virtual host form of a page, for failure messages.
func formSection(body string) string {
	if i := strings.Index(body, `<form id="vhost-form"`); i >= 0 {
		body = body[i:]
	}
	if len(body) > 6000 {
		body = body[:6000]
	}
	return body
}

// TestUI_DirectiveInputs: the form has one input per allowlisted custom
// directive, a select for those whose values are keywords.
func TestUI_DirectiveInputs(t *testing.T) {
	t.Parallel()
	inputs := map[string][]string{}
	for _, d := range directiveInputs() {
		var opts []string
		for _, o := range d.Options {
			opts = append(opts, o.Value)
		}
		inputs[d.Name] = opts
	}
	if len(inputs) != len(CustomDirectives) {
		t.Errorf("%d inputs for %d allowlisted directives", len(inputs), len(CustomDirectives))
	}
	for name, want := range map[string][]string{
		"gzip":                {"", "on", "off"},
		"access_log":          {"", "off"},
		"proxy_http_version":  {"", "1.0", "1.1"},
		"expires":             nil,
		"gzip_comp_level":     nil,
		"client_body_timeout": nil,
	} {
		got, ok := inputs[name]
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: options %q (present %v), want %q", name, got, ok, want)
		}
	}
}
