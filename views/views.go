// Package views holds the admin's shared templ components — the page layout with
// the organization and workspace switchers, flash messages, tables, form fields
// with their error messages, pagination and the error page — and the helpers that
// let one handler serve a full page or, for htmx, only the fragment.
//
// A module's ui.go builds a Shell (title, user, CSRF token, navigation) and its
// page content as a templ component, then calls Page. Forms work without
// JavaScript (POST, then SeeOther to the page) and are enhanced with hx-post
// targeting #content: the same handler answers with the content fragment, and
// SeeOther becomes an HX-Location. A failed submission re-renders the form with
// the submitted values and the service's messages (FormFromError).
package views

import (
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/views/layout"
)

// The shell's data live in package layout, which the plumbing (app.Pages)
// shares; these names are the ones the pages use.
type (
	// Shell is what every signed-in page has around its content.
	Shell = layout.Shell
	// Nav is the navigation bar: switchers and section tabs.
	Nav = layout.Nav
	// Link is a labelled target in the navigation.
	Link = layout.Link
	// FlashKind selects a flash message's colour.
	FlashKind = layout.FlashKind
	// Flash is a one-time message shown at the top of the next page.
	Flash = layout.Flash
)

// Flash kinds.
const (
	FlashSuccess = layout.FlashSuccess
	FlashError   = layout.FlashError
	FlashInfo    = layout.FlashInfo
)

// Form is a form's submitted values and the errors to show with them.
type Form struct {
	// Values are the submitted values by field name.
	Values map[string]string
	// Errors are messages by field name (the JSON field names of the service).
	Errors map[string]string
	// Message is a form-level error: a conflict, or field errors that no input of
	// the form displays.
	Message string
	// Order lists the names of Errors in the order the service reported them
	// (FormFromError sets it); the error summary links them in this order,
	// then any others by name.
	Order []string
}

// Value returns the submitted value of name.
func (f Form) Value(name string) string { return f.Values[name] }

// Error returns the message for name, "" when the field is fine.
func (f Form) Error(name string) string { return f.Errors[name] }

// Failed reports whether the form has any error to show.
func (f Form) Failed() bool { return f.Message != "" || len(f.Errors) > 0 }

// ErrorNames are the names of the fields in error: Order first, then the
// other names of Errors sorted.
func (f Form) ErrorNames() []string {
	out := make([]string, 0, len(f.Errors))
	seen := make(map[string]bool, len(f.Errors))
	for _, n := range f.Order {
		if f.Errors[n] != "" && !seen[n] {
			out = append(out, n)
			seen[n] = true
		}
	}
	rest := make([]string, 0, len(f.Errors))
	for n, msg := range f.Errors {
		if msg != "" && !seen[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// Problems is the number of problems the error summary lists: one per field
// in error, plus the form-level message.
func (f Form) Problems() int {
	n := len(f.ErrorNames())
	if f.Message != "" {
		n++
	}
	return n
}

// FieldID is the id of the input of the field name (Field, Checkbox,
// Textarea and the cell inputs use it): the error summary links to it.
func FieldID(name string) string { return "f-" + name }

// humanField turns a field name into words for the error summary:
// "servers[1].address" reads "Servers 2 address", "health_check" reads
// "Health check". The script of the admin replaces it with the field's label.
func humanField(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch ch := name[i]; ch {
		case '[':
			j := strings.IndexByte(name[i:], ']')
			if n, err := strconv.Atoi(name[i+1 : i+max(j, 1)]); j > 0 && err == nil {
				b.WriteString(" " + strconv.Itoa(n+1))
				i += j
				continue
			}
			b.WriteByte(' ')
		case '.', '_', ']', '-':
			b.WriteByte(' ')
		default:
			b.WriteByte(ch)
		}
	}
	return sentence(strings.Join(strings.Fields(b.String()), " "))
}

func problemsLabel(n int) string {
	if n == 1 {
		return "1 problem"
	}
	return strconv.Itoa(n) + " problems"
}

// FormFromError turns a service error into form errors and the status to
// re-render the form with. A validation error (422) puts each message next to
// its field when fields lists it, otherwise into the form-level message. A
// conflict (409), a rule of the service that refuses the change (403, e.g.
// "only an owner can grant the owner role"), bad credentials (401), throttling
// (429) and an unavailable dependency (503) become the form-level message. ok
// is false for any other error (not found, internal), which the caller returns
// for the error page.
func FormFromError(err error, values map[string]string, fields ...string) (f Form, status int, ok bool) {
	f = Form{Values: values, Errors: map[string]string{}}
	var ve *app.ValidationError
	if errors.As(err, &ve) {
		var other []string
		for _, fe := range ve.Fields {
			if contains(fields, fe.Field) {
				if f.Errors[fe.Field] == "" {
					f.Errors[fe.Field] = fieldMessage(fe.Message)
					f.Order = append(f.Order, fe.Field)
				}
				continue
			}
			other = append(other, fieldLabel(fe.Field)+" "+fe.Message)
		}
		if len(other) > 0 {
			f.Message = sentence(strings.Join(other, "; "))
		}
		return f, http.StatusUnprocessableEntity, true
	}
	status, msg, known := ErrorMessage(err)
	switch status {
	case http.StatusConflict, http.StatusForbidden, http.StatusUnauthorized, http.StatusUnprocessableEntity,
		http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if known {
			f.Message = msg
			return f, status, true
		}
	}
	return f, 0, false
}

// ErrorMessage returns the status and public message the API would answer err
// with; known is false for an uncategorized error (a 500 whose text must not
// be shown).
func ErrorMessage(err error) (status int, message string, known bool) {
	var he *app.HTTPError
	if errors.As(err, &he) {
		return he.Status, he.Message, true
	}
	if errors.As(err, new(*app.ValidationError)) {
		return http.StatusUnprocessableEntity, "Request validation failed", true
	}
	for _, c := range []struct {
		err    error
		status int
		def    string
	}{
		{app.ErrNotFound, http.StatusNotFound, "Resource not found"},
		{app.ErrConflict, http.StatusConflict, "The change conflicts with the current state"},
		{app.ErrInvalid, http.StatusUnprocessableEntity, "The form is not valid"},
		{app.ErrUnauthorized, http.StatusUnauthorized, "Authentication required"},
		{app.ErrForbidden, http.StatusForbidden, "You are not allowed to make this change"},
		{app.ErrRateLimited, http.StatusTooManyRequests, "Too many requests"},
		{app.ErrUnavailable, http.StatusServiceUnavailable, "Service temporarily unavailable"},
	} {
		if errors.Is(err, c.err) {
			return c.status, publicMessage(err, c.err, c.def), true
		}
	}
	return http.StatusInternalServerError, "Internal server error", false
}

// publicMessage returns the text after the category, as the API shows it.
func publicMessage(err, category error, def string) string {
	msg := err.Error()
	i := strings.Index(msg, category.Error()+": ")
	if i < 0 {
		return def
	}
	return sentence(msg[i+len(category.Error())+2:])
}

// fieldMessage phrases a field's message for display under its input: the
// service's "is required" reads "This field is required".
func fieldMessage(msg string) string {
	if strings.HasPrefix(msg, "is ") || strings.HasPrefix(msg, "has ") {
		return "This field " + msg
	}
	return sentence(msg)
}

func sentence(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func fieldLabel(field string) string {
	return strings.ReplaceAll(field, "_", " ")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// FieldProps describes one input of a form.
type FieldProps struct {
	// Name is the input's name and the service's JSON field name.
	Name  string
	Label string
	// Type is the input type; "text" when empty.
	Type         string
	Placeholder  string
	Help         string
	Required     bool
	Autocomplete string
	// Options are the choices of a select field.
	Options []Option
}

// Option is one choice of a select field.
type Option struct {
	Value string
	Label string
}

func (p FieldProps) inputType() string {
	if p.Type == "" {
		return "text"
	}
	return p.Type
}

func (p FieldProps) id() string { return FieldID(p.Name) }

func (p FieldProps) errorID() string { return "f-" + p.Name + "-error" }

// Pager renders the pagination of a list.
type Pager struct {
	Page    int
	PerPage int
	Total   int64
	// Path is the list's path; Query its current filters (page is replaced).
	Path  string
	Query url.Values
}

// NewPager builds a Pager for the list at path with the filters in query.
func NewPager(p app.Page, total int64, path string, query url.Values) Pager {
	return Pager{Page: p.Page, PerPage: p.PerPage, Total: total, Path: path, Query: query}
}

// Pages is the number of pages (at least 1).
func (p Pager) Pages() int {
	if p.PerPage <= 0 || p.Total <= 0 {
		return 1
	}
	return int((p.Total + int64(p.PerPage) - 1) / int64(p.PerPage))
}

// Href is the URL of page n with the current filters.
func (p Pager) Href(n int) string {
	q := url.Values{}
	for k, v := range p.Query {
		q[k] = append([]string(nil), v...)
	}
	q.Set("page", strconv.Itoa(n))
	if p.PerPage > 0 && p.PerPage != app.DefaultPerPage {
		q.Set("per_page", strconv.Itoa(p.PerPage))
	}
	return p.Path + "?" + q.Encode()
}

// HasPrev reports whether there is a previous page.
func (p Pager) HasPrev() bool { return p.Page > 1 }

// HasNext reports whether there is a next page.
func (p Pager) HasNext() bool { return p.Page < p.Pages() }
