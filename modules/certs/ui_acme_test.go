package certs_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// uiClient is a signed-in admin session of one of the bundle's users.
type uiClient struct {
	b       *bundle
	session string
	csrf    string
	// secrets must appear in no response.
	secrets []string
}

func (b *bundle) browser(t *testing.T, name string, secrets ...string) *uiClient {
	t.Helper()
	var ids []uuid.UUID
	if err := b.app.Deps.DB.Table("users").Where("email = ?", name+"@example.test").Pluck("id", &ids).Error; err != nil || len(ids) != 1 {
		t.Fatalf("user %s: %v %v", name, ids, err)
	}
	tok, csrf, err := auth.NewService(b.app.Deps, auth.Options{}).CreateWebSession(context.Background(), ids[0], "127.0.0.1", "test")
	if err != nil {
		t.Fatalf("web session for %s: %v", name, err)
	}
	return &uiClient{b: b, session: tok, csrf: csrf, secrets: secrets}
}

type uiResponse struct {
	status int
	body   string
	header http.Header
}

// do sends an admin request; form (may be nil) is posted with the CSRF
// token; headers are name, value pairs. No response may hold a secret.
func (u *uiClient) do(t *testing.T, method, path string, form url.Values, headers ...string) uiResponse {
	t.Helper()
	var body io.Reader
	if form != nil {
		form.Set("_csrf", u.csrf)
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: u.session})
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp := apptest.Do(t, u.b.app, req)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := uiResponse{status: resp.StatusCode, body: string(raw), header: resp.Header}
	for _, s := range u.secrets {
		if strings.Contains(r.body, s) || strings.Contains(resp.Header.Get("Location"), s) {
			t.Errorf("%s %s: the response holds the secret %q", method, path, s)
		}
	}
	return r
}

func (r uiResponse) expect(t *testing.T, status int, contains ...string) uiResponse {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %.3000s", r.status, status, r.body)
	}
	for _, s := range contains {
		if !strings.Contains(r.body, s) {
			t.Fatalf("body does not contain %q: %.6000s", s, r.body)
		}
	}
	return r
}

// lacks fails when the page's content (the navigation aside) holds one of
// absent.
func (r uiResponse) lacks(t *testing.T, absent ...string) {
	t.Helper()
	content := r.body
	if i := strings.Index(content, "<main"); i >= 0 {
		content = content[i:]
	}
	for _, s := range absent {
		if strings.Contains(content, s) {
			t.Errorf("body contains %q: %.4000s", s, r.body)
		}
	}
}

// follow loads the page a form redirected to, with the flash message it set.
func (u *uiClient) follow(t *testing.T, r uiResponse) uiResponse {
	t.Helper()
	if r.status != http.StatusSeeOther {
		t.Fatalf("status %d, want 303; body %.3000s", r.status, r.body)
	}
	var flash string
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "nxmesh_flash" {
			flash = c.Name + "=" + c.Value
		}
	}
	if flash == "" {
		t.Fatal("no flash message set")
	}
	return u.do(t, http.MethodGet, r.header.Get("Location"), nil, "Cookie", auth.SessionCookie+"="+u.session+"; "+flash)
}

// acmeRow is what the tests read of a requested certificate.
type acmeRow struct {
	ID                uuid.UUID
	Domain            string
	Name              string
	Provider          string
	Status            string
	AutoRenew         bool
	Challenge         string
	KeyType           string
	Profile           string
	DNSProvider       string
	DNSCredentialKeys string
	SAN               string
}

func (b *bundle) acmeRow(t *testing.T, where string, args ...any) (acmeRow, bool) {
	t.Helper()
	var rows []acmeRow
	if err := b.app.Deps.DB.Table("certificates").
		Select("id, domain, name, provider, status, auto_renew, challenge, key_type, profile, dns_provider, dns_credential_keys::text AS dns_credential_keys, san::text AS san").
		Where(where, args...).Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		return acmeRow{}, false
	}
	return rows[0], true
}

func TestUI_RequestCertificate(t *testing.T) {
	b := setup(t)
	const token, zoneToken = "cf-dns-token-7c1e9b", "cf-zone-token-40aa2d"
	op := b.browser(t, "operator", token, zoneToken)
	ws := b.ws.String()
	form := "/workspaces/" + ws + "/certificates/request"

	t.Run("ListOffersTheForm", func(t *testing.T) {
		op.do(t, http.MethodGet, "/workspaces/"+ws+"/certificates", nil).expect(t, http.StatusOK, `href="`+form+`"`, `id="request-certificate"`)
		op.do(t, http.MethodGet, form, nil).expect(t, http.StatusOK,
			`name="domain"`, `name="san"`, `name="provider"`, `name="challenge"`, `name="dns_provider"`, `name="key_type"`,
			`name="profile"`, `name="auto_renew"`, `name="dns_extra[0].name"`, `value="cloudflare"`, `value="httpreq"`, `value="rfc2136"`)
	})

	t.Run("HTTP01SubmitStoresPendingRow", func(t *testing.T) {
		r := op.do(t, http.MethodPost, form, url.Values{
			"domain": {"api.example.com"}, "san": {"www.example.com\nstatic.example.com, api.example.com"}, "provider": {"letsencrypt_staging"},
			"challenge": {"http-01"}, "dns_provider": {""}, "key_type": {"ec384"}, "profile": {"shortlived"}, "name": {"Public API"},
			"auto_renew": {"true"}, "dns_extra[0].name": {""}, "dns_extra[0].value": {""},
		})
		row, ok := b.acmeRow(t, "workspace_id = ? AND domain = ?", b.ws, "api.example.com")
		if !ok {
			t.Fatalf("no row stored; response %d %.3000s", r.status, r.body)
		}
		if row.Status != "pending" || row.Provider != "letsencrypt_staging" || row.Challenge != "http-01" || row.KeyType != "ec384" ||
			row.Profile != "shortlived" || row.Name != "Public API" || !row.AutoRenew ||
			row.SAN != `["api.example.com", "www.example.com", "static.example.com"]` {
			t.Fatalf("stored %+v", row)
		}
		if loc := r.header.Get("Location"); loc != "/certificates/"+row.ID.String() {
			t.Fatalf("redirect to %q", loc)
		}
		page := op.follow(t, r).expect(t, http.StatusOK, "Certificate for api.example.com requested", "Pending",
			`id="certificate-pending"`, `hx-get="/certificates/`+row.ID.String()+`/live"`, `hx-trigger="sse:initial, sse:update, every 10s"`,
			`hx-ext="sse"`, `sse-connect="/v1/events/stream?events=certificate.%2A&amp;workspace_id=`, "No attempt yet.",
			"http-01", "ec384", "shortlived")
		// A pending certificate cannot be renewed yet; the settings form is there.
		page.lacks(t, "/renew")
		page.expect(t, http.StatusOK, `action="/certificates/`+row.ID.String()+`"`, `name="auto_renew"`)

		live := op.do(t, http.MethodGet, "/certificates/"+row.ID.String()+"/live", nil, "HX-Request", "true")
		live.expect(t, http.StatusOK, `id="certificate-live"`, "sse:update")
		live.lacks(t, "<html", `name="_csrf"`)
		if live.header.Get("HX-Refresh") != "" {
			t.Fatal("a pending certificate's block reloads the page")
		}
	})

	t.Run("DNS01CredentialsAreStoredNotShown", func(t *testing.T) {
		r := op.do(t, http.MethodPost, form, url.Values{
			"domain": {"*.dns.example.com"}, "provider": {"letsencrypt"}, "challenge": {"dns-01"}, "dns_provider": {"cloudflare"},
			"key_type": {"ec256"}, "dns_credentials.CLOUDFLARE_DNS_API_TOKEN": {token},
			"dns_extra[3].name": {"CLOUDFLARE_ZONE_API_TOKEN"}, "dns_extra[3].value": {zoneToken},
		})
		row, ok := b.acmeRow(t, "workspace_id = ? AND domain = ?", b.ws, "*.dns.example.com")
		if !ok {
			t.Fatalf("no row stored; response %d %.3000s", r.status, r.body)
		}
		if row.DNSProvider != "cloudflare" || row.DNSCredentialKeys != `["CLOUDFLARE_DNS_API_TOKEN", "CLOUDFLARE_ZONE_API_TOKEN"]` || row.AutoRenew {
			t.Fatalf("stored %+v", row)
		}
		if n := b.countRows(t, "certificates", "id = ? AND dns_credentials_sealed IS NOT NULL AND position(? in encode(dns_credentials_sealed, 'escape')) = 0", row.ID, token); n != 1 {
			t.Fatalf("credentials not sealed (%d)", n)
		}
		op.follow(t, r).expect(t, http.StatusOK, "cloudflare", `id="certificate-credential-keys"`,
			"<code>CLOUDFLARE_DNS_API_TOKEN</code>", "<code>CLOUDFLARE_ZONE_API_TOKEN</code>", "values are never shown")
		op.do(t, http.MethodGet, "/workspaces/"+ws+"/certificates", nil).expect(t, http.StatusOK, "*.dns.example.com")
		for _, s := range []string{token, zoneToken} {
			if n := b.countRows(t, "audit_log", "coalesce(after::text, '') || coalesce(before::text, '') LIKE ?", "%"+s+"%"); n != 0 {
				t.Errorf("%d audit rows hold a credential", n)
			}
			if strings.Contains(b.logs.String(), s) {
				t.Error("the log holds a credential")
			}
		}
	})

	t.Run("ValidationErrorsNameTheField", func(t *testing.T) {
		before := b.countRows(t, "certificates", "workspace_id = ?", b.ws)
		for _, tc := range []struct {
			name  string
			form  url.Values
			field string
			keep  []string
		}{
			{"Domain", url.Values{"domain": {"not a name"}, "provider": {"letsencrypt"}, "challenge": {"http-01"}, "name": {"kept label"}},
				"domain", []string{`value="not a name"`, `value="kept label"`}},
			{"SAN", url.Values{"domain": {"ok.example.com"}, "san": {"good.example.com\nbad_name"}, "provider": {"letsencrypt"}, "challenge": {"http-01"}},
				"san", []string{"(bad_name)"}},
			{"Provider", url.Values{"domain": {"ok.example.com"}, "provider": {"nope"}, "challenge": {"http-01"}}, "provider", nil},
			{"WildcardNeedsDNS01", url.Values{"domain": {"*.example.com"}, "provider": {"letsencrypt"}, "challenge": {"http-01"}}, "challenge", nil},
			{"DNSProviderRequired", url.Values{"domain": {"*.example.com"}, "provider": {"letsencrypt"}, "challenge": {"dns-01"}}, "dns_provider", nil},
			{"RequiredSetting", url.Values{"domain": {"*.example.com"}, "provider": {"letsencrypt"}, "challenge": {"dns-01"}, "dns_provider": {"httpreq"},
				"dns_credentials.HTTPREQ_USERNAME": {"kept-user"}, "dns_credentials.HTTPREQ_PASSWORD": {token}},
				"dns_credentials.HTTPREQ_ENDPOINT", []string{`value="kept-user"`, "Enter the secret DNS settings again"}},
			{"UnknownSettingAtItsRow", url.Values{"domain": {"*.example.com"}, "provider": {"letsencrypt"}, "challenge": {"dns-01"}, "dns_provider": {"cloudflare"},
				"dns_credentials.CLOUDFLARE_DNS_API_TOKEN": {token}, "dns_extra[0].name": {"NOT_A_SETTING"}, "dns_extra[0].value": {zoneToken}},
				"dns_extra[0].name", []string{`value="NOT_A_SETTING"`, "Enter the secret DNS settings again"}},
			{"ValueWithoutName", url.Values{"domain": {"*.example.com"}, "provider": {"letsencrypt"}, "challenge": {"dns-01"}, "dns_provider": {"cloudflare"},
				"dns_extra[0].name": {""}, "dns_extra[0].value": {zoneToken}}, "dns_extra[0].name", nil},
			{"KeyType", url.Values{"domain": {"ok.example.com"}, "provider": {"letsencrypt"}, "challenge": {"http-01"}, "key_type": {"dsa"}}, "key_type", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := op.do(t, http.MethodPost, form, tc.form)
				r.expect(t, http.StatusUnprocessableEntity, `id="f-`+tc.field+`-error"`, `aria-invalid="true"`)
				r.expect(t, http.StatusUnprocessableEntity, tc.keep...)
			})
		}
		if after := b.countRows(t, "certificates", "workspace_id = ?", b.ws); after != before {
			t.Fatalf("a failed request stored a row: %d → %d", before, after)
		}
	})

	t.Run("EditorSteps", func(t *testing.T) {
		// The DNS section for the chosen provider (htmx), and without JavaScript.
		frag := op.do(t, http.MethodPost, form+"/dns", url.Values{"dns_provider": {"httpreq"}, "domain": {"a.example.com"}}, "HX-Request", "true")
		frag.expect(t, http.StatusOK, `id="dns-section"`, `name="dns_credentials.HTTPREQ_ENDPOINT"`, `name="dns_credentials.HTTPREQ_PASSWORD"`, "HTTPREQ_ENDPOINT (required)")
		frag.lacks(t, "<html", "CLOUDFLARE_DNS_API_TOKEN")
		op.do(t, http.MethodPost, form, url.Values{"_op": {"dns-provider"}, "dns_provider": {"rfc2136"}, "domain": {"a.example.com"}}).
			expect(t, http.StatusOK, `name="dns_credentials.RFC2136_NAMESERVER"`, `value="a.example.com"`)
		// Add a row, and remove one.
		op.do(t, http.MethodGet, form+"/credential-row?index=4", nil, "HX-Request", "true").
			expect(t, http.StatusOK, `name="dns_extra[4].name"`, `hx-swap-oob="true"`, "credential-row?index=5")
		op.do(t, http.MethodPost, form, url.Values{"_op": {"add-credential"}, "dns_extra[0].name": {"A_SETTING"}}).
			expect(t, http.StatusOK, `value="A_SETTING"`, `name="dns_extra[1].name"`)
		rm := op.do(t, http.MethodPost, form+"/credentials", url.Values{"_op": {"remove:dns_extra[0]"},
			"dns_extra[0].name": {"GONE_SETTING"}, "dns_extra[2].name": {"KEPT_SETTING"}}, "HX-Request", "true")
		rm.expect(t, http.StatusOK, `id="credentials-editor"`, `value="KEPT_SETTING"`, `name="dns_extra[0].name"`)
		rm.lacks(t, "GONE_SETTING")
		op.do(t, http.MethodGet, form+"/credential-row?index=x", nil, "HX-Request", "true").expect(t, http.StatusUnprocessableEntity)
	})
}

func TestUI_CertificatePageActions(t *testing.T) {
	b := setup(t)
	owner, viewer := b.browser(t, "owner"), b.browser(t, "viewer")
	status, body := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+b.ws.String()+"/certificates",
		map[string]any{"domain": "shop.example.com", "provider": "letsencrypt", "auto_renew": true})
	if status != http.StatusAccepted {
		t.Fatalf("request: %d %s", status, body)
	}
	var c certJSON
	mustDecode(t, body, &c)
	page := "/certificates/" + c.ID
	// A failed issuance with its attempt, as the job leaves it.
	if err := b.app.Deps.DB.Exec(`UPDATE certificates SET status = 'failed', error = 'shop.example.com: the authority could not reach http://shop.example.com/.well-known/acme-challenge/' WHERE id = ?`, c.ID).Error; err != nil {
		t.Fatal(err)
	}
	if err := b.app.Deps.DB.Exec(`INSERT INTO certificate_attempts (certificate_id, kind, issuer, challenge, result, error, started_at, finished_at)
		VALUES (?, 'issue', 'letsencrypt', 'http-01', 'failure', 'connection refused by 203.0.113.7', now(), now())`, c.ID).Error; err != nil {
		t.Fatal(err)
	}
	leaf, key := b.pki.issue(t, leafSpec{cn: "up.example.com", dns: []string{"up.example.com"}}, false)
	uploaded := b.upload(t, b.ws, certsPEM(leaf, b.pki.inter), b.keyPEM(t, key))

	t.Run("OwnerSeesStatusErrorAttemptsAndButtons", func(t *testing.T) {
		r := owner.do(t, http.MethodGet, page, nil).expect(t, http.StatusOK, "Failed", `id="certificate-error"`,
			"the authority could not reach", `id="certificate-attempts"`, "connection refused by 203.0.113.7",
			`action="`+page+`/renew"`, "Retry issuance now", `action="`+page+`"`, `name="auto_renew"`, `name="name"`)
		r.lacks(t, `hx-trigger="sse:initial`, `sse-connect=`)
		// A poll that finds issuance over reloads the page.
		live := owner.do(t, http.MethodGet, page+"/live", nil, "HX-Request", "true").expect(t, http.StatusOK, `id="certificate-live"`)
		if live.header.Get("HX-Refresh") != "true" {
			t.Fatalf("HX-Refresh = %q", live.header.Get("HX-Refresh"))
		}
	})

	t.Run("ViewerSeesNoButtonAndIsRefused", func(t *testing.T) {
		r := viewer.do(t, http.MethodGet, page, nil).expect(t, http.StatusOK, "Failed", "connection refused by 203.0.113.7")
		r.lacks(t, `method="post"`, "/renew", "/delete", `name="auto_renew"`)
		for _, path := range []string{page, page + "/renew", "/workspaces/" + b.ws.String() + "/certificates/request"} {
			viewer.do(t, http.MethodPost, path, url.Values{"name": {"x"}, "domain": {"v.example.com"}, "provider": {"letsencrypt"}}).
				expect(t, http.StatusForbidden)
		}
		viewer.do(t, http.MethodGet, "/workspaces/"+b.ws.String()+"/certificates/request", nil).expect(t, http.StatusForbidden)
		list := viewer.do(t, http.MethodGet, "/workspaces/"+b.ws.String()+"/certificates", nil).expect(t, http.StatusOK, "shop.example.com")
		list.lacks(t, "/certificates/request")
		if row, _ := b.acmeRow(t, "id = ?", c.ID); row.Name != "shop.example.com" || !row.AutoRenew {
			t.Fatalf("the viewer changed the certificate: %+v", row)
		}
	})

	t.Run("RenameAndAutoRenew", func(t *testing.T) {
		r := owner.do(t, http.MethodPost, page, url.Values{"name": {"Shop front"}})
		owner.follow(t, r).expect(t, http.StatusOK, `Certificate &#34;Shop front&#34; saved.`)
		if row, _ := b.acmeRow(t, "id = ?", c.ID); row.Name != "Shop front" || row.AutoRenew {
			t.Fatalf("after saving without auto-renew: %+v", row)
		}
		owner.do(t, http.MethodPost, page, url.Values{"name": {"Shop front"}, "auto_renew": {"true"}}).expect(t, http.StatusSeeOther)
		if row, _ := b.acmeRow(t, "id = ?", c.ID); !row.AutoRenew {
			t.Fatalf("auto-renew not switched on: %+v", row)
		}
		long := strings.Repeat("n", 300)
		owner.do(t, http.MethodPost, page, url.Values{"name": {long}}).expect(t, http.StatusUnprocessableEntity, `id="f-name-error"`)
		// An uploaded certificate is renamed; it has no auto-renewal to switch.
		up := "/certificates/" + uploaded.ID
		owner.do(t, http.MethodGet, up, nil).lacks(t, `name="auto_renew"`, "/renew")
		owner.do(t, http.MethodPost, up, url.Values{"name": {"Uploaded one"}}).expect(t, http.StatusSeeOther)
		if row, _ := b.acmeRow(t, "id = ?", uploaded.ID); row.Name != "Uploaded one" || row.AutoRenew {
			t.Fatalf("uploaded after rename: %+v", row)
		}
	})

	t.Run("RenewNow", func(t *testing.T) {
		// The job of the failed issuance has finished.
		if err := b.app.Deps.DB.Exec(`DELETE FROM river_job WHERE args->>'certificate_id' = ?`, c.ID).Error; err != nil {
			t.Fatal(err)
		}
		jobs := b.countRows(t, "river_job", "args->>'certificate_id' = ?", c.ID)
		r := owner.do(t, http.MethodPost, page+"/renew", url.Values{})
		owner.follow(t, r).expect(t, http.StatusOK, "requested; it runs in the background")
		if n := b.countRows(t, "river_job", "args->>'certificate_id' = ?", c.ID); n <= jobs {
			t.Fatalf("no job enqueued: %d → %d", jobs, n)
		}
		// An uploaded certificate is not renewed by the master: the flash says so.
		r = owner.do(t, http.MethodPost, "/certificates/"+uploaded.ID+"/renew", url.Values{})
		owner.follow(t, r).expect(t, http.StatusOK, "uploaded certificates are not renewed by the master")
	})
}

func TestUI_ACMESettings(t *testing.T) {
	b := setup(t)
	const hmac = "eab-hmac-secret-5be1f0a9"
	owner := b.browser(t, "owner", hmac)
	operator := b.browser(t, "operator", hmac)
	page := "/orgs/" + b.orgID.String() + "/acme-settings"

	t.Run("LinkedFromTheOrganization", func(t *testing.T) {
		owner.do(t, http.MethodGet, "/orgs/"+b.orgID.String()+"/members", nil).expect(t, http.StatusOK, `href="`+page+`"`)
		owner.do(t, http.MethodGet, page, nil).expect(t, http.StatusOK, `name="email"`, `name="eab_kid"`, `name="eab_hmac"`,
			`name="directory_url"`, `name="fallback[0]"`, "HMAC not set")
	})

	t.Run("SaveKeepsTheHMACWriteOnly", func(t *testing.T) {
		r := owner.do(t, http.MethodPost, page, url.Values{"email": {"ops@example.com"}, "eab_kid": {"kid-1"}, "eab_hmac": {hmac},
			"directory_url": {"https://acme.example.com/directory"}, "fallback[0]": {""}, "fallback[1]": {"zerossl"}, "fallback[2]": {"letsencrypt"}})
		owner.follow(t, r).expect(t, http.StatusOK, "ACME settings saved.", `value="ops@example.com"`, `value="kid-1"`, "HMAC set",
			`value="https://acme.example.com/directory"`, "Remove the stored HMAC")
		st, err := b.svc.GetACMESettings(context.Background(), b.orgID)
		if err != nil {
			t.Fatal(err)
		}
		if st.Email != "ops@example.com" || st.EABKID != "kid-1" || !st.HasEABHMAC || strings.Join(st.Fallback, ",") != "zerossl,letsencrypt" {
			t.Fatalf("stored %+v", st)
		}
		// Saving without a new HMAC keeps it; the checkbox removes it.
		owner.do(t, http.MethodPost, page, url.Values{"email": {"ops@example.com"}, "eab_kid": {"kid-1"}}).expect(t, http.StatusSeeOther)
		if st, _ := b.svc.GetACMESettings(context.Background(), b.orgID); !st.HasEABHMAC || len(st.Fallback) != 0 {
			t.Fatalf("after a save without HMAC: %+v", st)
		}
		owner.do(t, http.MethodPost, page, url.Values{"eab_hmac_clear": {"true"}}).expect(t, http.StatusSeeOther)
		if st, _ := b.svc.GetACMESettings(context.Background(), b.orgID); st.HasEABHMAC {
			t.Fatalf("HMAC not removed: %+v", st)
		}
	})

	t.Run("ValidationErrorsNameTheField", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			form  url.Values
			field string
		}{
			{"Email", url.Values{"email": {"not-an-address"}, "eab_hmac": {hmac}}, "email"},
			{"DirectoryURL", url.Values{"directory_url": {"http://acme.example.com/directory"}}, "directory_url"},
			{"FallbackAtItsSelect", url.Values{"fallback[0]": {""}, "fallback[2]": {"bogus"}}, "fallback[2]"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				owner.do(t, http.MethodPost, page, tc.form).expect(t, http.StatusUnprocessableEntity, `id="f-`+tc.field+`-error"`)
			})
		}
		owner.do(t, http.MethodPost, page, url.Values{"email": {"bad"}, "eab_hmac": {hmac}}).
			expect(t, http.StatusUnprocessableEntity, `value="bad"`, "Enter the HMAC again")
	})

	t.Run("OperatorReadsOnlyAndIsRefused", func(t *testing.T) {
		r := operator.do(t, http.MethodGet, page, nil).expect(t, http.StatusOK, `id="acme-settings"`, `id="eab-hmac-state"`)
		r.lacks(t, `name="eab_hmac"`, `action="`+page+`"`)
		operator.do(t, http.MethodPost, page, url.Values{"email": {"x@example.com"}}).expect(t, http.StatusForbidden)
	})
}
