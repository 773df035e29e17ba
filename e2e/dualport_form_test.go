package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/certs"
)

// TestConfig_VirtualHostHTTPPortForm submits the virtual host form with an
// HTTP port: a port equal to the TLS port is shown as an error at the input
// and stores nothing; a valid one is stored and shown next to the listen
// port in the list and the form.
func TestConfig_VirtualHostHTTPPortForm(t *testing.T) {
	t.Parallel()
	b := setupConfig(t)
	ctx := context.Background()
	certPEM, keyPEM := apptest.SelfSignedCertUntil(t, time.Now().Add(90*24*time.Hour), "dual.example.test")
	cert, err := b.certs.Create(ctx, certs.CreateParams{WorkspaceID: b.ws.ID, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	form := func(httpPort string) url.Values {
		return url.Values{
			"_csrf": {b.csrf}, "name": {"dual"}, "server_name": {"dual.example.test"}, "target_agents.type": {"all"},
			"listen_port": {"443"}, "http_port": {httpPort}, "ssl_enabled": {"true"}, "ssl_certificate_id": {cert.ID.String()},
			"locations[0].path": {"/"}, "locations[0].match": {"prefix"}, "locations[0].target": {"proxy"},
			"locations[0].proxy_pass": {"http://127.0.0.1:9000"},
		}
	}

	p := b.c.post(b.wsPath("/virtual-hosts"), form("443"))
	expectStatus(t, p, http.StatusUnprocessableEntity)
	mustContain(t, "form", p.body, `id="f-http_port-error"`, "differ from listen_port")
	if _, total, _ := b.vhosts.ListVirtualHosts(ctx, b.ws.ID, app.Page{Page: 1, PerPage: 10}); total != 0 {
		t.Fatalf("%d virtual hosts stored by a refused form", total)
	}

	p = b.c.post(b.wsPath("/virtual-hosts"), form("80"))
	expectStatus(t, p, http.StatusSeeOther)
	list, _, err := b.vhosts.ListVirtualHosts(ctx, b.ws.ID, app.Page{Page: 1, PerPage: 10})
	if err != nil || len(list) != 1 || list[0].HTTPPort != 80 || list[0].ListenPort != 443 {
		t.Fatalf("stored hosts = %+v, %v; want one on 443 with http_port 80", list, err)
	}
	p = b.c.get(b.wsPath("/virtual-hosts"))
	expectStatus(t, p, http.StatusOK)
	mustContain(t, "list", p.body, "443 + 80 (HTTP)")
	p = b.c.get("/virtual-hosts/" + list[0].ID.String())
	expectStatus(t, p, http.StatusOK)
	mustContain(t, "edit form", p.body, `name="http_port"`)
	if i := strings.Index(p.body, `name="http_port"`); i < 0 || !strings.Contains(p.body[i:min(len(p.body), i+200)], `value="80"`) {
		t.Errorf("the edit form does not show http_port 80")
	}
}
