package certs_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/certs"
)

// TestService_Search narrows the certificate list by a part of the name,
// the domain or a subjectAltName (ignoring case; '%', '_' and quotes match
// only themselves) and by the status as of now, which the query derives
// from the expiry and renewal times as the returned certificates show it.
func TestService_Search(t *testing.T) {
	t.Parallel()
	b := setup(t)
	db := b.app.Deps.DB
	now := time.Now()
	type row struct {
		name, domain string
		alt          []string
		// set adjusts the stored row after the upload.
		set map[string]any
	}
	for _, r := range []row{
		{name: "shop_1", domain: "shop.example.com", alt: []string{"cdn.example.net"}},
		{name: "shopx1", domain: "shopx.example.com", set: map[string]any{"expires_at": now.Add(10 * 24 * time.Hour)}},
		{name: "Promo%Site", domain: "promo.example.com", set: map[string]any{"expires_at": now.Add(-time.Hour)}},
		{name: `o'brien "q"`, domain: "obrien.example.com", set: map[string]any{"status": certs.StatusPending}},
		{name: "broken", domain: "broken.example.com", set: map[string]any{"status": certs.StatusFailed}},
		// ACME: past its renewal time although far from expiry.
		{name: "acme-due", domain: "due.example.com", set: map[string]any{"provider": "acme", "renew_at": now.Add(-time.Minute), "expires_at": now.Add(60 * 24 * time.Hour)}},
		// ACME: near expiry but before its renewal time.
		{name: "acme-fine", domain: "fine.example.com", set: map[string]any{"provider": "acme", "renew_at": now.Add(24 * time.Hour), "expires_at": now.Add(20 * 24 * time.Hour)}},
	} {
		leaf, key := b.pki.issue(t, leafSpec{cn: r.domain, dns: append([]string{r.domain}, r.alt...)}, false)
		c := b.upload(t, b.ws, certsPEM(leaf, b.pki.inter), keyPEM(t, key))
		set := map[string]any{"name": r.name}
		for k, v := range r.set {
			set[k] = v
		}
		if err := db.Table("certificates").Where("id = ?", c.ID).Updates(set).Error; err != nil {
			t.Fatalf("adjust %s: %v", r.name, err)
		}
	}
	// Another workspace's certificate never shows.
	leaf, key := b.pki.issue(t, leafSpec{cn: "shop.example.com", dns: []string{"shop.example.com"}}, false)
	if _, err := b.svc.Create(t.Context(), certs.CreateParams{WorkspaceID: b.otherWS, CertificatePEM: certsPEM(leaf, b.pki.inter), PrivateKeyPEM: keyPEM(t, key)}); err != nil {
		t.Fatalf("upload to the other workspace: %v", err)
	}

	page := app.Page{Page: 1, PerPage: 50}
	for _, tc := range []struct {
		q, state string
		want     []string
	}{
		{"", "", []string{"acme-due", "acme-fine", "broken", `o'brien "q"`, "Promo%Site", "shop_1", "shopx1"}},
		{"SHOP", "", []string{"shop_1", "shopx1"}},
		{"p_1", "", []string{"shop_1"}},
		{"_", "", []string{"shop_1"}},
		{"%", "", []string{"Promo%Site"}},
		{"CDN.EXAMPLE", "", []string{"shop_1"}},
		{"'", "", []string{`o'brien "q"`}},
		{`"q"`, "", []string{`o'brien "q"`}},
		{"'; DROP TABLE certificates; --", "", nil},
		{"", certs.StatusActive, []string{"acme-fine", "shop_1"}},
		{"", certs.StatusExpiring, []string{"acme-due", "shopx1"}},
		{"", certs.StatusExpired, []string{"Promo%Site"}},
		{"", certs.StatusPending, []string{`o'brien "q"`}},
		{"", certs.StatusFailed, []string{"broken"}},
		{"shop", certs.StatusExpiring, []string{"shopx1"}},
	} {
		t.Run(tc.q+"/"+tc.state, func(t *testing.T) {
			got, total, err := b.svc.Search(t.Context(), b.ws, certs.Filter{Q: tc.q, State: tc.state}, page)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range got {
				names = append(names, c.Name)
				if tc.state != "" && c.Status != tc.state {
					t.Errorf("%s has status %s under the filter %s", c.Name, c.Status, tc.state)
				}
			}
			slices.SortFunc(names, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
			if !slices.Equal(names, tc.want) || total != int64(len(tc.want)) {
				t.Errorf("Search(%q, %q) = %q (total %d), want %q", tc.q, tc.state, names, total, tc.want)
			}
		})
	}
	for _, tc := range []struct{ q, state, field string }{
		{strings.Repeat("x", app.MaxSearchLength+1), "", "q"},
		{"", "valid'", "state"},
	} {
		_, _, err := b.svc.Search(t.Context(), b.ws, certs.Filter{Q: tc.q, State: tc.state}, page)
		var ve *app.ValidationError
		if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != tc.field {
			t.Errorf("Search(%.10q, %q): %v, want a validation error naming %s", tc.q, tc.state, err, tc.field)
		}
	}
}
