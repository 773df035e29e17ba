package certs_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/certs"
)

// create uploads a certificate through the service for a fresh leaf and
// returns it with its chain and key PEM.
func (b *bundle) create(t *testing.T, svc *certs.Service, ws uuid.UUID, spec leafSpec) (certs.Certificate, string, string) {
	t.Helper()
	p := b.pki
	leaf, key := p.issue(t, spec, false)
	chain, kp := certsPEM(leaf, p.inter), b.keyPEM(t, key)
	c, err := svc.Create(context.Background(), certs.CreateParams{WorkspaceID: ws, CertificatePEM: chain, PrivateKeyPEM: kp})
	if err != nil {
		t.Fatalf("create %s: %v", spec.cn, err)
	}
	return c, chain, kp
}

func TestService_Certificates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	t.Run("MaterialDecryptsForAgents", func(t *testing.T) {
		t.Parallel()
		ws := b.newWorkspace(t)
		c, chain, kp := b.create(t, b.svc, ws, leafSpec{cn: "push.example.com", dns: []string{"push.example.com"}})
		pending := uuid.New()
		if err := b.app.Deps.DB.Exec(`INSERT INTO certificates (id, workspace_id, domain, provider, status, auto_renew)
			VALUES (?, ?, 'pending.example.com', 'letsencrypt', 'pending', true)`, pending, ws).Error; err != nil {
			t.Fatalf("insert pending certificate: %v", err)
		}
		for name, tx := range map[string]*gorm.DB{"OwnConnection": nil, "CallersTransaction": b.app.Deps.DB.Begin()} {
			m, err := b.svc.Material(ctx, tx, []uuid.UUID{c.ID, pending, uuid.New()})
			if tx != nil {
				tx.Rollback()
			}
			if err != nil {
				t.Fatalf("%s: material: %v", name, err)
			}
			got := m[c.ID.String()]
			switch {
			case len(m) != 1 || got == nil:
				t.Errorf("%s: material has %d entries, want only %s", name, len(m), c.ID)
			case got.GetId() != c.ID.String() || got.GetDomain() != "push.example.com" || got.GetCertificatePem() != chain ||
				got.GetPrivateKeyPem() != kp || got.GetExpiresAt() != c.ExpiresAt.Unix():
				t.Errorf("%s: material = id %s domain %s expires %d, chain equal %v, key equal %v", name,
					got.GetId(), got.GetDomain(), got.GetExpiresAt(), got.GetCertificatePem() == chain, got.GetPrivateKeyPem() == kp)
			}
		}
		if m, err := b.svc.Material(ctx, nil, nil); err != nil || len(m) != 0 {
			t.Errorf("material of no ids = %v, %v", m, err)
		}
	})

	t.Run("ExistsAndListAll", func(t *testing.T) {
		t.Parallel()
		ws := b.newWorkspace(t)
		zeta, _, _ := b.create(t, b.svc, ws, leafSpec{cn: "zeta.example.com", dns: []string{"zeta.example.com"}})
		alpha, _, _ := b.create(t, b.svc, ws, leafSpec{cn: "alpha.example.com", dns: []string{"alpha.example.com"}})
		for _, tc := range []struct {
			ws, id uuid.UUID
			want   bool
		}{{ws, zeta.ID, true}, {b.otherWS, zeta.ID, false}, {ws, uuid.New(), false}} {
			if got, err := b.svc.Exists(ctx, nil, tc.ws, tc.id); err != nil || got != tc.want {
				t.Errorf("Exists(%s, %s) = %v, %v; want %v", tc.ws, tc.id, got, err, tc.want)
			}
		}
		all, err := b.svc.ListAll(ctx, nil, ws)
		if err != nil {
			t.Fatalf("list all: %v", err)
		}
		var ids []uuid.UUID
		for _, c := range all {
			ids = append(ids, c.ID)
		}
		if !slices.Equal(ids, []uuid.UUID{alpha.ID, zeta.ID}) {
			t.Errorf("ListAll = %v, want alpha then zeta", ids)
		}
		if other, err := b.svc.ListAll(ctx, nil, b.otherWS); err != nil || len(other) != 0 {
			t.Errorf("ListAll of another workspace = %v, %v", other, err)
		}
	})

	t.Run("GetAndDeleteUnknown", func(t *testing.T) {
		t.Parallel()
		if _, err := b.svc.Get(ctx, uuid.New()); !errors.Is(err, certs.ErrCertificateNotFound) || !errors.Is(err, app.ErrNotFound) {
			t.Errorf("Get unknown = %v, want ErrCertificateNotFound", err)
		}
		if err := b.svc.Delete(ctx, uuid.New()); !errors.Is(err, certs.ErrCertificateNotFound) {
			t.Errorf("Delete unknown = %v, want ErrCertificateNotFound", err)
		}
	})

	t.Run("CreateChecksTheWorkspace", func(t *testing.T) {
		t.Parallel()
		p := b.pki
		leaf, key := p.issue(t, leafSpec{cn: "nows.example.com", dns: []string{"nows.example.com"}}, false)
		_, err := b.svc.Create(ctx, certs.CreateParams{WorkspaceID: uuid.New(), CertificatePEM: certsPEM(leaf, p.inter), PrivateKeyPEM: b.keyPEM(t, key)})
		if !errors.Is(err, app.ErrNotFound) {
			t.Errorf("create in unknown workspace = %v, want a not-found error", err)
		}
	})

	t.Run("ToProtoWithoutKey", func(t *testing.T) {
		t.Parallel()
		exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		c := certs.Certificate{ID: uuid.New(), Domain: "x.example.com", ExpiresAt: &exp}
		m := certs.ToProto(c, "chain", "")
		if m.GetId() != c.ID.String() || m.GetDomain() != "x.example.com" || m.GetCertificatePem() != "chain" || m.GetPrivateKeyPem() != "" || m.GetExpiresAt() != exp.Unix() {
			t.Errorf("ToProto = %v", m)
		}
		if certs.ToProto(certs.Certificate{}, "", "").GetExpiresAt() != 0 {
			t.Error("ToProto of a certificate without expiry has an expiry")
		}
	})
}

// TestService_RefreshStatuses moves a service's clock, so it has a master of
// its own: the refresh touches every certificate of the database.
func TestService_RefreshStatuses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	now := time.Now().UTC()
	d := b.app.Deps
	d.Clock = func() time.Time { return now }
	svc := certs.NewService(d, certs.Options{})

	long, _, _ := b.create(t, svc, b.ws, leafSpec{cn: "long.example.com", dns: []string{"long.example.com"}, notAfter: now.Add(90 * 24 * time.Hour)})
	short, _, _ := b.create(t, svc, b.ws, leafSpec{cn: "short.example.com", dns: []string{"short.example.com"}, notAfter: now.Add(20 * 24 * time.Hour)})
	stored := func(id uuid.UUID) string {
		t.Helper()
		var s []string
		if err := b.app.Deps.DB.Table("certificates").Where("id = ?", id).Pluck("status", &s).Error; err != nil || len(s) != 1 {
			t.Fatalf("read status of %s: %v", id, err)
		}
		return s[0]
	}
	check := func(step string, id uuid.UUID, want string) {
		t.Helper()
		c, err := svc.Get(ctx, id)
		if err != nil {
			t.Fatalf("%s: get: %v", step, err)
		}
		if c.Status != want || stored(id) != want {
			t.Errorf("%s: %s status %q (stored %q), want %q", step, c.Domain, c.Status, stored(id), want)
		}
	}
	audits := func(action string) int64 {
		return b.countRows(t, "audit_log", "action = ? AND object_type = 'certificate'", action)
	}

	if err := svc.RefreshStatuses(ctx); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	check("AtUpload", long.ID, certs.StatusActive)
	check("AtUpload", short.ID, certs.StatusExpiring)

	now = now.Add(65 * 24 * time.Hour)
	if c, _ := svc.Get(ctx, long.ID); c.Status != certs.StatusExpiring || stored(long.ID) != certs.StatusActive {
		t.Errorf("before the refresh a read shows %q over stored %q, want expiring over active", c.Status, stored(long.ID))
	}
	if err := svc.RefreshStatuses(ctx); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	check("After65Days", long.ID, certs.StatusExpiring)
	check("After65Days", short.ID, certs.StatusExpired)

	now = now.Add(26 * 24 * time.Hour)
	for range 2 {
		if err := svc.RefreshStatuses(ctx); err != nil {
			t.Fatalf("refresh: %v", err)
		}
	}
	check("After91Days", long.ID, certs.StatusExpired)
	if e, x := audits("certificate.expiring"), audits("certificate.expired"); e != 1 || x != 2 {
		t.Errorf("audit rows: %d certificate.expiring, %d certificate.expired; want 1 and 2", e, x)
	}
	m, err := svc.Material(ctx, nil, []uuid.UUID{long.ID})
	if err != nil || m[long.ID.String()] == nil {
		t.Errorf("material of an expired certificate = %v, %v; want it kept", m, err)
	}
}
