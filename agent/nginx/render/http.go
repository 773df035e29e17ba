package render

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	crossplane "github.com/nginxinc/nginx-go-crossplane"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// vhostEntry is a virtual host with its effective listen ports.
type vhostEntry struct {
	vh   *agentv1.VirtualHost
	port uint32
	// httpPort is the plain-HTTP port a TLS host also listens on (its own
	// server, or only its redirect with redirect_https); zero for none.
	httpPort uint32
}

// plainAlongside reports whether the host's own server also listens on a
// plain-HTTP port (TLS with http_port and no redirect).
func (e vhostEntry) plainAlongside() bool {
	return e.vh.GetSslEnabled() && e.httpPort != 0 && !e.vh.GetRedirectHttps()
}

// httpConf builds the tree of http.conf.
func (r *renderer) httpConf(u *agentv1.ConfigUpdate) crossplane.Directives {
	tree := crossplane.Directives{headerComment()}
	tree = append(tree, r.customDirectives("global_settings.nginx_directives", u.GetGlobalSettings().GetNginxDirectives())...)

	vhosts := make([]vhostEntry, 0, len(u.GetVirtualHosts()))
	ids := map[string]string{}
	for i, vh := range u.GetVirtualHosts() {
		field := fmt.Sprintf("virtual_hosts[%d].id", i)
		if !validID(vh.GetId()) {
			r.fail(field, "%q is not a valid id (1-128 of A-Z a-z 0-9 - _)", vh.GetId())
			return nil
		}
		// Zone and file names derive from the id; reject ids that collide.
		key := nginxName("", vh.GetId())
		if other, dup := ids[key]; dup {
			r.fail(field, "virtual host ids %q and %q collide", other, vh.GetId())
			return nil
		}
		ids[key] = vh.GetId()
		port := vh.GetListenPort()
		if port == 0 {
			port = 80
			if vh.GetSslEnabled() {
				port = 443
			}
		}
		// redirect_https without http_port is the redirect from port 80 that
		// predates http_port.
		httpPort := vh.GetHttpPort()
		if httpPort == 0 && vh.GetRedirectHttps() {
			httpPort = 80
		}
		vhosts = append(vhosts, vhostEntry{vh: vh, port: port, httpPort: httpPort})
	}
	slices.SortFunc(vhosts, func(a, b vhostEntry) int {
		return cmp.Or(
			cmp.Compare(a.port, b.port),
			strings.Compare(a.vh.GetServerName(), b.vh.GetServerName()),
			strings.Compare(a.vh.GetId(), b.vh.GetId()),
		)
	})

	// Upstreams referenced by locations, and whether a map is needed.
	usedUpstreams := map[string]*agentv1.Upstream{}
	websocket := false
	for _, e := range vhosts {
		if e.vh.GetRedirectTo() != "" {
			continue
		}
		for j, loc := range e.vh.GetLocations() {
			if id := loc.GetUpstreamId(); id != "" {
				field := fmt.Sprintf("virtual_hosts[id=%s].locations[%d].upstream_id", e.vh.GetId(), j)
				if up := r.upstream(field, id); up != nil {
					usedUpstreams[id] = up
				}
			}
			websocket = websocket || loc.GetWebsocket()
		}
	}
	if r.err != nil {
		return nil
	}

	if websocket {
		// Upgrade requests get "Connection: upgrade", all others an empty
		// Connection header so that upstream keepalive keeps working.
		tree = append(tree, block("map", []string{"$http_upgrade", wsConnectionVar}, crossplane.Directives{
			dir("default", "upgrade"),
			dir("", ""),
		}))
	}
	for _, e := range vhosts {
		if rl := e.vh.GetRateLimit(); rl.GetRequestsPerSecond() > 0 {
			tree = append(tree, dir("limit_req_zone", "$binary_remote_addr",
				"zone="+nginxName("rl_", e.vh.GetId())+":10m",
				"rate="+strconv.FormatUint(uint64(rl.GetRequestsPerSecond()), 10)+"r/s"))
		}
	}
	for _, id := range sortedKeys(usedUpstreams) {
		tree = append(tree, r.upstreamBlock(usedUpstreams[id], false))
	}
	if r.opts.StatusPort != 0 {
		tree = append(tree, statusServer(r.opts.StatusPort))
	}
	defaults := r.defaultServers(vhosts)
	if !r.opts.NoDefaultServers {
		tree = append(tree, defaults...)
	}
	for _, e := range vhosts {
		tree = append(tree, r.virtualHost(e)...)
	}
	if r.opts.AccessLog != "" && (len(vhosts) > 0 || (!r.opts.NoDefaultServers && len(defaults) > 0)) {
		// The format names $nxmesh_vhost_id, which only servers define
		// (set): it is rendered only when there is one.
		tree = append(crossplane.Directives{tree[0], httpLogFormat()}, tree[1:]...)
	}
	return tree
}

// listenPort is what the servers on one port have in common.
type listenPort struct {
	ssl, http2 bool
	// defaultHost is the id of the virtual host marked default_server.
	defaultHost string
	// tlsBy and plainBy are the first hosts that listen on the port with
	// and without TLS: nginx would turn TLS on for all of them.
	tlsBy, plainBy string
}

// defaultServers renders, for every port a virtual host (or its plain
// http_port, or its HTTP-to-HTTPS redirect) listens on and on which no host
// is marked default_server, a server that answers requests for unknown
// names: 404 on plain ports, a rejected TLS handshake on TLS ports (no
// certificate needed). Without it nginx would hand such requests to the
// first server of the port. A host marked default_server is the default of
// every port its own server listens on (listen_port, and http_port unless
// that only redirects: a redirect server is never a default, so $host in
// its Location is always one of the host's names). Two hosts marked default
// on the same port, and a port served both with and without TLS, are
// errors.
func (r *renderer) defaultServers(vhosts []vhostEntry) crossplane.Directives {
	ports := map[uint32]*listenPort{}
	at := func(p uint32) *listenPort {
		lp, ok := ports[p]
		if !ok {
			lp = &listenPort{}
			ports[p] = lp
		}
		return lp
	}
	markDefault := func(e vhostEntry, p uint32) {
		lp := ports[p]
		if lp.defaultHost != "" {
			r.fail(fmt.Sprintf("virtual_hosts[id=%s].default_server", e.vh.GetId()),
				"virtual host %q is already the default server of port %d", lp.defaultHost, p)
		}
		lp.defaultHost = e.vh.GetId()
	}
	mixed := func(e vhostEntry, field string, p uint32, lp *listenPort) {
		if lp.tlsBy != "" && lp.plainBy != "" {
			r.fail(fmt.Sprintf("virtual_hosts[id=%s].%s", e.vh.GetId(), field),
				"port %d is served with TLS (virtual host %q) and without (virtual host %q)", p, lp.tlsBy, lp.plainBy)
		}
	}
	for _, e := range vhosts {
		if e.port > 65535 || e.httpPort > 65535 {
			continue // reported by virtualHost
		}
		lp := at(e.port)
		// nginx merges ssl and http2 over every server of a port.
		lp.ssl = lp.ssl || e.vh.GetSslEnabled()
		lp.http2 = lp.http2 || e.vh.GetHttp2Enabled()
		if e.vh.GetSslEnabled() {
			lp.tlsBy = cmp.Or(lp.tlsBy, e.vh.GetId())
		} else {
			lp.plainBy = cmp.Or(lp.plainBy, e.vh.GetId())
		}
		mixed(e, "listen_port", e.port, lp)
		if e.vh.GetDefaultServer() {
			markDefault(e, e.port)
		}
		if e.httpPort != 0 && e.vh.GetSslEnabled() && e.httpPort != e.port {
			hp := at(e.httpPort)
			hp.plainBy = cmp.Or(hp.plainBy, e.vh.GetId())
			mixed(e, "http_port", e.httpPort, hp)
			if e.vh.GetDefaultServer() && e.plainAlongside() {
				markDefault(e, e.httpPort)
			}
		}
	}
	portList := make([]uint32, 0, len(ports))
	for p := range ports {
		portList = append(portList, p)
	}
	slices.Sort(portList)
	var out crossplane.Directives
	for _, p := range portList {
		lp := ports[p]
		if lp.defaultHost != "" {
			continue
		}
		listen := []string{strconv.FormatUint(uint64(p), 10)}
		if lp.ssl {
			listen = append(listen, "ssl")
		}
		if lp.http2 {
			listen = append(listen, "http2")
		}
		listen = append(listen, "default_server")
		body := crossplane.Directives{dir("listen", listen...)}
		if lp.ssl {
			body = append(body, dir("ssl_reject_handshake", "on"), dir("return", "404"))
		} else {
			body = r.withACME(nil, body, dir("return", "404"))
		}
		out = append(out, block("server", nil, r.withAccessLog("", body)))
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// statusServer is the loopback-only stub_status server.
func statusServer(port uint32) *crossplane.Directive {
	return block("server", nil, crossplane.Directives{
		dir("listen", "127.0.0.1:"+strconv.FormatUint(uint64(port), 10)),
		dir("access_log", "off"),
		block("location", []string{"=", "/nxmesh_status"}, crossplane.Directives{
			dir("stub_status"),
			dir("allow", "127.0.0.1"),
			dir("deny", "all"),
		}),
		block("location", []string{"/"}, crossplane.Directives{
			dir("return", "404"),
		}),
	})
}

// virtualHost renders the server{} block of a virtual host, preceded by its
// HTTP-to-HTTPS redirect server when it has one.
func (r *renderer) virtualHost(e vhostEntry) crossplane.Directives {
	vh := e.vh
	field := fmt.Sprintf("virtual_hosts[id=%s]", vh.GetId())
	if e.port > 65535 {
		r.fail(field+".listen_port", "%d is out of range", e.port)
		return nil
	}
	port := strconv.FormatUint(uint64(e.port), 10)

	var names []string
	for _, n := range strings.Fields(vh.GetServerName()) {
		names = append(names, r.arg(field+".server_name", n))
	}
	if strings.ContainsFunc(vh.GetServerName(), func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		r.fail(field+".server_name", "contains a control character")
	}

	switch {
	case e.httpPort > 65535:
		r.fail(field+".http_port", "%d is out of range", e.httpPort)
	case vh.GetHttpPort() != 0 && !vh.GetSslEnabled():
		r.fail(field+".http_port", "requires ssl_enabled (without TLS, listen_port is the plain port)")
	case vh.GetHttpPort() != 0 && e.httpPort == e.port:
		r.fail(field+".http_port", "equals listen_port")
	}
	httpPort := strconv.FormatUint(uint64(e.httpPort), 10)

	var out crossplane.Directives
	if vh.GetRedirectHttps() {
		switch {
		case !vh.GetSslEnabled():
			r.fail(field+".redirect_https", "requires ssl_enabled")
		case vh.GetHttpPort() == 0 && e.port == 80:
			r.fail(field+".redirect_https", "the host itself listens on port 80")
		}
		// $host is the request's host name as nginx validated it: lower
		// case, without a port, and (the redirect server is never a default
		// server) one of the names below. The TLS port is appended unless
		// it is https's own.
		target := "https://$host$request_uri"
		if e.port != 443 {
			target = "https://$host:" + port + "$request_uri"
		}
		redirect := crossplane.Directives{dir("listen", httpPort)}
		if len(names) > 0 {
			redirect = append(redirect, dir("server_name", names...))
		}
		redirect = r.withACME(nil, redirect, dir("return", "301", target))
		out = append(out, block("server", nil, r.withAccessLog(vh.GetId(), redirect)))
	}

	listen := []string{port}
	if vh.GetSslEnabled() {
		listen = append(listen, "ssl")
	}
	if vh.GetHttp2Enabled() {
		listen = append(listen, "http2")
	}
	if vh.GetDefaultServer() {
		listen = append(listen, "default_server")
	}
	body := crossplane.Directives{dir("listen", listen...)}
	if e.plainAlongside() {
		plain := []string{httpPort}
		if vh.GetDefaultServer() {
			plain = append(plain, "default_server")
		}
		body = append(body, dir("listen", plain...))
	}
	// servesPlain: the host's own server answers plain HTTP, where ACME
	// challenges arrive.
	servesPlain := !vh.GetSslEnabled() || e.plainAlongside()
	if len(names) > 0 {
		body = append(body, dir("server_name", names...))
	}
	if vh.GetSslEnabled() {
		crt, key := r.certPaths(field+".ssl_certificate_id", vh.GetSslCertificateId())
		body = append(body, dir("ssl_certificate", crt), dir("ssl_certificate_key", key))
	}
	if v := vh.GetClientMaxBodySize(); v != "" {
		body = append(body, dir("client_max_body_size", r.sizeArg(field+".client_max_body_size", v)))
	}
	if v := vh.GetProxyConnectTimeoutSeconds(); v > 0 {
		body = append(body, dir("proxy_connect_timeout", seconds(v)))
	}
	if v := vh.GetProxyReadTimeoutSeconds(); v > 0 {
		body = append(body, dir("proxy_read_timeout", seconds(v)))
	}
	if v := vh.GetProxySendTimeoutSeconds(); v > 0 {
		body = append(body, dir("proxy_send_timeout", seconds(v)))
	}
	body = append(body, r.accessList(field+".access_list", vh)...)
	if rl := vh.GetRateLimit(); rl.GetRequestsPerSecond() > 0 {
		args := []string{"zone=" + nginxName("rl_", vh.GetId())}
		if rl.GetBurst() > 0 {
			args = append(args, "burst="+strconv.FormatUint(uint64(rl.GetBurst()), 10), "nodelay")
		}
		// nginx answers rejected requests with 503 unless told otherwise;
		// 429 tells clients to slow down rather than that the site is down.
		body = append(body, dir("limit_req", args...), dir("limit_req_status", "429"))
	}
	body = append(body, r.customDirectives(field+".custom_directives", vh.GetCustomDirectives())...)

	if to := vh.GetRedirectTo(); to != "" {
		code := vh.GetRedirectCode()
		switch code {
		case 0:
			code = 301
		case 301, 302, 303, 307, 308:
		default:
			r.fail(field+".redirect_code", "%d is not a redirect status (301, 302, 303, 307, 308)", code)
		}
		r.arg(field+".redirect_to", to)
		ret := dir("return", strconv.FormatUint(uint64(code), 10), strings.TrimSuffix(to, "/")+"$request_uri")
		if servesPlain {
			body = r.withACME(vh, body, ret)
		} else {
			body = append(body, ret)
		}
	} else {
		if loc := r.acmeLocation(vh); loc != nil && servesPlain && !ownsACMEPath(vh) {
			body = append(body, loc)
		}
		for i, loc := range vh.GetLocations() {
			body = append(body, r.location(fmt.Sprintf("%s.locations[%d]", field, i), loc))
		}
	}
	return append(out, block("server", nil, r.withAccessLog(vh.GetId(), body)))
}

// accessList renders allow/deny rules and basic auth.
func (r *renderer) accessList(field string, vh *agentv1.VirtualHost) crossplane.Directives {
	al := vh.GetAccessList()
	var out crossplane.Directives
	for i, v := range al.GetDeny() {
		out = append(out, dir("deny", r.arg(fmt.Sprintf("%s.deny[%d]", field, i), v)))
	}
	for i, v := range al.GetAllow() {
		out = append(out, dir("allow", r.arg(fmt.Sprintf("%s.allow[%d]", field, i), v)))
	}
	if len(al.GetAllow()) > 0 {
		out = append(out, dir("deny", "all"))
	}
	users := al.GetBasicAuthUsers()
	if len(users) == 0 {
		return out
	}
	realm := al.GetRealm()
	if realm == "" {
		realm = "Restricted"
	}
	var htpasswd strings.Builder
	for i, u := range users {
		uf := fmt.Sprintf("%s.basic_auth_users[%d]", field, i)
		if u.GetUsername() == "" || strings.ContainsFunc(u.GetUsername(), badHtpasswdRune) {
			r.fail(uf+".username", "must be non-empty and contain no ':' or control characters")
		}
		if u.GetPasswordHash() == "" || strings.ContainsFunc(u.GetPasswordHash(), badHtpasswdRune) {
			r.fail(uf+".password_hash", "must be non-empty and contain no ':' or control characters")
		}
		htpasswd.WriteString(u.GetUsername())
		htpasswd.WriteByte(':')
		htpasswd.WriteString(u.GetPasswordHash())
		htpasswd.WriteByte('\n')
	}
	file := "htpasswd/" + vh.GetId()
	r.files[file] = []byte(htpasswd.String())
	return append(out,
		dir("auth_basic", r.arg(field+".realm", realm)),
		dir("auth_basic_user_file", path.Join(r.confDir, file)),
	)
}

func badHtpasswdRune(c rune) bool {
	return c == ':' || c < 0x20 || c == 0x7f
}

// locationModifiers are the location match modifiers, longest first.
var locationModifiers = [...]string{"^~", "~*", "=", "~"}

// locationArgs splits a location path into its optional modifier and the
// path or pattern.
func locationArgs(p string) []string {
	for _, m := range locationModifiers {
		if rest, ok := strings.CutPrefix(p, m+" "); ok {
			return []string{m, strings.TrimLeft(rest, " ")}
		}
	}
	return []string{p}
}

// defaultProxyHeaders are set on every proxied location unless a custom
// header of the same name replaces them.
var defaultProxyHeaders = [...][2]string{
	{"Host", "$host"},
	{"X-Real-IP", "$remote_addr"},
	{"X-Forwarded-For", "$proxy_add_x_forwarded_for"},
	{"X-Forwarded-Proto", "$scheme"},
}

// location renders one location{} block.
func (r *renderer) location(field string, loc *agentv1.Location) *crossplane.Directive {
	if loc.GetPath() == "" {
		r.fail(field+".path", "is empty")
	}
	args := locationArgs(loc.GetPath())
	for _, a := range args {
		r.arg(field+".path", a)
	}
	if args[len(args)-1] == "" {
		r.fail(field+".path", "has a modifier but no path")
	}

	var body crossplane.Directives
	for i, rw := range loc.GetRewriteRules() {
		rf := fmt.Sprintf("%s.rewrite_rules[%d]", field, i)
		if rw.GetPattern() == "" || rw.GetReplacement() == "" {
			r.fail(rf, "pattern and replacement are required")
		}
		rwArgs := []string{r.arg(rf+".pattern", rw.GetPattern()), r.arg(rf+".replacement", rw.GetReplacement())}
		switch rw.GetFlag() {
		case "":
		case "last", "break", "redirect", "permanent":
			rwArgs = append(rwArgs, rw.GetFlag())
		default:
			r.fail(rf+".flag", "%q is not one of last, break, redirect, permanent", rw.GetFlag())
		}
		body = append(body, dir("rewrite", rwArgs...))
	}
	if v := loc.GetRoot(); v != "" {
		body = append(body, dir("root", r.arg(field+".root", v)))
	}
	if v := loc.GetIndex(); v != "" {
		var files []string
		for _, f := range strings.Fields(v) {
			files = append(files, r.arg(field+".index", f))
		}
		if len(files) > 0 {
			body = append(body, dir("index", files...))
		}
	}

	var up *agentv1.Upstream
	proxied := true
	switch {
	case loc.GetUpstreamId() != "":
		up = r.upstreams[loc.GetUpstreamId()] // existence checked in httpConf
		body = append(body, dir("proxy_pass", "http://"+nginxName("u_", loc.GetUpstreamId())))
	case loc.GetProxyPass() != "":
		body = append(body, dir("proxy_pass", r.arg(field+".proxy_pass", loc.GetProxyPass())))
	default:
		proxied = false
	}

	custom := map[string]bool{}
	var headers crossplane.Directives
	for i, h := range loc.GetCustomHeaders() {
		hf := fmt.Sprintf("%s.custom_headers[%d]", field, i)
		if h.GetName() == "" {
			r.fail(hf+".name", "is empty")
		}
		name, value := r.arg(hf+".name", h.GetName()), r.arg(hf+".value", h.GetValue())
		custom[strings.ToLower(name)] = true
		if proxied {
			headers = append(headers, dir("proxy_set_header", name, value))
			continue
		}
		hArgs := []string{name, value}
		if h.GetAlways() {
			hArgs = append(hArgs, "always")
		}
		headers = append(headers, dir("add_header", hArgs...))
	}

	if proxied {
		setHeader := func(name, value string) {
			if !custom[strings.ToLower(name)] {
				body = append(body, dir("proxy_set_header", name, value))
			}
		}
		if loc.GetWebsocket() || up.GetKeepaliveConnections() > 0 {
			body = append(body, dir("proxy_http_version", "1.1"))
		}
		for _, h := range defaultProxyHeaders {
			setHeader(h[0], h[1])
		}
		switch {
		case loc.GetWebsocket():
			setHeader("Upgrade", "$http_upgrade")
			setHeader("Connection", wsConnectionVar)
		case up.GetKeepaliveConnections() > 0:
			setHeader("Connection", "")
		}
	}
	body = append(body, headers...)
	body = append(body, r.customDirectives(field+".custom_directives", loc.GetCustomDirectives())...)
	return block("location", args, body)
}
