package orgs

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

func TestAPI_Organizations(t *testing.T) {
	t.Parallel()

	t.Run("CreatesWithSeedShapeAndCallerAsOwner", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		res := b.call(http.MethodPost, "/v1/organizations", alice.Token, map[string]string{"name": "Acme Corp", "slug": "acme-corp"})
		res.expect(http.StatusCreated)
		org := res.object()
		expectKeys(t, "organization", org, "id", "name", "slug", "require_email_code", "created_at", "updated_at")
		if org["name"] != "Acme Corp" || org["slug"] != "acme-corp" || org["require_email_code"] != false {
			t.Fatalf("organization = %v", org)
		}
		expectTimestamp(t, "created_at", org["created_at"])
		expectTimestamp(t, "updated_at", org["updated_at"])

		id := org["id"].(string)
		got := b.call(http.MethodGet, "/v1/organizations/"+id, alice.Token, nil).expect(http.StatusOK).object()
		if got["id"] != id || got["slug"] != "acme-corp" {
			t.Fatalf("get = %v", got)
		}
		members, meta := b.call(http.MethodGet, "/v1/organizations/"+id+"/members", alice.Token, nil).expect(http.StatusOK).list()
		if meta.Total != 1 || len(members) != 1 {
			t.Fatalf("members = %v %+v", members, meta)
		}
		expectKeys(t, "member", members[0], "user_id", "email", "name", "role", "created_at")
		if members[0]["user_id"] != alice.ID.String() || members[0]["role"] != "owner" || members[0]["email"] != alice.Email || members[0]["name"] != "alice" {
			t.Fatalf("member = %v", members[0])
		}
		expectTimestamp(t, "member created_at", members[0]["created_at"])
	})

	t.Run("ListsOnlyTheCallersOrganizations", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob, root := b.user("alice", false), b.user("bob", false), b.user("root", true)
		a1 := b.createOrg(alice, "alpha")
		b.createOrg(alice, "alpha-two")
		b.createOrg(bob, "bravo")

		data, meta := b.call(http.MethodGet, "/v1/organizations", alice.Token, nil).expect(http.StatusOK).list()
		if meta.Total != 2 || len(data) != 2 || meta.Page != 1 || meta.PerPage != app.DefaultPerPage {
			t.Fatalf("alice sees %v %+v", data, meta)
		}
		if data[0]["id"] != a1.ID.String() {
			t.Fatalf("oldest first: got %v first", data[0]["slug"])
		}
		expectKeys(t, "listed organization", data[0], "id", "name", "slug", "require_email_code", "created_at", "updated_at")

		data, meta = b.call(http.MethodGet, "/v1/organizations?per_page=1&page=2", alice.Token, nil).expect(http.StatusOK).list()
		if meta.Total != 2 || len(data) != 1 || data[0]["slug"] != "alpha-two" {
			t.Fatalf("page 2 = %v %+v", data, meta)
		}
		_, meta = b.call(http.MethodGet, "/v1/organizations", bob.Token, nil).expect(http.StatusOK).list()
		if meta.Total != 1 {
			t.Fatalf("bob sees %d organizations", meta.Total)
		}
		_, meta = b.call(http.MethodGet, "/v1/organizations", root.Token, nil).expect(http.StatusOK).list()
		if meta.Total != 3 {
			t.Fatalf("superadmin sees %d organizations, want 3", meta.Total)
		}
	})

	t.Run("CapsPerPageAt100", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		_, meta := b.call(http.MethodGet, "/v1/organizations?per_page=1000", alice.Token, nil).expect(http.StatusOK).list()
		if meta.PerPage != 100 {
			t.Fatalf("per_page = %d, want 100", meta.PerPage)
		}
		b.call(http.MethodGet, "/v1/organizations?per_page=0", alice.Token, nil).expectError(http.StatusUnprocessableEntity, app.CodeValidation, "per_page")
	})

	t.Run("RejectsDuplicateSlug", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		b.createOrg(alice, "acme")
		res := b.call(http.MethodPost, "/v1/organizations", bob.Token, map[string]string{"name": "Other", "slug": "acme"})
		res.expectError(http.StatusConflict, app.CodeConflict, "")
		if !strings.Contains(strings.ToLower(res.message()), "slug") {
			t.Fatalf("message %q does not mention the slug", res.message())
		}
		other := b.createOrg(alice, "other")
		b.call(http.MethodPatch, "/v1/organizations/"+other.ID.String(), alice.Token, map[string]string{"slug": "acme"}).
			expectError(http.StatusConflict, app.CodeConflict, "")
	})

	t.Run("RejectsInvalidBodies", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org := b.createOrg(alice, "acme")
		cases := []struct {
			name   string
			method string
			path   string
			body   any
			field  string
		}{
			{"BadSlug", http.MethodPost, "/v1/organizations", map[string]string{"name": "X", "slug": "Bad Slug!"}, "slug"},
			{"SlugTooShort", http.MethodPost, "/v1/organizations", map[string]string{"name": "X", "slug": "a"}, "slug"},
			{"SlugEndsWithDash", http.MethodPost, "/v1/organizations", map[string]string{"name": "X", "slug": "acme-"}, "slug"},
			{"SlugTooLong", http.MethodPost, "/v1/organizations", map[string]string{"name": "X", "slug": strings.Repeat("a", 64)}, "slug"},
			{"MissingName", http.MethodPost, "/v1/organizations", map[string]string{"slug": "fine"}, "name"},
			{"NameTooLong", http.MethodPost, "/v1/organizations", map[string]string{"name": strings.Repeat("n", 101), "slug": "fine"}, "name"},
			{"NotAnObject", http.MethodPost, "/v1/organizations", `["acme"]`, "body"},
			{"UnknownField", http.MethodPost, "/v1/organizations", map[string]any{"name": "X", "slug": "fine", "owner": "me"}, "owner"},
			{"WrongType", http.MethodPost, "/v1/organizations", map[string]any{"name": 5, "slug": "fine"}, "name"},
			{"EmptyPatch", http.MethodPatch, "/v1/organizations/" + org.ID.String(), map[string]any{}, "body"},
			{"PatchBadSlug", http.MethodPatch, "/v1/organizations/" + org.ID.String(), map[string]any{"slug": "Bad Slug!"}, "slug"},
			{"PatchEmptyName", http.MethodPatch, "/v1/organizations/" + org.ID.String(), map[string]any{"name": "  "}, "name"},
			{"WorkspaceBadSlug", http.MethodPost, "/v1/organizations/" + org.ID.String() + "/workspaces", map[string]any{"name": "W", "slug": "Bad Slug!"}, "slug"},
			{"WorkspaceNotAnObject", http.MethodPost, "/v1/organizations/" + org.ID.String() + "/workspaces", `"staging"`, "body"},
			{"WorkspaceUnknownField", http.MethodPost, "/v1/organizations/" + org.ID.String() + "/workspaces", map[string]any{"name": "W", "slug": "w1", "x": 1}, "x"},
		}
		for _, tc := range cases {
			b.call(tc.method, tc.path, alice.Token, tc.body).expectError(http.StatusUnprocessableEntity, app.CodeValidation, tc.field)
		}
	})

	t.Run("MalformedIDIsNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		for _, p := range []string{
			"/v1/organizations/not-a-uuid",
			"/v1/organizations/" + strings.ReplaceAll(uuid.NewString(), "-", ""),
			"/v1/organizations/" + uuid.NewString(),
			"/v1/organizations/not-a-uuid/workspaces",
			"/v1/workspaces/123",
			"/v1/workspaces/" + uuid.NewString(),
		} {
			b.call(http.MethodGet, p, alice.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		}
		org := b.createOrg(alice, "acme")
		b.call(http.MethodPatch, "/v1/organizations/"+org.ID.String()+"/members/nope", alice.Token, map[string]string{"role": "viewer"}).
			expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.call(http.MethodDelete, "/v1/organizations/"+org.ID.String()+"/members/"+uuid.NewString(), alice.Token, nil).
			expectError(http.StatusNotFound, app.CodeNotFound, "")
	})

	t.Run("UpdatesNameSlugAndEmailCodeRequirement", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org := b.createOrg(alice, "acme")
		path := "/v1/organizations/" + org.ID.String()
		got := b.call(http.MethodPatch, path, alice.Token, map[string]string{"name": "Acme Corporation"}).expect(http.StatusOK).object()
		if got["name"] != "Acme Corporation" || got["slug"] != "acme" {
			t.Fatalf("after name patch: %v", got)
		}
		got = b.call(http.MethodPatch, path, alice.Token, map[string]any{"slug": "acme-corp", "require_email_code": false}).expect(http.StatusOK).object()
		if got["name"] != "Acme Corporation" || got["slug"] != "acme-corp" || got["require_email_code"] != false {
			t.Fatalf("after slug patch: %v", got)
		}
		got = b.call(http.MethodGet, path, alice.Token, nil).expect(http.StatusOK).object()
		if got["slug"] != "acme-corp" || got["require_email_code"] != false {
			t.Fatalf("stored: %v", got)
		}
		// Turning the code on needs SMTP (TestAPI_RequireEmailCode covers it with mail).
		b.call(http.MethodPatch, path, alice.Token, map[string]any{"name": "Other", "require_email_code": true}).
			expectError(http.StatusUnprocessableEntity, app.CodeValidation, "require_email_code")
		if got := b.call(http.MethodGet, path, alice.Token, nil).expect(http.StatusOK).object(); got["name"] != "Acme Corporation" || got["require_email_code"] != false {
			t.Fatalf("a refused patch changed: %v", got)
		}
	})

	t.Run("DeletesWithEverythingInIt", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org := b.createOrg(alice, "acme")
		b.createWorkspace(alice, org.ID, "prod")
		b.call(http.MethodDelete, "/v1/organizations/"+org.ID.String(), alice.Token, nil).expect(http.StatusNoContent)
		b.call(http.MethodGet, "/v1/organizations/"+org.ID.String(), alice.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		for _, table := range []string{"workspaces", "memberships"} {
			var n int64
			if err := b.db.Table(table).Where("organization_id = ?", org.ID).Count(&n).Error; err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("%d %s rows left", n, table)
			}
		}
	})

	t.Run("OnlyOwnersDelete", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, adam := b.user("alice", false), b.user("adam", false)
		org := b.createOrg(alice, "acme")
		b.addMember(org.ID, adam, "admin")
		b.call(http.MethodDelete, "/v1/organizations/"+org.ID.String(), adam.Token, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodPatch, "/v1/organizations/"+org.ID.String(), adam.Token, map[string]string{"name": "Renamed"}).expect(http.StatusOK)
	})

	t.Run("RequiresAuthentication", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.call(http.MethodGet, "/v1/organizations", "", nil).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
		b.call(http.MethodPost, "/v1/organizations", "", map[string]string{"name": "A", "slug": "aa"}).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
		b.call(http.MethodGet, "/v1/organizations/"+uuid.NewString(), "", nil).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
		b.call(http.MethodGet, "/v1/organizations", "garbage", nil).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
	})
}

func TestAPI_Workspaces(t *testing.T) {
	t.Parallel()

	t.Run("CRUDWithSeedShape", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org := b.createOrg(alice, "acme")
		base := "/v1/organizations/" + org.ID.String() + "/workspaces"

		ws := b.call(http.MethodPost, base, alice.Token, map[string]string{"name": "Staging", "slug": "staging"}).expect(http.StatusCreated).object()
		expectKeys(t, "workspace", ws, "id", "organization_id", "name", "slug", "created_at", "updated_at")
		if ws["organization_id"] != org.ID.String() || ws["name"] != "Staging" || ws["slug"] != "staging" {
			t.Fatalf("workspace = %v", ws)
		}
		expectTimestamp(t, "created_at", ws["created_at"])
		id := ws["id"].(string)

		b.createWorkspace(alice, org.ID, "production")
		data, meta := b.call(http.MethodGet, base+"?per_page=1000", alice.Token, nil).expect(http.StatusOK).list()
		if meta.Total != 2 || meta.PerPage != 100 || len(data) != 2 || data[0]["id"] != id {
			t.Fatalf("list = %v %+v", data, meta)
		}

		got := b.call(http.MethodGet, "/v1/workspaces/"+id, alice.Token, nil).expect(http.StatusOK).object()
		if got["slug"] != "staging" {
			t.Fatalf("get = %v", got)
		}
		got = b.call(http.MethodPatch, "/v1/workspaces/"+id, alice.Token, map[string]string{"name": "Staging Environment"}).expect(http.StatusOK).object()
		if got["name"] != "Staging Environment" || got["slug"] != "staging" {
			t.Fatalf("patch = %v", got)
		}
		b.call(http.MethodPatch, "/v1/workspaces/"+id, alice.Token, map[string]string{}).expectError(http.StatusUnprocessableEntity, app.CodeValidation, "body")
		b.call(http.MethodPatch, "/v1/workspaces/"+id, alice.Token, map[string]string{"slug": "production"}).expectError(http.StatusConflict, app.CodeConflict, "")

		b.call(http.MethodDelete, "/v1/workspaces/"+id, alice.Token, nil).expect(http.StatusNoContent)
		b.call(http.MethodGet, "/v1/workspaces/"+id, alice.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
	})

	t.Run("SlugsAreUniqueWithinTheOrganization", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		one, two := b.createOrg(alice, "one"), b.createOrg(alice, "two")
		b.createWorkspace(alice, one.ID, "prod")
		b.call(http.MethodPost, "/v1/organizations/"+one.ID.String()+"/workspaces", alice.Token, map[string]string{"name": "Again", "slug": "prod"}).
			expectError(http.StatusConflict, app.CodeConflict, "")
		b.createWorkspace(alice, two.ID, "prod")
	})
}

func TestAPI_Members(t *testing.T) {
	t.Parallel()

	t.Run("AddsUpdatesAndRemoves", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		org := b.createOrg(alice, "acme")
		base := "/v1/organizations/" + org.ID.String() + "/members"

		inv := b.call(http.MethodPost, base, alice.Token, map[string]string{"email": "BOB@example.com", "role": "viewer"}).expect(http.StatusAccepted).object()
		expectKeys(t, "invitation", inv, "id", "organization_id", "organization_name", "user_id", "email", "role", "status",
			"invited_by", "invited_by_email", "created_at", "expires_at")
		if inv["user_id"] != bob.ID.String() || inv["role"] != "viewer" || inv["email"] != bob.Email || inv["status"] != "pending" {
			t.Fatalf("invitation = %v", inv)
		}
		// Bob sees the organization only after accepting.
		b.call(http.MethodGet, "/v1/organizations/"+org.ID.String(), bob.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.call(http.MethodPost, "/v1/invitations/"+inv["id"].(string)+"/accept", bob.Token, nil).expect(http.StatusOK)
		b.call(http.MethodGet, "/v1/organizations/"+org.ID.String(), bob.Token, nil).expect(http.StatusOK)
		members, _ := b.call(http.MethodGet, base, alice.Token, nil).expect(http.StatusOK).list()
		expectKeys(t, "member", members[1], "user_id", "email", "name", "role", "created_at")
		if members[1]["user_id"] != bob.ID.String() || members[1]["role"] != "viewer" {
			t.Fatalf("members = %v", members)
		}

		m := b.call(http.MethodPatch, base+"/"+bob.ID.String(), alice.Token, map[string]string{"role": "operator"}).expect(http.StatusOK).object()
		if m["role"] != "operator" {
			t.Fatalf("updated member = %v", m)
		}
		b.call(http.MethodDelete, base+"/"+bob.ID.String(), alice.Token, nil).expect(http.StatusNoContent)
		b.call(http.MethodGet, "/v1/organizations/"+org.ID.String(), bob.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.call(http.MethodDelete, base+"/"+bob.ID.String(), alice.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
	})

	t.Run("RejectsUnknownEmailBadRoleAndDuplicates", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		org := b.createOrg(alice, "acme")
		base := "/v1/organizations/" + org.ID.String() + "/members"
		b.call(http.MethodPost, base, alice.Token, map[string]string{"email": "nobody", "role": "viewer"}).
			expectError(http.StatusUnprocessableEntity, app.CodeValidation, "email")
		b.call(http.MethodPost, base, alice.Token, map[string]string{"email": bob.Email, "role": "god"}).
			expectError(http.StatusUnprocessableEntity, app.CodeValidation, "role")
		b.call(http.MethodPost, base, alice.Token, map[string]string{"role": "viewer"}).
			expectError(http.StatusUnprocessableEntity, app.CodeValidation, "email")
		b.join(alice, org.ID, bob, "viewer")
		b.call(http.MethodPost, base, alice.Token, map[string]string{"email": bob.Email, "role": "admin"}).
			expectError(http.StatusConflict, app.CodeConflict, "")
		b.call(http.MethodPatch, base+"/"+bob.ID.String(), alice.Token, map[string]string{"role": ""}).
			expectError(http.StatusUnprocessableEntity, app.CodeValidation, "role")
	})

	t.Run("KeepsTheLastOwner", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		org := b.createOrg(alice, "acme")
		base := "/v1/organizations/" + org.ID.String() + "/members/"
		for _, r := range []*result{
			b.call(http.MethodPatch, base+alice.ID.String(), alice.Token, map[string]string{"role": "admin"}),
			b.call(http.MethodDelete, base+alice.ID.String(), alice.Token, nil),
		} {
			r.expectError(http.StatusConflict, app.CodeConflict, "")
			if r.message() != "Organization must keep at least one owner" {
				t.Fatalf("message = %q", r.message())
			}
		}
		// With a second owner, the first may step down.
		b.addMember(org.ID, bob, "owner")
		b.call(http.MethodPatch, base+alice.ID.String(), alice.Token, map[string]string{"role": "admin"}).expect(http.StatusOK)
		b.call(http.MethodDelete, base+bob.ID.String(), bob.Token, nil).expectError(http.StatusConflict, app.CodeConflict, "")
	})

	t.Run("OnlyOwnersManageOwners", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, adam, vic := b.user("alice", false), b.user("adam", false), b.user("vic", false)
		org := b.createOrg(alice, "acme")
		b.addMember(org.ID, adam, "admin")
		base := "/v1/organizations/" + org.ID.String() + "/members"

		b.call(http.MethodPost, base, adam.Token, map[string]string{"email": vic.Email, "role": "owner"}).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.join(adam, org.ID, vic, "operator")
		b.call(http.MethodPatch, base+"/"+vic.ID.String(), adam.Token, map[string]string{"role": "owner"}).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodPatch, base+"/"+adam.ID.String(), adam.Token, map[string]string{"role": "owner"}).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodPatch, base+"/"+alice.ID.String(), adam.Token, map[string]string{"role": "viewer"}).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodDelete, base+"/"+alice.ID.String(), adam.Token, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodPatch, base+"/"+vic.ID.String(), adam.Token, map[string]string{"role": "admin"}).expect(http.StatusOK)
		b.call(http.MethodDelete, base+"/"+vic.ID.String(), adam.Token, nil).expect(http.StatusNoContent)

		b.call(http.MethodPatch, base+"/"+adam.ID.String(), alice.Token, map[string]string{"role": "owner"}).expect(http.StatusOK)
	})
}

// TestAPI_Access checks every route of the module against a viewer (reads pass,
// writes are 403) and a member of another organization (404 everywhere).
func TestAPI_Access(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice, vic, eve := b.user("alice", false), b.user("vic", false), b.user("eve", false)
	org := b.createOrg(alice, "acme")
	ws := b.createWorkspace(alice, org.ID, "prod")
	b.addMember(org.ID, vic, "viewer")
	b.createOrg(eve, "evil")
	key := b.call(http.MethodPost, "/v1/organizations/"+org.ID.String()+"/api-keys", alice.Token, map[string]string{"name": "ci", "role": "viewer"}).
		expect(http.StatusCreated).object()
	inv := b.invite(alice, org.ID, b.user("ivy", false), "viewer")

	o, w := "/v1/organizations/"+org.ID.String(), "/v1/workspaces/"+ws.ID.String()
	k := o + "/api-keys/" + key["id"].(string)
	routes := []struct {
		method string
		path   string
		body   any
		read   bool
	}{
		{http.MethodGet, o, nil, true},
		{http.MethodPatch, o, map[string]string{"name": "X"}, false},
		{http.MethodDelete, o, nil, false},
		{http.MethodGet, o + "/workspaces", nil, true},
		{http.MethodPost, o + "/workspaces", map[string]string{"name": "W", "slug": "w2"}, false},
		{http.MethodGet, w, nil, true},
		{http.MethodPatch, w, map[string]string{"name": "X"}, false},
		{http.MethodDelete, w, nil, false},
		{http.MethodGet, o + "/members", nil, true},
		{http.MethodPost, o + "/members", map[string]string{"email": eve.Email, "role": "viewer"}, false},
		{http.MethodPatch, o + "/members/" + vic.ID.String(), map[string]string{"role": "admin"}, false},
		{http.MethodDelete, o + "/members/" + alice.ID.String(), nil, false},
		{http.MethodGet, o + "/invitations", nil, true},
		{http.MethodDelete, o + "/invitations/" + inv, nil, false},
		{http.MethodGet, o + "/audit-log", nil, true},
		{http.MethodGet, o + "/api-keys", nil, true},
		{http.MethodPost, o + "/api-keys", map[string]string{"name": "k", "role": "viewer"}, false},
		{http.MethodDelete, k, nil, false},
		{http.MethodPost, k + "/rotate", nil, false},
	}
	for _, r := range routes {
		if r.read {
			b.call(r.method, r.path, vic.Token, r.body).expect(http.StatusOK)
		} else {
			b.call(r.method, r.path, vic.Token, r.body).expectError(http.StatusForbidden, app.CodeForbidden, "")
		}
		b.call(r.method, r.path, eve.Token, r.body).expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.call(r.method, r.path, "", r.body).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
	}
	// Nothing changed.
	if got := b.call(http.MethodGet, o, alice.Token, nil).expect(http.StatusOK).object(); got["name"] != "Org acme" {
		t.Fatalf("organization changed: %v", got)
	}
	b.call(http.MethodGet, w, alice.Token, nil).expect(http.StatusOK)
	_, meta := b.call(http.MethodGet, o+"/members", alice.Token, nil).expect(http.StatusOK).list()
	if meta.Total != 2 {
		t.Fatalf("members = %d, want 2", meta.Total)
	}
}
