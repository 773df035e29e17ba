package orgs

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// TestAPI_CrossTenantLockout replays the lockout: any user creates an
// organization, adds an existing account (here a superadmin) by e-mail and turns
// on require_email_code without working mail. The victim must not become a
// member without consent, the setting must be refused without SMTP, and the
// victim's password login must keep working.
func TestAPI_CrossTenantLockout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	root := b.user("root", true)
	mallory := b.user("mallory", false)
	org := b.createOrg(mallory, "trap")
	o := "/v1/organizations/" + org.ID.String()

	inv := b.call(http.MethodPost, o+"/members", mallory.Token, map[string]string{"email": root.Email, "role": "viewer"}).
		expect(http.StatusAccepted).object()
	if inv["status"] != "pending" {
		t.Fatalf("adding a member gave %v, want a pending invitation", inv)
	}
	if _, meta := b.call(http.MethodGet, o+"/members", mallory.Token, nil).expect(http.StatusOK).list(); meta.Total != 1 {
		t.Fatalf("the organization has %d members without the victim's consent", meta.Total)
	}
	b.call(http.MethodPatch, o, mallory.Token, map[string]any{"require_email_code": true}).
		expectError(http.StatusUnprocessableEntity, app.CodeValidation, "require_email_code")

	// The victim still signs in with the password alone.
	b.call(http.MethodPost, "/v1/auth/login", "", map[string]string{"email": root.Email, "password": testPassword}).expect(http.StatusOK)
	b.call(http.MethodGet, "/v1/users", root.Token, nil).expect(http.StatusOK)
}

func TestAPI_Invitations(t *testing.T) {
	t.Parallel()

	t.Run("AcceptMakesAMember", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		org := b.createOrg(alice, "acme")
		o := "/v1/organizations/" + org.ID.String()
		id := b.invite(alice, org.ID, bob, "operator")

		mine, meta := b.call(http.MethodGet, "/v1/invitations", bob.Token, nil).expect(http.StatusOK).list()
		if meta.Total != 1 || mine[0]["id"] != id || mine[0]["organization_name"] != "Org acme" || mine[0]["invited_by_email"] != alice.Email {
			t.Fatalf("bob's invitations = %v", mine)
		}
		expectTimestamp(t, "expires_at", mine[0]["expires_at"])
		if exp, _ := time.Parse(time.RFC3339, mine[0]["expires_at"].(string)); time.Until(exp) < 6*24*time.Hour {
			t.Fatalf("expires_at %v is not about a week away", exp)
		}
		pending, _ := b.call(http.MethodGet, o+"/invitations", alice.Token, nil).expect(http.StatusOK).list()
		if len(pending) != 1 || pending[0]["id"] != id {
			t.Fatalf("organization's invitations = %v", pending)
		}
		// Nobody else answers Bob's invitation.
		b.call(http.MethodPost, "/v1/invitations/"+id+"/accept", alice.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")

		got := b.call(http.MethodPost, "/v1/invitations/"+id+"/accept", bob.Token, nil).expect(http.StatusOK).object()
		if got["status"] != "accepted" || got["role"] != "operator" {
			t.Fatalf("accepted = %v", got)
		}
		members, _ := b.call(http.MethodGet, o+"/members", alice.Token, nil).expect(http.StatusOK).list()
		if len(members) != 2 || members[1]["user_id"] != bob.ID.String() || members[1]["role"] != "operator" {
			t.Fatalf("members = %v", members)
		}
		// Answered: gone from both lists, and cannot be answered again.
		if _, meta := b.call(http.MethodGet, "/v1/invitations", bob.Token, nil).expect(http.StatusOK).list(); meta.Total != 0 {
			t.Fatalf("bob still has %d invitations", meta.Total)
		}
		if _, meta := b.call(http.MethodGet, o+"/invitations", alice.Token, nil).expect(http.StatusOK).list(); meta.Total != 0 {
			t.Fatalf("organization still lists %d invitations", meta.Total)
		}
		b.call(http.MethodPost, "/v1/invitations/"+id+"/decline", bob.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.call(http.MethodPost, o+"/members", alice.Token, map[string]string{"email": bob.Email, "role": "viewer"}).
			expectError(http.StatusConflict, app.CodeConflict, "")

		entries, _ := b.call(http.MethodGet, o+"/audit-log?object_type=invitation", alice.Token, nil).expect(http.StatusOK).list()
		if len(entries) != 2 || entries[0]["action"] != "invitation.accept" || entries[1]["action"] != "invitation.create" {
			t.Fatalf("invitation audit = %v", entries)
		}
		if actor := entries[0]["actor"].(map[string]any); actor["user_id"] != bob.ID.String() {
			t.Fatalf("accept audited as %v", actor)
		}
	})

	t.Run("DeclineAndRevokeMakeNoMember", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob, carol := b.user("alice", false), b.user("bob", false), b.user("carol", false)
		org := b.createOrg(alice, "acme")
		o := "/v1/organizations/" + org.ID.String()
		declined := b.invite(alice, org.ID, bob, "admin")
		revoked := b.invite(alice, org.ID, carol, "viewer")
		b.call(http.MethodPost, o+"/members", alice.Token, map[string]string{"email": bob.Email, "role": "viewer"}).
			expectError(http.StatusConflict, app.CodeConflict, "")

		b.call(http.MethodPost, "/v1/invitations/"+declined+"/decline", bob.Token, nil).expect(http.StatusNoContent)
		b.call(http.MethodDelete, o+"/invitations/"+revoked, alice.Token, nil).expect(http.StatusNoContent)
		b.call(http.MethodDelete, o+"/invitations/"+revoked, alice.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.call(http.MethodPost, "/v1/invitations/"+revoked+"/accept", carol.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.call(http.MethodPost, "/v1/invitations/"+declined+"/accept", bob.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		if _, meta := b.call(http.MethodGet, o+"/members", alice.Token, nil).expect(http.StatusOK).list(); meta.Total != 1 {
			t.Fatalf("%d members, want only the owner", meta.Total)
		}
		b.call(http.MethodGet, o, bob.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")

		entries, _ := b.call(http.MethodGet, o+"/audit-log?object_type=invitation", alice.Token, nil).expect(http.StatusOK).list()
		var actions []string
		for _, e := range entries {
			actions = append(actions, e["action"].(string))
		}
		if strings.Join(actions, ",") != "invitation.revoke,invitation.decline,invitation.create,invitation.create" {
			t.Fatalf("invitation audit = %v", actions)
		}
		// A declined invitation does not block a new one.
		b.invite(alice, org.ID, bob, "viewer")
	})

	t.Run("ExpiredCannotBeAccepted", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		org := b.createOrg(alice, "acme")
		id := b.invite(alice, org.ID, bob, "viewer")
		if err := b.db.Exec(`UPDATE invitations SET expires_at = now() - interval '1 minute' WHERE id = ?`, id).Error; err != nil {
			t.Fatal(err)
		}
		if _, meta := b.call(http.MethodGet, "/v1/invitations", bob.Token, nil).expect(http.StatusOK).list(); meta.Total != 0 {
			t.Fatalf("expired invitation still listed")
		}
		b.call(http.MethodPost, "/v1/invitations/"+id+"/accept", bob.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
		b.invite(alice, org.ID, bob, "viewer") // a new one replaces it
	})

	t.Run("RolesOfInviterAreChecked", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, adam, vic, olga := b.user("alice", false), b.user("adam", false), b.user("vic", false), b.user("olga", false)
		org := b.createOrg(alice, "acme")
		o := "/v1/organizations/" + org.ID.String()
		b.join(alice, org.ID, adam, "admin")
		b.join(alice, org.ID, vic, "viewer")
		b.call(http.MethodPost, o+"/members", vic.Token, map[string]string{"email": olga.Email, "role": "viewer"}).
			expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodPost, o+"/members", adam.Token, map[string]string{"email": olga.Email, "role": "owner"}).
			expectError(http.StatusForbidden, app.CodeForbidden, "")
		owner := b.invite(alice, org.ID, olga, "owner")
		b.call(http.MethodDelete, o+"/invitations/"+owner, adam.Token, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodDelete, o+"/invitations/"+owner, vic.Token, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodDelete, o+"/invitations/"+owner, alice.Token, nil).expect(http.StatusNoContent)

		// An invitation does not outlive its sender's right to grant the role.
		id := b.invite(adam, org.ID, olga, "admin")
		b.call(http.MethodPatch, o+"/members/"+adam.ID.String(), alice.Token, map[string]string{"role": "viewer"}).expect(http.StatusOK)
		b.call(http.MethodPost, "/v1/invitations/"+id+"/accept", olga.Token, nil).expectError(http.StatusConflict, app.CodeConflict, "")
		b.call(http.MethodGet, o, olga.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
	})

	t.Run("UnknownEmailGetsALinkWithoutSMTP", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.user("alice", false)
		org := b.createOrg(alice, "acme")
		members := "/v1/organizations/" + org.ID.String() + "/members"
		b.call(http.MethodPost, members, alice.Token, map[string]string{"email": "not an address", "role": "viewer"}).
			expectError(http.StatusUnprocessableEntity, app.CodeValidation, "email")
		inv := b.call(http.MethodPost, members, alice.Token, map[string]string{"email": "Nobody@Example.com", "role": "viewer"}).
			expect(http.StatusAccepted).object()
		link, _ := inv["accept_url"].(string)
		if inv["email"] != "nobody@example.com" || !strings.HasPrefix(link, "http://") || !strings.Contains(link, "/invitations/accept?token=") {
			t.Fatalf("invitation = %v", inv)
		}
		b.call(http.MethodPost, members, alice.Token, map[string]string{"email": "nobody@example.com", "role": "viewer"}).
			expectError(http.StatusConflict, app.CodeConflict, "")
		listed, _ := b.call(http.MethodGet, "/v1/organizations/"+org.ID.String()+"/invitations", alice.Token, nil).expect(http.StatusOK).list()
		if len(listed) != 1 || listed[0]["email"] != "nobody@example.com" || listed[0]["accept_url"] != nil {
			t.Fatalf("listed = %v", listed)
		}
	})

	t.Run("APIKeysCannotAnswerInvitations", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		own := b.createOrg(bob, "bobs")
		key := b.call(http.MethodPost, "/v1/organizations/"+own.ID.String()+"/api-keys", bob.Token, map[string]string{"name": "ci", "role": "owner"}).
			expect(http.StatusCreated).object()["key"].(string)
		org := b.createOrg(alice, "acme")
		id := b.invite(alice, org.ID, bob, "admin")
		b.call(http.MethodGet, "/v1/invitations", key, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodPost, "/v1/invitations/"+id+"/accept", key, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodPost, "/v1/invitations/"+id+"/decline", key, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
		b.call(http.MethodGet, "/v1/organizations/"+org.ID.String(), bob.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")
	})

	t.Run("MembersAreAddedDirectlyOnlyByTheMaster", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.user("alice", false), b.user("bob", false)
		org := b.createOrg(alice, "acme")
		if _, err := b.svc.AddMember(alice.ctx(), AddMemberParams{OrgID: org.ID, Email: bob.Email, Role: "viewer"}); err == nil {
			t.Fatal("AddMember with a caller succeeded")
		}
		b.addMember(org.ID, bob, "viewer") // the master itself, no caller
	})
}

// TestAPI_RequireEmailCode checks an organization that requires the emailed code:
// it opens only to sessions confirmed with one, and leaves sign-in alone.
func TestAPI_RequireEmailCode(t *testing.T) {
	t.Parallel()
	mb := apptest.StartMailbox(t, "", "")
	b := setupWith(t, func(c *app.Config) {
		host, port, _ := net.SplitHostPort(mb.Addr)
		c.SMTP.Host, c.SMTP.From, c.SMTP.TLS = host, "nxmesh@example.test", "none"
		c.SMTP.Port, _ = strconv.Atoi(port)
	})
	alice, bob := b.user("alice", false), b.user("bob", false)
	org := b.createOrg(alice, "acme")
	ws := b.createWorkspace(alice, org.ID, "prod")
	other := b.createOrg(bob, "bobs")
	b.join(alice, org.ID, bob, "viewer")
	o := "/v1/organizations/" + org.ID.String()

	b.call(http.MethodPatch, o, alice.Token, map[string]any{"require_email_code": true}).expect(http.StatusOK)

	// Bob's password session is refused in the organization, with directions,
	// but works elsewhere.
	for _, path := range []string{o, o + "/members", "/v1/workspaces/" + ws.ID.String()} {
		r := b.call(http.MethodGet, path, bob.Token, nil)
		r.expectError(http.StatusForbidden, app.CodeForbidden, "")
		if msg := r.message(); !strings.Contains(msg, "/v1/auth/login/init") || !strings.Contains(msg, "e-mail") {
			t.Fatalf("GET %s: message %q does not say how to sign in", path, msg)
		}
	}
	b.call(http.MethodGet, "/v1/organizations/"+other.ID.String(), bob.Token, nil).expect(http.StatusOK)
	// Outsiders still learn nothing.
	eve := b.user("eve", false)
	b.call(http.MethodGet, o, eve.Token, nil).expectError(http.StatusNotFound, app.CodeNotFound, "")

	// Password sign-in still works; a code-confirmed session gets in.
	b.call(http.MethodPost, "/v1/auth/login", "", map[string]string{"email": bob.Email, "password": testPassword}).expect(http.StatusOK)
	b.call(http.MethodPost, "/v1/auth/login/init", "", map[string]string{"email": bob.Email, "password": testPassword}).expect(http.StatusOK)
	var pair auth.TokenPair
	b.call(http.MethodPost, "/v1/auth/login/verify", "", map[string]string{"email": bob.Email, "code": mb.Next(t).Code(t)}).expect(http.StatusOK).decode(&pair)
	b.call(http.MethodGet, o, pair.AccessToken, nil).expect(http.StatusOK)
	b.call(http.MethodGet, "/v1/workspaces/"+ws.ID.String(), pair.AccessToken, nil).expect(http.StatusOK)

	// The organization's API keys keep working: they are not sessions.
	key := b.call(http.MethodPost, o+"/api-keys", pair.AccessToken, map[string]string{"name": "ci", "role": "viewer"})
	key.expectError(http.StatusForbidden, app.CodeForbidden, "") // bob is a viewer
	var ak struct {
		Key string `json:"key"`
	}
	b.call(http.MethodPatch, o, alice.Token, nil).expectError(http.StatusForbidden, app.CodeForbidden, "")
	codeLogin(t, b, mb, alice, func(tok string) {
		b.call(http.MethodPost, o+"/api-keys", tok, map[string]string{"name": "ci", "role": "viewer"}).expect(http.StatusCreated).decode(&ak)
	})
	b.call(http.MethodGet, o, ak.Key, nil).expect(http.StatusOK)
}

// codeLogin signs u in with an emailed code and calls fn with the token.
func codeLogin(t *testing.T, b *bundle, mb *apptest.Mailbox, u testUser, fn func(token string)) {
	t.Helper()
	b.call(http.MethodPost, "/v1/auth/login/init", "", map[string]string{"email": u.Email, "password": testPassword}).expect(http.StatusOK)
	var pair auth.TokenPair
	b.call(http.MethodPost, "/v1/auth/login/verify", "", map[string]string{"email": u.Email, "code": mb.Next(t).Code(t)}).expect(http.StatusOK).decode(&pair)
	fn(pair.AccessToken)
}

// TestAPI_APIKeysFollowTheirCreator replays a key outliving its creator's rights:
// an admin's admin key, the admin demoted to viewer, then removed.
func TestAPI_APIKeysFollowTheirCreator(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice, adam, vic := b.user("alice", false), b.user("adam", false), b.user("vic", false)
	org := b.createOrg(alice, "acme")
	o := "/v1/organizations/" + org.ID.String()
	b.join(alice, org.ID, adam, "admin")
	var key struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	b.call(http.MethodPost, o+"/api-keys", adam.Token, map[string]string{"name": "adam's", "role": "admin"}).expect(http.StatusCreated).decode(&key)
	b.call(http.MethodPost, o+"/workspaces", key.Key, map[string]string{"name": "W", "slug": "ws"}).expect(http.StatusCreated)

	// Demoted to viewer: the key reads, but can no longer add members or mint keys.
	b.call(http.MethodPatch, o+"/members/"+adam.ID.String(), alice.Token, map[string]string{"role": "viewer"}).expect(http.StatusOK)
	b.call(http.MethodGet, o, key.Key, nil).expect(http.StatusOK)
	b.call(http.MethodPost, o+"/members", key.Key, map[string]string{"email": vic.Email, "role": "admin"}).expectError(http.StatusForbidden, app.CodeForbidden, "")
	b.call(http.MethodPatch, o+"/members/"+adam.ID.String(), key.Key, map[string]string{"role": "admin"}).expectError(http.StatusForbidden, app.CodeForbidden, "")
	b.call(http.MethodPost, o+"/api-keys", key.Key, map[string]string{"name": "more", "role": "viewer"}).expectError(http.StatusForbidden, app.CodeForbidden, "")

	// Promoted back to admin: the key may create keys again, but never above its own role.
	b.call(http.MethodPatch, o+"/members/"+adam.ID.String(), alice.Token, map[string]string{"role": "admin"}).expect(http.StatusOK)
	b.call(http.MethodPost, o+"/api-keys", key.Key, map[string]string{"name": "more", "role": "viewer"}).expect(http.StatusCreated)

	// Removed: every key Adam made in the organization stops at once.
	b.call(http.MethodDelete, o+"/members/"+adam.ID.String(), alice.Token, nil).expect(http.StatusNoContent)
	b.call(http.MethodGet, o, key.Key, nil).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
	keys, _ := b.call(http.MethodGet, o+"/api-keys", alice.Token, nil).expect(http.StatusOK).list()
	for _, k := range keys {
		if k["revoked_at"] == nil {
			t.Errorf("key %v of the removed member is not revoked", k["name"])
		}
	}
	// Adding Adam back does not revive his keys.
	b.join(alice, org.ID, adam, "admin")
	b.call(http.MethodGet, o, key.Key, nil).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
}

// TestAPI_APIKeysSuperadminCreator: a superadmin's key in an organization the
// superadmin does not belong to keeps its role while they stay superadmin.
func TestAPI_APIKeysSuperadminCreator(t *testing.T) {
	t.Parallel()
	b := setup(t)
	root, alice := b.user("root", true), b.user("alice", false)
	org := b.createOrg(alice, "acme")
	o := "/v1/organizations/" + org.ID.String()
	var key struct {
		Key string `json:"key"`
	}
	b.call(http.MethodPost, o+"/api-keys", root.Token, map[string]string{"name": "ops", "role": "admin"}).expect(http.StatusCreated).decode(&key)
	b.call(http.MethodPost, o+"/workspaces", key.Key, map[string]string{"name": "W", "slug": "ws"}).expect(http.StatusCreated)
	b.user("root2", true) // the last superadmin could not lose its flag
	off := false
	if _, err := b.auth.UpdateUser(context.Background(), root.ID, auth.UpdateUserParams{IsSuperadmin: &off}); err != nil {
		t.Fatal(err)
	}
	b.call(http.MethodGet, o, key.Key, nil).expectError(http.StatusUnauthorized, app.CodeUnauthorized, "")
}
