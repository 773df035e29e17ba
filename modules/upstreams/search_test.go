package upstreams

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
)

// TestService_Search narrows the list by a part of the name or of a server
// address, ignoring case; '%', '_', '\' and quotes in q match only
// themselves (the pattern is a bound parameter with the wildcards escaped).
func TestService_Search(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	other := e.setup(t)
	mustCreate(t, b, "web_1", "10.0.0.1:80")
	mustCreate(t, b, "webx1", "10.0.0.2:80")
	mustCreate(t, b, "Web%Prod", "10.0.0.3:80")
	mustCreate(t, b, `o'brien "q"`, "10.0.0.4:80")
	mustCreate(t, b, `back\slash`, "db.internal:5432")
	mustCreate(t, other, "web_1", "10.0.0.1:80")

	page := app.Page{Page: 1, PerPage: 50}
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"", []string{`back\slash`, `o'brien "q"`, "Web%Prod", "web_1", "webx1"}},
		{"WEB", []string{"Web%Prod", "web_1", "webx1"}},
		{"b_1", []string{"web_1"}},
		{"_", []string{"web_1"}},
		{"%", []string{"Web%Prod"}},
		{"%prod", []string{"Web%Prod"}},
		{"'", []string{`o'brien "q"`}},
		{`"q"`, []string{`o'brien "q"`}},
		{`\`, []string{`back\slash`}},
		{"DB.INTERNAL", []string{`back\slash`}},
		{"10.0.0.2", []string{"webx1"}},
		{"10.0.0.1:80", []string{"web_1"}},
		{"nothing", nil},
		{"'; DROP TABLE upstreams; --", nil},
	} {
		t.Run(tc.q, func(t *testing.T) {
			got, total, err := e.svc.Search(b.ctx, b.ws, Filter{Q: tc.q}, page)
			if err != nil {
				t.Fatalf("Search(%q): %v", tc.q, err)
			}
			var names []string
			for _, u := range got {
				names = append(names, u.Name)
			}
			slices.SortFunc(names, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
			if !slices.Equal(names, tc.want) || total != int64(len(tc.want)) {
				t.Errorf("Search(%q) = %q (total %d), want %q", tc.q, names, total, tc.want)
			}
		})
	}

	t.Run("API", func(t *testing.T) {
		path := "/v1/workspaces/" + b.ws.String() + "/upstreams"
		var out struct {
			Data []Upstream   `json:"data"`
			Meta app.ListMeta `json:"meta"`
		}
		e.call(t, e.tokens["viewer"], http.MethodGet, path+"?q="+url.QueryEscape("B_1"), nil, http.StatusOK, &out)
		if len(out.Data) != 1 || out.Data[0].Name != "web_1" || out.Meta.Total != 1 {
			t.Errorf("q=B_1 answered %+v", out)
		}
		e.call(t, e.tokens["viewer"], http.MethodGet, path+"?q="+strings.Repeat("a", app.MaxSearchLength+1), nil, http.StatusUnprocessableEntity, nil)
	})

	t.Run("TooLong", func(t *testing.T) {
		_, _, err := e.svc.Search(b.ctx, b.ws, Filter{Q: strings.Repeat("a", app.MaxSearchLength+1)}, page)
		var ve *app.ValidationError
		if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != "q" {
			t.Fatalf("Search with a long q: %v, want a validation error naming q", err)
		}
	})
}
