package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/certs"
)

// TestConfig_HTTPAndHTTPSInBrowser sets up a host on a TLS port and a plain
// port through the virtual host form in Chromium: an HTTP port equal to the
// TLS port is refused at its input; then HTTPS on 8443 with the HTTP port
// 8080 redirecting is stored and the rendered preview listens on both, the
// plain one redirecting to the host's own TLS port. (The same configuration
// served through the real nginx is TestFleetHTTPAndHTTPS.)
func TestConfig_HTTPAndHTTPSInBrowser(t *testing.T) {
	t.Parallel()
	chromiumPath(t)
	m := startConfigMaster(t)
	ctx := context.Background()
	certPEM, keyPEM := apptest.SelfSignedCertUntil(t, time.Now().Add(90*24*time.Hour), "dual.example.test")
	cert, err := m.certs.Create(ctx, certs.CreateParams{WorkspaceID: m.ws.ID, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	b := openBrowser(t)

	var msg string
	err = chromedp.Run(b,
		m.signInAt(m.wsPath("/virtual-hosts/new"), "#vhost-form"),
		chromedp.SendKeys(byName("name"), "dual", chromedp.ByQuery),
		chromedp.SendKeys(byName("server_name"), "dual.example.test", chromedp.ByQuery),
		chromedp.SetValue(byName("listen_port"), "8443", chromedp.ByQuery),
		chromedp.SetValue(byName("http_port"), "8443", chromedp.ByQuery),
		chromedp.Click(byName("ssl_enabled"), chromedp.ByQuery),
		setSelect(byName("ssl_certificate_id"), cert.ID.String()),
		chromedp.SendKeys(byName("locations[0].path"), "/", chromedp.ByQuery),
		chromedp.SendKeys(byName("locations[0].proxy_pass"), "http://127.0.0.1:9000", chromedp.ByQuery),
		chromedp.Click(`#save-virtual-host`, chromedp.ByQuery),
		chromedp.WaitVisible(errorOf("http_port"), chromedp.ByQuery),
		textOf(errorOf("http_port"), &msg),
	)
	if err != nil {
		t.Fatalf("submit with the HTTP port on the TLS port: %v", err)
	}
	mustContain(t, "http_port error", msg, "listen_port")
	if _, total, _ := m.vhosts.ListVirtualHosts(ctx, m.ws.ID, app.Page{Page: 1, PerPage: 10}); total != 0 {
		t.Fatalf("%d virtual hosts stored by a refused form", total)
	}

	var preview string
	err = chromedp.Run(b,
		chromedp.SetValue(byName("http_port"), "8080", chromedp.ByQuery),
		chromedp.Click(byName("redirect_https"), chromedp.ByQuery),
		chromedp.Click(`#save-virtual-host`, chromedp.ByQuery),
		chromedp.WaitVisible(`#preview-panel pre`, chromedp.ByQuery),
		textOf(`#preview-panel pre`, &preview),
	)
	if err != nil {
		t.Fatalf("save the host: %v", err)
	}
	mustContain(t, "preview", preview, "listen 8443 ssl", "listen 8080", "return 301 https://$host:8443$request_uri;")
	list, _, err := m.vhosts.ListVirtualHosts(ctx, m.ws.ID, app.Page{Page: 1, PerPage: 10})
	if err != nil || len(list) != 1 || list[0].ListenPort != 8443 || list[0].HTTPPort != 8080 || !list[0].RedirectHTTPS || !list[0].SSLEnabled {
		t.Fatalf("stored %+v (%v), want TLS on 8443 with http_port 8080 redirecting", list, err)
	}
}
