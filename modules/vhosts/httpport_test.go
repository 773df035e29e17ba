package vhosts

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
)

// tlsBody is a valid TLS virtual host body for serverName with cert.
func tlsBody(name, serverName string, cert uuid.UUID) map[string]any {
	m := plainHost(name, serverName)
	m["ssl_enabled"], m["ssl_certificate_id"] = true, cert
	return m
}

func TestAPI_VirtualHostHTTPPort(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("RejectsBadHTTPPorts", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		before := b.version(t)
		cases := []struct {
			name   string
			mutate func(map[string]any)
			fields []string
		}{
			{"WithoutTLS", func(m map[string]any) {
				delete(m, "ssl_certificate_id")
				m["ssl_enabled"], m["http_port"] = false, 8080
			}, []string{"http_port"}},
			{"WithoutTLSOnListenPort", func(m map[string]any) {
				delete(m, "ssl_certificate_id")
				m["ssl_enabled"], m["http_port"] = false, 80
			}, []string{"http_port"}},
			{"Negative", func(m map[string]any) { m["http_port"] = -1 }, []string{"http_port"}},
			{"TooLarge", func(m map[string]any) { m["http_port"] = 65536 }, []string{"http_port"}},
			{"EqualsDefaultListenPort", func(m map[string]any) { m["http_port"] = 443 }, []string{"http_port"}},
			{"EqualsListenPort", func(m map[string]any) { m["listen_port"], m["http_port"] = 8443, 8443 }, []string{"http_port"}},
			{"EqualsListenPortWithRedirect", func(m map[string]any) {
				m["listen_port"], m["http_port"], m["redirect_https"] = 8443, 8443, true
			}, []string{"http_port"}},
			{"String", func(m map[string]any) { m["http_port"] = "80" }, []string{"http_port"}},
			{"RedirectFromListenPortWithoutHTTPPort", func(m map[string]any) {
				m["listen_port"], m["redirect_https"] = 80, true
			}, []string{"redirect_https"}},
		}
		for _, c := range cases {
			body := tlsBody("h", "api.example.com", b.cert.ID)
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
	})

	t.Run("ServesBothPortsAndRedirectsToTheTLSPort", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		admin := b.createCert(t, "admin.example.com")

		body := tlsBody("both", "api.example.com", b.cert.ID)
		body["http_port"] = 80
		both := b.createVHost(t, body)
		var got map[string]any
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+both.ID.String(), nil, http.StatusOK, &got)
		if got["http_port"] != float64(80) || got["listen_port"] != float64(443) {
			t.Fatalf("GET http_port = %v, listen_port = %v; want 80 and 443", got["http_port"], got["listen_port"])
		}
		if p := VirtualHostToProto(both, nil); p.GetHttpPort() != 80 || p.GetListenPort() != 443 {
			t.Fatalf("agent form http_port %d listen_port %d, want 80 and 443", p.GetHttpPort(), p.GetListenPort())
		}
		var p Preview
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+both.ID.String()+"/preview", nil, http.StatusOK, &p)
		conf := p.Files[render.HTTPConf]
		if !strings.Contains(conf, "listen 443 ssl;\n    listen 80;\n") || strings.Contains(conf, "return 301") {
			t.Errorf("preview of a host on 443 and 80 does not serve both ports:\n%s", conf)
		}

		body = tlsBody("admin", "admin.example.com", admin.ID)
		body["listen_port"], body["http_port"], body["redirect_https"] = 8443, 8080, true
		redirect := b.createVHost(t, body)
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+redirect.ID.String()+"/preview", nil, http.StatusOK, &p)
		conf = p.Files[render.HTTPConf]
		if !strings.Contains(conf, "listen 8080;\n    server_name admin.example.com;\n    return 301 https://$host:8443$request_uri;") {
			t.Errorf("preview lacks the redirect from 8080 to 8443:\n%s", conf)
		}
		if strings.Contains(conf, "listen 80;") {
			t.Errorf("redirect with http_port 8080 still listens on 80:\n%s", conf)
		}

		// Turning TLS off keeps refusing the plain port it no longer has;
		// clearing it with TLS works.
		status, raw := b.do(t, b.tokens["operator"], http.MethodPatch, "/v1/virtual-hosts/"+both.ID.String(),
			map[string]any{"ssl_enabled": false, "ssl_certificate_id": ""}, "")
		expectFields(t, status, raw, "http_port")
		var plain VirtualHost
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+both.ID.String(),
			map[string]any{"ssl_enabled": false, "ssl_certificate_id": "", "http_port": 0, "listen_port": 80}, http.StatusOK, &plain)
		if plain.HTTPPort != 0 || plain.SSLEnabled || plain.ListenPort != 80 {
			t.Fatalf("after turning TLS off: %+v", plain)
		}
	})

	t.Run("RedirectWithoutHTTPPortStaysOnPort80", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		body := tlsBody("r", "api.example.com", b.cert.ID)
		body["redirect_https"] = true
		vh := b.createVHost(t, body)
		if vh.HTTPPort != 0 {
			t.Fatalf("http_port = %d, want 0 (absent)", vh.HTTPPort)
		}
		var p Preview
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+vh.ID.String()+"/preview", nil, http.StatusOK, &p)
		if !strings.Contains(p.Files[render.HTTPConf], "listen 80;\n    server_name api.example.com;\n    return 301 https://$host$request_uri;") {
			t.Errorf("preview lacks the port-80 redirect:\n%s", p.Files[render.HTTPConf])
		}
		// Port 80 stays occupied by the redirect.
		status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), plainHost("p", "api.example.com"), "")
		if status != http.StatusConflict || !strings.Contains(string(raw), "redirect to HTTPS") {
			t.Errorf("plain host on the redirect's port: status %d, want 409; body %s", status, raw)
		}
	})

	t.Run("PortConflicts", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		www := b.createCert(t, "www.example.com")
		api := b.createVHost(t, tlsBody("api", "api.example.com", b.cert.ID))
		conflicts := []struct {
			name string
			body map[string]any
			want string
		}{
			{"HTTPPortOnTLSPort", func() map[string]any {
				m := tlsBody("www", "www.example.com", www.ID)
				m["listen_port"], m["http_port"] = 8443, 443
				return m
			}(), api.ID.String()},
		}
		for _, c := range conflicts {
			status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), c.body, "")
			if status != http.StatusConflict || !strings.Contains(string(raw), c.want) {
				t.Errorf("%s: status %d, want 409 naming %s; body %s", c.name, status, c.want, raw)
			}
		}
		// The HTTP port holds the host's names: a plain host of the same
		// name on it is a conflict, one of another name is not.
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+api.ID.String(), map[string]any{"http_port": 8080}, http.StatusOK, nil)
		same := plainHost("same", "api.example.com")
		same["listen_port"] = 8080
		status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), same, "")
		if status != http.StatusConflict || !strings.Contains(string(raw), "its HTTP port") {
			t.Errorf("plain host on another host's http_port with its name: status %d, want 409; body %s", status, raw)
		}
		other := plainHost("other", "other.example.com")
		other["listen_port"] = 8080
		b.createVHost(t, other)
		// A TLS host cannot take a port that is plain now.
		status, _ = b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), func() map[string]any {
			m := tlsBody("www", "www.example.com", www.ID)
			m["listen_port"] = 8080
			return m
		}(), "")
		if status != http.StatusConflict {
			t.Errorf("TLS host on a plain http_port: status %d, want 409", status)
		}
	})

	t.Run("DefaultServerCoversTheHTTPPort", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		admin := b.createCert(t, "admin.example.com")
		body := tlsBody("both", "api.example.com", b.cert.ID)
		body["http_port"], body["default_server"] = 80, true
		both := b.createVHost(t, body)
		var p Preview
		b.as(t, "viewer", http.MethodGet, "/v1/virtual-hosts/"+both.ID.String()+"/preview", nil, http.StatusOK, &p)
		if !strings.Contains(p.Files[render.HTTPConf], "listen 443 ssl default_server;\n    listen 80 default_server;\n") {
			t.Errorf("preview does not make the host the default of both ports:\n%s", p.Files[render.HTTPConf])
		}
		before := b.version(t)

		// A plain default on port 80 collides with the host's http_port.
		plain := plainHost("plain", "plain.example.com")
		plain["default_server"] = true
		status, raw := b.do(t, b.tokens["operator"], http.MethodPost, b.vhostsPath(), plain, "")
		expectFields(t, status, raw, "default_server")
		if !strings.Contains(string(raw), both.ID.String()) || !strings.Contains(string(raw), "port 80") {
			t.Errorf("message does not name the default host and port: %s", raw)
		}
		if b.version(t) != before {
			t.Fatal("a refused default_server changed the configuration")
		}

		// A redirect is never a default server: a host that only redirects
		// from port 80 may be the default of its TLS port while another host
		// is the default of port 80.
		b.as(t, "operator", http.MethodPatch, "/v1/virtual-hosts/"+both.ID.String(), map[string]any{"redirect_https": true}, http.StatusOK, nil)
		b.createVHost(t, plain)
		body = tlsBody("admin", "admin.example.com", admin.ID)
		body["listen_port"], body["http_port"], body["redirect_https"], body["default_server"] = 8443, 80, true, true
		b.createVHost(t, body)
		// Serving port 80 again would make it the second default there.
		status, raw = b.do(t, b.tokens["operator"], http.MethodPatch, "/v1/virtual-hosts/"+both.ID.String(), map[string]any{"redirect_https": false}, "")
		expectFields(t, status, raw, "default_server")
	})
}
