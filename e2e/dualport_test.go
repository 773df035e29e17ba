package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// dualHost is the server name of TestFleetHTTPAndHTTPS's virtual host.
const dualHost = "dual.fleet.test"

// dualClient requests through nginx on loopback whatever host a URL names,
// verifying TLS against roots, and does not follow redirects unless follow.
func dualClient(roots *x509.CertPool, follow bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// dualGet requests url and returns the status, the body and the Location.
func dualGet(c *http.Client, url string) (int, string, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location"), err
}

// TestFleetHTTPAndHTTPS runs one virtual host on a TLS port and a plain
// http_port through the real master, agent and nginx: both ports serve it
// (HTTPS with the workspace's uploaded certificate), an unknown Host gets
// the 404 default server on the plain port and a refused handshake on the
// TLS port; with redirect_https the plain port redirects to the host's own
// TLS port, and following the redirect reaches the backend.
func TestFleetHTTPAndHTTPS(t *testing.T) {
	if _, err := os.Stat(fleetNginx); err != nil {
		t.Fatalf("nginx is required at %s: %v", fleetNginx, err)
	}
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	dbURL := apptest.NewDatabase(t)
	f := &fleet{agentData: filepath.Join(dir, "agent"), nginxPrefix: filepath.Join(dir, "nginx")}
	f.m = newFleetMaster(t, bins.master, dbURL, dir)
	t.Cleanup(func() { fleetKillNginx(t, f.nginxPrefix) })
	f.agent = newFleetProc(t, "agent", bins.agent, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master log (successful requests left out):\n%s", fleetTail(fleetWithoutOKRequests(f.m.proc.log()), 200))
			t.Logf("agent log:\n%s", fleetTail(f.agent.log(), 200))
			errLog, _ := os.ReadFile(filepath.Join(f.nginxPrefix, "logs", "error.log"))
			t.Logf("nginx error log:\n%s", fleetTail(string(errLog), 50))
		}
	})
	f.m.start(t)
	f.m.login(t)
	f.ws = f.m.workspace(t)
	tok := f.m.api.createToken(t, f.ws, "e2e", map[string]string{"env": "blue"})
	f.agentID = tok.AgentID
	f.agent.args = append(f.agentArgs(f.m.grpcAddr), "--ca-fingerprint", tok.fingerprint(t))
	f.agent.env = fleetEnv("NXMESH_AGENT_TOKEN=" + tok.Token)
	f.agent.start(t)
	f.m.api.awaitAgent(t, f.agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })

	backend := fleetBackend(t, "dual-backend")
	certPEM, keyPEM := apptest.SelfSignedCertUntil(t, time.Now().Add(30*24*time.Hour), dualHost)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(certPEM)) {
		t.Fatal("test certificate does not parse")
	}
	var cert fleetID
	f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/certificates", map[string]any{
		"name": "dual", "certificate_pem": certPEM, "private_key_pem": keyPEM,
	}, http.StatusCreated, &cert)

	tlsPort, httpPort := fleetFreePort(t), fleetFreePort(t)
	for httpPort == tlsPort {
		httpPort = fleetFreePort(t)
	}
	var vh fleetID
	f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/virtual-hosts", map[string]any{
		"name": "dual", "server_name": dualHost, "listen_port": tlsPort, "http_port": httpPort,
		"ssl_enabled": true, "ssl_certificate_id": cert.ID,
		"locations": []map[string]any{{"path": "/", "proxy_pass": "http://" + backend}},
	}, http.StatusCreated, &vh)
	f.m.api.awaitApplied(t, f.ws, f.agentID)

	c := dualClient(roots, false)
	plainURL := func(host, path string) string {
		return "http://" + net.JoinHostPort(host, strconv.Itoa(httpPort)) + path
	}
	tlsURL := func(host, path string) string {
		return "https://" + net.JoinHostPort(host, strconv.Itoa(tlsPort)) + path
	}

	t.Run("BothPortsServeTheHost", func(t *testing.T) {
		for _, url := range []string{plainURL(dualHost, "/a"), tlsURL(dualHost, "/a")} {
			status, body, _, err := dualGet(c, url)
			if err != nil || status != http.StatusOK || body != "dual-backend" {
				t.Errorf("GET %s = %d %q, %v; want 200 dual-backend", url, status, body, err)
			}
		}
	})

	t.Run("UnknownHostIsRefused", func(t *testing.T) {
		status, body, _, err := dualGet(c, plainURL("unknown.fleet.test", "/"))
		if err != nil || status != http.StatusNotFound {
			t.Errorf("plain GET with an unknown Host = %d %q, %v; want 404", status, body, err)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort)),
			&tls.Config{ServerName: "unknown.fleet.test", InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // the handshake must fail whatever is presented
		if err == nil {
			conn.Close()
			t.Error("TLS handshake with an unknown SNI name succeeded, want it refused")
		}
	})

	t.Run("RedirectGoesToTheTLSPort", func(t *testing.T) {
		f.m.api.call(t, http.MethodPatch, "/v1/virtual-hosts/"+vh.ID, map[string]any{"redirect_https": true}, http.StatusOK, nil)
		f.m.api.awaitApplied(t, f.ws, f.agentID)
		status, _, loc, err := dualGet(c, plainURL(dualHost, "/some/path?q=1"))
		want := fmt.Sprintf("https://%s:%d/some/path?q=1", dualHost, tlsPort)
		if err != nil || status != http.StatusMovedPermanently || loc != want {
			t.Fatalf("plain GET = %d Location %q, %v; want 301 to %s", status, loc, err, want)
		}
		status, body, _, err := dualGet(dualClient(roots, true), plainURL(dualHost, "/some/path?q=1"))
		if err != nil || status != http.StatusOK || body != "dual-backend" {
			t.Errorf("following the redirect = %d %q, %v; want 200 dual-backend", status, body, err)
		}
		// The redirect server is not the port's default: unknown names
		// still get 404, not a redirect to themselves.
		status, _, loc, err = dualGet(c, plainURL("unknown.fleet.test", "/"))
		if err != nil || status != http.StatusNotFound {
			t.Errorf("plain GET with an unknown Host after the redirect = %d (Location %q), %v; want 404", status, loc, err)
		}
	})

	t.Run("NoHTTPPortStopsPlainHTTP", func(t *testing.T) {
		f.m.api.call(t, http.MethodPatch, "/v1/virtual-hosts/"+vh.ID, map[string]any{"redirect_https": false, "http_port": 0}, http.StatusOK, nil)
		f.m.api.awaitApplied(t, f.ws, f.agentID)
		if status, _, _, err := dualGet(c, plainURL(dualHost, "/")); err == nil {
			t.Errorf("plain port answered %d after http_port was cleared, want the connection refused", status)
		}
		if status, body, _, err := dualGet(c, tlsURL(dualHost, "/")); err != nil || status != http.StatusOK || body != "dual-backend" {
			t.Errorf("HTTPS = %d %q, %v; want 200 dual-backend", status, body, err)
		}
	})
}
