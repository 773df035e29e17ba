package orgs

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// serviceUser creates an account without signing it in.
func (b *bundle) serviceUser(name string) testUser {
	b.t.Helper()
	u, err := b.auth.CreateUser(context.Background(), auth.CreateUserParams{Email: name + "@example.com", Password: testPassword, Name: name})
	if err != nil {
		b.t.Fatalf("create user %s: %v", name, err)
	}
	return testUser{ID: u.ID, Email: u.Email}
}

func TestService_Role(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice, bob := b.serviceUser("alice"), b.serviceUser("bob")
	org, err := b.svc.CreateOrganization(alice.ctx(), CreateOrganizationParams{Name: "Acme", Slug: "acme", OwnerID: alice.ID})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		user uuid.UUID
		want string
	}{{alice.ID, "owner"}, {bob.ID, ""}, {uuid.New(), ""}} {
		got, err := b.svc.Role(ctx, tc.user, app.Scope{OrgID: org.ID})
		if err != nil || got != tc.want {
			t.Fatalf("Role(%s) = %q, %v; want %q", tc.user, got, err, tc.want)
		}
	}
}

// TestService_ConcurrentDemotion races two owners who each step down at the
// same time: the organization's lock lets exactly one of them succeed.
func TestService_ConcurrentDemotion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice, bob := b.serviceUser("alice"), b.serviceUser("bob")
	ctx := context.Background()

	for _, change := range []string{"Demote", "Remove", "DemoteEachOther"} {
		t.Run(change, func(t *testing.T) {
			for round := range 10 {
				org, err := b.svc.CreateOrganization(ctx, CreateOrganizationParams{Name: "Race", Slug: "race-" + uuid.NewString()[:8], OwnerID: alice.ID})
				if err != nil {
					t.Fatal(err)
				}
				b.addMember(org.ID, bob, "owner")

				start := make(chan struct{})
				errs := make([]error, 2)
				var wg sync.WaitGroup
				for i, pair := range [][2]testUser{{alice, alice}, {bob, bob}} {
					actor, target := pair[0], pair[1]
					if change == "DemoteEachOther" {
						target = [2]testUser{bob, alice}[i]
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						if change == "Remove" {
							errs[i] = b.svc.RemoveMember(actor.ctx(), org.ID, target.ID)
							return
						}
						_, errs[i] = b.svc.UpdateMember(actor.ctx(), UpdateMemberParams{OrgID: org.ID, UserID: target.ID, Role: "admin"})
					}()
				}
				close(start)
				wg.Wait()

				failed := 0
				for _, err := range errs {
					switch {
					case err == nil:
					case errors.Is(err, ErrLastOwner), errors.Is(err, ErrOwnerRequired):
						failed++
					default:
						t.Fatalf("round %d: unexpected error %v", round, err)
					}
				}
				n, err := countOwners(b.db, org.ID)
				if err != nil {
					t.Fatal(err)
				}
				if failed != 1 || n != 1 {
					t.Fatalf("round %d: errors %v, %d owners left; want one refusal and one owner", round, errs, n)
				}
			}
		})
	}
}

func TestService_EnsureDefaultOrganization(t *testing.T) {
	t.Parallel()

	t.Run("CreatesOnceThenReturnsIt", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.serviceUser("alice")
		ctx := context.Background()
		org, ws, created, err := b.svc.EnsureDefaultOrganization(ctx, alice.ID)
		if err != nil || !created {
			t.Fatalf("first call: created %v, %v", created, err)
		}
		if org.Name != "Default" || org.Slug != "default" || ws.Name != "Default" || ws.Slug != "default" || ws.OrganizationID != org.ID {
			t.Fatalf("org %+v ws %+v", org, ws)
		}
		if role, _ := b.svc.Role(ctx, alice.ID, app.Scope{OrgID: org.ID}); role != "owner" {
			t.Fatalf("role = %q", role)
		}
		org2, ws2, created, err := b.svc.EnsureDefaultOrganization(ctx, alice.ID)
		if err != nil || created || org2.ID != org.ID || ws2.ID != ws.ID {
			t.Fatalf("second call: %v %v created=%v err=%v", org2.ID, ws2.ID, created, err)
		}
		entries, total, err := b.svc.ListAudit(ctx, AuditFilter{OrgID: org.ID}, app.Page{Page: 1, PerPage: 10})
		if err != nil || total != 3 {
			t.Fatalf("audit: %d entries, %v", total, err)
		}
		if entries[0].Actor.UserID != nil {
			t.Fatalf("bootstrap actor = %+v, want none", entries[0].Actor)
		}
	})

	t.Run("ConcurrentCallsCreateOne", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.serviceUser("alice")
		start := make(chan struct{})
		ids := make([]uuid.UUID, 3)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				org, _, _, err := b.svc.EnsureDefaultOrganization(context.Background(), alice.ID)
				ids[i], errs[i] = org.ID, err
			}()
		}
		close(start)
		wg.Wait()
		for i := range ids {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("results %v, errors %v", ids, errs)
			}
		}
	})

	t.Run("AvoidsATakenSlug", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, bob := b.serviceUser("alice"), b.serviceUser("bob")
		ctx := context.Background()
		first, _, _, err := b.svc.EnsureDefaultOrganization(ctx, alice.ID)
		if err != nil {
			t.Fatal(err)
		}
		second, ws, created, err := b.svc.EnsureDefaultOrganization(ctx, bob.ID)
		if err != nil || !created {
			t.Fatalf("created %v, %v", created, err)
		}
		if second.ID == first.ID || second.Slug != "default-"+bob.ID.String()[:8] || ws.Slug != "default" {
			t.Fatalf("second org %+v ws %+v", second, ws)
		}
	})

	t.Run("UnknownUser", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, _, _, err := b.svc.EnsureDefaultOrganization(context.Background(), uuid.New())
		if !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("err = %v, want not found", err)
		}
	})
}

func TestService_Members(t *testing.T) {
	t.Parallel()

	t.Run("CallerBelowAdminIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice, vic := b.serviceUser("alice"), b.serviceUser("vic")
		org, err := b.svc.CreateOrganization(context.Background(), CreateOrganizationParams{Name: "Acme", Slug: "acme", OwnerID: alice.ID})
		if err != nil {
			t.Fatal(err)
		}
		b.addMember(org.ID, vic, "operator")
		_, err = b.svc.UpdateMember(vic.ctx(), UpdateMemberParams{OrgID: org.ID, UserID: vic.ID, Role: "admin"})
		if !errors.Is(err, ErrNotPermitted) {
			t.Fatalf("err = %v, want ErrNotPermitted", err)
		}
		if err := b.svc.RemoveMember(vic.ctx(), uuid.New(), alice.ID); !errors.Is(err, ErrOrganizationNotFound) {
			t.Fatalf("unknown organization: err = %v", err)
		}
	})

	t.Run("UnchangedRoleWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.serviceUser("alice")
		ctx := context.Background()
		org, err := b.svc.CreateOrganization(ctx, CreateOrganizationParams{Name: "Acme", Slug: "acme", OwnerID: alice.ID})
		if err != nil {
			t.Fatal(err)
		}
		m, err := b.svc.UpdateMember(ctx, UpdateMemberParams{OrgID: org.ID, UserID: alice.ID, Role: "owner"})
		if err != nil || m.Role != "owner" {
			t.Fatalf("member %+v, %v", m, err)
		}
		if _, total, _ := b.svc.ListAudit(ctx, AuditFilter{OrgID: org.ID, ObjectType: ObjectMember}, app.Page{Page: 1, PerPage: 10}); total != 1 {
			t.Fatalf("%d member entries, want 1 (the owner's)", total)
		}
	})
}

func TestService_Organizations(t *testing.T) {
	t.Parallel()

	t.Run("UpdateBumpsUpdatedAtAndAudits", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.serviceUser("alice")
		ctx := alice.ctx()
		org, err := b.svc.CreateOrganization(ctx, CreateOrganizationParams{Name: " Acme ", Slug: "acme", OwnerID: alice.ID})
		if err != nil || org.Name != "Acme" {
			t.Fatalf("create: %+v, %v", org, err)
		}
		name := "Acme Corp"
		updated, err := b.svc.UpdateOrganization(ctx, org.ID, UpdateOrganizationParams{Name: &name})
		if err != nil {
			t.Fatal(err)
		}
		stored, err := b.svc.GetOrganization(ctx, org.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Name != name || !stored.UpdatedAt.After(org.UpdatedAt) || !stored.CreatedAt.Equal(org.CreatedAt.Truncate(time.Microsecond)) {
			t.Fatalf("stored %+v after update of %+v (returned %+v)", stored, org, updated)
		}
		// An update that changes nothing writes nothing.
		if _, err := b.svc.UpdateOrganization(ctx, org.ID, UpdateOrganizationParams{Name: &name}); err != nil {
			t.Fatal(err)
		}
		_, total, err := b.svc.ListAudit(ctx, AuditFilter{OrgID: org.ID, ObjectType: ObjectOrganization}, app.Page{Page: 1, PerPage: 10})
		if err != nil || total != 2 {
			t.Fatalf("organization entries = %d, %v; want create and one update", total, err)
		}
	})

	t.Run("APIKeysCannotCreate", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		alice := b.serviceUser("alice")
		ctx := app.WithPrincipal(context.Background(), &app.Principal{UserID: alice.ID, APIKey: &app.APIKeyScope{ID: uuid.New(), OrgID: uuid.New(), Role: "owner"}})
		_, err := b.svc.CreateOrganization(ctx, CreateOrganizationParams{Name: "K", Slug: "kk", OwnerID: alice.ID})
		if !errors.Is(err, ErrAPIKeyCannotCreateOrganization) {
			t.Fatalf("err = %v", err)
		}
	})
}
