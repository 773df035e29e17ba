package views

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/a-h/templ"

	"github.com/nxmesh/nxmesh/app"
)

// TestErrorSummary renders a failed form: the summary counts the problems,
// links each field in error by its input's id in the service's order, and
// only the first field in error of the response carries autofocus.
func TestErrorSummary(t *testing.T) {
	v := &app.Validator{}
	v.Add("servers[1].address", app.FieldInvalidFormat, "must be host:port")
	v.Add("name", app.FieldRequired, "is required")
	v.Add("owner", app.FieldInvalidValue, "is unknown")
	err := v.Err()
	f, status, ok := FormFromError(err, map[string]string{"name": "", "servers[1].address": "x"}, "name", "servers[1].address")
	if !ok || status != 422 {
		t.Fatalf("FormFromError: %v %d", ok, status)
	}
	form := templ.ComponentFunc(func(ctx context.Context, w io.Writer) error {
		for _, c := range []templ.Component{
			FormMessage(f),
			Field(f, FieldProps{Name: "name", Label: "Name"}),
			CellInput(f, FieldProps{Name: "servers[1].address", Label: "Address"}),
			Checkbox(f, FieldProps{Name: "ok", Label: "OK"}),
		} {
			if err := c.Render(ctx, w); err != nil {
				return err
			}
		}
		return nil
	})
	var b bytes.Buffer
	if err := form.Render(withFocus(context.Background()), &b); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{
		`class="error-summary" role="alert"`,
		"3 problems",
		`<p class="form-error">Owner is unknown</p>`,
		`href="#f-servers[1].address"`, "Servers 2 address", "Must be host:port",
		`href="#f-name"`, "This field is required",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("summary lacks %q:\n%s", want, html)
		}
	}
	if i, j := strings.Index(html, `href="#f-servers[1].address"`), strings.Index(html, `href="#f-name"`); i > j {
		t.Errorf("links not in the service's order")
	}
	focused := regexp.MustCompile(`<input[^>]*\bautofocus\b[^>]*>`).FindAllString(html, -1)
	if len(focused) != 1 || !strings.Contains(focused[0], `id="f-name"`) {
		t.Errorf("autofocus on %q, want the name input alone (first in the page)", focused)
	}

	// Without a claim in the context (a component rendered on its own)
	// nothing is focused; a form without errors has no summary.
	b.Reset()
	if err := Field(f, FieldProps{Name: "name"}).Render(context.Background(), &b); err != nil || strings.Contains(b.String(), "autofocus") {
		t.Errorf("field outside a response: %v %s", err, b.String())
	}
	b.Reset()
	if err := FormMessage(Form{}).Render(context.Background(), &b); err != nil || b.Len() != 0 {
		t.Errorf("summary of a fine form: %v %q", err, b.String())
	}
	b.Reset()
	if err := FormMessage(Form{Message: "Taken"}).Render(context.Background(), &b); err != nil || !strings.Contains(b.String(), "1 problem<") {
		t.Errorf("summary of a conflict: %v %q", err, b.String())
	}
}

func TestHumanField(t *testing.T) {
	for in, want := range map[string]string{
		"name":                         "Name",
		"health_check.interval":        "Health check interval",
		"servers[0].address":           "Servers 1 address",
		"locations[2].headers[0].name": "Locations 3 headers 1 name",
		"labels.env":                   "Labels env",
		"odd[x]":                       "Odd x",
	} {
		if got := humanField(in); got != want {
			t.Errorf("humanField(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainsPattern(t *testing.T) {
	for in, want := range map[string]string{
		"web":     "%web%",
		"50%_off": `%50\%\_off%`,
		`a\b`:     `%a\\b%`,
		`o'r "q"`: `%o'r "q"%`,
	} {
		if got := app.ContainsPattern(in); got != want {
			t.Errorf("ContainsPattern(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestListEmpty says why a list is empty: nothing at all, nothing matching
// the filter (with a link clearing it), or a filter that is not valid.
func TestListEmpty(t *testing.T) {
	for _, tc := range []struct {
		name   string
		filter Form
		want   []string
	}{
		{"Empty", Form{Values: map[string]string{"q": ""}}, []string{"Nothing yet"}},
		{"NoMatches", Form{Values: map[string]string{"q": "x"}}, []string{"No matches", `href="/list" class="clear-filter"`}},
		{"Invalid", Form{Values: map[string]string{"q": "x"}, Errors: map[string]string{"q": "Must be at most 200 characters"}}, []string{"The search is not valid (Q: Must be at most 200 characters)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := ListEmpty(3, tc.filter, "/list", "Nothing yet").Render(context.Background(), &b); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("%s lacks %q", b.String(), w)
				}
			}
		})
	}
}
