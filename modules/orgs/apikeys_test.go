package orgs

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

func TestAPI_APIKeys(t *testing.T) {
	t.Parallel()

	t.Run("ShowsTheSecretOnlyOnCreate", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org := b.createOrg(alice, "acme")
		other := b.createOrg(alice, "other")
		base := "/v1/organizations/" + org.ID.String() + "/api-keys"

		created := b.call(http.MethodPost, base, alice.Token, map[string]any{
			"name": "ci", "role": "admin", "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		}).expect(http.StatusCreated).object()
		secret, _ := created["key"].(string)
		if !strings.HasPrefix(secret, "nxm_") || created["organization_id"] != org.ID.String() || created["role"] != "admin" {
			t.Fatalf("created = %v", created)
		}
		if !strings.HasPrefix(secret, created["prefix"].(string)) {
			t.Fatalf("prefix %v is not the start of the key", created["prefix"])
		}

		data, meta := b.call(http.MethodGet, base, alice.Token, nil).expect(http.StatusOK).list()
		if meta.Total != 1 || len(data) != 1 || data[0]["id"] != created["id"] {
			t.Fatalf("list = %v %+v", data, meta)
		}
		if _, ok := data[0]["key"]; ok {
			t.Fatalf("listed key shows its secret: %v", data[0])
		}

		// The key works on its organization only, and cannot create organizations.
		b.call(http.MethodGet, "/v1/organizations/"+org.ID.String(), secret, nil).expect(http.StatusOK)
		b.call(http.MethodGet, "/v1/organizations/"+other.ID.String(), secret, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		listed, meta := b.call(http.MethodGet, "/v1/organizations", secret, nil).expect(http.StatusOK).list()
		if meta.Total != 1 || listed[0]["id"] != org.ID.String() {
			t.Fatalf("key lists %v", listed)
		}
		b.call(http.MethodPost, "/v1/organizations", secret, map[string]string{"name": "K", "slug": "by-key"}).
			expectError(http.StatusForbidden, app.CodeForbidden, "")

		// Changes made with the key are audited with the key.
		b.createWorkspace(testUser{Token: secret}, org.ID, "from-key")
		entries, _ := b.call(http.MethodGet, "/v1/organizations/"+org.ID.String()+"/audit-log?object_type=workspace", alice.Token, nil).expect(http.StatusOK).list()
		if actor := entries[0]["actor"].(map[string]any); actor["api_key_id"] != created["id"] || actor["user_id"] != alice.ID.String() {
			t.Fatalf("actor = %v", actor)
		}
	})

	t.Run("RevokesAndRotates", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org := b.createOrg(alice, "acme")
		base := "/v1/organizations/" + org.ID.String() + "/api-keys"
		orgPath := "/v1/organizations/" + org.ID.String()

		k := b.call(http.MethodPost, base, alice.Token, map[string]string{"name": "rotating", "role": "viewer"}).expect(http.StatusCreated).object()
		old := k["key"].(string)
		rotated := b.call(http.MethodPost, base+"/"+k["id"].(string)+"/rotate", alice.Token, nil).expect(http.StatusOK).object()
		fresh, _ := rotated["key"].(string)
		if fresh == "" || fresh == old || rotated["id"] != k["id"] {
			t.Fatalf("rotated = %v", rotated)
		}
		b.call(http.MethodGet, orgPath, old, nil).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
		b.call(http.MethodGet, orgPath, fresh, nil).expect(http.StatusOK)

		b.call(http.MethodDelete, base+"/"+k["id"].(string), alice.Token, nil).expect(http.StatusNoContent)
		b.call(http.MethodGet, orgPath, fresh, nil).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
		data, _ := b.call(http.MethodGet, base, alice.Token, nil).expect(http.StatusOK).list()
		if len(data) != 1 || data[0]["revoked_at"] == nil {
			t.Fatalf("revoked key listed as %v", data)
		}
		b.call(http.MethodDelete, base+"/"+uuid.NewString(), alice.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.call(http.MethodDelete, base+"/not-a-uuid", alice.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
	})

	t.Run("AdminsCannotHandleOwnerKeys", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, adam := b.user("alice", false), b.user("adam", false)
		org := b.createOrg(alice, "acme")
		b.addMember(org.ID, adam, "admin")
		base := "/v1/organizations/" + org.ID.String() + "/api-keys"

		b.call(http.MethodPost, base, adam.Token, map[string]string{"name": "root", "role": "owner"}).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodPost, base, adam.Token, map[string]string{"name": "ops", "role": "admin"}).expect(http.StatusCreated)

		owner := b.call(http.MethodPost, base, alice.Token, map[string]string{"name": "root", "role": "owner"}).expect(http.StatusCreated).object()
		id := owner["id"].(string)
		b.call(http.MethodPost, base+"/"+id+"/rotate", adam.Token, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodDelete, base+"/"+id, adam.Token, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")

		// An admin key cannot mint an owner key either.
		adminKey := b.call(http.MethodPost, base, alice.Token, map[string]string{"name": "admin-key", "role": "admin"}).expect(http.StatusCreated).object()
		b.call(http.MethodPost, base, adminKey["key"].(string), map[string]string{"name": "escalate", "role": "owner"}).
			expectError(http.StatusForbidden, app.CodeForbidden, "")
	})

	t.Run("ValidatesTheBody", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org, other := b.createOrg(alice, "acme"), b.createOrg(alice, "other")
		mine := b.createWorkspace(alice, org.ID, "prod")
		foreign := b.createWorkspace(alice, other.ID, "prod")
		base := "/v1/organizations/" + org.ID.String() + "/api-keys"

		cases := []struct {
			body  any
			field string
		}{
			{map[string]any{"name": "k", "role": "viewer", "workspace_id": foreign.ID.String()}, "workspace_id"},
			{map[string]any{"name": "k", "role": "viewer", "workspace_id": "nope"}, "workspace_id"},
			{map[string]any{"name": "k", "role": "viewer", "expires_at": "tomorrow"}, "expires_at"},
			{map[string]any{"name": "k", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"},
			{map[string]any{"name": "k", "role": "boss"}, "role"},
			{map[string]any{"role": "viewer"}, "name"},
			{map[string]any{"name": "k", "role": "viewer", "secret": "mine"}, "secret"},
			{`[]`, "body"},
		}
		for _, tc := range cases {
			b.call(http.MethodPost, base, alice.Token, tc.body).expectError(http.StatusUnprocessableEntity, app.CodeValidation, tc.field)
		}

		k := b.call(http.MethodPost, base, alice.Token, map[string]any{"name": "ws", "role": "operator", "workspace_id": mine.ID.String()}).
			expect(http.StatusCreated).object()
		if k["workspace_id"] != mine.ID.String() {
			t.Fatalf("workspace key = %v", k)
		}
		// A workspace key reaches its workspace, not the organization's other routes.
		secret := k["key"].(string)
		b.call(http.MethodGet, "/v1/workspaces/"+mine.ID.String(), secret, nil).expect(http.StatusOK)
		b.call(http.MethodGet, "/v1/organizations/"+org.ID.String()+"/members", secret, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
	})
}
