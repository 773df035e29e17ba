package vhosts

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
)

// TestService_Search narrows the virtual host list by a part of the name or
// the server names and the stream list by a part of the name or the listen
// port, ignoring case; '%', '_' and quotes in q match only themselves.
func TestService_Search(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	other := e.setup(t)
	for _, h := range []struct{ name, server string }{
		{"shop_1", "shop.example.com"},
		{"shopx1", "www.shop.example.org"},
		{"Promo%Site", "promo.example.net"},
		{`o'brien "q"`, "obrien.example.com"},
	} {
		if _, err := b.svc.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
			Name: h.name, ServerName: h.server, Locations: []Location{{Path: "/", UpstreamID: b.upstream.ID.String()}},
		}); err != nil {
			t.Fatalf("create %s: %v", h.name, err)
		}
	}
	if _, err := other.svc.CreateVirtualHost(other.ctx, other.ws, VirtualHostInput{
		Name: "shop_1", ServerName: "shop.example.com", Locations: []Location{{Path: "/", UpstreamID: other.upstream.ID.String()}},
	}); err != nil {
		t.Fatal(err)
	}
	b.createStream(t, map[string]any{"name": "pg_main", "listen_port": 5432, "upstream_id": b.upstream.ID})
	b.createStream(t, map[string]any{"name": "pgxmain", "listen_port": 15433, "upstream_id": b.upstream.ID})
	b.createStream(t, map[string]any{"name": "Redis%Cache", "listen_port": 6379, "upstream_id": b.upstream.ID})

	page := app.Page{Page: 1, PerPage: 50}
	sorted := func(names []string) []string {
		slices.SortFunc(names, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
		return names
	}
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"", []string{`o'brien "q"`, "Promo%Site", "shop_1", "shopx1"}},
		{"SHOP", []string{"shop_1", "shopx1"}},
		{"p_1", []string{"shop_1"}},
		{"_", []string{"shop_1"}},
		{"%", []string{"Promo%Site"}},
		{"EXAMPLE.ORG", []string{"shopx1"}},
		{"'", []string{`o'brien "q"`}},
		{`"q"`, []string{`o'brien "q"`}},
		{`\`, nil},
		{"'; DROP TABLE virtual_hosts; --", nil},
	} {
		t.Run("VirtualHosts/"+tc.q, func(t *testing.T) {
			got, total, err := e.svc.SearchVirtualHosts(b.ctx, b.ws, ListFilter{Q: tc.q}, page)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, v := range got {
				names = append(names, v.Name)
			}
			if names = sorted(names); !slices.Equal(names, tc.want) || total != int64(len(tc.want)) {
				t.Errorf("SearchVirtualHosts(%q) = %q (total %d), want %q", tc.q, names, total, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"", []string{"pg_main", "pgxmain", "Redis%Cache"}},
		{"PG", []string{"pg_main", "pgxmain"}},
		{"g_m", []string{"pg_main"}},
		{"%", []string{"Redis%Cache"}},
		{"543", []string{"pg_main", "pgxmain"}},
		{"6379", []string{"Redis%Cache"}},
		{"'", nil},
	} {
		t.Run("Streams/"+tc.q, func(t *testing.T) {
			got, total, err := e.svc.SearchStreams(b.ctx, b.ws, ListFilter{Q: tc.q}, page)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range got {
				names = append(names, s.Name)
			}
			if names = sorted(names); !slices.Equal(names, tc.want) || total != int64(len(tc.want)) {
				t.Errorf("SearchStreams(%q) = %q (total %d), want %q", tc.q, names, total, tc.want)
			}
		})
	}
	t.Run("TooLong", func(t *testing.T) {
		long := ListFilter{Q: strings.Repeat("x", app.MaxSearchLength+1)}
		_, _, err1 := e.svc.SearchVirtualHosts(b.ctx, b.ws, long, page)
		_, _, err2 := e.svc.SearchStreams(b.ctx, b.ws, long, page)
		for _, err := range []error{err1, err2} {
			var ve *app.ValidationError
			if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != "q" {
				t.Errorf("search with a long q: %v, want a validation error naming q", err)
			}
		}
	})
}
