package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
)

var apiKeyPattern = regexp.MustCompile(`^nxm_[0-9A-Za-z]{40}$`)

func TestAPI_APIKeys(t *testing.T) {
	t.Parallel()

	// keySetup is a bundle with an organization and its owner, who creates keys.
	type keyBundle struct {
		*bundle
		org  uuid.UUID
		user User
	}
	keySetup := func(t *testing.T) keyBundle {
		b := setup(t, nil)
		kb := keyBundle{bundle: b, org: b.createOrg(t, false), user: b.createUser(t, "alice@example.com", false)}
		b.addMember(t, kb.org, kb.user.ID, "owner")
		return kb
	}
	create := func(t *testing.T, b keyBundle, p CreateAPIKeyParams) (APIKey, string) {
		t.Helper()
		if p.OrgID == uuid.Nil {
			p.OrgID = b.org
		}
		if p.CreatedBy == uuid.Nil {
			p.CreatedBy = b.user.ID
		}
		if p.Name == "" {
			p.Name = "deploy"
		}
		if p.Role == "" {
			p.Role = "admin"
		}
		k, secret, err := b.svc.CreateAPIKey(b.ctx, p)
		if err != nil {
			t.Fatalf("create api key: %v", err)
		}
		return k, secret
	}

	t.Run("CreateShowsTheSecretOnce", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		k, secret := create(t, b, CreateAPIKeyParams{Name: " deploy "})
		if !apiKeyPattern.MatchString(secret) || k.Prefix != secret[:12] || k.Name != "deploy" || k.Role != "admin" ||
			k.OrganizationID != b.org || k.WorkspaceID != nil || k.CreatedBy == nil || *k.CreatedBy != b.user.ID {
			t.Fatalf("key %+v, secret %q", k, secret)
		}
		shown, _ := json.Marshal(APIKeyWithSecret{APIKey: k, Key: secret})
		var fields map[string]any
		_ = json.Unmarshal(shown, &fields)
		for _, f := range []string{"id", "organization_id", "workspace_id", "name", "prefix", "role", "created_by", "created_at", "last_used_at", "expires_at", "revoked_at", "key"} {
			if _, ok := fields[f]; !ok {
				t.Errorf("create response lacks %q: %s", f, shown)
			}
		}
		if fields["key"] != secret {
			t.Fatalf("key field = %v", fields["key"])
		}

		keys, total, err := b.svc.ListAPIKeys(b.ctx, b.org, app.Page{Page: 1, PerPage: 20})
		if err != nil || total != 1 || len(keys) != 1 {
			t.Fatalf("list = %v, %d, %v", keys, total, err)
		}
		listed, _ := json.Marshal(app.NewList(keys, app.Page{Page: 1, PerPage: 20}, total))
		if strings.Contains(string(listed), secret) || strings.Contains(string(listed), `"key"`) || strings.Contains(string(listed), "hash") {
			t.Fatalf("list shows the secret: %s", listed)
		}
		var stored int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM api_keys WHERE key_hash = ?`, sha256Sum(secret)).Scan(&stored)
		if stored != 1 {
			t.Fatal("key not stored as its SHA-256")
		}
		var audits int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM audit_log WHERE action = 'apikey.create' AND organization_id = ?`, b.org).Scan(&audits)
		if audits != 1 {
			t.Fatalf("%d apikey.create audit entries", audits)
		}
	})

	t.Run("AuthenticatesWithHeaderAndBearer", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		k, secret := create(t, b, CreateAPIKeyParams{Role: "admin"})
		for _, h := range [][]string{{"X-API-Key", secret}, bearer(secret)} {
			r := b.do(t, "GET", "/v1/probe/orgs/"+b.org.String()+"/keys", nil, h...)
			r.expect(t, http.StatusOK, "")
			var got struct {
				UserID uuid.UUID `json:"user_id"`
				Email  string    `json:"email"`
				Role   string    `json:"role"`
				APIKey bool      `json:"api_key"`
			}
			r.decode(t, &got)
			if got.UserID != b.user.ID || got.Email != "alice@example.com" || got.Role != "admin" || !got.APIKey {
				t.Fatalf("%s: principal %+v", h[0], got)
			}
		}
		// Outside its organization the key sees nothing.
		other := b.createOrg(t, false)
		b.do(t, "GET", "/v1/probe/orgs/"+other.String()+"/keys", nil, "X-API-Key", secret).expect(t, http.StatusNotFound, app.CodeNotFound)
		_ = k
	})

	t.Run("RoleBelowAdminCannotManageKeys", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		_, operator := create(t, b, CreateAPIKeyParams{Role: "operator"})
		_, admin := create(t, b, CreateAPIKeyParams{Role: "admin"})
		path := "/v1/probe/orgs/" + b.org.String() + "/keys"
		b.do(t, "GET", path, nil, "X-API-Key", operator).expect(t, http.StatusOK, "")
		b.do(t, "POST", path, nil, "X-API-Key", operator).expect(t, http.StatusForbidden, app.CodeForbidden)
		b.do(t, "POST", path, nil, "X-API-Key", admin).expect(t, http.StatusOK, "")
	})

	t.Run("WorkspaceKeyIsLimitedToItsWorkspace", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		ws := b.createWorkspace(t, b.org)
		k, secret := create(t, b, CreateAPIKeyParams{WorkspaceID: ws})
		if k.WorkspaceID == nil || *k.WorkspaceID != ws {
			t.Fatalf("workspace = %v", k.WorkspaceID)
		}
		p, err := b.svc.AuthenticateAPIKey(b.ctx, secret)
		if err != nil || p.APIKey.WorkspaceID != ws || p.APIKey.OrgID != b.org {
			t.Fatalf("principal %+v, %v", p, err)
		}
		// The org-level probe route has no workspace: a workspace key is outside it.
		b.do(t, "GET", "/v1/probe/orgs/"+b.org.String()+"/keys", nil, "X-API-Key", secret).expect(t, http.StatusNotFound, app.CodeNotFound)
	})

	t.Run("RevokedKeyIs401", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		k, secret := create(t, b, CreateAPIKeyParams{})
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusOK, "")
		if err := b.svc.RevokeAPIKey(b.ctx, b.org, k.ID); err != nil {
			t.Fatal(err)
		}
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/users/me", nil, bearer(secret)...).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		got, err := b.svc.GetAPIKey(b.ctx, b.org, k.ID)
		if err != nil || got.RevokedAt == nil {
			t.Fatalf("after revoke: %+v, %v", got, err)
		}
		if err := b.svc.RevokeAPIKey(b.ctx, b.org, k.ID); err != nil {
			t.Fatalf("second revoke: %v", err)
		}
		if _, _, err := b.svc.RotateAPIKey(b.ctx, b.org, k.ID); !errors.Is(err, ErrAPIKeyRevoked) {
			t.Fatalf("rotate revoked key: %v", err)
		}
	})

	t.Run("RotateReplacesTheSecret", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		k, old := create(t, b, CreateAPIKeyParams{})
		rotated, secret, err := b.svc.RotateAPIKey(b.ctx, b.org, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rotated.ID != k.ID || rotated.Role != k.Role || secret == old || !apiKeyPattern.MatchString(secret) || rotated.Prefix != secret[:12] {
			t.Fatalf("rotated %+v, secret %q", rotated, secret)
		}
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", old).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusOK, "")
		var audits []string
		b.app.Deps.DB.Raw(`SELECT action FROM audit_log WHERE organization_id = ? ORDER BY created_at`, b.org).Scan(&audits)
		if len(audits) != 2 || audits[1] != "apikey.rotate" {
			t.Fatalf("audit = %v", audits)
		}
	})

	t.Run("RecordsLastUseAtMostOncePerMinute", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		k, secret := create(t, b, CreateAPIKeyParams{})
		if k.LastUsedAt != nil {
			t.Fatalf("new key used at %v", k.LastUsedAt)
		}
		lastUsed := func() time.Time {
			t.Helper()
			got, err := b.svc.GetAPIKey(b.ctx, b.org, k.ID)
			if err != nil || got.LastUsedAt == nil {
				t.Fatalf("last_used_at missing: %+v, %v", got, err)
			}
			return got.LastUsedAt.Time
		}
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusOK, "")
		first := lastUsed()
		if !first.Equal(b.clock.Now()) {
			t.Fatalf("last_used_at = %v, want %v", first, b.clock.Now())
		}
		b.clock.Advance(30 * time.Second)
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusOK, "")
		if got := lastUsed(); !got.Equal(first) {
			t.Fatalf("written again within a minute: %v", got)
		}
		b.clock.Advance(31 * time.Second)
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusOK, "")
		if got := lastUsed(); !got.Equal(b.clock.Now()) {
			t.Fatalf("last_used_at = %v, want %v", got, b.clock.Now())
		}
	})

	t.Run("ExpiredKeyIs401", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		exp := b.clock.Now().Add(time.Hour)
		k, secret := create(t, b, CreateAPIKeyParams{ExpiresAt: &exp})
		if k.ExpiresAt == nil || !k.ExpiresAt.Equal(exp) {
			t.Fatalf("expires_at = %v", k.ExpiresAt)
		}
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusOK, "")
		b.clock.Advance(time.Hour)
		b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", secret).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("MalformedOrUnknownKeyIs401", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		for _, key := range []string{"nxm_short", "nxm_" + strings.Repeat("a", 40), "something"} {
			b.do(t, "GET", "/v1/users/me", nil, "X-API-Key", key).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		}
	})

	t.Run("ActsWithAtMostItsCreatorsCurrentRole", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		_, secret := create(t, b, CreateAPIKeyParams{Role: "admin"})
		path := "/v1/probe/orgs/" + b.org.String() + "/keys"
		role := func() string {
			t.Helper()
			r := b.do(t, "GET", path, nil, "X-API-Key", secret)
			r.expect(t, http.StatusOK, "")
			var got struct {
				Role string `json:"role"`
			}
			r.decode(t, &got)
			return got.Role
		}
		if got := role(); got != "admin" {
			t.Fatalf("owner's admin key acts as %q", got)
		}
		// The creator is demoted: the key follows.
		b.addMember(t, b.org, b.user.ID, "viewer")
		if got := role(); got != "viewer" {
			t.Fatalf("key of a viewer acts as %q, want viewer", got)
		}
		b.do(t, "POST", path, nil, "X-API-Key", secret).expect(t, http.StatusForbidden, app.CodeForbidden)
		// The creator is no longer a member: the key is refused.
		if err := b.app.Deps.DB.Exec(`DELETE FROM memberships WHERE organization_id = ? AND user_id = ?`, b.org, b.user.ID).Error; err != nil {
			t.Fatal(err)
		}
		b.app.Invalidator().Sync(context.Background())
		b.do(t, "GET", path, nil, "X-API-Key", secret).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("RevokesTheKeysOfARemovedMember", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		k, secret := create(t, b, CreateAPIKeyParams{Role: "viewer"})
		bob := b.createUser(t, "bob@example.com", false)
		b.addMember(t, b.org, bob.ID, "admin")
		_, bobs := create(t, b, CreateAPIKeyParams{Role: "admin", CreatedBy: bob.ID})
		err := b.app.Deps.DB.Transaction(func(tx *gorm.DB) error {
			return b.svc.RevokeMemberAPIKeys(b.ctx, tx, b.org, b.user.ID)
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.svc.GetAPIKey(b.ctx, b.org, k.ID)
		if err != nil || got.RevokedAt == nil {
			t.Fatalf("key after RevokeMemberAPIKeys = %+v, %v", got, err)
		}
		b.do(t, "GET", "/v1/probe/orgs/"+b.org.String()+"/keys", nil, "X-API-Key", secret).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
		b.do(t, "GET", "/v1/probe/orgs/"+b.org.String()+"/keys", nil, "X-API-Key", bobs).expect(t, http.StatusOK, "")
		var audits int64
		b.app.Deps.DB.Raw(`SELECT count(*) FROM audit_log WHERE action = 'apikey.revoke' AND object_id = ?`, k.ID.String()).Scan(&audits)
		if audits != 1 {
			t.Fatalf("%d apikey.revoke audit entries", audits)
		}
	})

	t.Run("SuperadminKeysKeepTheirRoleWithoutMembership", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		root := b.createUser(t, "root@example.com", true)
		org := b.createOrg(t, false)
		_, secret, err := b.svc.CreateAPIKey(b.ctx, CreateAPIKeyParams{OrgID: org, Name: "k", Role: "admin", CreatedBy: root.ID})
		if err != nil {
			t.Fatal(err)
		}
		path := "/v1/probe/orgs/" + org.String() + "/keys"
		b.do(t, "POST", path, nil, "X-API-Key", secret).expect(t, http.StatusOK, "")
		// No longer superadmin and not a member: refused (another superadmin
		// remains, so the flag may go).
		b.createUser(t, "root2@example.com", true)
		off := false
		if _, err := b.svc.UpdateUser(b.ctx, root.ID, UpdateUserParams{IsSuperadmin: &off}); err != nil {
			t.Fatal(err)
		}
		b.do(t, "GET", path, nil, "X-API-Key", secret).expect(t, http.StatusUnauthorized, app.CodeUnauthorized)
	})

	t.Run("KeysCannotManageUsers", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		root := b.createUser(t, "root@example.com", true)
		org := b.createOrg(t, false)
		_, secret, err := b.svc.CreateAPIKey(b.ctx, CreateAPIKeyParams{OrgID: org, Name: "k", Role: "owner", CreatedBy: root.ID})
		if err != nil {
			t.Fatal(err)
		}
		b.do(t, "GET", "/v1/users", nil, "X-API-Key", secret).expect(t, http.StatusForbidden, app.CodeForbidden)
	})

	t.Run("ValidatesInput", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		past := b.clock.Now().Add(-time.Minute)
		otherWS := b.createWorkspace(t, b.createOrg(t, false))
		for _, tc := range []struct {
			p     CreateAPIKeyParams
			field string
		}{
			{CreateAPIKeyParams{Name: " ", Role: "admin"}, "name"},
			{CreateAPIKeyParams{Name: strings.Repeat("n", 101), Role: "admin"}, "name"},
			{CreateAPIKeyParams{Name: "k", Role: "root"}, "role"},
			{CreateAPIKeyParams{Name: "k", Role: "admin", ExpiresAt: &past}, "expires_at"},
			{CreateAPIKeyParams{Name: "k", Role: "admin", WorkspaceID: otherWS}, "workspace_id"},
		} {
			tc.p.OrgID, tc.p.CreatedBy = b.org, b.user.ID
			_, _, err := b.svc.CreateAPIKey(b.ctx, tc.p)
			var ve *app.ValidationError
			if !errors.As(err, &ve) || ve.Fields[0].Field != tc.field {
				t.Errorf("CreateAPIKey(%+v) = %v, want a validation error on %s", tc.p, err, tc.field)
			}
		}
		if _, err := b.svc.GetAPIKey(b.ctx, b.createOrg(t, false), uuid.New()); !errors.Is(err, ErrAPIKeyNotFound) {
			t.Fatalf("GetAPIKey unknown = %v", err)
		}
	})

	t.Run("KeysOfAnotherOrganizationAreNotFound", func(t *testing.T) {
		t.Parallel()
		b := keySetup(t)
		k, _ := create(t, b, CreateAPIKeyParams{})
		other := b.createOrg(t, false)
		if err := b.svc.RevokeAPIKey(b.ctx, other, k.ID); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("revoke via another org = %v", err)
		}
		if _, _, err := b.svc.RotateAPIKey(b.ctx, other, k.ID); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("rotate via another org = %v", err)
		}
		keys, total, err := b.svc.ListAPIKeys(b.ctx, other, app.Page{Page: 1, PerPage: 20})
		if err != nil || total != 0 || len(keys) != 0 {
			t.Fatalf("other org lists %v", keys)
		}
	})
}
