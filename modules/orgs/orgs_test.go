package orgs

import (
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
)

// TestAPI_ModuleRoutes checks that every API route of the module but the
// invitation link needs a credential,
// is documented and appears in the OpenAPI document.
func TestAPI_ModuleRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	doc := app.OpenAPI(b.app.Routes(), "test")
	paths := doc["paths"].(map[string]any)
	n := 0
	for _, r := range b.app.Routes() {
		if r.Module != "orgs" || r.Kind != app.KindAPI {
			continue
		}
		n++
		// Only the invitation link is answered without a credential: its
		// single-use token is one.
		public := r.Method == "POST" && r.Path == "/v1/invitations/accept"
		if r.Doc.Summary == "" || r.Access.IsPublic() != public {
			t.Errorf("%s %s: summary %q, public %v", r.Method, r.Path, r.Doc.Summary, r.Access.IsPublic())
		}
		ops, _ := paths[strings.TrimPrefix(r.OpenAPIPath(), "/v1")].(map[string]any)
		if _, ok := ops[strings.ToLower(r.Method)]; !ok {
			t.Errorf("%s %s missing from the OpenAPI document", r.Method, r.Path)
		}
	}
	if n != 25 {
		t.Errorf("%d API routes, want 25", n)
	}
}
