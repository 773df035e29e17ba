package certs

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/views"
)

// The admin pages of ACME certificates and of an organization's ACME settings:
//
//	GET  /workspaces/:id/certificates/request                  the request form
//	POST /workspaces/:id/certificates/request                  request a certificate (form)
//	GET  /workspaces/:id/certificates/request/credential-row   an empty row of the other DNS settings (htmx)
//	POST /workspaces/:id/certificates/request/dns              the DNS section for the chosen provider (htmx)
//	POST /workspaces/:id/certificates/request/credentials      the other DNS settings without a row (htmx)
//	GET  /certificates/:id/live                                the status block, fetched again while pending (htmx, on SSE events)
//	POST /certificates/:id                                     rename, auto-renew (form; PATCH semantics)
//	POST /certificates/:id/renew                               renew now (form)
//	GET  /orgs/:id/acme-settings                               the organization's ACME settings
//	POST /orgs/:id/acme-settings                               save them (form)
//
// DNS credentials are write-only: the request form names each setting of the
// common providers as lego's environment variable (dns_credentials.<NAME>, so
// the service's messages land next to it) and takes any other setting in a
// key/value editor. A value typed into a secret input is never written back
// into a page: after a failed submission the form asks for it again. A stored
// certificate shows the names of its credentials only, and the settings page
// shows whether an EAB HMAC is stored, never the HMAC.

// mountACME mounts the ACME pages beside the certificate pages.
func (p *pages) mountACME(ui *app.Router, ws, cert, org app.ScopeFunc) {
	ui.Get("/workspaces/:id/certificates/request", app.Require(ObjCertificate, authz.Write, ws),
		app.Doc{Summary: "ACME certificate request form"}, p.requestForm)
	ui.Post("/workspaces/:id/certificates/request", app.Require(ObjCertificate, authz.Write, ws),
		app.Doc{Summary: "Request an ACME certificate (form)"}, p.request)
	ui.Get("/workspaces/:id/certificates/request/credential-row", app.Require(ObjCertificate, authz.Write, ws),
		app.Doc{Summary: "An empty row of the other DNS settings (htmx fragment)", Query: []string{"index"}}, p.credentialRow)
	ui.Post("/workspaces/:id/certificates/request/dns", app.Require(ObjCertificate, authz.Write, ws),
		app.Doc{Summary: "The DNS section of the request form for the chosen provider (htmx fragment)"}, p.dnsSection)
	ui.Post("/workspaces/:id/certificates/request/credentials", app.Require(ObjCertificate, authz.Write, ws),
		app.Doc{Summary: "The other DNS settings re-rendered without a row (htmx fragment)"}, p.credentialsEditor)
	ui.Get("/certificates/:id/live", app.Require(ObjCertificate, authz.Read, cert),
		app.Doc{Summary: "A certificate's status and attempts (htmx fragment, fetched again on certificate events while pending)"}, p.live)
	ui.Post("/certificates/:id", app.Require(ObjCertificate, authz.Write, cert),
		app.Doc{Summary: "Rename a certificate or switch its auto-renewal (form)"}, p.update)
	ui.Post("/certificates/:id/renew", app.Require(ObjCertificate, authz.Write, cert),
		app.Doc{Summary: "Renew an ACME certificate now (form)"}, p.renew)
	ui.Get("/orgs/:id/acme-settings", app.Require(ObjACMESettings, authz.Read, org),
		app.Doc{Summary: "The organization's ACME settings page (the EAB HMAC is never shown)"}, p.settings)
	ui.Post("/orgs/:id/acme-settings", app.Require(ObjACMESettings, authz.Write, org),
		app.Doc{Summary: "Save the organization's ACME settings (form)"}, p.saveSettings)
}

func uiRequestPath(ws uuid.UUID) string { return uiListPath(ws) + "/request" }
func uiRenewPath(id uuid.UUID) string   { return uiPath(id) + "/renew" }
func uiLivePath(id uuid.UUID) string    { return uiPath(id) + "/live" }

// uiCertLiveTrigger refreshes a pending certificate's status block: on
// connecting to the event stream (what happened before), on every
// certificate event, and every 10 s in case the stream is lost.
const uiCertLiveTrigger = "sse:initial, sse:update, every 10s"

// uiCertStreamURL is the live event stream a pending certificate's page
// listens to: the workspace's certificate events.
func uiCertStreamURL(ws uuid.UUID) string {
	return "/v1/events/stream?" + url.Values{"workspace_id": {ws.String()}, "events": {"certificate.*"}}.Encode()
}
func uiSettingsPath(org uuid.UUID) string {
	return "/orgs/" + org.String() + "/acme-settings"
}

// ---- Choices ----

// uiProviders are the issuers a request may name.
var uiProviders = []views.Option{
	{Value: ProviderLetsEncrypt, Label: "Let's Encrypt"},
	{Value: ProviderLetsEncryptStaging, Label: "Let's Encrypt (staging, untrusted)"},
	{Value: ProviderZeroSSL, Label: "ZeroSSL (EAB in the organization's ACME settings)"},
	{Value: ProviderCustom, Label: "Custom directory (organization's ACME settings)"},
}

var uiChallenges = []views.Option{
	{Value: ChallengeHTTP01, Label: "HTTP-01 (a plain-HTTP virtual host serves each name)"},
	{Value: ChallengeDNS01, Label: "DNS-01 (a TXT record; needed for wildcards)"},
}

var uiKeyTypes = []views.Option{
	{Value: "ec256", Label: "ECDSA P-256"},
	{Value: "ec384", Label: "ECDSA P-384"},
	{Value: "rsa2048", Label: "RSA 2048"},
	{Value: "rsa4096", Label: "RSA 4096"},
}

// uiProviderLabel is an issuer as people read it.
func uiProviderLabel(p string) string {
	if p == ProviderUpload {
		return "Uploaded"
	}
	for _, o := range uiProviders {
		if o.Value == p {
			return strings.SplitN(o.Label, " (", 2)[0] + uiStagingSuffix(p)
		}
	}
	return p
}

func uiStagingSuffix(p string) string {
	if p == ProviderLetsEncryptStaging {
		return " (staging)"
	}
	return ""
}

// dnsField is one setting of a DNS provider on the request form.
type dnsField struct {
	Key, Label, Placeholder string
	// Secret inputs are password inputs, never filled back in.
	Secret bool
}

// dnsPreset is a DNS provider with the inputs of its common settings; other
// settings go in the key/value editor.
type dnsPreset struct {
	Name, Label string
	Fields      []dnsField
}

// uiDNSPresets are the inputs of the common DNS providers, by lego's variable
// names. The form offers those the master supports (dnsProviders).
var uiDNSPresets = []dnsPreset{
	{Name: "cloudflare", Label: "Cloudflare", Fields: []dnsField{
		{Key: "CLOUDFLARE_DNS_API_TOKEN", Label: "API token (Zone:DNS:Edit)", Secret: true},
	}},
	{Name: "route53", Label: "Amazon Route 53", Fields: []dnsField{
		{Key: "AWS_ACCESS_KEY_ID", Label: "Access key id", Placeholder: "AKIA…"},
		{Key: "AWS_SECRET_ACCESS_KEY", Label: "Secret access key", Secret: true},
		{Key: "AWS_REGION", Label: "Region", Placeholder: "us-east-1"},
	}},
	{Name: "digitalocean", Label: "DigitalOcean", Fields: []dnsField{
		{Key: "DO_AUTH_TOKEN", Label: "API token", Secret: true},
	}},
	{Name: "hetzner", Label: "Hetzner DNS", Fields: []dnsField{
		{Key: "HETZNER_API_KEY", Label: "API token", Secret: true},
	}},
	{Name: "gandiv5", Label: "Gandi (LiveDNS)", Fields: []dnsField{
		{Key: "GANDIV5_PERSONAL_ACCESS_TOKEN", Label: "Personal access token", Secret: true},
	}},
	{Name: "ovh", Label: "OVHcloud", Fields: []dnsField{
		{Key: "OVH_ENDPOINT", Label: "Endpoint", Placeholder: "ovh-eu"},
		{Key: "OVH_APPLICATION_KEY", Label: "Application key"},
		{Key: "OVH_APPLICATION_SECRET", Label: "Application secret", Secret: true},
		{Key: "OVH_CONSUMER_KEY", Label: "Consumer key", Secret: true},
	}},
	{Name: "godaddy", Label: "GoDaddy", Fields: []dnsField{
		{Key: "GODADDY_API_KEY", Label: "API key"},
		{Key: "GODADDY_API_SECRET", Label: "API secret", Secret: true},
	}},
	{Name: "httpreq", Label: "HTTP request (httpreq)", Fields: []dnsField{
		{Key: "HTTPREQ_ENDPOINT", Label: "Endpoint", Placeholder: "https://dns-api.example.com"},
		{Key: "HTTPREQ_USERNAME", Label: "Username"},
		{Key: "HTTPREQ_PASSWORD", Label: "Password", Secret: true},
	}},
	{Name: "rfc2136", Label: "RFC 2136 (dynamic DNS update)", Fields: []dnsField{
		{Key: "RFC2136_NAMESERVER", Label: "Name server", Placeholder: "ns1.example.com:53"},
		{Key: "RFC2136_TSIG_KEY", Label: "TSIG key name"},
		{Key: "RFC2136_TSIG_SECRET", Label: "TSIG secret", Secret: true},
		{Key: "RFC2136_TSIG_ALGORITHM", Label: "TSIG algorithm", Placeholder: "hmac-sha256."},
	}},
}

// uiDNSProviders are the DNS providers the master supports, those with
// inputs first, each with its inputs (none for a provider without a preset).
func uiDNSProviders() []dnsPreset {
	var out []dnsPreset
	for _, pr := range uiDNSPresets {
		if _, ok := dnsProviders[pr.Name]; ok {
			out = append(out, pr)
		}
	}
	for _, n := range dnsProviderNames() {
		if !slices.ContainsFunc(out, func(p dnsPreset) bool { return p.Name == n }) {
			out = append(out, dnsPreset{Name: n, Label: n})
		}
	}
	return out
}

// uiDNSPreset is the preset of provider, ok false when the master does not
// support it.
func uiDNSPreset(provider string) (dnsPreset, bool) {
	i := slices.IndexFunc(uiDNSProviders(), func(p dnsPreset) bool { return p.Name == provider })
	if i < 0 {
		return dnsPreset{}, false
	}
	return uiDNSProviders()[i], true
}

// uiDNSOptions are the choices of the DNS provider select.
func uiDNSOptions() []views.Option {
	out := []views.Option{{Value: "", Label: "— none (HTTP-01) —"}}
	for _, p := range uiDNSProviders() {
		out = append(out, views.Option{Value: p.Name, Label: p.Label})
	}
	return out
}

// uiRequired reports whether provider requires the setting key.
func uiRequired(provider, key string) bool {
	return slices.Contains(dnsProviders[provider].required, key)
}

// ---- The request form ----

// Input names of the request form. Each is the service's field name, so its
// messages land next to the input.
const (
	fDomain      = "domain"
	fSAN         = "san"
	fProvider    = "provider"
	fChallenge   = "challenge"
	fDNSProvider = "dns_provider"
	fKeyType     = "key_type"
	fProfile     = "profile"
	fAutoRenew   = "auto_renew"
	// fCredentials prefixes the inputs of a provider's settings
	// (dns_credentials.CLOUDFLARE_DNS_API_TOKEN) and names the DNS section's
	// own message.
	fCredentials = "dns_credentials"
	// fExtra names the rows of the other settings (dns_extra[0].name).
	fExtra = "dns_extra"
)

// credField is the input name of a provider setting.
func credField(key string) string { return fCredentials + "." + key }

// extraField is the input name of field (name or value) of row i.
func extraField(i int, field string) string { return views.RowField(fExtra, i, field) }

// credRow is one row of the other settings as typed.
type credRow struct{ Name, Value string }

// requestForm is the request form as typed.
type requestForm struct {
	Domain, SAN, Provider, Challenge, DNSProvider, KeyType, Profile, Name string
	AutoRenew                                                             bool
	// Creds are the values of the chosen provider's inputs by setting name.
	Creds map[string]string
	Extra []credRow
}

func newRequestForm() requestForm {
	return requestForm{Provider: ProviderLetsEncrypt, Challenge: ChallengeHTTP01, KeyType: "ec256", AutoRenew: true, Extra: []credRow{{}}}
}

// readRequestForm reads a submitted form: the chosen provider's inputs, the
// other settings in the order of their rows, blank rows dropped.
func readRequestForm(vals map[string]string) requestForm {
	f := requestForm{
		Domain: vals[fDomain], SAN: vals[fSAN], Provider: vals[fProvider], Challenge: vals[fChallenge],
		DNSProvider: vals[fDNSProvider], KeyType: vals[fKeyType], Profile: vals[fProfile], Name: vals[fName],
		AutoRenew: views.Checked(vals, fAutoRenew), Creds: map[string]string{},
	}
	if pr, ok := uiDNSPreset(f.DNSProvider); ok {
		for _, fd := range pr.Fields {
			if v := vals[credField(fd.Key)]; v != "" {
				f.Creds[fd.Key] = v
			}
		}
	}
	for _, i := range views.RowIndexes(vals, fExtra) {
		r := credRow{Name: vals[extraField(i, "name")], Value: vals[extraField(i, "value")]}
		if strings.TrimSpace(r.Name) != "" || r.Value != "" {
			f.Extra = append(f.Extra, r)
		}
	}
	return f
}

// sanNames splits the extra names: one per line, or separated by commas or
// spaces.
func sanNames(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// values are the form's inputs by name. With secrets false, the values of
// secret inputs and of the other settings are left out (a failed submission).
func (f requestForm) values(secrets bool) map[string]string {
	v := map[string]string{
		fDomain: f.Domain, fSAN: f.SAN, fProvider: f.Provider, fChallenge: f.Challenge, fDNSProvider: f.DNSProvider,
		fKeyType: f.KeyType, fProfile: f.Profile, fName: f.Name, fAutoRenew: views.CheckedValue(f.AutoRenew),
	}
	if pr, ok := uiDNSPreset(f.DNSProvider); ok {
		for _, fd := range pr.Fields {
			if secrets || !fd.Secret {
				v[credField(fd.Key)] = f.Creds[fd.Key]
			}
		}
	}
	for i, r := range f.Extra {
		v[extraField(i, "name")] = r.Name
		if secrets {
			v[extraField(i, "value")] = r.Value
		}
	}
	return v
}

// hasSecrets reports whether the form carries a value that values(false)
// leaves out.
func (f requestForm) hasSecrets() bool {
	if pr, ok := uiDNSPreset(f.DNSProvider); ok {
		for _, fd := range pr.Fields {
			if fd.Secret && f.Creds[fd.Key] != "" {
				return true
			}
		}
	}
	return slices.ContainsFunc(f.Extra, func(r credRow) bool { return r.Value != "" })
}

// fields are the names errors may be shown at.
func (f requestForm) fields() []string {
	return append(slices.Collect(maps.Keys(f.values(true))), fCredentials)
}

// params turns the typed form into the service's request; a malformed row
// of the other settings is an error at its input.
func (f requestForm) params(ws uuid.UUID) (RequestParams, error) {
	v := &app.Validator{}
	creds := map[string]string{}
	maps.Copy(creds, f.Creds)
	for i, r := range f.Extra {
		name := strings.TrimSpace(r.Name)
		if !v.Check(name != "", extraField(i, "name"), app.FieldRequired, "is required for a value") {
			continue
		}
		_, dup := creds[name]
		if !v.Check(!dup, extraField(i, "name"), app.FieldInvalidValue, "is already set") {
			continue
		}
		creds[name] = r.Value
	}
	p := RequestParams{
		WorkspaceID: ws, Domain: strings.TrimSpace(f.Domain), SAN: sanNames(f.SAN), Provider: f.Provider, AutoRenew: f.AutoRenew,
		Challenge: f.Challenge, DNSProvider: f.DNSProvider, KeyType: f.KeyType, Profile: strings.TrimSpace(f.Profile), Name: f.Name,
	}
	if len(creds) > 0 {
		p.DNSCredentials = creds
	}
	return p, v.Err()
}

// placeErrors moves the service's messages to the inputs that show them:
// san[i] to the names' text area (naming the name), and the settings typed
// in the key/value editor to their row.
func (f requestForm) placeErrors(err error) error {
	var ve *app.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	san := sanNames(f.SAN)
	out := &app.ValidationError{}
	for _, fe := range ve.Fields {
		if rest, ok := strings.CutPrefix(fe.Field, fSAN+"["); ok {
			if i, err := strconv.Atoi(strings.TrimSuffix(rest, "]")); err == nil && i < len(san) {
				fe.Message = fmt.Sprintf("%s (%s)", fe.Message, san[i])
			}
			fe.Field = fSAN
		}
		if key, ok := strings.CutPrefix(fe.Field, fCredentials+"."); ok {
			if i := slices.IndexFunc(f.Extra, func(r credRow) bool { return strings.TrimSpace(r.Name) == key }); i >= 0 {
				if strings.HasPrefix(fe.Message, "is not a setting") {
					fe.Field = extraField(i, "name")
				} else {
					fe.Field = extraField(i, "value")
				}
			} else if pr, ok := uiDNSPreset(f.DNSProvider); ok && !slices.ContainsFunc(pr.Fields, func(d dnsField) bool { return d.Key == key }) {
				// A required setting without an input of its own.
				fe.Message = key + " " + fe.Message + ": add it below"
				fe.Field = fCredentials
			}
		}
		out.Fields = append(out.Fields, fe)
	}
	return out
}

// credentialsOp applies the editor step a submit button asked for (_op):
// "add-credential" appends a row, "remove:dns_extra[i]" drops row i,
// "dns-provider" only re-renders. It reports whether there was one.
func credentialsOp(vals map[string]string) (requestForm, bool) {
	op := vals["_op"]
	if prefix, ok := strings.CutPrefix(op, "remove:"); ok {
		for k := range vals {
			if strings.HasPrefix(k, prefix+".") {
				delete(vals, k)
			}
		}
	}
	f := readRequestForm(vals)
	if op == "add-credential" {
		f.Extra = append(f.Extra, credRow{})
	}
	if len(f.Extra) == 0 {
		f.Extra = []credRow{{}}
	}
	return f, op != ""
}

type requestData struct {
	WorkspaceID uuid.UUID
	Form        views.Form
	// DNSProvider is the chosen DNS provider; Rows the number of rows of the
	// other settings.
	DNSProvider string
	Rows        int
	CSRF        string
}

// preset is the chosen DNS provider's inputs.
func (d requestData) preset() dnsPreset {
	p, _ := uiDNSPreset(d.DNSProvider)
	return p
}

func (p *pages) requestForm(c *fiber.Ctx) error {
	f := newRequestForm()
	return p.renderRequest(c, http.StatusOK, f, views.Form{Values: f.values(true)})
}

func (p *pages) renderRequest(c *fiber.Ctx, status int, f requestForm, form views.Form) error {
	shell, err := p.ui.Shell(c, "Request a certificate", views.SectionCertificates)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, requestPage(p.requestData(c, f, form, shell.CSRF)))
}

func (p *pages) requestData(c *fiber.Ctx, f requestForm, form views.Form, csrf string) requestData {
	return requestData{WorkspaceID: app.ScopeOf(c).WorkspaceID, Form: form, DNSProvider: f.DNSProvider, Rows: max(len(f.Extra), 1), CSRF: csrf}
}

func (p *pages) request(c *fiber.Ctx) error {
	ws := app.ScopeOf(c).WorkspaceID
	vals := views.PostedValues(c)
	if f, ok := credentialsOp(vals); ok {
		// An editor step saves nothing: the values typed stay in the form.
		return p.renderRequest(c, http.StatusOK, f, views.Form{Values: f.values(true)})
	}
	f := readRequestForm(vals)
	params, err := f.params(ws)
	if err == nil {
		var cert Certificate
		if cert, err = p.svc.Request(app.Ctx(c), params); err == nil {
			views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Certificate for %s requested from %s; issuance runs in the background.", cert.Domain, uiProviderLabel(cert.Provider))})
			return views.SeeOther(c, uiPath(cert.ID))
		}
	}
	form, status, ok := views.FormFromError(f.placeErrors(err), f.values(false), f.fields()...)
	if !ok {
		return err
	}
	if f.hasSecrets() && form.Errors[fCredentials] == "" {
		form.Errors[fCredentials] = "Enter the secret DNS settings again: they are not kept after a failed request."
	}
	return p.renderRequest(c, status, f, form)
}

// dnsSection answers a change of DNS provider: the section with the chosen
// provider's inputs.
func (p *pages) dnsSection(c *fiber.Ctx) error {
	f, _ := credentialsOp(views.PostedValues(c))
	d := p.requestData(c, f, views.Form{Values: f.values(true)}, "")
	return views.Render(c, http.StatusOK, dnsSection(d))
}

// credentialsEditor answers "Remove": the other settings without the row.
func (p *pages) credentialsEditor(c *fiber.Ctx) error {
	f, _ := credentialsOp(views.PostedValues(c))
	d := p.requestData(c, f, views.Form{Values: f.values(true)}, "")
	return views.Render(c, http.StatusOK, credentialsEditor(d))
}

// credentialRow answers "Add setting": the empty row index and, out of band,
// the button that adds the next one.
func (p *pages) credentialRow(c *fiber.Ctx) error {
	i, err := strconv.Atoi(c.Query("index"))
	if err != nil || i < 0 || i > 1000 {
		return app.Invalid("index", app.FieldInvalidValue, "must be a row number")
	}
	return views.Render(c, http.StatusOK, addedCredentialRow(app.ScopeOf(c).WorkspaceID, views.Form{}, i))
}

// ---- The certificate page ----

type showData struct {
	Certificate Certificate
	Details     ACMEDetails
	Attempts    []Attempt
	Now         time.Time
	// Form is the rename and auto-renew form.
	Form      views.Form
	CSRF      string
	CanWrite  bool
	CanDelete bool
}

// acme reports whether the certificate is issued by the master.
func (d showData) acme() bool { return d.Certificate.Provider != ProviderUpload }

// polling reports whether the status block refreshes itself.
func (d showData) polling() bool {
	return d.Certificate.Status == StatusPending || d.Details.OrderInFlight
}

// showData loads what the certificate page and its live block show.
func (p *pages) showData(c *fiber.Ctx, cert Certificate) (showData, error) {
	d := showData{Certificate: cert, Now: p.svc.now(),
		CanWrite: p.ui.Allowed(c, ObjCertificate, authz.Write), CanDelete: p.ui.Allowed(c, ObjCertificate, authz.Delete)}
	var err error
	if d.Details, err = p.svc.Details(app.Ctx(c), cert.ID); err != nil {
		return d, err
	}
	if d.acme() {
		if d.Attempts, err = p.svc.Attempts(app.Ctx(c), cert.ID); err != nil {
			return d, err
		}
	}
	d.Form = views.Form{Values: map[string]string{fName: cert.Name, fAutoRenew: views.CheckedValue(cert.AutoRenew)}}
	return d, nil
}

func (p *pages) show(c *fiber.Ctx) error {
	cert, err := p.certificate(c)
	if err != nil {
		return err
	}
	d, err := p.showData(c, cert)
	if err != nil {
		return err
	}
	return p.renderShow(c, http.StatusOK, d)
}

func (p *pages) renderShow(c *fiber.Ctx, status int, d showData) error {
	shell, err := p.ui.Shell(c, d.Certificate.Name, views.SectionCertificates)
	if err != nil {
		return err
	}
	d.CSRF = shell.CSRF
	return views.Page(c, status, shell, showPage(d))
}

// live answers the status block's polling. Once issuance has ended, the
// page is reloaded (HX-Refresh) so its actions follow the new status.
func (p *pages) live(c *fiber.Ctx) error {
	cert, err := p.certificate(c)
	if err != nil {
		return err
	}
	d, err := p.showData(c, cert)
	if err != nil {
		return err
	}
	if views.IsHTMX(c) && !d.polling() {
		c.Set("HX-Refresh", "true")
	}
	return views.Render(c, http.StatusOK, certLive(d))
}

// update renames the certificate and, for an ACME certificate, switches its
// auto-renewal (the checkbox is absent when unchecked).
func (p *pages) update(c *fiber.Ctx) error {
	cert, err := p.certificate(c)
	if err != nil {
		return err
	}
	vals := views.PostedValues(c)
	name := strings.TrimSpace(vals[fName])
	params := UpdateParams{Name: &name}
	if cert.Provider != ProviderUpload {
		auto := views.Checked(vals, fAutoRenew)
		params.AutoRenew = &auto
	}
	saved, err := p.svc.Update(app.Ctx(c), cert.ID, params)
	if err == nil {
		views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Certificate %q saved.", saved.Name)})
		return views.SeeOther(c, uiPath(saved.ID))
	}
	form, status, ok := views.FormFromError(err, map[string]string{fName: vals[fName], fAutoRenew: views.CheckedValue(views.Checked(vals, fAutoRenew))}, fName, fAutoRenew)
	if !ok {
		return err
	}
	d, derr := p.showData(c, cert)
	if derr != nil {
		return derr
	}
	d.Form = form
	return p.renderShow(c, status, d)
}

func (p *pages) renew(c *fiber.Ctx) error {
	cert, err := p.certificate(c)
	if err != nil {
		return err
	}
	if _, err := p.svc.Renew(app.Ctx(c), cert.ID); err != nil {
		status, msg, known := views.ErrorMessage(err)
		if !known || status >= http.StatusInternalServerError && status != http.StatusServiceUnavailable {
			return err
		}
		var ve *app.ValidationError
		if errors.As(err, &ve) && len(ve.Fields) > 0 {
			msg = "Not renewed: " + ve.Fields[0].Message + "."
		}
		views.SetFlash(c, views.Flash{Kind: views.FlashError, Message: msg})
		return views.SeeOther(c, uiPath(cert.ID))
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: fmt.Sprintf("Renewal of %q requested; it runs in the background.", cert.Name)})
	return views.SeeOther(c, uiPath(cert.ID))
}

// ---- Organization ACME settings ----

// Input names of the settings form (the service's field names).
const (
	fEmail        = "email"
	fEABKID       = "eab_kid"
	fEABHMAC      = "eab_hmac"
	fEABHMACClear = "eab_hmac_clear"
	fDirectoryURL = "directory_url"
	fFallback     = "fallback"
)

// uiFallbackSlots is how many fallback issuers the form offers.
var uiFallbackSlots = len(acmeProviders)

func fallbackField(i int) string { return fmt.Sprintf("%s[%d]", fFallback, i) }

type settingsData struct {
	OrgID    uuid.UUID
	Settings ACMESettings
	Form     views.Form
	CSRF     string
	CanWrite bool
}

func settingsValues(st ACMESettings) map[string]string {
	v := map[string]string{fEmail: st.Email, fEABKID: st.EABKID, fDirectoryURL: st.DirectoryURL}
	for i, f := range st.Fallback {
		v[fallbackField(i)] = f
	}
	return v
}

func settingsFields() []string {
	out := []string{fEmail, fEABKID, fEABHMAC, fDirectoryURL, fFallback}
	for i := range uiFallbackSlots {
		out = append(out, fallbackField(i))
	}
	return out
}

func (p *pages) settings(c *fiber.Ctx) error {
	st, err := p.svc.GetACMESettings(app.Ctx(c), app.ScopeOf(c).OrgID)
	if err != nil {
		return err
	}
	return p.renderSettings(c, http.StatusOK, st, views.Form{Values: settingsValues(st)})
}

func (p *pages) renderSettings(c *fiber.Ctx, status int, st ACMESettings, form views.Form) error {
	shell, err := p.ui.Shell(c, "ACME settings", orgs.SectionACMESettings)
	if err != nil {
		return err
	}
	return views.Page(c, status, shell, settingsPage(settingsData{
		OrgID: app.ScopeOf(c).OrgID, Settings: st, Form: form, CSRF: shell.CSRF,
		CanWrite: p.ui.Allowed(c, ObjACMESettings, authz.Write),
	}))
}

func (p *pages) saveSettings(c *fiber.Ctx) error {
	orgID := app.ScopeOf(c).OrgID
	vals := views.PostedValues(c)
	params := ACMESettingsParams{Email: vals[fEmail], EABKID: strings.TrimSpace(vals[fEABKID]), DirectoryURL: strings.TrimSpace(vals[fDirectoryURL]), Fallback: []string{}}
	// slot maps the service's fallback[i] back to the select it came from.
	var slot []int
	for i := range uiFallbackSlots {
		if f := vals[fallbackField(i)]; f != "" {
			params.Fallback = append(params.Fallback, f)
			slot = append(slot, i)
		}
	}
	switch hmac := vals[fEABHMAC]; {
	case views.Checked(vals, fEABHMACClear):
		params.EABHMAC = new(string)
	case hmac != "":
		params.EABHMAC = &hmac
	}
	_, err := p.svc.SetACMESettings(app.Ctx(c), orgID, params)
	if err == nil {
		views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: "ACME settings saved."})
		return views.SeeOther(c, uiSettingsPath(orgID))
	}
	var ve *app.ValidationError
	if errors.As(err, &ve) {
		for i, fe := range ve.Fields {
			var n int
			if _, e := fmt.Sscanf(fe.Field, fFallback+"[%d]", &n); e == nil && n < len(slot) {
				ve.Fields[i].Field = fallbackField(slot[n])
			}
		}
	}
	values := map[string]string{}
	maps.Copy(values, vals)
	delete(values, fEABHMAC)
	form, status, ok := views.FormFromError(err, values, settingsFields()...)
	if !ok {
		return err
	}
	if hmac := vals[fEABHMAC]; hmac != "" && form.Errors[fEABHMAC] == "" {
		form.Errors[fEABHMAC] = "Enter the HMAC again: it is not kept after a failed save."
	}
	st, err := p.svc.GetACMESettings(app.Ctx(c), orgID)
	if err != nil {
		return err
	}
	return p.renderSettings(c, status, st, form)
}

// uiFallbackOptions are the choices of a fallback select.
func uiFallbackOptions() []views.Option {
	return append([]views.Option{{Value: "", Label: "—"}}, uiProviders...)
}
