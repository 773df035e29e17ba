package authz_test

import (
	"context"
	"testing"

	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
)

func TestMain(m *testing.M) { apptest.Main(m) }

// TestEnforcer_Sync checks that policies are stored in casbin_rule, survive a new
// enforcer (another replica or a restart), and that Sync removes stale ones.
func TestEnforcer_Sync(t *testing.T) {
	t.Parallel()
	a := apptest.NewApp(t, nil)
	db := a.Deps.DB
	ctx := context.Background()

	first, err := authz.New(db)
	if err != nil {
		t.Fatal(err)
	}
	ps := append(authz.AtLeast(authz.RoleOperator, "vhosts.vhost", authz.Write),
		authz.AtLeast(authz.RoleViewer, "vhosts.vhost", authz.Read)...)
	if err := first.Sync(ctx, ps); err != nil {
		t.Fatal(err)
	}
	if err := first.Sync(ctx, ps); err != nil { // idempotent
		t.Fatalf("second sync: %v", err)
	}
	var n int64
	db.Table("casbin_rule").Where("v1 = '*' AND v2 = 'vhosts.vhost'").Count(&n)
	if n != int64(len(ps)) {
		t.Fatalf("casbin_rule holds %d rules for vhosts.vhost, want %d", n, len(ps))
	}

	second, err := authz.New(db.Session(&gorm.Session{NewDB: true}))
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Sync(ctx, ps); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		role, action string
		want         bool
	}{
		{authz.RoleViewer, authz.Read, true},
		{authz.RoleViewer, authz.Write, false},
		{authz.RoleOperator, authz.Write, true},
		{authz.RoleOwner, authz.Write, true},
		{authz.RoleOwner, authz.Delete, false},
	}
	for _, c := range cases {
		got, err := second.Allowed(c.role, "org-1", "vhosts.vhost", c.action)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s %s: allowed %v, want %v", c.role, c.action, got, c.want)
		}
	}

	// Dropping write from the declared policies removes the stored rules.
	if err := second.Sync(ctx, authz.AtLeast(authz.RoleViewer, "vhosts.vhost", authz.Read)); err != nil {
		t.Fatal(err)
	}
	db.Table("casbin_rule").Where("v1 = '*' AND v3 = ?", authz.Write).Count(&n)
	if n != 0 {
		t.Fatalf("%d stale write rules left after sync", n)
	}
	if ok, _ := second.Allowed(authz.RoleOwner, "org-1", "vhosts.vhost", authz.Write); ok {
		t.Fatal("owner may still write after the policy was removed")
	}
}
