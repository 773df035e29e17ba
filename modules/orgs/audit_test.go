package orgs

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

func TestAPI_AuditLog(t *testing.T) {
	t.Parallel()

	t.Run("RecordsEveryChangeNewestFirst", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		org := b.createOrg(alice, "acme")
		o := "/v1/organizations/" + org.ID.String()
		b.call(http.MethodPatch, o, alice.Token, map[string]string{"name": "Acme Corporation"}).expect(http.StatusOK)
		ws := b.createWorkspace(alice, org.ID, "prod")
		b.call(http.MethodPatch, "/v1/workspaces/"+ws.ID.String(), alice.Token, map[string]string{"slug": "production"}).expect(http.StatusOK)
		b.call(http.MethodDelete, "/v1/workspaces/"+ws.ID.String(), alice.Token, nil).expect(http.StatusNoContent)
		b.join(alice, org.ID, bob, "viewer")
		b.call(http.MethodPatch, o+"/members/"+bob.ID.String(), alice.Token, map[string]string{"role": "admin"}).expect(http.StatusOK)
		b.call(http.MethodDelete, o+"/members/"+bob.ID.String(), alice.Token, nil).expect(http.StatusNoContent)

		data, meta := b.call(http.MethodGet, o+"/audit-log", alice.Token, nil).expect(http.StatusOK).list()
		var actions []string
		for _, e := range data {
			actions = append(actions, e["action"].(string))
		}
		want := []string{
			"member.remove", "member.update", "member.add", "invitation.accept", "invitation.create",
			"workspace.delete", "workspace.update", "workspace.create",
			"organization.update", "member.add", "organization.create",
		}
		if meta.Total != int64(len(want)) || !slices.Equal(actions, want) {
			t.Fatalf("actions = %v (total %d), want %v", actions, meta.Total, want)
		}

		e := data[1] // member.update
		expectKeys(t, "audit entry", e, "id", "organization_id", "workspace_id", "actor", "ip", "request_id",
			"action", "object_type", "object_id", "object_name", "before", "after", "created_at")
		actor := e["actor"].(map[string]any)
		expectKeys(t, "actor", actor, "user_id", "api_key_id", "email")
		if actor["user_id"] != alice.ID.String() || actor["email"] != alice.Email || actor["api_key_id"] != nil {
			t.Fatalf("actor = %v", actor)
		}
		if e["organization_id"] != org.ID.String() || e["object_type"] != "member" || e["object_id"] != bob.ID.String() || e["request_id"] == "" {
			t.Fatalf("entry = %v", e)
		}
		if before, after := e["before"].(map[string]any), e["after"].(map[string]any); before["role"] != "viewer" || after["role"] != "admin" {
			t.Fatalf("before/after = %v / %v", e["before"], e["after"])
		}
		expectTimestamp(t, "created_at", e["created_at"])

		wsUpdate := data[6]
		if wsUpdate["workspace_id"] != ws.ID.String() || wsUpdate["before"].(map[string]any)["slug"] != "prod" || wsUpdate["after"].(map[string]any)["slug"] != "production" {
			t.Fatalf("workspace.update = %v", wsUpdate)
		}
		if data[5]["after"] != nil || data[5]["before"] == nil {
			t.Fatalf("workspace.delete before/after = %v / %v", data[5]["before"], data[5]["after"])
		}
	})

	t.Run("Filters", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, adam := b.user("alice", false), b.user("adam", false)
		org := b.createOrg(alice, "acme")
		o := "/v1/organizations/" + org.ID.String()
		b.addMember(org.ID, adam, "admin")
		prod := b.createWorkspace(alice, org.ID, "prod")
		b.createWorkspace(adam, org.ID, "staging")
		b.call(http.MethodPatch, "/v1/workspaces/"+prod.ID.String(), adam.Token, map[string]string{"name": "Production"}).expect(http.StatusOK)

		count := func(query string) int64 {
			t.Helper()
			data, meta := b.call(http.MethodGet, o+"/audit-log?"+query, alice.Token, nil).expect(http.StatusOK).list()
			if int64(len(data)) != meta.Total {
				t.Fatalf("%s: %d entries of %d", query, len(data), meta.Total)
			}
			return meta.Total
		}
		if n := count("actor=" + adam.ID.String()); n != 2 {
			t.Fatalf("adam's entries = %d, want 2", n)
		}
		if n := count("object_type=workspace"); n != 3 {
			t.Fatalf("workspace entries = %d, want 3", n)
		}
		if n := count("object_type=workspace&actor=" + alice.ID.String()); n != 1 {
			t.Fatalf("alice's workspace entries = %d, want 1", n)
		}
		if n := count("workspace_id=" + prod.ID.String()); n != 2 {
			t.Fatalf("prod entries = %d, want 2", n)
		}
		if n := count("actor=" + uuid.NewString()); n != 0 {
			t.Fatalf("unknown actor entries = %d", n)
		}
		_, meta := b.call(http.MethodGet, o+"/audit-log?per_page=2&page=2", alice.Token, nil).expect(http.StatusOK).list()
		if meta.Page != 2 || meta.PerPage != 2 {
			t.Fatalf("meta = %+v", meta)
		}

		for param, value := range map[string]string{"actor": "alice", "workspace_id": "123", "object_type": "DROP TABLE"} {
			b.call(http.MethodGet, o+"/audit-log?"+param+"="+url.QueryEscape(value), alice.Token, nil).
				expectError(http.StatusUnprocessableEntity, app.CodeValidation, param)
		}
	})

	t.Run("KeepsTheDeletionOfAnOrganization", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org := b.createOrg(alice, "acme")
		b.call(http.MethodDelete, "/v1/organizations/"+org.ID.String(), alice.Token, nil).expect(http.StatusNoContent)
		var entry app.AuditEntry
		if err := b.db.Where("organization_id = ? AND action = ?", org.ID, "organization.delete").Take(&entry).Error; err != nil {
			t.Fatalf("organization.delete entry: %v", err)
		}
		if entry.ActorUserID == nil || *entry.ActorUserID != alice.ID || len(entry.Before) == 0 {
			t.Fatalf("entry = %+v", entry)
		}
	})
}
