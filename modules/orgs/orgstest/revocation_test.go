package orgstest_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
)

func TestMain(m *testing.M) { apptest.Main(m) }

// replicaOf starts a master over cfg with auth and orgs mounted, and waits
// until its cache invalidation listener is up.
func replicaOf(t *testing.T, cfg app.Config) *orgstest.Base {
	t.Helper()
	a, err := app.New(context.Background(), cfg, apptest.Logger(t))
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	b := orgstest.New(t, a)
	b.Mount(t)
	waitFor(t, 5*time.Second, "cache listener up", func() bool { return a.Invalidator().Ready() })
	return b
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestAPI_RevocationReachesOtherReplicaWithinOneSecond: a request that replica B
// answered (and cached the answer's credential, role and scope of) is
// refused by B within a second of a revocation written through replica A,
// for each kind of revocation.
func TestAPI_RevocationReachesOtherReplicaWithinOneSecond(t *testing.T) {
	cfg := apptest.Config(t)
	ra := replicaOf(t, cfg)
	cfgB := cfg
	cfgB.DataDir = t.TempDir()
	rb := replicaOf(t, cfgB)
	ctx := context.Background()

	owner, _ := ra.SignIn(t, "owner@example.com", "owner-password-1", "Owner")
	org, ws := ra.Org(t, owner, nil)
	path := "/v1/workspaces/" + ws.ID.String()

	// member signs a user in through A and makes them a viewer of org.
	member := func(t *testing.T, email string) (auth.User, string) {
		u, token := ra.SignIn(t, email, "member-password-1", "Member")
		if _, err := ra.Orgs.Service().AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: email, Role: authz.RoleViewer}); err != nil {
			t.Fatal(err)
		}
		return u, token
	}

	tests := []struct {
		name string
		// setup returns the request headers of a credential valid on both
		// replicas and the revocation to run on A.
		setup func(t *testing.T) (headers []string, revoke func(t *testing.T))
		// refused is the status B answers once it sees the revocation.
		refused int
	}{
		{"user disabled", func(t *testing.T) ([]string, func(*testing.T)) {
			u, token := member(t, "disabled@example.com")
			return []string{"Authorization", "Bearer " + token}, func(t *testing.T) {
				if err := ra.Auth.Service().SetUserDisabled(ctx, u.ID, true); err != nil {
					t.Fatal(err)
				}
			}
		}, http.StatusUnauthorized},
		{"api key revoked", func(t *testing.T) ([]string, func(*testing.T)) {
			key, secret, err := ra.Auth.Service().CreateAPIKey(ctx, auth.CreateAPIKeyParams{
				OrgID: org.ID, Name: "ci", Role: authz.RoleViewer, CreatedBy: owner.ID,
			})
			if err != nil {
				t.Fatal(err)
			}
			return []string{"X-API-Key", secret}, func(t *testing.T) {
				if err := ra.Auth.Service().RevokeAPIKey(ctx, org.ID, key.ID); err != nil {
					t.Fatal(err)
				}
			}
		}, http.StatusUnauthorized},
		{"session logged out", func(t *testing.T) ([]string, func(*testing.T)) {
			_, token := member(t, "logout@example.com")
			return []string{"Authorization", "Bearer " + token}, func(t *testing.T) {
				apptest.NewClient(ra.App).As(token).Call(t, http.MethodPost, "/v1/auth/logout", map[string]string{}, http.StatusNoContent, nil)
			}
		}, http.StatusUnauthorized},
		{"membership removed", func(t *testing.T) ([]string, func(*testing.T)) {
			u, token := member(t, "removed@example.com")
			return []string{"Authorization", "Bearer " + token}, func(t *testing.T) {
				if err := ra.Orgs.Service().RemoveMember(ctx, org.ID, u.ID); err != nil {
					t.Fatal(err)
				}
			}
		}, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers, revoke := tt.setup(t)
			cb := apptest.NewClient(rb.App)
			for range 3 { // the first answer fills B's caches, the next ones come from them
				if r := cb.Do(t, http.MethodGet, path, nil, headers...); r.Status != http.StatusOK {
					t.Fatalf("before revocation: B answered %d, want 200", r.Status)
				}
			}
			revoke(t)
			took := waitFor(t, time.Second, "B refuses the revoked credential", func() bool {
				return cb.Do(t, http.MethodGet, path, nil, headers...).Status == tt.refused
			})
			t.Logf("B refused %s after %s", tt.name, took)
			// A refuses at once: the revoking replica waits for its own caches.
			if r := apptest.NewClient(ra.App).Do(t, http.MethodGet, path, nil, headers...); r.Status != tt.refused {
				t.Fatalf("A answered %d after the revocation, want %d", r.Status, tt.refused)
			}
		})
	}
}

// TestAPI_ListenerLossBypassesCache: a change the listener never hears of (the
// triggers are off for the writing session) is served from B's cache while
// B listens, and is seen within a second once B's listening connection is
// cut, because B then empties and bypasses its caches.
func TestAPI_ListenerLossBypassesCache(t *testing.T) {
	cfg := apptest.Config(t)
	ra := replicaOf(t, cfg)
	cfgB := cfg
	cfgB.DataDir = t.TempDir()
	rb := replicaOf(t, cfgB)
	ctx := context.Background()

	owner, _ := ra.SignIn(t, "owner@example.com", "owner-password-1", "Owner")
	org, ws := ra.Org(t, owner, nil)
	u, token := ra.SignIn(t, "member@example.com", "member-password-1", "Member")
	if _, err := ra.Orgs.Service().AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: u.Email, Role: authz.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	path := "/v1/workspaces/" + ws.ID.String()
	cb := apptest.NewClient(rb.App).As(token)
	// B must listen and have heard every change made so far (the sign-ups and
	// the membership above), or a late notification would empty the entry
	// this test relies on.
	waitFor(t, 5*time.Second, "B listens", rb.App.Invalidator().Ready)
	rb.App.Invalidator().Sync(ctx)
	cb.Call(t, http.MethodGet, path, nil, http.StatusOK, nil)

	silentlyDisable(t, ra.App, u.ID)
	// B still answers from its cache: nothing told it.
	cb.Call(t, http.MethodGet, path, nil, http.StatusOK, nil)

	pid := rb.App.Invalidator().ListenerPID()
	if pid == 0 {
		t.Fatal("B has no listener backend")
	}
	var ok bool
	if err := ra.App.Deps.Pool.QueryRow(ctx, "SELECT pg_terminate_backend($1)", int32(pid)).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate B's listener %d: %v %v", pid, ok, err)
	}
	took := waitFor(t, time.Second, "B refuses the disabled user", func() bool {
		return cb.Do(t, http.MethodGet, path, nil).Status == http.StatusUnauthorized
	})
	t.Logf("B refused after %s", took)
	// B listens again on a new connection and caches again.
	waitFor(t, 5*time.Second, "B listens again", func() bool {
		p := rb.App.Invalidator().ListenerPID()
		return rb.App.Invalidator().Ready() && p != 0 && p != pid
	})
}

// silentlyDisable disables the user with the invalidation triggers off for
// the writing session, so no replica hears of it.
func silentlyDisable(t *testing.T, a *app.App, userID uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	conn, err := a.Deps.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		t.Skipf("cannot turn triggers off (needs superuser): %v", err)
	}
	defer func() { _, _ = conn.Exec(ctx, "SET session_replication_role = DEFAULT") }()
	if _, err := conn.Exec(ctx, "UPDATE users SET disabled_at = now() WHERE id = $1", userID); err != nil {
		t.Fatal(err)
	}
}
