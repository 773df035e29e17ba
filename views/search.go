package views

import (
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// SearchProps describes the search and filter form above a list: a search
// box (q) and, when States is set, a state filter. It is a GET form, so it
// works without JavaScript; with htmx it replaces the list (the element with
// id Target) as the user types, and the address follows.
type SearchProps struct {
	// Path is the list's path.
	Path string
	// Target is the id of the element holding the list's table and
	// pagination; the list handler answers a request whose HX-Target is
	// Target (IsFragmentFor) with that element alone.
	Target string
	// Form holds the current values (q, state) and their errors.
	Form Form
	// Label names the search box ("Search virtual hosts"); Placeholder says
	// what it matches.
	Label       string
	Placeholder string
	// States are the choices of the state filter, the first one "any".
	States []Option
	// Fields are further filters, after the state.
	Fields []FieldProps
}

// Active reports whether a filter is set (the form offers to clear it).
func (p SearchProps) Active() bool { return len(p.Form.Query()) > 0 }

// SearchForm reads a list's filters from the query string of c: each of
// names, trimmed.
func SearchForm(c *fiber.Ctx, names ...string) Form {
	f := Form{Values: make(map[string]string, len(names))}
	for _, n := range names {
		f.Values[n] = strings.TrimSpace(c.Query(n))
	}
	return f
}

// Query is the form's non-empty values as a query string (for the pager
// and the address of the list).
func (f Form) Query() url.Values {
	q := url.Values{}
	for k, v := range f.Values {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// IsFragmentFor reports whether c is an htmx request for the element with
// id target alone (its HX-Target header).
func IsFragmentFor(c *fiber.Ctx, target string) bool {
	return IsHTMX(c) && c.Get("HX-Target") == target
}

// filterProblem says why a list shows nothing when its filter is invalid
// (the table, not the form, is what the search replaces as the user types).
func filterProblem(f Form) string {
	msg := f.Message
	if names := f.ErrorNames(); len(names) > 0 {
		msg = humanField(names[0]) + ": " + f.Error(names[0])
	}
	return "The search is not valid (" + msg + "). Correct it to see the list."
}
