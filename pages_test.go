package main

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
)

// browser is a signed-in admin session, opened through the sign-in form.
type browser struct {
	m       *master
	session string
	csrf    string
}

type pageResponse struct {
	status  int
	body    string
	cookies map[string]string
}

// send sends an admin request with the browser's cookies; a non-nil form is
// posted as it is.
func (b *browser) send(t *testing.T, method, path string, form url.Values, cookies map[string]string) pageResponse {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for name, value := range cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	if b.session != "" {
		req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: b.session})
	}
	resp := apptest.Do(t, b.m.a, req)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := pageResponse{status: resp.StatusCode, body: string(raw), cookies: map[string]string{}}
	for _, c := range resp.Cookies() {
		out.cookies[c.Name] = c.Value
	}
	return out
}

var csrfInput = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)

// signIn opens an admin session for email through GET and POST /login, and
// reads the session's CSRF token from the first page.
func (m *master) signIn(t *testing.T, email, password string) *browser {
	t.Helper()
	b := &browser{m: m}
	login := b.send(t, http.MethodGet, "/login", nil, nil)
	tok := csrfInput.FindStringSubmatch(login.body)
	if login.status != http.StatusOK || tok == nil {
		t.Fatalf("sign-in page: status %d, no _csrf input: %.2000s", login.status, login.body)
	}
	form := url.Values{"email": {email}, "password": {password}, "_csrf": {html.UnescapeString(tok[1])}}
	r := b.send(t, http.MethodPost, "/login", form, login.cookies)
	if r.status != http.StatusSeeOther || r.cookies[auth.SessionCookie] == "" {
		t.Fatalf("sign in as %s: status %d, session cookie %q: %.2000s", email, r.status, r.cookies[auth.SessionCookie], r.body)
	}
	b.session = r.cookies[auth.SessionCookie]
	home := b.send(t, http.MethodGet, "/orgs", nil, nil)
	tok = csrfInput.FindStringSubmatch(home.body)
	if home.status != http.StatusOK || tok == nil {
		t.Fatalf("organizations page as %s: status %d, no _csrf input: %.2000s", email, home.status, home.body)
	}
	b.csrf = html.UnescapeString(tok[1])
	return b
}

// offer is a request a page lets the user make: a form's submission, an htmx
// request or a link.
type offer struct{ method, path string }

func (o offer) String() string { return o.method + " " + o.path }

var (
	formTag    = regexp.MustCompile(`(?is)<form\b[^>]*>`)
	attrValue  = func(name string) *regexp.Regexp { return regexp.MustCompile(`(?is)\s` + name + `="([^"]*)"`) }
	formAction = attrValue("action")
	formMethod = attrValue("method")
	htmxAttr   = regexp.MustCompile(`(?is)\shx-(get|post|put|patch|delete)="([^"]*)"`)
	buttonTo   = regexp.MustCompile(`(?is)\sformaction="([^"]*)"`)
	hrefAttr   = attrValue("href")
)

// offers returns every request the page's HTML can make.
func offers(page string) map[offer]bool {
	out := map[offer]bool{}
	add := func(method, target string) {
		target = html.UnescapeString(target)
		if i := strings.IndexAny(target, "?#"); i >= 0 {
			target = target[:i]
		}
		if strings.HasPrefix(target, "/") {
			out[offer{strings.ToUpper(method), target}] = true
		}
	}
	for _, tag := range formTag.FindAllString(page, -1) {
		method := http.MethodGet
		if mm := formMethod.FindStringSubmatch(tag); mm != nil {
			method = mm[1]
		}
		if a := formAction.FindStringSubmatch(tag); a != nil {
			add(method, a[1])
		}
	}
	for _, mm := range htmxAttr.FindAllStringSubmatch(page, -1) {
		add(mm[1], mm[2])
	}
	for _, mm := range buttonTo.FindAllStringSubmatch(page, -1) {
		add(http.MethodPost, mm[1])
	}
	for _, mm := range hrefAttr.FindAllStringSubmatch(page, -1) {
		add(http.MethodGet, mm[1])
	}
	return out
}

// routeOf returns the admin route serving o: of the routes whose pattern
// matches, the one with the most literal segments.
func routeOf(routes []app.Route, o offer) (app.Route, bool) {
	segs := strings.Split(o.path, "/")
	best, bestLiterals, found := app.Route{}, -1, false
	for _, r := range routes {
		if r.Kind != app.KindUI || r.Method != o.method {
			continue
		}
		pat := strings.Split(r.Path, "/")
		if len(pat) != len(segs) {
			continue
		}
		literals, ok := 0, true
		for i, p := range pat {
			switch {
			case strings.HasPrefix(p, ":"):
				ok = ok && segs[i] != ""
			case p == segs[i]:
				literals++
			default:
				ok = false
			}
		}
		if ok && literals > bestLiterals {
			best, bestLiterals, found = r, literals, true
		}
	}
	return best, found
}

// TestPages_OfferExactlyWhatTheRouteAccepts signs in as each role of an
// organization and loads pages of every module. A page must offer a change (a
// form, an htmx request or a link to a route that writes or deletes) exactly
// when the route of that change accepts the role: every change a page offers
// is allowed by the route's policy, and every change the owner's page offers
// is also offered to each role the route's policy allows. A change withheld
// from a role is refused with 403 when that role sends it anyway.
func TestPages_OfferExactlyWhatTheRouteAccepts(t *testing.T) {
	m := newMaster(t)
	p := m.people(t)
	f := m.fixture(t, p)
	routes := m.a.Routes()
	orgID := f.params["orgs/:id"]
	acmeCert := m.failedACMECertificate(t, f)

	// Each page, with changes its owner must be offered (so the comparison
	// cannot pass on pages that offer nothing).
	pages := []struct {
		page string
		must []offer
	}{
		{"/orgs/:org/workspaces", []offer{{"POST", "/orgs/:org/workspaces"}, {"POST", "/workspaces/:id/delete"}}},
		{"/orgs/:org/members", []offer{{"POST", "/orgs/:org/members"}, {"POST", "/orgs/:org/members/:user_id/remove"}}},
		{"/orgs/:org/api-keys", []offer{{"POST", "/orgs/:org/api-keys"}, {"POST", "/orgs/:org/api-keys/:key_id/revoke"}}},
		{"/workspaces/:id/upstreams", []offer{{"GET", "/workspaces/:id/upstreams/new"}}},
		{"/upstreams/:id", []offer{{"POST", "/upstreams/:id"}, {"GET", "/upstreams/:id/delete"}}},
		{"/workspaces/:id/certificates", []offer{{"GET", "/workspaces/:id/certificates/new"}, {"GET", "/workspaces/:id/certificates/request"}}},
		{"/certificates/:id", []offer{{"GET", "/certificates/:id/delete"}, {"POST", "/certificates/:id"}}},
		{"/certificates/" + acmeCert, []offer{{"POST", "/certificates/" + acmeCert}, {"POST", "/certificates/" + acmeCert + "/renew"}}},
		{"/orgs/:org/acme-settings", []offer{{"POST", "/orgs/:org/acme-settings"}}},
		{"/workspaces/:id/virtual-hosts", []offer{{"GET", "/workspaces/:id/virtual-hosts/new"}}},
		{"/virtual-hosts/:id", []offer{{"POST", "/virtual-hosts/:id"}, {"GET", "/virtual-hosts/:id/delete"}}},
		{"/workspaces/:id/streams", []offer{{"GET", "/workspaces/:id/streams/new"}}},
		{"/streams/:id", []offer{{"POST", "/streams/:id"}, {"GET", "/streams/:id/delete"}}},
		{"/workspaces/:id/config/versions/:version", []offer{{"GET", "/workspaces/:id/config/versions/:version/rollback"}}},
		{"/workspaces/:id/agents", []offer{{"POST", "/workspaces/:id/agents"}}},
		{"/agents/:id", []offer{{"POST", "/agents/:id"}, {"POST", "/agents/:id/reload"}, {"POST", "/agents/:id/delete"}}},
		{"/workspaces/:id/metrics", nil},
		{"/virtual-hosts/:id/metrics", nil},
		{"/agents/:id/metrics", nil},
		{"/streams/:id/metrics", []offer{{"POST", "/streams/:id/metrics/reset"}}},
		{"/orgs/:org/audit", nil},
		{"/account", nil},
	}
	roles := []string{authz.RoleOwner, authz.RoleAdmin, authz.RoleOperator, authz.RoleViewer}
	browsers := map[string]*browser{}
	for _, role := range roles {
		browsers[role] = m.signIn(t, p.users[role].Email, "password-"+role)
	}

	// changes are the offers of page that write or delete, with their routes.
	changes := func(t *testing.T, page string) map[offer]app.Route {
		out := map[offer]app.Route{}
		for o := range offers(page) {
			r, ok := routeOf(routes, o)
			if ok && r.Access.IsPermission() && r.Access.Action != authz.Read {
				out[o] = r
			}
		}
		return out
	}
	allowed := func(t *testing.T, role string, r app.Route) bool {
		ok, err := m.a.Deps.Authz.Allowed(role, orgID, r.Access.Object, r.Access.Action)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	checked := 0
	for _, pg := range pages {
		t.Run(strings.ReplaceAll(strings.Trim(pg.page, "/"), "/", "_"), func(t *testing.T) {
			path := f.path(t, pg.page)
			got := map[string]map[offer]app.Route{}
			for _, role := range roles {
				r := browsers[role].send(t, http.MethodGet, path, nil, nil)
				if r.status != http.StatusOK {
					t.Fatalf("%s as %s: status %d: %.2000s", path, role, r.status, r.body)
				}
				got[role] = changes(t, r.body)
			}
			owner := got[authz.RoleOwner]
			for _, role := range roles {
				t.Logf("%s offers %s: %v", path, role, sortedOffers(got[role]))
			}
			for _, must := range pg.must {
				o := offer{must.method, f.path(t, must.path)}
				if _, ok := owner[o]; !ok {
					t.Errorf("%s as owner does not offer %s; offers %v", path, o, sortedOffers(owner))
				}
			}
			for _, role := range roles {
				for o, r := range got[role] {
					checked++
					if !allowed(t, role, r) {
						t.Errorf("%s as %s offers %s, which the route refuses (%s/%s)", path, role, o, r.Access.Object, r.Access.Action)
					}
				}
				for o, r := range owner {
					_, offered := got[role][o]
					switch ok := allowed(t, role, r); {
					case ok && !offered:
						t.Errorf("%s as %s does not offer %s, which the route accepts (%s/%s)", path, role, o, r.Access.Object, r.Access.Action)
					case !ok:
						// Withheld: the route itself refuses the role.
						b := browsers[role]
						var form url.Values
						if o.method != http.MethodGet {
							form = url.Values{"_csrf": {b.csrf}}
						}
						if resp := b.send(t, o.method, o.path, form, nil); resp.status != http.StatusForbidden {
							t.Errorf("%s as %s: the withheld %s answered %d, want 403", path, role, o, resp.status)
						}
					}
				}
			}
		})
	}
	if checked == 0 {
		t.Fatal("no offered change was checked")
	}
}

// failedACMECertificate requests a DNS-01 certificate in the fixture's
// workspace and marks its issuance failed, as the job leaves it, so its page
// offers renewal; it returns the certificate's id.
func (m *master) failedACMECertificate(t *testing.T, f fixture) string {
	t.Helper()
	ws, err := uuid.Parse(f.params["workspaces/:id"])
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.mods.Certs.Service().Request(context.Background(), certs.RequestParams{
		WorkspaceID: ws, Domain: "*.acme.example.com", Provider: "letsencrypt", AutoRenew: true, Challenge: "dns-01",
		DNSProvider: "httpreq", DNSCredentials: map[string]string{"HTTPREQ_ENDPOINT": "https://dns.example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.a.Deps.DB.Exec("UPDATE certificates SET status = 'failed', error = 'the DNS provider refused the request' WHERE id = ?", c.ID).Error; err != nil {
		t.Fatal(err)
	}
	return c.ID.String()
}

func sortedOffers(m map[offer]app.Route) []string {
	out := make([]string, 0, len(m))
	for o := range m {
		out = append(out, o.String())
	}
	sort.Strings(out)
	return out
}
