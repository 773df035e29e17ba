// Package render turns an agentv1.ConfigUpdate into nginx configuration
// files. The master uses it for previews and diffs; the agent uses it to
// produce the files it installs, tests with nginx -t and reloads.
//
// # Output
//
// Render returns Files, a map from a path relative to Options.ConfDir to the
// file's content:
//
//   - http.conf: included inside the http{} block of the main nginx.conf. It
//     holds GlobalSettings.nginx_directives, a map{} for WebSocket upgrades when
//     a location needs one, limit_req_zone lines, the upstream{} blocks used by
//     virtual hosts, and one server{} block per virtual host (plus one per
//     HTTP-to-HTTPS redirect, one 404 default server per port without a
//     virtual host marked default_server and, when Options.StatusPort is
//     set, a loopback stub_status server).
//   - stream.conf: included inside a stream{} block. It holds the upstream{}
//     blocks used by streams and one server{} block per stream.
//   - certs/<id>.crt and certs/<id>.key: PEM files of every certificate a
//     virtual host or stream refers to.
//   - htpasswd/<vhost-id>: basic-auth users of a virtual host, one
//     "username:hash" line each.
//
// http.conf and stream.conf are always present, possibly holding only a
// comment. MainConfig renders a complete nginx.conf that includes both.
// FileMode says which permissions each file should be installed with.
//
// The output is a pure function of the input: virtual hosts are sorted by
// (listen port, server_name, id), upstreams by id, streams by (listen port,
// protocol, id), and map fields by key. Locations, headers, rewrite rules and
// upstream servers keep the order they have in the input, because that order
// is meaningful to nginx or to the user.
//
// # Safety
//
// Every file is built as a crossplane directive tree and serialised with
// crossplane.Build; no user string is ever pasted into config text. Every
// argument is checked with ValidateArg, which rejects the few values that
// crossplane cannot quote so that nginx (and crossplane.Parse) read them back
// unchanged. A value that fails is reported as an error naming the field, and
// nothing is rendered. CheckRoundTrip re-parses the output with both
// crossplane and a reimplementation of nginx's tokenizer and compares the
// result with the tree that was built; the fuzz test drives it.
//
// The renderer guarantees parse fidelity, not that nginx accepts every
// directive: the grammar of each field (allowed header names, variables,
// directive names, address syntax, ...) is validated by the master before a
// ConfigUpdate is sent, and nginx -t catches the rest on the agent.
//
// # Rendering choices
//
//   - Upstream names are derived from ids, never from user-chosen names:
//     "u_" + lower-cased id with "-" replaced by "_". Ids may only contain
//     ASCII letters, digits, "-" and "_"; ids whose names collide are an
//     error. Only upstreams referenced by a location (http.conf) or a stream
//     (stream.conf) are rendered.
//   - LEAST_CONNECTIONS renders least_conn. IP_HASH renders ip_hash in http
//     and "hash $remote_addr consistent" in stream, which has no ip_hash;
//     "backup" servers are rejected with either. ROUND_ROBIN and
//     WEIGHTED_ROUND_ROBIN render no directive; server weights are always
//     written when non-zero. Zero max_fails and fail_timeout are omitted
//     (nginx defaults apply). health_check renders nothing: open-source
//     nginx has no active checks. The agent runs them itself (agent/health)
//     and renders a failing server by setting its down flag in the update
//     before rendering, so the renderer only ever sees "down".
//   - A location path may start with a modifier ("=", "~", "~*", "^~")
//     followed by a space; the modifier becomes its own argument.
//   - A location is proxied when it has upstream_id (proxy_pass
//     http://u_<id>, which wins) or proxy_pass (used literally). Proxied
//     locations get proxy_set_header defaults (Host, X-Real-IP,
//     X-Forwarded-For, X-Forwarded-Proto) and their custom_headers become
//     proxy_set_header lines, i.e. request headers to the upstream; a custom
//     header replaces a default of the same name, and Header.always is
//     ignored. In all other locations custom_headers become add_header lines
//     (response headers), with "always" when Header.always is set.
//   - websocket: proxy_http_version 1.1 plus Upgrade and Connection headers,
//     the latter from a map so that plain requests send an empty Connection
//     header. Upstreams with keepalive get proxy_http_version 1.1 and an
//     empty Connection header, as nginx's keepalive requires.
//   - http_port (with ssl_enabled) is a plain-HTTP port served alongside
//     the TLS listen_port: the host's server gets a second "listen
//     <http_port>" (with default_server when the host is marked), unless
//     redirect_https is set. It must differ from listen_port; without
//     ssl_enabled it is an error (listen_port is then the plain port).
//   - redirect_https adds a server{} on http_port (port 80 when http_port is
//     zero, as before the field existed) with the same server names that
//     answers "return 301 https://$host$request_uri" (with ":port" when the
//     HTTPS port is not 443). $host is nginx's validated host name (lower
//     case, no port); the redirect server is never a default server, so it
//     only answers the host's own names. It requires ssl_enabled and a
//     plain port other than listen_port.
//   - redirect_to makes a redirect-only host: "return <code>
//     <redirect_to>$request_uri" at server level, without one trailing "/" of
//     redirect_to; its locations are not rendered. The code is
//     redirect_code, 301 when zero; 301, 302, 303, 307 and 308 are accepted.
//     nginx runs "return" before its access and rate-limiting phases, so
//     the access list, basic auth and rate limit of a redirect-only host
//     are rendered but do not apply to the redirect.
//   - Access lists render deny lines first, then allow lines, then "deny
//     all" when there is any allow line: a denied range inside an allowed
//     one stays denied. Basic auth renders auth_basic (realm, "Restricted"
//     when empty) and auth_basic_user_file. The password hashes are written
//     as given. nginx checks $apr1$ and {SHA} hashes itself and hands
//     the others to the system's crypt(3); with Debian 12's nginx 1.22 and
//     libxcrypt, TestLiveNginx verifies that bcrypt ($2y$, $2b$, $2a$),
//     SHA-crypt ($5$, $6$), $apr1$ and {SHA} hashes all work.
//   - rate_limit renders "limit_req_zone $binary_remote_addr
//     zone=rl_<vhost-id>:10m rate=<n>r/s" in http.conf and "limit_req
//     zone=rl_<vhost-id> [burst=<n> nodelay]" plus "limit_req_status 429"
//     in the server (nginx's default answer to a limited request is 503);
//     zero requests_per_second disables it.
//   - Default servers: nginx hands a request whose Host (or TLS SNI name)
//     matches no server_name of its port to the port's default server,
//     which is the first server of the port unless one is marked. For every
//     port a virtual host, its http_port or its HTTP-to-HTTPS redirect
//     listens on, the virtual host with default_server gets "listen <port>
//     ... default_server" on the ports its own server listens on;
//     a port without one gets its own server{} before the hosts: "listen
//     <port> default_server" and "return 404" on plain ports, and on TLS
//     ports "listen <port> ssl default_server" with "ssl_reject_handshake
//     on" (nginx 1.19.4+), which refuses unknown names during the handshake
//     and so needs no certificate. ssl and http2 are merged over the servers
//     of a port by nginx, so the default server repeats them. Two hosts
//     marked default on one port, and a port that one host serves with TLS
//     and another (or an http_port) without, are errors. Options.NoDefaultServers
//     leaves the rendered 404 servers out (for an nginx.conf that has its
//     own default servers).
//   - Options.ACMEChallengeDir (an agent-owned absolute directory) makes
//     every plain-HTTP server answer ACME HTTP-01 challenges: virtual hosts
//     without ssl_enabled, TLS hosts with a plain http_port (their own
//     server, on both ports), the HTTP-to-HTTPS redirect servers and the 404
//     default servers of plain ports get "location ^~
//     /.well-known/acme-challenge/ { default_type text/plain; alias
//     <dir>/; try_files $uri =404; }", so a file <dir>/<token> is served
//     and anything else under the prefix is 404. A server-level "return"
//     (default servers, redirect servers, redirect_to hosts) moves into
//     "location /", since it would answer before any location is chosen.
//     In a virtual host the location adds "allow all" and "auth_basic
//     off", and "limit_req_dry_run on" when the host has a rate limit, so
//     that the host's access list, basic auth and rate limit do not stop
//     the ACME server. A host with a location of exactly that prefix (no
//     modifier or "^~") keeps its own, since nginx refuses duplicates.
//     Server-level custom_directives are the operator's and still apply.
//   - custom_directives (server, location) and
//     GlobalSettings.nginx_directives (http.conf) are rendered sorted by
//     name. The name must be a plain directive name ([a-z0-9_], starting
//     with a letter; "if" and "include" are refused). The value is split
//     into arguments on spaces, as nginx would split an unquoted value; it
//     may not contain control characters. GlobalSettings.env_vars is not
//     rendered (it concerns the agent's process environment).
//   - http3_enabled renders nothing: QUIC needs nginx 1.25 or later and the
//     supported nginx (Debian 12) is 1.22. http2_enabled adds "http2" to
//     listen, the form nginx 1.22 understands.
//   - Streams: "listen <port> [udp] [ssl] [proxy_protocol]", proxy_pass to
//     the upstream, "proxy_protocol on" when the upstream is sent the PROXY
//     protocol, proxy_connect_timeout, proxy_timeout, and bandwidth_limit as
//     both proxy_download_rate and proxy_upload_rate. UDP streams cannot use
//     TLS.
//   - Options.AccessLog (an agent-owned absolute path) turns on the agent's
//     access log: http.conf starts with "log_format nxmesh_json
//     escape=json '{...}'" (fields in accesslog.go; every value a JSON
//     string) and every server except the status server begins with
//     "set $nxmesh_vhost_id <id>" (empty in the 404 default servers) and
//     "access_log <path> nxmesh_json". stream.conf, when it has streams,
//     gets "map $protocol:$server_port $nxmesh_stream_id" (streams are
//     unique by protocol and port), "log_format nxmesh_stream escape=json"
//     and "access_log <path> nxmesh_stream" in each stream server. The
//     log_format is rendered only when a server uses its variable.
package render
