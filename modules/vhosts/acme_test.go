package vhosts

import "testing"

func TestService_ServerNameCovers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		names, domain string
		want          bool
	}{
		{"api.example.com", "api.example.com", true},
		{"www.example.com api.example.com", "API.example.com", true},
		{"api.example.com", "api.example.com.", true},
		{"api.example.com", "example.com", false},
		{"api.example.com", "x.api.example.com", false},
		{"*.example.com", "api.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "badexample.com", false},
		{"*.example.com", "*.example.com", true},
		{"*.example.com", "", false},
		{"", "example.com", false},
	} {
		if got := ServerNameCovers(c.names, c.domain); got != c.want {
			t.Errorf("ServerNameCovers(%q, %q) = %v, want %v", c.names, c.domain, got, c.want)
		}
	}
}

func TestService_ServesHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	b.createVHost(t, plainHost("plain", "plain.example.com *.apps.example.com"))
	b.createVHost(t, map[string]any{"name": "tls-redirect", "server_name": "api.example.com", "ssl_enabled": true,
		"ssl_certificate_id": b.cert.ID, "redirect_https": true, "locations": []any{map[string]any{"path": "/", "proxy_pass": "http://127.0.0.1:8080"}}})
	b.createVHost(t, map[string]any{"name": "tls-only", "server_name": "secure.example.com", "ssl_enabled": true,
		"ssl_certificate_id": b.cert.ID, "locations": []any{map[string]any{"path": "/", "proxy_pass": "http://127.0.0.1:8080"}}})
	other := e.setup(t)
	for _, c := range []struct {
		domain string
		want   bool
	}{
		{"plain.example.com", true},
		{"x.apps.example.com", true},
		{"api.example.com", true},
		{"secure.example.com", false},
		{"unknown.example.com", false},
	} {
		got, err := b.svc.ServesHTTP(b.ctx, b.ws, c.domain)
		if err != nil || got != c.want {
			t.Errorf("ServesHTTP(%s) = %v %v, want %v", c.domain, got, err, c.want)
		}
		if got, err := b.svc.ServesHTTP(b.ctx, other.ws, c.domain); err != nil || got {
			t.Errorf("ServesHTTP(%s) in another workspace = %v %v, want false", c.domain, got, err)
		}
	}
}
