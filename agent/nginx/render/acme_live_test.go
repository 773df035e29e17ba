package render

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// TestLiveNginxACMEChallenge checks with a real nginx that a file of
// Options.ACMEChallengeDir is served under /.well-known/acme-challenge/ by
// every plain-HTTP server (the port's default server, a host that denies
// everyone behind basic auth and a rate limit, a redirect-only host), as
// text/plain, and that nothing else is: not a missing token, not the
// directory, not a file beside it.
func TestLiveNginxACMEChallenge(t *testing.T) {
	t.Parallel()
	nginx := nginxBinary(t)
	dir := t.TempDir()
	acmeDir := filepath.Join(dir, "acme")
	if err := os.MkdirAll(acmeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	const token, keyAuth = "tok_EN-123", "tok_EN-123.thumbprint"
	if err := os.WriteFile(filepath.Join(acmeDir, token), []byte(keyAuth), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	port, statusPort := freePort(t), freePort(t)
	u := &agentv1.ConfigUpdate{VirtualHosts: []*agentv1.VirtualHost{
		{
			Id: "vh-locked", ServerName: "locked.test", ListenPort: port,
			AccessList: &agentv1.AccessList{Deny: []string{"all"},
				BasicAuthUsers: []*agentv1.BasicAuthUser{{Username: "u", PasswordHash: "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="}}},
			RateLimit:        &agentv1.RateLimit{RequestsPerSecond: 1},
			CustomDirectives: map[string]string{"default_type": "application/octet-stream"},
			Locations:        []*agentv1.Location{{Path: "~ .", Root: dir}},
		},
		{Id: "vh-moved", ServerName: "moved.test", ListenPort: port, RedirectTo: "http://elsewhere.test"},
	}}
	files, err := Render(u, Options{ConfDir: filepath.Join(dir, "conf"), StatusPort: statusPort, ACMEChallengeDir: acmeDir})
	if err != nil {
		t.Fatal(err)
	}
	runNginx(t, nginx, dir, files, statusPort)

	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(host, path string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	for _, host := range []string{"unknown.test", "locked.test", "moved.test"} {
		t.Run(host, func(t *testing.T) {
			// Several times: the host's 1 r/s limit must not apply.
			for range 3 {
				code, ctype, body := get(host, ACMEChallengePath+token)
				if code != http.StatusOK || body != keyAuth || ctype != "text/plain" {
					t.Fatalf("GET token on %s = %d %q %q, want 200 text/plain %q", host, code, ctype, body, keyAuth)
				}
			}
			for _, p := range []string{
				ACMEChallengePath + "missing", ACMEChallengePath, ACMEChallengePath + "..%2fsecret",
				ACMEChallengePath + "%2e%2e/secret", "/.well-known/acme-challenge" + "/../../secret",
			} {
				code, _, body := get(host, p)
				if code == http.StatusOK || body == "secret" {
					t.Errorf("GET %s on %s = %d %q, want no file", p, host, code, body)
				}
			}
		})
	}
	// The hosts' own rules still hold elsewhere.
	if code, _, body := get("locked.test", "/secret"); code == http.StatusOK || body == "secret" {
		t.Errorf("GET /secret on the locked host = %d %q, want it refused", code, body)
	}
	if code, _, _ := get("moved.test", "/x"); code != http.StatusMovedPermanently {
		t.Errorf("GET /x on the redirect-only host = %d, want 301", code)
	}
	if code, _, _ := get("unknown.test", "/x"); code != http.StatusNotFound {
		t.Errorf("GET /x on the default server = %d, want 404", code)
	}
}
