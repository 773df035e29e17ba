package vhosts

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
)

// grammarCase is one value for one grammar and whether it is accepted.
type grammarCase struct {
	value string
	ok    bool
}

func runGrammar(t *testing.T, name string, check func(string) error, cases []grammarCase) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		for _, c := range cases {
			err := check(c.value)
			if (err == nil) != c.ok {
				t.Errorf("%s(%q): err = %v, want ok=%v", name, c.value, err, c.ok)
			}
		}
	})
}

func TestService_Grammars(t *testing.T) {
	t.Parallel()
	runGrammar(t, "ServerName", func(s string) error {
		v := &app.Validator{}
		normalizeServerName(v, "server_name", s)
		return v.Err()
	}, []grammarCase{
		{"example.com", true},
		{"example.com www.example.com", true},
		{"*.example.com", true},
		{"localhost", true},
		{"10.0.0.1", true},
		{"EXAMPLE.com", true},
		{"", false},
		{"example.com;", false},
		{"www.*.example.com", false},
		{"*example.com", false},
		{"-bad.example.com", false},
		{"bad-.example.com", false},
		{"under_score.example.com", false},
		{"a..b", false},
		{"example.com\texample.org", false},
		{"example.com\nserver_name evil", false},
		{"ex$ample.com", false},
		{"example.com example.com", false},
		{strings.Repeat("a.", 20) + "com " + strings.Repeat("b ", 20), false},
		{strings.Repeat("a", 64) + ".com", false},
		{"ünï.example", false},
	})
	runGrammar(t, "LocationPath", checkLocationPath, []grammarCase{
		{"/", true},
		{"/api/v1", true},
		{"/a-b_c.d~e!f&(g)*h+i,j=k:l@m", true},
		{"/with%20space", true},
		{"", false},
		{"api", false},
		{"/a b", false},
		{"/a;b", false},
		{"/a{b", false},
		{"/a}b", false},
		{"/a\"b", false},
		{"/a'b", false},
		{"/a#b", false},
		{"/a$b", false},
		{"/a\\b", false},
		{"/a\x00b", false},
		{"/a%2", false},
		{"/a%zz", false},
		{"/a?b", false},
		{"/" + strings.Repeat("a", MaxPathLength), false},
	})
	runGrammar(t, "HTTPURL", checkHTTPURL, []grammarCase{
		{"http://localhost:8080/health", true},
		{"https://api.example.com", true},
		{"http://10.0.0.1", true},
		{"http://[2001:db8::1]:8443/x", true},
		{"http://example.com/a%20b/", true},
		{"ftp://example.com", false},
		{"http://", false},
		{"http://user@example.com", false},
		{"http://example.com:0", false},
		{"http://example.com:65536", false},
		{"http://example.com:08", false},
		{"http://example.com/?q=1", false},
		{"http://example.com/#x", false},
		{"http://$host/", false},
		{"http://example.com/$uri", false},
		{"http://2001:db8::1/", false},
		{"http://[fe80::1%eth0]/", false},
		{"http://999.1.1.1/", false},
		{"http://u_upstream/", false},
		{"http://example.com/a;b", false},
	})
	defaults := app.VHostsConfig{}.RootPrefixes()
	runGrammar(t, "Root", func(s string) error { return checkRoot(s, defaults) }, []grammarCase{
		{"/var/www/site", true},
		{"/var/www", true},
		{"/srv/static/", true},
		{"/usr/share/nginx/html", true},
		{"/opt/www/app-1.2/public", true},
		{"/", false},
		{"var/www", false},
		{"/var", false},
		{"/usr", false},
		{"/usr/share", false},
		{"/opt", false},
		{"/opt/app/public", false},
		{"/var/www/../lib", false},
		{"/var/www/../../etc", false},
		{"/var/./www", false},
		{"/var//www", false},
		{"/var/www/.git", false},
		{"/var/wwwx", false},
		{"/srv2/site", false},
		{"/etc", false},
		{"/etc/nginx", false},
		{"/root/site", false},
		{"/home/alice/www", false},
		{"/var/lib/nxmesh-agent", false},
		{"/proc/self", false},
		{"/var/www site", false},
		{"/var/www;", false},
	})
	// With wider configured prefixes the system directories stay refused,
	// and so do their parents.
	runGrammar(t, "RootWithWidePrefixes", func(s string) error { return checkRoot(s, []string{"/var", "/data"}) }, []grammarCase{
		{"/var/sites/a", true},
		{"/data", true},
		{"/var", false},
		{"/var/lib", false},
		{"/var/log/nginx", false},
		{"/var/www", true},
	})
	runGrammar(t, "Index", func(s string) error { _, err := normalizeIndex(s); return err }, []grammarCase{
		{"index.html", true},
		{"index.html index.htm", true},
		{"", false},
		{"/index.html", false},
		{"../index.html", false},
		{".htaccess", false},
		{"index.html;", false},
		{"a b c d e f g h i j k", false},
	})
	runGrammar(t, "HeaderName", checkHeaderName, []grammarCase{
		{"X-Forwarded-Proto", true},
		{"X_Custom.1", true},
		{"", false},
		{"-X", false},
		{"X Y", false},
		{"X:Y", false},
		{"X$Y", false},
		{"X#", false},
		{"X'", false},
	})
	runGrammar(t, "HeaderValue", checkHeaderValue, []grammarCase{
		{"$scheme", true},
		{"", true},
		{"max-age=63072000; includeSubDomains; preload", true},
		{"default-src 'self'; img-src *", true},
		{"$remote_addr, $http_host", true},
		{"$host-suffix", true},
		{"$request_id:$server_port", true},
		{"$uri", false},
		{"$document_root", false},
		{"$hostname", false},
		{"${host}", false},
		{"$", false},
		{"$1", false},
		{"a\"b", false},
		{"a\\b", false},
		{"a{b", false},
		{"a}b", false},
		{"#x", false},
		{"a#b", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"ünï", false},
		{strings.Repeat("a", MaxHeaderValueLength+1), false},
	})
	runGrammar(t, "RewritePattern", checkRewritePattern, []grammarCase{
		{"^/old/(.*)$", true},
		{"^/(\\d{4})/(\\d{2})/", true},
		{"\\.php$", true},
		{"^/(a|b)$", true},
		{"^/x{2,}", true},
		{"", false},
		{"^/a b", false},
		{"^/a;", false},
		{"^/a\"", false},
		{"^/a'", false},
		{"^/a#", false},
		{"x{", false},
		{"x}", false},
		{"x{a}", false},
		{"$host", false},
		{"^/(?=x)", false},
		{"(", false},
		{"\\", false},
		{"\\\\", false},
		{"\\n", false},
		{"\\t", false},
		{"a\x00", false},
	})
	runGrammar(t, "RewriteReplacement", checkRewriteReplacement, []grammarCase{
		{"/new/$1", true},
		{"https://$host$request_uri", true},
		{"$scheme://example.com/$1?x=$2", true},
		{"/a%20b", true},
		{"", false},
		{"new/$1", false},
		{"/new/$0", false},
		{"/new/$10", false},
		{"/$document_root", false},
		{"/${host}", false},
		{"/a b", false},
		{"/a;b", false},
		{"/a'b", false},
		{"/a#b", false},
		{"/a\\b", false},
		{"javascript:alert(1)", false},
	})
	runGrammar(t, "AddressRule", func(s string) error { _, err := normalizeAddressRule(s); return err }, []grammarCase{
		{"10.0.0.0/8", true},
		{"192.168.1.7", true},
		{"2001:db8::/32", true},
		{"10.0.0.1/8", false},
		{"all", false},
		{"10.0.0.0/33", false},
		{"fe80::1%eth0", false},
		{"10.0.0.0/8;", false},
	})
	runGrammar(t, "Realm", checkRealm, []grammarCase{
		{"Admin area", true},
		{"", true},
		{"off", false},
		{" OFF ", false},
		{"a\"b", false},
		{"$host", false},
		{"a;b", false},
	})
	runGrammar(t, "Size", checkSize, []grammarCase{
		{"10m", true},
		{"512", true},
		{"1G", true},
		{"10mb", false},
		{"-1", false},
		{"1234567", false},
		{"", false},
	})
	runGrammar(t, "LabelSelector", func(s string) error { _, err := ParseLabelSelector(s); return err }, []grammarCase{
		{"env=production", true},
		{"env=production,region!=us-east", true},
		{"app.kubernetes.io/name=web", true},
		{"", false},
		{"env", false},
		{"env=", false},
		{"env=prod,", false},
		{"env = prod", false},
		{"env=pro$d", false},
		{"env==prod", false},
		{strings.Repeat("k", 64) + "=v", false},
	})
}

func TestService_CustomDirectives(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, value string
		ok          bool
	}{
		{"proxy_buffering", "off", true},
		{"proxy_buffering", "maybe", false},
		{"proxy_buffer_size", "16k", true},
		{"proxy_buffers", "8 16k", true},
		{"proxy_buffers", "8  16k", false},
		{"gzip", "on", true},
		{"gzip_types", "text/css application/json image/svg+xml", true},
		{"gzip_types", "text/css;", false},
		{"keepalive_timeout", "75s", true},
		{"keepalive_timeout", "75s 60s", false},
		{"expires", "max", true},
		{"expires", "-1", true},
		{"expires", "30d", true},
		{"expires", "modified +1h", false},
		{"proxy_http_version", "1.1", true},
		{"proxy_http_version", "2", false},
		{"server_tokens", "off", true},
		{"charset", "utf-8", true},
		{"charset", "utf-8; include /etc/passwd", false},
		{"access_log", "off", true},
		{"access_log", "/var/log/x.log", false},
		{"add_header", "X y", false},
		{"include", "/etc/passwd", false},
		{"client_max_body_size", "1m", false},
		{"root", "/", false},
	}
	for _, c := range cases {
		v := &app.Validator{}
		checkCustomDirectives(v, "custom_directives", map[string]string{c.name: c.value})
		if v.OK() != c.ok {
			t.Errorf("%s %q: ok = %v, want %v (%v)", c.name, c.value, v.OK(), c.ok, v.Err())
		}
	}
}

func TestService_TargetAgents(t *testing.T) {
	t.Parallel()
	agent := uuid.New()
	cases := []struct {
		name   string
		target TargetAgents
		labels map[string]string
		want   bool
	}{
		{"All", TargetAgents{Type: TargetAll}, nil, true},
		{"SelectorMatches", TargetAgents{Type: TargetSelector, LabelSelector: "env=production,region!=us-east"}, map[string]string{"env": "production", "region": "eu-west"}, true},
		{"NotEqualsMatchesMissingKey", TargetAgents{Type: TargetSelector, LabelSelector: "region!=us-east"}, map[string]string{}, true},
		{"SelectorExcludes", TargetAgents{Type: TargetSelector, LabelSelector: "env=production,region!=us-east"}, map[string]string{"env": "production", "region": "us-east"}, false},
		{"SelectorNeedsKey", TargetAgents{Type: TargetSelector, LabelSelector: "env=production"}, map[string]string{}, false},
		{"AgentListed", TargetAgents{Type: TargetAgentList, AgentIDs: []string{uuid.NewString(), agent.String()}}, nil, true},
		{"AgentNotListed", TargetAgents{Type: TargetAgentList, AgentIDs: []string{uuid.NewString()}}, nil, false},
	}
	for _, c := range cases {
		if got := c.target.Matches(agent, c.labels); got != c.want {
			t.Errorf("%s: Matches = %v, want %v", c.name, got, c.want)
		}
	}

	v := &app.Validator{}
	got := normalizeTargetAgents(v, "target_agents", &TargetAgents{Type: TargetAgentList, AgentIDs: []string{"not-a-uuid", agent.String(), agent.String()}})
	if err := v.Err(); err == nil || !strings.Contains(err.Error(), "target_agents.agent_ids[0]") {
		t.Errorf("bad agent ids: err = %v, want one naming target_agents.agent_ids[0]", err)
	}
	if len(got.AgentIDs) != 1 {
		t.Errorf("normalized agent ids = %v, want the one valid id", got.AgentIDs)
	}
}

func TestService_Conflict(t *testing.T) {
	t.Parallel()
	a := listener{port: 443, proto: ProtocolTCP, ssl: true, names: []string{"api.example.com"}}
	cases := []struct {
		name string
		b    listener
		want bool
	}{
		{"OtherNames", listener{port: 443, proto: ProtocolTCP, ssl: true, names: []string{"www.example.com"}}, false},
		{"SameName", listener{port: 443, proto: ProtocolTCP, ssl: true, names: []string{"x.example.com", "api.example.com"}}, true},
		{"TLSMismatch", listener{port: 443, proto: ProtocolTCP, names: []string{"www.example.com"}}, true},
		{"OtherPort", listener{port: 8443, proto: ProtocolTCP, ssl: true, names: []string{"api.example.com"}}, false},
		{"StreamSamePort", listener{port: 443, proto: ProtocolTCP, stream: true}, true},
		{"UDPStreamSamePort", listener{port: 443, proto: ProtocolUDP, stream: true}, false},
	}
	for _, c := range cases {
		if got := conflict(a, c.b) != ""; got != c.want {
			t.Errorf("%s: conflict = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestService_StaticRootPrefixes(t *testing.T) {
	t.Parallel()
	t.Run("RefusalNamesTheFieldAndListsThePrefixes", func(t *testing.T) {
		t.Parallel()
		in := VirtualHostInput{Name: "site", ServerName: "site.example.com",
			Locations: []Location{{Path: "/", ProxyPass: "http://127.0.0.1:8080"}, {Path: "/static", Root: "/var/www/site"}, {Path: "/x", Root: "/usr"}}}
		_, _, v := checkVirtualHost(in, nil, []string{"/data/sites", "/var/www"})
		var ve *app.ValidationError
		if !errors.As(v.Err(), &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != "locations[2].root" ||
			!strings.Contains(ve.Fields[0].Message, "/data/sites, /var/www") {
			t.Fatalf("validation error %v, want one at locations[2].root listing the prefixes", v.Err())
		}
	})
	t.Run("ModuleUsesTheConfiguredPrefixes", func(t *testing.T) {
		t.Parallel()
		cfg := app.DefaultConfig()
		cfg.VHosts.StaticRootPrefixes = "/data/sites"
		m, err := New(app.Deps{Config: cfg, Logger: apptest.Logger(t), Clock: time.Now}, Options{})
		if err != nil {
			t.Fatalf("vhosts.New: %v", err)
		}
		if err := checkRoot("/data/sites/a", m.svc.rootPrefixes); err != nil {
			t.Errorf("configured prefix refused: %v", err)
		}
		if err := checkRoot("/var/www/a", m.svc.rootPrefixes); err == nil {
			t.Error("a default prefix is accepted although the configuration replaces the defaults")
		}
	})
}
