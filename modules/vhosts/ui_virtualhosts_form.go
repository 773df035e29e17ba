package vhosts

import (
	"strconv"
	"strings"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/views"
)

// The virtual host form: its inputs, the locations editor's rows and how
// the typed values become a VirtualHostInput.

// Target types of a location in the form (one of proxy_pass, upstream_id and
// root is set).
const (
	targetProxy    = "proxy"
	targetUpstream = "upstream"
	targetStatic   = "static"
)

var uiLocationTargets = []views.Option{
	{Value: targetProxy, Label: "Proxy to a URL"},
	{Value: targetUpstream, Label: "Proxy to an upstream"},
	{Value: targetStatic, Label: "Serve static files"},
}

var uiMatches = []views.Option{
	{Value: MatchPrefix, Label: "Prefix"},
	{Value: MatchExact, Label: "Exact"},
}

var uiRewriteFlags = []views.Option{
	{Value: "", Label: "None"},
	{Value: "last", Label: "last"},
	{Value: "break", Label: "break"},
	{Value: "redirect", Label: "redirect (302)"},
	{Value: "permanent", Label: "permanent (301)"},
}

var uiRedirectCodes = []views.Option{
	{Value: "301", Label: "301 Moved Permanently"},
	{Value: "302", Label: "302 Found"},
	{Value: "307", Label: "307 Temporary Redirect"},
	{Value: "308", Label: "308 Permanent Redirect"},
}

// Input names of the virtual host form.
const (
	fName           = "name"
	fServerName     = "server_name"
	fListenPort     = "listen_port"
	fHTTPPort       = "http_port"
	fDefaultServer  = "default_server"
	fSSL            = "ssl_enabled"
	fCertificate    = "ssl_certificate_id"
	fHTTP2          = "http2_enabled"
	fRedirectHTTPS  = "redirect_https"
	fRedirectTo     = "redirect_to"
	fRedirectCode   = "redirect_code"
	fBodySize       = "client_max_body_size"
	fConnectTimeout = "proxy_connect_timeout"
	fReadTimeout    = "proxy_read_timeout"
	fSendTimeout    = "proxy_send_timeout"
	fLocations      = "locations"
)

type headerRow struct {
	Name, Value string
	Always      bool
}

func (h headerRow) blank() bool { return strings.TrimSpace(h.Name+h.Value) == "" }

type rewriteRow struct {
	Pattern, Replacement, Flag string
}

func (r rewriteRow) blank() bool { return strings.TrimSpace(r.Pattern+r.Replacement) == "" }

// locationRow is one location as typed.
type locationRow struct {
	Path, Match, Target   string
	ProxyPass, UpstreamID string
	Root, Index           string
	Websocket             bool
	Headers               []headerRow
	Rewrites              []rewriteRow
}

func (l locationRow) blank() bool {
	return strings.TrimSpace(l.Path+l.ProxyPass+l.UpstreamID+l.Root+l.Index) == "" &&
		len(l.Headers) == 0 && len(l.Rewrites) == 0
}

func newLocationRow() locationRow { return locationRow{Match: MatchPrefix, Target: targetProxy} }

// vhostForm is the virtual host form as typed: the text of every input.
type vhostForm struct {
	Name, ServerName, ListenPort string
	HTTPPort                     string
	DefaultServer                bool
	SSL                          bool
	Certificate                  string
	HTTP2, RedirectHTTPS         bool
	RedirectTo, RedirectCode     string
	BodySize                     string
	ConnectTimeout, ReadTimeout  string
	SendTimeout                  string
	Locations                    []locationRow
	Target                       targetForm
	Access                       accessForm
}

func locationField(i int, field string) string { return views.RowField(fLocations, i, field) }

func headersName(i int) string  { return locationField(i, "custom_headers") }
func rewritesName(i int) string { return locationField(i, "rewrite_rules") }

// uiPorts describes the ports of a virtual host: "443", "443 + 80 (HTTP)",
// or "443 + 80 (redirect)".
func uiPorts(v VirtualHost) string {
	out := strconv.Itoa(v.ListenPort)
	switch p := plainPort(v.SSLEnabled, v.HTTPPort, v.RedirectHTTPS); {
	case p != 0 && v.RedirectHTTPS:
		out += " + " + strconv.Itoa(p) + " (redirect)"
	case p != 0:
		out += " + " + strconv.Itoa(p) + " (HTTP)"
	}
	return out
}

// httpPortText is the HTTP port input for a stored http_port: empty for none.
func httpPortText(p int) string {
	if p == 0 {
		return ""
	}
	return strconv.Itoa(p)
}

func newVhostForm() vhostForm {
	return vhostForm{RedirectCode: "301", Locations: []locationRow{newLocationRow()}, Target: targetForm{Type: TargetAll}}
}

func locationRowOf(l Location) locationRow {
	r := locationRow{Path: l.Path, Match: l.Match, ProxyPass: l.ProxyPass, UpstreamID: l.UpstreamID, Root: l.Root, Index: l.Index, Websocket: l.Websocket}
	switch {
	case l.UpstreamID != "":
		r.Target = targetUpstream
	case l.Root != "":
		r.Target = targetStatic
	default:
		r.Target = targetProxy
	}
	for _, h := range l.CustomHeaders {
		r.Headers = append(r.Headers, headerRow(h))
	}
	for _, rr := range l.RewriteRules {
		r.Rewrites = append(r.Rewrites, rewriteRow(rr))
	}
	return r
}

func vhostFormOf(v VirtualHost) vhostForm {
	f := vhostForm{
		Name:           v.Name,
		ServerName:     v.ServerName,
		ListenPort:     strconv.Itoa(v.ListenPort),
		HTTPPort:       httpPortText(v.HTTPPort),
		DefaultServer:  v.DefaultServer,
		SSL:            v.SSLEnabled,
		HTTP2:          v.HTTP2Enabled,
		RedirectHTTPS:  v.RedirectHTTPS,
		RedirectTo:     v.RedirectTo,
		RedirectCode:   "301",
		BodySize:       v.ClientMaxBodySize,
		ConnectTimeout: views.IntValue(v.ProxyConnectTimeout),
		ReadTimeout:    views.IntValue(v.ProxyReadTimeout),
		SendTimeout:    views.IntValue(v.ProxySendTimeout),
		Target:         targetFormOf(v.TargetAgents),
		Access:         accessFormOf(v),
	}
	if v.SSLCertificateID != nil {
		f.Certificate = v.SSLCertificateID.String()
	}
	if v.RedirectCode != 0 {
		f.RedirectCode = strconv.Itoa(v.RedirectCode)
	}
	for _, l := range v.Locations {
		f.Locations = append(f.Locations, locationRowOf(l))
	}
	return f
}

// readLocation reads location i of a submitted form, blank header and rewrite
// rows dropped.
func readLocation(vals map[string]string, i int) locationRow {
	l := locationRow{
		Path:       vals[locationField(i, "path")],
		Match:      vals[locationField(i, "match")],
		Target:     vals[locationField(i, "target")],
		ProxyPass:  vals[locationField(i, "proxy_pass")],
		UpstreamID: vals[locationField(i, "upstream_id")],
		Root:       vals[locationField(i, "root")],
		Index:      vals[locationField(i, "index")],
		Websocket:  views.Checked(vals, locationField(i, "websocket")),
	}
	for _, j := range views.RowIndexes(vals, headersName(i)) {
		h := headerRow{
			Name:   vals[views.RowField(headersName(i), j, "name")],
			Value:  vals[views.RowField(headersName(i), j, "value")],
			Always: views.Checked(vals, views.RowField(headersName(i), j, "always")),
		}
		if !h.blank() {
			l.Headers = append(l.Headers, h)
		}
	}
	for _, j := range views.RowIndexes(vals, rewritesName(i)) {
		r := rewriteRow{
			Pattern:     vals[views.RowField(rewritesName(i), j, "pattern")],
			Replacement: vals[views.RowField(rewritesName(i), j, "replacement")],
			Flag:        vals[views.RowField(rewritesName(i), j, "flag")],
		}
		if !r.blank() {
			l.Rewrites = append(l.Rewrites, r)
		}
	}
	return l
}

// readVhostForm reads a submitted form: locations and their rows in the
// order of their indexes, blank ones dropped.
func readVhostForm(vals map[string]string) vhostForm {
	f := vhostForm{
		Name:           vals[fName],
		ServerName:     vals[fServerName],
		ListenPort:     vals[fListenPort],
		HTTPPort:       vals[fHTTPPort],
		DefaultServer:  views.Checked(vals, fDefaultServer),
		SSL:            views.Checked(vals, fSSL),
		Certificate:    vals[fCertificate],
		HTTP2:          views.Checked(vals, fHTTP2),
		RedirectHTTPS:  views.Checked(vals, fRedirectHTTPS),
		RedirectTo:     vals[fRedirectTo],
		RedirectCode:   vals[fRedirectCode],
		BodySize:       vals[fBodySize],
		ConnectTimeout: vals[fConnectTimeout],
		ReadTimeout:    vals[fReadTimeout],
		SendTimeout:    vals[fSendTimeout],
		Target:         readTargetForm(vals),
		Access:         readAccessForm(vals),
	}
	for _, i := range views.RowIndexes(vals, fLocations) {
		if l := readLocation(vals, i); !l.blank() {
			f.Locations = append(f.Locations, l)
		}
	}
	return f
}

// applyEditorStep adds the row an "add-..." step asks for; the form always
// shows at least one location.
func (f *vhostForm) applyEditorStep(add string) {
	f.Access.applyStep(add)
	switch {
	case add == "add-location":
		f.Locations = append(f.Locations, newLocationRow())
	case strings.HasPrefix(add, "add-header:"), strings.HasPrefix(add, "add-rewrite:"):
		kind, num, _ := strings.Cut(add, ":")
		i, err := strconv.Atoi(num)
		if err != nil || i < 0 || i >= len(f.Locations) {
			break
		}
		if kind == "add-header" {
			f.Locations[i].Headers = append(f.Locations[i].Headers, headerRow{})
		} else {
			f.Locations[i].Rewrites = append(f.Locations[i].Rewrites, rewriteRow{})
		}
	}
	if len(f.Locations) == 0 {
		f.Locations = []locationRow{newLocationRow()}
	}
}

func locationValues(v map[string]string, i int, l locationRow) {
	v[locationField(i, "path")] = l.Path
	v[locationField(i, "match")] = l.Match
	v[locationField(i, "target")] = l.Target
	v[locationField(i, "proxy_pass")] = l.ProxyPass
	v[locationField(i, "upstream_id")] = l.UpstreamID
	v[locationField(i, "root")] = l.Root
	v[locationField(i, "index")] = l.Index
	v[locationField(i, "websocket")] = views.CheckedValue(l.Websocket)
	for j, h := range l.Headers {
		headerValues(v, i, j, h)
	}
	for j, r := range l.Rewrites {
		rewriteValues(v, i, j, r)
	}
}

func headerValues(v map[string]string, i, j int, h headerRow) {
	v[views.RowField(headersName(i), j, "name")] = h.Name
	v[views.RowField(headersName(i), j, "value")] = h.Value
	v[views.RowField(headersName(i), j, "always")] = views.CheckedValue(h.Always)
}

func rewriteValues(v map[string]string, i, j int, r rewriteRow) {
	v[views.RowField(rewritesName(i), j, "pattern")] = r.Pattern
	v[views.RowField(rewritesName(i), j, "replacement")] = r.Replacement
	v[views.RowField(rewritesName(i), j, "flag")] = r.Flag
}

// values are the form's inputs by name, rows numbered from 0.
func (f vhostForm) values() map[string]string {
	v := map[string]string{
		fName:           f.Name,
		fServerName:     f.ServerName,
		fListenPort:     f.ListenPort,
		fHTTPPort:       f.HTTPPort,
		fDefaultServer:  views.CheckedValue(f.DefaultServer),
		fSSL:            views.CheckedValue(f.SSL),
		fCertificate:    f.Certificate,
		fHTTP2:          views.CheckedValue(f.HTTP2),
		fRedirectHTTPS:  views.CheckedValue(f.RedirectHTTPS),
		fRedirectTo:     f.RedirectTo,
		fRedirectCode:   f.RedirectCode,
		fBodySize:       f.BodySize,
		fConnectTimeout: f.ConnectTimeout,
		fReadTimeout:    f.ReadTimeout,
		fSendTimeout:    f.SendTimeout,
	}
	f.Target.values(v)
	f.Access.values(v)
	for i, l := range f.Locations {
		locationValues(v, i, l)
	}
	return v
}

// errorFields are the names the form shows errors at.
func (f vhostForm) errorFields() []string {
	extra := append([]string{fLocations, "target_agents"}, f.Access.errorFields()...)
	for i := range f.Locations {
		extra = append(extra, views.RowName(fLocations, i), headersName(i), rewritesName(i))
	}
	return formFields(f.values(), extra...)
}

// location is the service's form of location row i; only the input of the
// chosen target type is used.
func (l locationRow) location(v *app.Validator, i int) Location {
	out := Location{
		Path:          strings.TrimSpace(l.Path),
		Match:         l.Match,
		Websocket:     l.Websocket,
		CustomHeaders: []Header{},
		RewriteRules:  []RewriteRule{},
	}
	switch l.Target {
	case targetUpstream:
		out.UpstreamID = l.UpstreamID
	case targetStatic:
		out.Root = strings.TrimSpace(l.Root)
		out.Index = strings.TrimSpace(l.Index)
	case targetProxy:
		out.ProxyPass = strings.TrimSpace(l.ProxyPass)
	default:
		v.Add(locationField(i, "target"), app.FieldInvalidValue, "must be proxy, upstream or static")
	}
	for _, h := range l.Headers {
		out.CustomHeaders = append(out.CustomHeaders, Header{Name: strings.TrimSpace(h.Name), Value: h.Value, Always: h.Always})
	}
	for _, r := range l.Rewrites {
		out.RewriteRules = append(out.RewriteRules, RewriteRule(r))
	}
	return out
}

// apply sets the fields the form edits on in; numbers that are not numbers
// are validation errors at their inputs.
func (f vhostForm) apply(in *VirtualHostInput) error {
	v := &app.Validator{}
	in.Name = f.Name
	in.ServerName = f.ServerName
	in.ListenPort = views.OptionalInt(v, fListenPort, f.ListenPort)
	in.SSLEnabled, in.HTTP2Enabled, in.RedirectHTTPS = f.SSL, f.HTTP2, f.RedirectHTTPS
	in.DefaultServer = f.DefaultServer
	// Like the certificate, the HTTP port only applies with HTTPS: the form
	// drops it when HTTPS is off (the API refuses it then).
	in.SSLCertificateID = ""
	in.HTTPPort = 0
	if f.SSL {
		in.SSLCertificateID = f.Certificate
		if p := views.OptionalInt(v, fHTTPPort, f.HTTPPort); p != nil {
			in.HTTPPort = *p
		}
	}
	in.RedirectTo = strings.TrimSpace(f.RedirectTo)
	in.RedirectCode = 0
	if in.RedirectTo != "" {
		if code := views.OptionalInt(v, fRedirectCode, f.RedirectCode); code != nil {
			in.RedirectCode = *code
		}
	}
	in.ClientMaxBodySize = strings.TrimSpace(f.BodySize)
	in.ProxyConnectTimeout = views.OptionalInt(v, fConnectTimeout, f.ConnectTimeout)
	in.ProxyReadTimeout = views.OptionalInt(v, fReadTimeout, f.ReadTimeout)
	in.ProxySendTimeout = views.OptionalInt(v, fSendTimeout, f.SendTimeout)
	in.Locations = make([]Location, 0, len(f.Locations))
	for i, l := range f.Locations {
		in.Locations = append(in.Locations, l.location(v, i))
	}
	in.TargetAgents = f.Target.targetAgents()
	f.Access.apply(v, in)
	return v.Err()
}
