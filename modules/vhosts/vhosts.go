// Package vhosts holds a workspace's virtual hosts (nginx http server blocks),
// its TCP/UDP streams (nginx stream server blocks), and the workspace's
// versioned configuration: every change to upstreams, certificates, virtual
// hosts or streams becomes a numbered version with a snapshot, which can be
// listed, rendered, diffed and rolled back to.
//
// # A change
//
//  1. The handler decodes the body strictly (PATCH: each top-level field sent
//     replaces the current one, applied inside the transaction to the host's
//     current state).
//  2. checkVirtualHost / checkStream check every field against its grammar
//     (validate.go) before anything is touched; basic-auth passwords are
//     hashed with bcrypt.
//  3. One transaction locks the workspace's row, checks that referenced
//     upstreams and certificates belong to the workspace (422 at the field),
//     checks listen ports (409), writes the row, calls ConfigChanged and
//     writes the audit row.
//  4. ConfigChanged (versions.go) snapshots the whole workspace, refuses a
//     configuration whose update for agents would exceed
//     grpc.max_message_bytes (422 naming the largest part), renders it
//     (a configuration that would not render is refused), bumps
//     workspaces.config_version, stores the snapshot in config_versions and
//     runs pg_notify('nxmesh_config', {"workspace_id","version"}). The
//     upstreams and certs modules call it from their own transactions
//     (ChangeFunc), and ask UpstreamUsers / CertificateUsers (UsageFunc)
//     before deleting.
//
// The workspace row lock serializes every configuration change of a
// workspace, so versions are consecutive and port checks cannot race. It is
// the first lock this module's transactions take. References are read
// without row locks (see refChecker): an upstream or certificate deleted
// while a reference to it is being written makes the deleting transaction
// fail in ConfigChanged, because the workspace would no longer render.
//
// # Grammars
//
// Nothing a user types may add a directive, a block, a comment, an include or
// a variable. The renderer quotes every argument with crossplane and refuses
// the few values it cannot quote faithfully (render.ValidateArg); on top of
// that each field has a narrow grammar:
//
//   - server_name: space-separated RFC 1123 host names, "*.example.com"
//     allowed, at most 20 names of at most 253 characters, lower-cased.
//   - location path: "/" followed by letters, digits, %XX escapes and the
//     characters - . _ ~ ! & ( ) * + , = : @ /; match "prefix" (default) or
//     "exact".
//   - proxy_pass, redirect_to: http(s)://host[:port][/path], host an IPv4
//     address, a bracketed IPv6 address or a host name; path as above.
//   - root: an absolute canonical path of plain names (no "." or ".."
//     segments, no hidden names) that is or lies under one of the
//     vhosts.static_root_prefixes directories (default /var/www, /srv,
//     /usr/share/nginx, /opt/www), and neither lies under nor contains a
//     system directory (/etc, /root, /home, /proc, /sys, /dev, /run,
//     /var/lib, /var/log, /usr/lib, ... see deniedRoots), so a static
//     location cannot serve system files, the agent's credentials or the
//     private keys it installs (the agent also refuses roots overlapping its
//     own directories); index: plain file names.
//   - header name: letters, digits, "-", "_", "." (a subset of RFC 7230's
//     token). Header value: printable ASCII except " \ { } # and backquote;
//     ";" "'" and "," stay allowed because Strict-Transport-Security and
//     Content-Security-Policy need them, and the renderer quotes them.
//   - variables: "$" may only start one of $args, $host, $http_host,
//     $proxy_add_x_forwarded_for, $remote_addr, $request_id, $request_uri,
//     $scheme, $server_name, $server_port (AllowedVariables), plus $1 to $9
//     in rewrite replacements. $uri is not allowed: it is the decoded path, so
//     an encoded CRLF in a request would split a header.
//   - rewrite pattern: a regular expression without whitespace, quotes, ";",
//     "#" or backquote; "{" and "}" only as repetitions ({2}, {1,3}); "$" only
//     as an end anchor; it must compile as a Go regular expression (look-arounds
//     and back-references are refused) and pass render.ValidateArg (so \\, \t,
//     \n, \r and a trailing backslash are refused: nginx would unescape them).
//     Replacement: a path, an http(s):// or $scheme:// URL, with %XX escapes and
//     the variables above. Flag: last, break, redirect, permanent or none.
//   - access lists: IP addresses or CIDR networks (host bits zero); basic-auth
//     user names of letters, digits and ". _ @ -"; passwords (8-72 bytes) are
//     stored only as bcrypt hashes in the "$2y$" form htpasswd -B writes, which
//     nginx checks with crypt(3) (libxcrypt and musl accept it); responses show
//     has_password only. The realm may not be "off".
//   - client_max_body_size and bandwidth_limit: nginx sizes (1-6 digits and an
//     optional k, m or g); timeouts: whole seconds.
//   - target_agents.label_selector: comma-separated key=value / key!=value
//     terms, keys and values of 1-63 letters, digits and ". _ / -".
//
// custom_directives accepts only these names (CustomDirectives):
//
//	access_log                 off
//	charset                    off or a charset name
//	client_body_buffer_size    size
//	client_body_timeout        duration
//	client_header_timeout      duration
//	etag                       on | off
//	expires                    off | epoch | max | [-]duration
//	gzip                       on | off
//	gzip_comp_level            1 to 9
//	gzip_min_length            size
//	gzip_types                 MIME types separated by single spaces
//	gzip_vary                  on | off
//	keepalive_timeout          duration
//	proxy_buffer_size          size
//	proxy_buffering            on | off
//	proxy_buffers              "<number> <size>"
//	proxy_busy_buffers_size    size
//	proxy_http_version         1.0 | 1.1
//	proxy_intercept_errors     on | off
//	proxy_next_upstream_tries  integer
//	proxy_request_buffering    on | off
//	send_timeout               duration
//	sendfile                   on | off
//	server_tokens              on | off
//	tcp_nopush                 on | off
//
// where size is 1-6 digits with an optional k, m or g and duration is 1-6
// digits with an optional unit ms, s, m, h, d, w, M or y.
//
// # Listen ports
//
// Within a workspace a stream owns its port and protocol: another stream, or
// a virtual host (tcp), on the same port is a 409. Virtual hosts share a port
// when they agree on TLS and have no server name in common. A TLS host may
// also serve a plain port, http_port (1-65535, not listen_port; 422 at
// http_port otherwise, and without ssl_enabled, where listen_port is the
// plain port): its server answers there too, or with redirect_https only a
// 301 to https://$host[:listen_port]$request_uri (no port when it is 443).
// That port is occupied (plain) with the host's names; a redirect without
// http_port occupies port 80, as before http_port existed. At most one
// virtual host per port of a workspace has default_server (422 at
// default_server otherwise); a host marked so is the default of its
// listen_port and of its http_port unless that only redirects. It answers
// requests whose Host matches no server name on that port, and without one
// the agents answer them with 404 (TLS ports refuse the handshake).
//
// # Versions and rollback
//
// A snapshot holds the API form of every upstream, virtual host and stream,
// and the id, domain and expiry of every certificate (never key material);
// basic-auth password hashes are stored beside it for rollback but never
// returned. Versions are rendered for people with RenderOptions and
// placeholder certificate material; certs/ files are not shown and htpasswd
// hashes appear as fingerprints. Rollback restores upstreams (through the
// upstreams service), virtual hosts and streams with their ids, refuses with a
// 409 when a certificate the version uses is gone, and records a new version
// whose rendered configuration equals the restored one.
//
// Agents are not modelled yet: target_agents of type "agents" is checked for
// UUID syntax only. TargetAgents.Matches and Service.DesiredConfig are what the
// agents' hub needs to compute each agent's ConfigUpdate.
package vhosts

import (
	"github.com/riverqueue/river"
	"google.golang.org/grpc"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
)

// Module is the vhosts module.
type Module struct {
	db    *gorm.DB
	svc   *Service
	pages *app.Pages
}

var _ app.Module = (*Module)(nil)

// New builds the module (see Options for how main.go connects it to the
// upstreams, certs and agents modules). The error is always nil: the module
// loads nothing when it is built.
func New(d app.Deps, opts Options) (*Module, error) {
	return &Module{db: d.DB, svc: NewService(d, opts), pages: d.Pages}, nil
}

// Service returns the module's service.
func (m *Module) Service() *Service { return m.svc }

// Name is "vhosts".
func (m *Module) Name() string { return "vhosts" }

// Policies returns the role matrix documented in policies.go.
func (m *Module) Policies() []authz.Policy { return policies() }

// Jobs registers nothing (see jobs.go).
func (m *Module) Jobs(*river.Workers) []*river.PeriodicJob { return nil }

// GRPC registers nothing: configurations reach agents through the agents
// module.
func (m *Module) GRPC(grpc.ServiceRegistrar) {}

// Routes mounts the JSON API (api.go) and the admin pages (ui.go).
func (m *Module) Routes(r app.Routers) {
	m.bindVirtualHosts(r.API)
	m.bindStreams(r.API)
	m.bindConfig(r.API)
	m.mountUI(r.UI)
}
