package render

import (
	"errors"
	"strings"
	"testing"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

var testOpts = Options{ConfDir: "/etc/nxmesh/nginx"}

// proxiedHost is a minimal valid virtual host.
func proxiedHost(id string) *agentv1.VirtualHost {
	return &agentv1.VirtualHost{
		Id:         id,
		ServerName: id + ".example.test",
		Locations:  []*agentv1.Location{{Path: "/", ProxyPass: "http://127.0.0.1:8080"}},
	}
}

func upstream(id string, servers ...*agentv1.UpstreamServer) *agentv1.Upstream {
	if len(servers) == 0 {
		servers = []*agentv1.UpstreamServer{{Address: "127.0.0.1:8080"}}
	}
	return &agentv1.Upstream{Id: id, Servers: servers}
}

func TestRenderRejects(t *testing.T) {
	t.Parallel()
	withHost := func(mut func(vh *agentv1.VirtualHost)) *agentv1.ConfigUpdate {
		vh := proxiedHost("vh-1")
		mut(vh)
		return &agentv1.ConfigUpdate{VirtualHosts: []*agentv1.VirtualHost{vh}}
	}
	withLocation := func(mut func(l *agentv1.Location)) *agentv1.ConfigUpdate {
		return withHost(func(vh *agentv1.VirtualHost) { mut(vh.Locations[0]) })
	}
	withStream := func(mut func(s *agentv1.Stream)) *agentv1.ConfigUpdate {
		s := &agentv1.Stream{Id: "st-1", ListenPort: 5000, UpstreamId: "up"}
		mut(s)
		return &agentv1.ConfigUpdate{Streams: []*agentv1.Stream{s}, Upstreams: []*agentv1.Upstream{upstream("up")}}
	}
	cert := map[string]*agentv1.Certificate{"c1": {Id: "c1", CertificatePem: "CERT", PrivateKeyPem: "KEY"}}

	tests := []struct {
		name  string
		u     *agentv1.ConfigUpdate
		opts  *Options
		field string // must appear in the error message
	}{
		{name: "nil update", u: nil, field: "nil ConfigUpdate"},
		{name: "relative conf dir", u: &agentv1.ConfigUpdate{}, opts: &Options{ConfDir: "etc/nginx"}, field: "Options.ConfDir"},
		{name: "conf dir with newline", u: &agentv1.ConfigUpdate{}, opts: &Options{ConfDir: "/etc/\nnginx"}, field: "Options.ConfDir"},
		{name: "status port out of range", u: &agentv1.ConfigUpdate{}, opts: &Options{ConfDir: "/x", StatusPort: 70000}, field: "Options.StatusPort"},
		{name: "vhost id with path separator", u: withHost(func(vh *agentv1.VirtualHost) { vh.Id = "../etc" }), field: "virtual_hosts[0].id"},
		{name: "empty vhost id", u: withHost(func(vh *agentv1.VirtualHost) { vh.Id = "" }), field: "virtual_hosts[0].id"},
		{name: "colliding vhost ids", u: &agentv1.ConfigUpdate{VirtualHosts: []*agentv1.VirtualHost{proxiedHost("a-b"), proxiedHost("A_b")}}, field: "virtual_hosts[1].id"},
		{name: "colliding upstream ids", u: &agentv1.ConfigUpdate{Upstreams: []*agentv1.Upstream{upstream("up-1"), upstream("UP_1")}}, field: "upstreams[1].id"},
		{name: "certificate key differs from id", u: &agentv1.ConfigUpdate{Certificates: map[string]*agentv1.Certificate{"a": {Id: "b"}}}, field: `certificates["a"].id`},
		{
			name: "two default servers on one port",
			u: func() *agentv1.ConfigUpdate {
				a, b := proxiedHost("vh-a"), proxiedHost("vh-b")
				a.DefaultServer, b.DefaultServer = true, true
				return &agentv1.ConfigUpdate{VirtualHosts: []*agentv1.VirtualHost{a, b}}
			}(),
			field: "virtual_hosts[id=vh-b].default_server",
		},
		{name: "unknown upstream", u: withLocation(func(l *agentv1.Location) { l.UpstreamId = "nope" }), field: "virtual_hosts[id=vh-1].locations[0].upstream_id"},
		{
			name: "upstream without servers",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", Locations: []*agentv1.Location{{Path: "/", UpstreamId: "up"}}}},
				Upstreams:    []*agentv1.Upstream{{Id: "up"}},
			},
			field: "has no servers",
		},
		{
			name: "ip_hash with backup",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", Locations: []*agentv1.Location{{Path: "/", UpstreamId: "up"}}}},
				Upstreams: []*agentv1.Upstream{{Id: "up", Algorithm: agentv1.LoadBalanceAlgorithm_IP_HASH, Servers: []*agentv1.UpstreamServer{
					{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2", Backup: true},
				}}},
			},
			field: "upstreams[id=up].servers[1].backup",
		},
		{
			name: "ip_hash with backup in a stream",
			u: &agentv1.ConfigUpdate{
				Streams: []*agentv1.Stream{{Id: "st", ListenPort: 5000, UpstreamId: "up"}},
				Upstreams: []*agentv1.Upstream{{Id: "up", Algorithm: agentv1.LoadBalanceAlgorithm_IP_HASH, Servers: []*agentv1.UpstreamServer{
					{Address: "127.0.0.1:1", Backup: true},
				}}},
			},
			field: "upstreams[id=up].servers[0].backup",
		},
		{
			name: "unknown algorithm",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", Locations: []*agentv1.Location{{Path: "/", UpstreamId: "up"}}}},
				Upstreams:    []*agentv1.Upstream{{Id: "up", Algorithm: 42, Servers: []*agentv1.UpstreamServer{{Address: "127.0.0.1:1"}}}},
			},
			field: "upstreams[id=up].algorithm",
		},
		{
			name: "empty upstream address",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", Locations: []*agentv1.Location{{Path: "/", UpstreamId: "up"}}}},
				Upstreams:    []*agentv1.Upstream{upstream("up", &agentv1.UpstreamServer{})},
			},
			field: "upstreams[id=up].servers[0].address",
		},
		{name: "ssl without certificate", u: withHost(func(vh *agentv1.VirtualHost) { vh.SslEnabled = true }), field: "virtual_hosts[id=vh-1].ssl_certificate_id"},
		{name: "unknown certificate", u: withHost(func(vh *agentv1.VirtualHost) { vh.SslEnabled, vh.SslCertificateId = true, "nope" }), field: "unknown certificate"},
		{
			name: "certificate without key",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", SslEnabled: true, SslCertificateId: "c"}},
				Certificates: map[string]*agentv1.Certificate{"c": {CertificatePem: "CERT"}},
			},
			field: "no certificate or private key",
		},
		{name: "redirect_https without ssl", u: withHost(func(vh *agentv1.VirtualHost) { vh.RedirectHttps = true }), field: "virtual_hosts[id=vh-1].redirect_https"},
		{
			name: "redirect_https on port 80",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", ListenPort: 80, SslEnabled: true, SslCertificateId: "c1", RedirectHttps: true}},
				Certificates: cert,
			},
			field: "virtual_hosts[id=vh].redirect_https",
		},
		{name: "listen port out of range", u: withHost(func(vh *agentv1.VirtualHost) { vh.ListenPort = 65536 }), field: "virtual_hosts[id=vh-1].listen_port"},
		{name: "http_port without ssl", u: withHost(func(vh *agentv1.VirtualHost) { vh.HttpPort = 8080 }), field: "virtual_hosts[id=vh-1].http_port"},
		{
			name: "http_port out of range",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", SslEnabled: true, SslCertificateId: "c1", HttpPort: 65536}},
				Certificates: cert,
			},
			field: "virtual_hosts[id=vh].http_port",
		},
		{
			name: "http_port equals listen_port",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", ListenPort: 8443, SslEnabled: true, SslCertificateId: "c1", HttpPort: 8443}},
				Certificates: cert,
			},
			field: "virtual_hosts[id=vh].http_port",
		},
		{
			name: "http_port on another host's TLS port",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{
					{Id: "vh-a", ServerName: "a.test", SslEnabled: true, SslCertificateId: "c1"},
					{Id: "vh-b", ServerName: "b.test", ListenPort: 8443, SslEnabled: true, SslCertificateId: "c1", HttpPort: 443},
				},
				Certificates: cert,
			},
			field: "virtual_hosts[id=vh-b].http_port",
		},
		{
			name: "plain host on a TLS port",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{
					{Id: "vh-a", ServerName: "a.test", SslEnabled: true, SslCertificateId: "c1"},
					{Id: "vh-b", ServerName: "b.test", ListenPort: 443},
				},
				Certificates: cert,
			},
			field: "virtual_hosts[id=vh-b].listen_port",
		},
		{
			name: "two default servers through http_port",
			u: &agentv1.ConfigUpdate{
				VirtualHosts: []*agentv1.VirtualHost{
					{Id: "vh-a", ServerName: "a.test", DefaultServer: true},
					{Id: "vh-b", ServerName: "b.test", SslEnabled: true, SslCertificateId: "c1", HttpPort: 80, DefaultServer: true},
				},
				Certificates: cert,
			},
			field: "virtual_hosts[id=vh-b].default_server",
		},
		{name: "redirect code", u: withHost(func(vh *agentv1.VirtualHost) { vh.RedirectTo, vh.RedirectCode = "https://x", 200 }), field: "virtual_hosts[id=vh-1].redirect_code"},
		{name: "redirect target with newline", u: withHost(func(vh *agentv1.VirtualHost) { vh.RedirectTo = "https://x\n" }), field: "virtual_hosts[id=vh-1].redirect_to"},
		{name: "server name with newline", u: withHost(func(vh *agentv1.VirtualHost) { vh.ServerName = "a.test\nb.test" }), field: "virtual_hosts[id=vh-1].server_name"},
		{name: "server name starting with #", u: withHost(func(vh *agentv1.VirtualHost) { vh.ServerName = "#a.test" }), field: "virtual_hosts[id=vh-1].server_name"},
		{name: "body size", u: withHost(func(vh *agentv1.VirtualHost) { vh.ClientMaxBodySize = "10 m" }), field: "virtual_hosts[id=vh-1].client_max_body_size"},
		{name: "body size suffix only", u: withHost(func(vh *agentv1.VirtualHost) { vh.ClientMaxBodySize = "m" }), field: "client_max_body_size"},
		{name: "allow with semicolon-free newline", u: withHost(func(vh *agentv1.VirtualHost) {
			vh.AccessList = &agentv1.AccessList{Allow: []string{"10.0.0.0/8\ninclude /etc/passwd"}}
		}), field: "virtual_hosts[id=vh-1].access_list.allow[0]"},
		{name: "htpasswd user with colon", u: withHost(func(vh *agentv1.VirtualHost) {
			vh.AccessList = &agentv1.AccessList{BasicAuthUsers: []*agentv1.BasicAuthUser{{Username: "a:b", PasswordHash: "h"}}}
		}), field: "basic_auth_users[0].username"},
		{name: "htpasswd hash with newline", u: withHost(func(vh *agentv1.VirtualHost) {
			vh.AccessList = &agentv1.AccessList{BasicAuthUsers: []*agentv1.BasicAuthUser{{Username: "a", PasswordHash: "h\nroot:x"}}}
		}), field: "basic_auth_users[0].password_hash"},
		{name: "custom directive named if", u: withHost(func(vh *agentv1.VirtualHost) { vh.CustomDirectives = map[string]string{"if": "($x)"} }), field: `custom_directives["if"]`},
		{name: "custom directive named include", u: withHost(func(vh *agentv1.VirtualHost) { vh.CustomDirectives = map[string]string{"include": "/etc/passwd"} }), field: `custom_directives["include"]`},
		{name: "custom directive name with semicolon", u: withHost(func(vh *agentv1.VirtualHost) { vh.CustomDirectives = map[string]string{"a;b": "c"} }), field: "custom_directives"},
		{name: "custom directive value with newline", u: withHost(func(vh *agentv1.VirtualHost) { vh.CustomDirectives = map[string]string{"gzip": "on\n}"} }), field: `custom_directives["gzip"]`},
		{name: "global directive value ending in backslash", u: &agentv1.ConfigUpdate{GlobalSettings: &agentv1.GlobalSettings{NginxDirectives: map[string]string{"gzip": `on\`}}}, field: `global_settings.nginx_directives["gzip"]`},
		{name: "empty location path", u: withLocation(func(l *agentv1.Location) { l.Path = "" }), field: "locations[0].path"},
		{name: "modifier without path", u: withLocation(func(l *agentv1.Location) { l.Path = "~ " }), field: "locations[0].path"},
		{name: "location path comment", u: withLocation(func(l *agentv1.Location) { l.Path = "#/x" }), field: "locations[0].path"},
		{name: "header value with newline", u: withLocation(func(l *agentv1.Location) {
			l.CustomHeaders = []*agentv1.Header{{Name: "X-A", Value: "v\r\nSet-Cookie: x"}}
		}), field: "locations[0].custom_headers[0].value"},
		{name: "header value with trailing backslash", u: withLocation(func(l *agentv1.Location) {
			l.CustomHeaders = []*agentv1.Header{{Name: "X-A", Value: `v\`}}
		}), field: "locations[0].custom_headers[0].value"},
		{name: "header without name", u: withLocation(func(l *agentv1.Location) { l.CustomHeaders = []*agentv1.Header{{Value: "v"}} }), field: "custom_headers[0].name"},
		{name: "rewrite flag", u: withLocation(func(l *agentv1.Location) {
			l.RewriteRules = []*agentv1.RewriteRule{{Pattern: "^/a$", Replacement: "/b", Flag: "last; include x"}}
		}), field: "locations[0].rewrite_rules[0].flag"},
		{name: "rewrite pattern with backslash-n", u: withLocation(func(l *agentv1.Location) {
			l.RewriteRules = []*agentv1.RewriteRule{{Pattern: `^/a\n$`, Replacement: "/b"}}
		}), field: "locations[0].rewrite_rules[0].pattern"},
		{name: "rewrite without replacement", u: withLocation(func(l *agentv1.Location) {
			l.RewriteRules = []*agentv1.RewriteRule{{Pattern: "^/a$"}}
		}), field: "locations[0].rewrite_rules[0]"},
		{name: "proxy_pass with NUL", u: withLocation(func(l *agentv1.Location) { l.ProxyPass = "http://a\x00b" }), field: "locations[0].proxy_pass"},
		{name: "root with invalid UTF-8", u: withLocation(func(l *agentv1.Location) { l.Root = "/var/\xff" }), field: "locations[0].root"},
		{name: "stream without port", u: withStream(func(s *agentv1.Stream) { s.ListenPort = 0 }), field: "streams[id=st-1].listen_port"},
		{name: "stream without upstream", u: withStream(func(s *agentv1.Stream) { s.UpstreamId = "" }), field: "streams[id=st-1].upstream_id"},
		{name: "udp stream with tls", u: withStream(func(s *agentv1.Stream) {
			s.Protocol, s.SslEnabled, s.SslCertificateId = agentv1.StreamProtocol_UDP, true, "c1"
		}), field: "streams[id=st-1].ssl_enabled"},
		{name: "udp stream accepting proxy protocol", u: withStream(func(s *agentv1.Stream) {
			s.Protocol, s.AcceptProxyProtocol = agentv1.StreamProtocol_UDP, true
		}), field: "streams[id=st-1].accept_proxy_protocol"},
		{name: "unknown stream protocol", u: withStream(func(s *agentv1.Stream) { s.Protocol = 9 }), field: "streams[id=st-1].protocol"},
		{name: "bandwidth limit", u: withStream(func(s *agentv1.Stream) { s.BandwidthLimit = "1mb" }), field: "streams[id=st-1].bandwidth_limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := testOpts
			if tt.opts != nil {
				opts = *tt.opts
			}
			files, err := Render(tt.u, opts)
			if err == nil {
				t.Fatalf("Render succeeded, want an error; http.conf:\n%s", files[HTTPConf])
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not mention %q", err, tt.field)
			}
		})
	}
}

func TestRenderWritesOnlyReferencedCertificates(t *testing.T) {
	t.Parallel()
	u := &agentv1.ConfigUpdate{
		VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", SslEnabled: true, SslCertificateId: "used"}},
		Certificates: map[string]*agentv1.Certificate{
			"used":   {CertificatePem: "CERT", PrivateKeyPem: "KEY\n"},
			"unused": {CertificatePem: "CERT2", PrivateKeyPem: "KEY2"},
		},
	}
	files, err := Render(u, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(files["certs/used.crt"]); got != "CERT\n" {
		t.Errorf("certs/used.crt = %q, want %q", got, "CERT\n")
	}
	if got := string(files["certs/used.key"]); got != "KEY\n" {
		t.Errorf("certs/used.key = %q, want %q", got, "KEY\n")
	}
	for name := range files {
		if strings.Contains(name, "unused") {
			t.Errorf("unreferenced certificate written as %s", name)
		}
	}
}

func TestRenderIsIndependentOfInputOrder(t *testing.T) {
	t.Parallel()
	a := &agentv1.ConfigUpdate{
		VirtualHosts: []*agentv1.VirtualHost{proxiedHost("b"), proxiedHost("a"), proxiedHost("c")},
		Upstreams:    []*agentv1.Upstream{upstream("u2"), upstream("u1")},
		Streams: []*agentv1.Stream{
			{Id: "s2", ListenPort: 6000, UpstreamId: "u2"},
			{Id: "s1", ListenPort: 6000, Protocol: agentv1.StreamProtocol_UDP, UpstreamId: "u1"},
		},
	}
	b := &agentv1.ConfigUpdate{
		VirtualHosts: []*agentv1.VirtualHost{proxiedHost("c"), proxiedHost("a"), proxiedHost("b")},
		Upstreams:    []*agentv1.Upstream{upstream("u1"), upstream("u2")},
		Streams:      []*agentv1.Stream{a.Streams[1], a.Streams[0]},
	}
	fa, err := Render(a, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := Render(b, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if !equalFiles(fa, fb) {
		t.Errorf("output depends on input order:\n%s\n---\n%s", fa[HTTPConf], fb[HTTPConf])
	}
}

func TestFileMode(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]uint32{
		HTTPConf:        0o644,
		StreamConf:      0o644,
		"certs/a.crt":   0o644,
		"certs/a.key":   0o600,
		"htpasswd/vh-1": 0o644,
	} {
		if got := FileMode(path); uint32(got) != want {
			t.Errorf("FileMode(%q) = %o, want %o", path, got, want)
		}
	}
}
