package vhosts

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	"github.com/nxmesh/nxmesh/app"
)

// seedCreateBody is the documented "Create Virtual Host" example, verbatim but for
// the certificate and upstream ids.
const seedCreateBody = `{
  "name": "API Gateway",
  "server_name": "api.example.com",
  "listen_port": 443,
  "ssl_enabled": true,
  "ssl_certificate_id": "%s",
  "http2_enabled": true,
  "locations": [
    {
      "path": "/api/v1",
      "upstream_id": "%s",
      "custom_headers": [
        {
          "name": "X-Forwarded-Proto",
          "value": "$scheme"
        }
      ]
    },
    {
      "path": "/health",
      "proxy_pass": "http://localhost:8080/health"
    }
  ],
  "target_agents": {
    "type": "selector",
    "label_selector": "env=production"
  }
}`

// seedUpdateBody is the documented "Update Virtual Host" example.
const seedUpdateBody = `{
  "name": "API Gateway v2",
  "locations": [
    {
      "path": "/api/v2",
      "upstream_id": "%s"
    }
  ]
}`

// plainHost is a minimal valid virtual host body.
func plainHost(name, serverName string) map[string]any {
	return map[string]any{
		"name":        name,
		"server_name": serverName,
		"locations":   []any{map[string]any{"path": "/", "proxy_pass": "http://127.0.0.1:8080"}},
	}
}

func TestAPI_VirtualHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("SeedExamplesWorkVerbatim", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		created := b.createVHost(t, fmt.Sprintf(seedCreateBody, b.cert.ID, b.upstream.ID))
		if created.Name != "API Gateway" || created.ServerName != "api.example.com" || created.ListenPort != 443 ||
			!created.SSLEnabled || !created.HTTP2Enabled || created.SSLCertificateID == nil || *created.SSLCertificateID != b.cert.ID {
			t.Fatalf("created = %+v", created)
		}
		if len(created.Locations) != 2 || created.Locations[0].UpstreamID != b.upstream.ID.String() ||
			created.Locations[0].Match != MatchPrefix || created.Locations[0].CustomHeaders[0].Value != "$scheme" ||
			created.Locations[1].ProxyPass != "http://localhost:8080/health" {
			t.Fatalf("created locations = %+v", created.Locations)
		}
		if created.TargetAgents.Type != TargetSelector || created.TargetAgents.LabelSelector != "env=production" || created.TargetAgents.AgentIDs != nil {
			t.Fatalf("target_agents = %+v", created.TargetAgents)
		}

		var got map[string]any
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+created.ID.String(), nil, http.StatusOK, &got)
		for _, k := range []string{"id", "workspace_id", "name", "server_name", "listen_port", "ssl_enabled",
			"ssl_certificate_id", "http2_enabled", "target_agents", "created_at", "updated_at"} {
			if _, ok := got[k]; !ok {
				t.Errorf("GET lacks documented field %q: %v", k, got)
			}
		}
		var list app.List[VirtualHost]
		b.as(t, "viewer", http.MethodGet, b.vhostsPath()+"?page=1&per_page=20", nil, http.StatusOK, &list)
		if list.Meta.Total != 1 || len(list.Data) != 1 || list.Data[0].ID != created.ID {
			t.Fatalf("list = %+v", list)
		}

		other := b.createUpstream(t, "api-v2", "10.0.2.20:8080")
		var updated VirtualHost
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+created.ID.String(), fmt.Sprintf(seedUpdateBody, other.ID), http.StatusOK, &updated)
		if updated.Name != "API Gateway v2" || len(updated.Locations) != 1 || updated.Locations[0].Path != "/api/v2" ||
			updated.Locations[0].UpstreamID != other.ID.String() {
			t.Fatalf("updated = %+v", updated)
		}
		if updated.ServerName != "api.example.com" || !updated.SSLEnabled || updated.TargetAgents.LabelSelector != "env=production" {
			t.Fatalf("PATCH changed fields it did not name: %+v", updated)
		}

		b.as(t, "operator", http.MethodDelete, "/v1/virtual-hosts/"+created.ID.String(), nil, http.StatusNoContent, nil)
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+created.ID.String(), nil, http.StatusNotFound, nil)
		want := []string{
			`upstream "api-backend" created`, `certificate "api.example.com" uploaded`,
			`virtual host "API Gateway" created`, `upstream "api-v2" created`,
			`virtual host "API Gateway v2" updated`, `virtual host "API Gateway v2" deleted`,
		}
		if got := b.summaries(t); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("version summaries = %q, want %q", got, want)
		}
	})

	t.Run("DefaultServerAtMostOnePerPort", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		plain := b.createVHost(t, plainHost("plain", "plain.example.com"))
		if plain.DefaultServer {
			t.Fatalf("default_server defaults to true: %+v", plain)
		}
		body := plainHost("main", "main.example.com")
		body["default_server"] = true
		main := b.createVHost(t, body)
		var got map[string]any
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+main.ID.String(), nil, http.StatusOK, &got)
		if got["default_server"] != true {
			t.Fatalf("GET default_server = %v, want true", got["default_server"])
		}
		var p Preview
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+main.ID.String()+"/preview", nil, http.StatusOK, &p)
		if !strings.Contains(p.Files[render.HTTPConf], "listen 80 default_server;") {
			t.Errorf("preview does not make the host the default server:\n%s", p.Files[render.HTTPConf])
		}
		before := b.version(t)

		// A second default host on port 80, created or patched: 422.
		second := plainHost("second", "second.example.com")
		second["default_server"] = true
		status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), second, "")
		expectFields(t, status, raw, "default_server")
		if !strings.Contains(string(raw), "main") {
			t.Errorf("message does not name the current default host: %s", raw)
		}
		status, raw = b.do(t, b.tokens["operator"], http.MethodPatch, "/v1/virtual-hosts/"+plain.ID.String(), map[string]any{"default_server": true}, "")
		expectFields(t, status, raw, "default_server")
		if b.version(t) != before {
			t.Fatal("a refused default_server changed the configuration")
		}

		// Another port may have its own; the flag moves once it is cleared.
		second["listen_port"] = 8080
		b.createVHost(t, second)
		var updated VirtualHost
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+main.ID.String(), map[string]any{"default_server": false}, http.StatusOK, &updated)
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+plain.ID.String(), map[string]any{"default_server": true}, http.StatusOK, &updated)
		if !updated.DefaultServer || !VirtualHostToProto(updated, nil).GetDefaultServer() {
			t.Fatalf("patched host %+v, want default_server in the API and the agent form", updated)
		}
	})

	t.Run("DefaultsAndFullShape", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		plain := b.createVHost(t, plainHost("plain", "Plain.Example.com  www.example.com"))
		if plain.ListenPort != 80 || plain.ServerName != "plain.example.com www.example.com" ||
			plain.TargetAgents.Type != TargetAll || plain.AccessList != nil || plain.RateLimit != nil {
			t.Fatalf("defaults = %+v", plain)
		}
		tls := b.createVHost(t, map[string]any{
			"name": "tls", "server_name": "api.example.com", "ssl_enabled": true, "ssl_certificate_id": b.cert.ID,
			"redirect_https": true, "client_max_body_size": "10m", "proxy_read_timeout": 120,
			"rate_limit":        map[string]any{"requests_per_second": 50, "burst": 100},
			"custom_directives": map[string]any{"gzip": "on", "gzip_types": "text/css application/json"},
			"access_list":       map[string]any{"allow": []any{"10.0.0.0/8"}, "deny": []any{"10.0.13.0/24"}},
			"locations": []any{
				map[string]any{"path": "/", "match": "exact", "root": "/var/www/site", "index": "index.html",
					"custom_headers": []any{map[string]any{"name": "Strict-Transport-Security", "value": "max-age=63072000; includeSubDomains", "always": true}}},
				map[string]any{"path": "/ws", "upstream_id": b.upstream.ID, "websocket": true,
					"rewrite_rules": []any{map[string]any{"pattern": "^/ws/(.*)$", "replacement": "/$1", "flag": "break"}}},
			},
		})
		if tls.ListenPort != 443 || tls.RateLimit == nil || tls.RateLimit.Burst != 100 || tls.ProxyReadTimeout == nil ||
			*tls.ProxyReadTimeout != 120 || tls.ProxyConnectTimeout != nil || tls.CustomDirectives["gzip"] != "on" {
			t.Fatalf("full host = %+v", tls)
		}
		redirect := b.createVHost(t, map[string]any{
			"name": "old", "server_name": "old.example.com", "redirect_to": "https://new.example.com/", "redirect_code": 308,
		})
		if redirect.RedirectCode != 308 || len(redirect.Locations) != 0 {
			t.Fatalf("redirect host = %+v", redirect)
		}
		// Clearing redirect_to alone turns the host back into a normal one.
		var normal VirtualHost
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+redirect.ID.String(), map[string]any{
			"redirect_to": "", "locations": []any{map[string]any{"path": "/", "proxy_pass": "http://127.0.0.1:9000"}},
		}, http.StatusOK, &normal)
		if normal.RedirectCode != 0 || normal.RedirectTo != "" {
			t.Fatalf("after clearing redirect_to = %+v", normal)
		}
	})

	t.Run("RejectsBadFieldsWithJSONPaths", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		before := b.version(t)
		good := func() map[string]any {
			return map[string]any{
				"name": "ok", "server_name": "ok.example.com",
				"locations": []any{
					map[string]any{"path": "/", "proxy_pass": "http://127.0.0.1:8080"},
					map[string]any{"path": "/static", "root": "/var/www/static",
						"custom_headers": []any{map[string]any{"name": "X-A", "value": "$host"}}},
				},
			}
		}
		loc := func(body map[string]any, i int) map[string]any { return body["locations"].([]any)[i].(map[string]any) }
		cases := []struct {
			name   string
			mutate func(map[string]any)
			fields []string
		}{
			{"HeaderValueVariable", func(m map[string]any) {
				loc(m, 1)["custom_headers"] = []any{map[string]any{"name": "X-Root", "value": "$document_root"}}
			}, []string{"locations[1].custom_headers[0].value"}},
			{"HeaderValueQuote", func(m map[string]any) {
				loc(m, 1)["custom_headers"] = []any{map[string]any{"name": "X", "value": `a"; include /etc/passwd; "`}}
			}, []string{"locations[1].custom_headers[0].value"}},
			{"HeaderName", func(m map[string]any) {
				loc(m, 1)["custom_headers"] = []any{map[string]any{"name": "X A", "value": "1"}}
			}, []string{"locations[1].custom_headers[0].name"}},
			{"ServerName", func(m map[string]any) { m["server_name"] = "ok.example.com;" }, []string{"server_name"}},
			{"ServerNameMissing", func(m map[string]any) { delete(m, "server_name") }, []string{"server_name"}},
			{"NameMissing", func(m map[string]any) { m["name"] = "  " }, []string{"name"}},
			{"ListenPort", func(m map[string]any) { m["listen_port"] = 0 }, []string{"listen_port"}},
			{"ListenPortType", func(m map[string]any) { m["listen_port"] = "80" }, []string{"listen_port"}},
			{"SSLWithoutCertificate", func(m map[string]any) { m["ssl_enabled"] = true }, []string{"ssl_certificate_id"}},
			{"CertificateWithoutSSL", func(m map[string]any) { m["ssl_certificate_id"] = b.cert.ID }, []string{"ssl_certificate_id"}},
			{"HTTP2WithoutSSL", func(m map[string]any) { m["http2_enabled"] = true }, []string{"http2_enabled"}},
			{"RedirectHTTPSWithoutSSL", func(m map[string]any) { m["redirect_https"] = true }, []string{"redirect_https"}},
			{"RedirectToWithLocations", func(m map[string]any) { m["redirect_to"] = "https://x.example.com" }, []string{"locations"}},
			{"RedirectCode", func(m map[string]any) {
				m["redirect_to"], m["redirect_code"], m["locations"] = "https://x.example.com", 303, []any{}
			}, []string{"redirect_code"}},
			{"NoLocations", func(m map[string]any) { m["locations"] = []any{} }, []string{"locations"}},
			{"TwoTargets", func(m map[string]any) { loc(m, 0)["root"] = "/var/www" }, []string{"locations[0]"}},
			{"NoTarget", func(m map[string]any) { delete(loc(m, 0), "proxy_pass") }, []string{"locations[0]"}},
			{"ProxyPassVariable", func(m map[string]any) { loc(m, 0)["proxy_pass"] = "http://$host" }, []string{"locations[0].proxy_pass"}},
			{"PathSemicolon", func(m map[string]any) { loc(m, 0)["path"] = "/a;b" }, []string{"locations[0].path"}},
			{"Match", func(m map[string]any) { loc(m, 0)["match"] = "regex" }, []string{"locations[0].match"}},
			{"DuplicatePath", func(m map[string]any) { loc(m, 1)["path"] = "/" }, []string{"locations[1].path"}},
			{"RootTraversal", func(m map[string]any) { loc(m, 1)["root"] = "/var/www/../../etc" }, []string{"locations[1].root"}},
			{"RootSystem", func(m map[string]any) { loc(m, 1)["root"] = "/etc/nginx" }, []string{"locations[1].root"}},
			{"RootParentOfSystem", func(m map[string]any) { loc(m, 1)["root"] = "/var" }, []string{"locations[1].root"}},
			{"RootOutsidePrefixes", func(m map[string]any) { loc(m, 1)["root"] = "/opt/app/public" }, []string{"locations[1].root"}},
			{"IndexWithoutRoot", func(m map[string]any) { loc(m, 0)["index"] = "index.html" }, []string{"locations[0].index"}},
			{"WebsocketStatic", func(m map[string]any) { loc(m, 1)["websocket"] = true }, []string{"locations[1].websocket"}},
			{"UpstreamIDFormat", func(m map[string]any) {
				delete(loc(m, 0), "proxy_pass")
				loc(m, 0)["upstream_id"] = "nope"
			}, []string{"locations[0].upstream_id"}},
			{"RewriteRule", func(m map[string]any) {
				loc(m, 0)["rewrite_rules"] = []any{map[string]any{"pattern": "^/a b", "replacement": "/$document_root", "flag": "stop"}}
			}, []string{"locations[0].rewrite_rules[0].pattern", "locations[0].rewrite_rules[0].replacement", "locations[0].rewrite_rules[0].flag"}},
			{"AccessList", func(m map[string]any) {
				m["access_list"] = map[string]any{"allow": []any{"10.0.0.1/8"}, "deny": []any{"bad"}, "realm": "off",
					"basic_auth_users": []any{map[string]any{"username": "a:b", "password": "long enough"}, map[string]any{"username": "bob"}}}
			}, []string{"access_list.allow[0]", "access_list.deny[0]", "access_list.realm",
				"access_list.basic_auth_users[0].username", "access_list.basic_auth_users[1].password"}},
			{"ShortPassword", func(m map[string]any) {
				m["access_list"] = map[string]any{"basic_auth_users": []any{map[string]any{"username": "bob", "password": "short"}}}
			}, []string{"access_list.basic_auth_users[0].password"}},
			{"RateLimit", func(m map[string]any) {
				m["rate_limit"] = map[string]any{"requests_per_second": 0, "burst": -1}
			}, []string{"rate_limit.requests_per_second", "rate_limit.burst"}},
			{"BodySize", func(m map[string]any) { m["client_max_body_size"] = "10mb" }, []string{"client_max_body_size"}},
			{"Timeouts", func(m map[string]any) {
				m["proxy_connect_timeout"], m["proxy_send_timeout"] = 0, 3601
			}, []string{"proxy_connect_timeout", "proxy_send_timeout"}},
			{"CustomDirectives", func(m map[string]any) {
				m["custom_directives"] = map[string]any{"include": "/etc/passwd", "gzip": "yes", "charset": "utf-8"}
			}, []string{"custom_directives.include", "custom_directives.gzip"}},
			{"TargetSelector", func(m map[string]any) {
				m["target_agents"] = map[string]any{"type": "selector", "label_selector": "env=prod;x"}
			}, []string{"target_agents.label_selector"}},
			{"TargetType", func(m map[string]any) { m["target_agents"] = map[string]any{"type": "some"} }, []string{"target_agents.type"}},
			{"TargetAgentIDs", func(m map[string]any) {
				m["target_agents"] = map[string]any{"type": "agents", "agent_ids": []any{uuid.NewString(), "x"}}
			}, []string{"target_agents.agent_ids[1]"}},
			{"UnknownField", func(m map[string]any) { m["listen"] = 80 }, []string{"listen"}},
		}
		for _, c := range cases {
			body := good()
			c.mutate(body)
			status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), body, "")
			t.Run(c.name, func(t *testing.T) { expectFields(t, status, raw, c.fields...) })
		}
		var n int64
		if err := b.db.Model(&vhostRow{}).Where("workspace_id = ?", b.ws).Count(&n).Error; err != nil || n != 0 {
			t.Fatalf("virtual hosts stored after rejected requests: %d (%v)", n, err)
		}
		if after := b.version(t); after != before {
			t.Fatalf("config version moved from %d to %d on rejected requests", before, after)
		}
		// The good body itself is accepted.
		b.createVHost(t, good())
	})

	t.Run("RejectsOtherWorkspacesReferences", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		other := e.setup(t)
		body := plainHost("x", "x.example.com")
		body["ssl_enabled"], body["ssl_certificate_id"] = true, other.cert.ID
		body["locations"] = []any{
			map[string]any{"path": "/", "upstream_id": other.upstream.ID},
			map[string]any{"path": "/b", "upstream_id": uuid.New()},
		}
		status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), body, "")
		expectFields(t, status, raw, "ssl_certificate_id", "locations[0].upstream_id", "locations[1].upstream_id")
		var e apiError
		_ = json.Unmarshal(raw, &e)
		for _, d := range e.Error.Details {
			if d.Code != app.FieldNotFound {
				t.Errorf("detail %+v: code %s, want %s", d, d.Code, app.FieldNotFound)
			}
		}
		// A stream cannot use them either.
		status, raw = b.do(t, b.tokens["operator"], http.MethodPost, b.streamsPath(), map[string]any{
			"name": "s", "listen_port": 5432, "upstream_id": other.upstream.ID, "ssl_enabled": true, "ssl_certificate_id": other.cert.ID,
		}, "")
		expectFields(t, status, raw, "upstream_id", "ssl_certificate_id")
	})

	t.Run("PortConflicts", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		www := b.createCert(t, "www.example.com")
		tlsHost := func(name, serverName string, cert uuid.UUID) map[string]any {
			m := plainHost(name, serverName)
			m["ssl_enabled"], m["ssl_certificate_id"] = true, cert
			return m
		}
		api := b.createVHost(t, tlsHost("api", "api.example.com", b.cert.ID))
		b.createVHost(t, tlsHost("www", "www.example.com", www.ID))
		conflicts := []struct {
			name string
			path string
			body map[string]any
		}{
			{"SameNameSamePort", b.vhostsPath(), tlsHost("api2", "api.example.com", b.cert.ID)},
			{"PlainOnTLSPort", b.vhostsPath(), func() map[string]any {
				m := plainHost("plain443", "other.example.com")
				m["listen_port"] = 443
				return m
			}()},
			{"TCPStreamOnHostPort", b.streamsPath(), map[string]any{"name": "s", "listen_port": 443, "upstream_id": b.upstream.ID}},
		}
		for _, c := range conflicts {
			status, raw := b.do(t, b.tokens["operator"], http.MethodPost, c.path, c.body, "")
			if status != http.StatusConflict || !strings.Contains(string(raw), api.ID.String()) && !strings.Contains(string(raw), "www") {
				t.Errorf("%s: status %d, want 409 naming the user; body %s", c.name, status, raw)
			}
		}
		// UDP on the same port is another socket; a second UDP stream is not.
		b.createStream(t, map[string]any{"name": "dns", "listen_port": 443, "protocol": "udp", "upstream_id": b.upstream.ID})
		status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.streamsPath(), map[string]any{
			"name": "dns2", "listen_port": 443, "protocol": "udp", "upstream_id": b.upstream.ID,
		}, "")
		if status != http.StatusConflict || !strings.Contains(string(raw), `stream \"dns\"`) {
			t.Errorf("second UDP stream: status %d, want 409 naming stream dns; body %s", status, raw)
		}
		// redirect_https occupies port 80 with the host's names.
		plain80 := b.createVHost(t, plainHost("plain80", "api.example.com"))
		status, raw = b.do(t, b.tokens["operator"], http.MethodPatch, "/v1/virtual-hosts/"+api.ID.String(), map[string]any{"redirect_https": true}, "")
		if status != http.StatusConflict || !strings.Contains(string(raw), plain80.ID.String()) {
			t.Errorf("redirect_https onto a port-80 host of the same name: status %d, want 409; body %s", status, raw)
		}
		// Other names on port 80 are fine, and a host may be moved off a port.
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+plain80.ID.String(), map[string]any{"server_name": "plain.example.com"}, http.StatusOK, nil)
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+api.ID.String(), map[string]any{"redirect_https": true}, http.StatusOK, nil)
		// A stream on a port no host uses.
		st := b.createStream(t, map[string]any{"name": "pg", "listen_port": 5432, "upstream_id": b.upstream.ID})
		status, _ = b.do(t, b.tokens["operator"], http.MethodPatch, "/v1/streams/"+st.ID.String(), map[string]any{"listen_port": 80}, "")
		if status != http.StatusConflict {
			t.Errorf("stream moved onto port 80: status %d, want 409", status)
		}
	})

	t.Run("BasicAuthPasswordsAreHashedAndNeverReturned", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		const secret = "s3cret-password-1"
		body := plainHost("private", "private.example.com")
		body["access_list"] = map[string]any{"realm": "Admins", "basic_auth_users": []any{map[string]any{"username": "alice", "password": secret}}}
		raw := b.as(t, "operator", http.MethodPost, b.vhostsPath(), body, http.StatusCreated, nil)
		var vh VirtualHost
		_ = json.Unmarshal(raw, &vh)
		if strings.Contains(string(raw), secret) || strings.Contains(string(raw), "$2") {
			t.Fatalf("response leaks the password or its hash: %s", raw)
		}
		if vh.AccessList == nil || len(vh.AccessList.BasicAuthUsers) != 1 || !vh.AccessList.BasicAuthUsers[0].HasPassword {
			t.Fatalf("access_list = %+v", vh.AccessList)
		}
		var row vhostRow
		if err := b.db.Take(&row, "id = ?", vh.ID).Error; err != nil {
			t.Fatal(err)
		}
		hash := row.AccessList.BasicAuthUsers[0].PasswordHash
		if !strings.HasPrefix(hash, "$2y$") {
			t.Fatalf("stored hash %q is not a $2y$ bcrypt hash", hash)
		}
		// Renaming the host keeps alice's hash; a new user needs a password.
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+vh.ID.String(), map[string]any{"name": "private2"}, http.StatusOK, nil)
		if err := b.db.Take(&row, "id = ?", vh.ID).Error; err != nil || row.AccessList.BasicAuthUsers[0].PasswordHash != hash {
			t.Fatalf("hash changed on an unrelated update: %v", err)
		}
		status, raw2 := b.do(t, b.tokens["operator"], http.MethodPatch, "/v1/virtual-hosts/"+vh.ID.String(), map[string]any{
			"access_list": map[string]any{"basic_auth_users": []any{map[string]any{"username": "alice"}, map[string]any{"username": "bob"}}},
		}, "")
		expectFields(t, status, raw2, "access_list.basic_auth_users[1].password")
		// Nothing about the password reaches the audit log or the versions API.
		var audit []app.AuditEntry
		if err := b.db.Where("workspace_id = ?", b.ws).Find(&audit).Error; err != nil {
			t.Fatal(err)
		}
		for _, a := range audit {
			if strings.Contains(string(a.Before)+string(a.After), secret) || strings.Contains(string(a.Before)+string(a.After), hash) {
				t.Fatalf("audit row %s leaks the password or hash", a.Action)
			}
		}
		v := b.version(t)
		raw = b.as(t, "viewer", http.MethodGet, fmt.Sprintf("%s/versions/%d", b.configPath(), v), nil, http.StatusOK, nil)
		if strings.Contains(string(raw), hash) || strings.Contains(string(raw), secret) {
			t.Fatalf("version response leaks the hash: %s", raw)
		}
	})

	t.Run("PatchSemantics", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		body := plainHost("p", "p.example.com")
		body["access_list"] = map[string]any{"allow": []any{"10.0.0.0/8"}}
		body["proxy_read_timeout"] = 30
		vh := b.createVHost(t, body)
		path := "/v1/virtual-hosts/" + vh.ID.String()
		v0 := b.version(t)
		var same VirtualHost
		b.as(t, "operator", http.MethodPatch, path, map[string]any{"name": "p"}, http.StatusOK, &same)
		if b.version(t) != v0 || !same.UpdatedAt.Equal(vh.UpdatedAt) {
			t.Fatalf("a PATCH that changes nothing recorded a version or touched updated_at")
		}
		var cleared VirtualHost
		b.as(t, "operator", http.MethodPatch, path, `{"access_list": null, "proxy_read_timeout": null}`, http.StatusOK, &cleared)
		if cleared.AccessList != nil || cleared.ProxyReadTimeout != nil || cleared.ServerName != "p.example.com" {
			t.Fatalf("null did not clear: %+v", cleared)
		}
		for _, bad := range []struct {
			body  string
			field string
		}{
			{`{}`, "body"},
			{`[]`, "body"},
			{`{"bogus": 1}`, "bogus"},
			{`{"listen_port": 70000}`, "listen_port"},
		} {
			status, raw := b.do(t, b.tokens["operator"], http.MethodPatch, path, bad.body, "")
			expectFields(t, status, raw, bad.field)
		}
	})

	t.Run("Access", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		vh := b.createVHost(t, plainHost("a", "a.example.com"))
		path := "/v1/virtual-hosts/" + vh.ID.String()
		b.as(t, "viewer", http.MethodPatch, path, map[string]any{"name": "b"}, http.StatusForbidden, nil)
		b.as(t, "viewer", http.MethodPost, b.vhostsPath(), plainHost("c", "c.example.com"), http.StatusForbidden, nil)
		b.as(t, "viewer", http.MethodDelete, path, nil, http.StatusForbidden, nil)
		b.as(t, "outsider", http.MethodGet, path, nil, http.StatusNotFound, nil)
		b.as(t, "outsider", http.MethodGet, b.vhostsPath(), nil, http.StatusNotFound, nil)
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+uuid.NewString(), nil, http.StatusNotFound, nil)
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/not-a-uuid", nil, http.StatusNotFound, nil)
	})

	t.Run("OpenAPIDocumentsRoutesAndGrammars", func(t *testing.T) {
		t.Parallel()
		raw := e.call(t, "", http.MethodGet, "/v1/openapi.json", nil, http.StatusOK, nil)
		var doc struct {
			Paths map[string]map[string]json.RawMessage `json:"paths"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		for _, r := range e.app.Routes() {
			if r.Module != "vhosts" || r.Kind != app.KindAPI {
				continue
			}
			if _, ok := doc.Paths[strings.TrimPrefix(r.OpenAPIPath(), "/v1")][strings.ToLower(r.Method)]; !ok {
				t.Errorf("%s %s is not in the OpenAPI document", r.Method, r.OpenAPIPath())
			}
		}
		for _, s := range []string{"$proxy_add_x_forwarded_for", "gzip_types", "proxy_next_upstream_tries"} {
			if !strings.Contains(string(raw), s) {
				t.Errorf("OpenAPI document does not mention %s", s)
			}
		}
	})

	t.Run("DeletionRacesNewReference", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		for i := range 8 {
			up := b.createUpstream(t, fmt.Sprintf("racy%d", i), "10.3.3.3:80")
			var createErr, deleteErr error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, createErr = b.svc.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
					Name: fmt.Sprintf("racy%d", i), ServerName: fmt.Sprintf("racy%d.example.com", i),
					Locations: []Location{{Path: "/", UpstreamID: up.ID.String()}},
				})
			}()
			go func() {
				defer wg.Done()
				deleteErr = b.ups.Delete(b.ctx, up.ID)
			}()
			wg.Wait()
			// Either the host is refused (the upstream was gone), or the
			// deletion is: 409 when it saw the host, ErrNotRenderable when the
			// host committed while the deletion waited for the workspace.
			var ve *app.ValidationError
			var inUse *app.InUseError
			switch {
			case createErr == nil && deleteErr == nil:
				t.Fatalf("round %d: both the host and the deletion of the upstream it uses succeeded", i)
			case createErr != nil && !errors.As(createErr, &ve):
				t.Fatalf("round %d: create failed with %v, want success or a 422", i, createErr)
			case deleteErr != nil && !errors.As(deleteErr, &inUse) && !errors.Is(deleteErr, ErrNotRenderable):
				t.Fatalf("round %d: delete failed with %v, want success, a 409 or ErrNotRenderable", i, deleteErr)
			}
		}
		for i := range 4 {
			cert := b.createCert(t, fmt.Sprintf("racy%d.example.org", i))
			var createErr, deleteErr error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, createErr = b.svc.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
					Name: fmt.Sprintf("tls%d", i), ServerName: fmt.Sprintf("racy%d.example.org", i), SSLEnabled: true,
					SSLCertificateID: cert.ID.String(), Locations: []Location{{Path: "/", ProxyPass: "http://127.0.0.1:8080"}},
				})
			}()
			go func() {
				defer wg.Done()
				deleteErr = b.certs.Delete(b.ctx, cert.ID)
			}()
			wg.Wait()
			var ve *app.ValidationError
			switch {
			case createErr == nil && deleteErr == nil:
				t.Fatalf("certificate round %d: both the host and the deletion of its certificate succeeded", i)
			case createErr != nil && !errors.As(createErr, &ve):
				t.Fatalf("certificate round %d: create failed with %v, want success or a 422", i, createErr)
			case deleteErr != nil && !errors.Is(deleteErr, app.ErrConflict) && !errors.Is(deleteErr, ErrNotRenderable):
				t.Fatalf("certificate round %d: delete failed with %v, want success, a 409 or ErrNotRenderable", i, deleteErr)
			}
		}
		b.summaries(t) // versions stay consecutive
	})

	t.Run("LowerModulesAskForUsers", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		body := plainHost("uses", "uses.example.com")
		body["ssl_enabled"], body["ssl_certificate_id"] = true, b.cert.ID
		body["locations"] = []any{map[string]any{"path": "/", "upstream_id": b.upstream.ID}}
		vh := b.createVHost(t, body)
		st := b.createStream(t, map[string]any{"name": "tcp", "listen_port": 9000, "upstream_id": b.upstream.ID})
		status, raw := b.do(t, b.tokens["operator"], http.MethodDelete, "/v1/upstreams/"+b.upstream.ID.String(), nil, "")
		if status != http.StatusConflict || !strings.Contains(string(raw), vh.ID.String()) || !strings.Contains(string(raw), st.ID.String()) {
			t.Fatalf("delete used upstream: status %d, want 409 naming both users; body %s", status, raw)
		}
		status, raw = b.do(t, b.tokens["operator"], http.MethodDelete, "/v1/certificates/"+b.cert.ID.String(), nil, "")
		if status != http.StatusConflict || !strings.Contains(string(raw), vh.ID.String()) {
			t.Fatalf("delete used certificate: status %d, want 409 naming the host; body %s", status, raw)
		}
		b.as(t, "operator", http.MethodDelete, "/v1/virtual-hosts/"+vh.ID.String(), nil, http.StatusNoContent, nil)
		b.as(t, "operator", http.MethodDelete, "/v1/streams/"+st.ID.String(), nil, http.StatusNoContent, nil)
		b.as(t, "operator", http.MethodDelete, "/v1/upstreams/"+b.upstream.ID.String(), nil, http.StatusNoContent, nil)
		b.as(t, "operator", http.MethodDelete, "/v1/certificates/"+b.cert.ID.String(), nil, http.StatusNoContent, nil)
	})
}

func TestAPI_Streams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("CRUD", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		st := b.createStream(t, map[string]any{
			"name": "postgres", "listen_port": 5432, "upstream_id": b.upstream.ID, "ssl_enabled": true,
			"ssl_certificate_id": b.cert.ID, "proxy_protocol": true, "accept_proxy_protocol": true,
			"connect_timeout": 5, "timeout": 600, "bandwidth_limit": "1m",
			"target_agents": map[string]any{"type": "agents", "agent_ids": []any{strings.ToUpper(uuid.NewString())}},
		})
		if st.Protocol != ProtocolTCP || st.ConnectTimeout == nil || *st.ConnectTimeout != 5 || st.BandwidthLimit != "1m" ||
			len(st.TargetAgents.AgentIDs) != 1 || st.TargetAgents.AgentIDs[0] != strings.ToLower(st.TargetAgents.AgentIDs[0]) {
			t.Fatalf("created = %+v", st)
		}
		var got Stream
		b.as(t, "viewer", http.MethodGet, "/v1/streams/"+st.ID.String(), nil, http.StatusOK, &got)
		if got.ID != st.ID || got.UpstreamID != b.upstream.ID {
			t.Fatalf("get = %+v", got)
		}
		var list app.List[Stream]
		b.as(t, "viewer", http.MethodGet, b.streamsPath(), nil, http.StatusOK, &list)
		if list.Meta.Total != 1 {
			t.Fatalf("list total = %d", list.Meta.Total)
		}
		var upd Stream
		b.as(t, "operator", http.MethodPatch, "/v1/streams/"+st.ID.String(), `{"ssl_enabled": false, "ssl_certificate_id": null, "timeout": null}`, http.StatusOK, &upd)
		if upd.SSLEnabled || upd.SSLCertificateID != nil || upd.Timeout != nil || upd.ConnectTimeout == nil {
			t.Fatalf("updated = %+v", upd)
		}
		b.as(t, "operator", http.MethodDelete, "/v1/streams/"+st.ID.String(), nil, http.StatusNoContent, nil)
		b.as(t, "viewer", http.MethodGet, "/v1/streams/"+st.ID.String(), nil, http.StatusNotFound, nil)
		want := []string{`stream "postgres" created`, `stream "postgres" updated`, `stream "postgres" deleted`}
		if got := b.summaries(t); strings.Join(got[2:], "|") != strings.Join(want, "|") {
			t.Fatalf("summaries = %q", got)
		}
	})

	t.Run("RejectsBadFields", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		cases := []struct {
			name   string
			body   map[string]any
			fields []string
		}{
			{"Required", map[string]any{"name": ""}, []string{"name", "listen_port", "upstream_id"}},
			{"UDPWithTLS", map[string]any{"name": "u", "listen_port": 53, "protocol": "udp", "upstream_id": b.upstream.ID,
				"ssl_enabled": true, "ssl_certificate_id": b.cert.ID, "accept_proxy_protocol": true}, []string{"ssl_enabled", "accept_proxy_protocol"}},
			{"Protocol", map[string]any{"name": "u", "listen_port": 53, "protocol": "sctp", "upstream_id": b.upstream.ID}, []string{"protocol"}},
			{"Values", map[string]any{"name": "u", "listen_port": 70000, "upstream_id": "x", "connect_timeout": 0,
				"timeout": 86401, "bandwidth_limit": "1 m"}, []string{"listen_port", "upstream_id", "connect_timeout", "timeout", "bandwidth_limit"}},
			{"UnknownUpstream", map[string]any{"name": "u", "listen_port": 53, "upstream_id": uuid.New()}, []string{"upstream_id"}},
		}
		for _, c := range cases {
			status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.streamsPath(), c.body, "")
			t.Run(c.name, func(t *testing.T) { expectFields(t, status, raw, c.fields...) })
		}
	})
}
