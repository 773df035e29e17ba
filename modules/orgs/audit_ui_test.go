package orgs

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// TestUI_AuditNamesAndTypes: the audit page names each object beside its id,
// links to the object's page, and filters by every object type the modules
// audit.
func TestUI_AuditNamesAndTypes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice, bob := b.user("alice", false), b.user("bob", false)
	org := b.createOrg(alice, "acme")
	ws := b.createWorkspace(alice, org.ID, "prod")
	b.addMember(org.ID, bob, "viewer")

	// Entries as the other modules write them: the object's public state.
	objID := map[string]string{}
	for _, e := range []struct {
		typ   string
		after map[string]any
		name  string
	}{
		{"virtual_host", map[string]any{"name": "shop-frontend", "server_names": []string{"shop.example.com"}}, "shop-frontend"},
		{"upstream", map[string]any{"name": "shop-backend"}, "shop-backend"},
		{"stream", map[string]any{"name": "postgres-tcp"}, "postgres-tcp"},
		{"certificate", map[string]any{"name": "", "domain": "shop.example.com"}, "shop.example.com"},
		{"agent", map[string]any{"name": "edge-paris-1", "hostname": "paris1.internal"}, "edge-paris-1"},
		{"config", map[string]any{"version": 7, "restored_version": 5}, "version 7"},
		{"apikey", map[string]any{"name": "deploy-bot", "key_hash": "x"}, "deploy-bot"},
		{"acme_settings", map[string]any{"email": "certs@example.com"}, "certs@example.com"},
		{"user", map[string]any{"email": "carol@example.com", "name": "Carol"}, "carol@example.com"},
	} {
		id := uuid.NewString()
		if e.typ == "config" {
			id = ws.ID.String()
		}
		objID[e.typ] = id
		if err := app.Audit(context.Background(), b.db, app.AuditParams{
			OrgID: org.ID, WorkspaceID: ws.ID, Action: e.typ + ".update", ObjectType: e.typ, ObjectID: id, After: e.after,
		}); err != nil {
			t.Fatal(err)
		}
	}

	admin := b.browser(alice)
	audit := "/orgs/" + org.ID.String() + "/audit"
	for _, tc := range []struct {
		typ  string
		name string
		href string
	}{
		{"virtual_host", "shop-frontend", "/virtual-hosts/" + objID["virtual_host"]},
		{"upstream", "shop-backend", "/upstreams/" + objID["upstream"]},
		{"stream", "postgres-tcp", "/streams/" + objID["stream"]},
		{"certificate", "shop.example.com", "/certificates/" + objID["certificate"]},
		{"agent", "edge-paris-1", "/agents/" + objID["agent"]},
		{"config", "version 7", "/workspaces/" + ws.ID.String() + "/config/versions/7"},
		{"apikey", "deploy-bot", audit[:len(audit)-len("/audit")] + "/api-keys"},
		{"acme_settings", "certs@example.com", "/orgs/" + org.ID.String() + "/acme-settings"},
		{"user", "carol@example.com", "/users"},
		{ObjectWorkspace, "WS prod", "/workspaces/" + ws.ID.String()},
		{ObjectOrganization, org.Name, "/orgs/" + org.ID.String() + "/workspaces"},
		{ObjectMember, bob.Email, "/orgs/" + org.ID.String() + "/members"},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			status, page, _ := admin.do(http.MethodGet, audit+"?object_type="+tc.typ, nil, "")
			if status != http.StatusOK {
				t.Fatalf("status %d:\n%s", status, page)
			}
			if !strings.Contains(page, `<option value="`+tc.typ+`" selected`) {
				t.Errorf("the filter does not offer %s selected", tc.typ)
			}
			link := `<a href="` + tc.href + `">` + tc.name + `</a>`
			if !strings.Contains(page, link) {
				t.Fatalf("page does not show %s:\n%s", link, page)
			}
			for _, other := range []string{"shop-backend", "postgres-tcp", "edge-paris-1", "deploy-bot", "carol@example.com"} {
				if other != tc.name && strings.Contains(page, ">"+other+"<") {
					t.Errorf("filter %s shows %s", tc.typ, other)
				}
			}
		})
	}

	// The API names the object too.
	data, _ := b.call(http.MethodGet, "/v1/organizations/"+org.ID.String()+"/audit-log?object_type=upstream", alice.Token, nil).
		expect(http.StatusOK).list()
	if len(data) != 1 || data[0]["object_name"] != "shop-backend" {
		t.Fatalf("API entries = %v", data)
	}

	// A deleted object keeps its name, without a link to a page that is gone.
	if err := app.Audit(context.Background(), b.db, app.AuditParams{
		OrgID: org.ID, WorkspaceID: ws.ID, Action: "upstream.delete", ObjectType: "upstream", ObjectID: objID["upstream"],
		Before: map[string]any{"name": "shop-backend"},
	}); err != nil {
		t.Fatal(err)
	}
	_, page, _ := admin.do(http.MethodGet, audit+"?object_type=upstream", nil, "")
	if strings.Count(page, `<a href="/upstreams/`+objID["upstream"]+`">`) != 1 || strings.Count(page, ">shop-backend") != 2 {
		t.Fatalf("deleted upstream:\n%s", page)
	}
}
