package views

import (
	"slices"
	"testing"

	"github.com/nxmesh/nxmesh/app"
)

func TestRowIndexes(t *testing.T) {
	t.Parallel()
	vals := map[string]string{
		"servers[4].address":                     "",
		"servers[0].address":                     "",
		"servers[0].weight":                      "",
		"servers[12].backup":                     "true",
		"servers[x].address":                     "",
		"servers[01].address":                    "",
		"servers[-1].address":                    "",
		"servers[3]":                             "",
		"servers[99999999999999999999].address":  "",
		"serversX[1].address":                    "",
		"locations[2].custom_headers[7].name":    "",
		"locations[2].custom_headers[1].value":   "",
		"locations[20].custom_headers[3].value":  "",
		"locations[2].custom_headers[bad].value": "",
		"locations[2].custom_headersX[5].value":  "",
		"name":                                   "",
	}
	for _, tc := range []struct {
		prefix string
		want   []int
	}{
		{"servers", []int{0, 4, 12}},
		{"locations", []int{2, 20}},
		{"locations[2].custom_headers", []int{1, 7}},
		{"locations[3].custom_headers", nil},
		{"name", nil},
	} {
		if got := RowIndexes(vals, tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("RowIndexes(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
}

func TestOptionalInt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw     string
		want    *int
		invalid bool
	}{
		{"", nil, false},
		{"  ", nil, false},
		{" 42 ", ptr(42), false},
		{"-3", ptr(-3), false},
		{"4.5", nil, true},
		{"ten", nil, true},
	} {
		v := &app.Validator{}
		got := OptionalInt(v, "weight", tc.raw)
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Errorf("OptionalInt(%q) = %v, want %v", tc.raw, got, tc.want)
		}
		if v.OK() == tc.invalid {
			t.Errorf("OptionalInt(%q): invalid = %v, want %v", tc.raw, !v.OK(), tc.invalid)
		}
	}
}

func ptr(n int) *int { return &n }

func TestShellAddSections(t *testing.T) {
	t.Parallel()
	s := Shell{Nav: Nav{Sections: []Link{{Label: "Overview", Href: "/workspaces/w"}, {Label: "Upstreams", Href: "/workspaces/w/upstreams"}}}}
	s.AddSections([]Link{
		{Label: "Upstreams", Href: "/workspaces/w/upstreams", Active: true},
		{Label: "Streams", Href: "/workspaces/w/streams"},
	})
	want := []Link{
		{Label: "Overview", Href: "/workspaces/w"},
		{Label: "Upstreams", Href: "/workspaces/w/upstreams", Active: true},
		{Label: "Streams", Href: "/workspaces/w/streams"},
	}
	if !slices.Equal(s.Nav.Sections, want) {
		t.Errorf("sections = %+v, want %+v", s.Nav.Sections, want)
	}
}
