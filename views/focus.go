package views

import "context"

// A failed submission must put the reader at its first problem with or
// without JavaScript. Without it, the re-rendered page carries autofocus on
// the first input in error, so the browser focuses and scrolls to it on load
// (an "#errors" fragment on the form's action was rejected: a plain form's
// successful POST answers 303, and the redirected page would inherit the
// fragment). With htmx the same attribute works after a swap (htmx focuses
// [autofocus] in swapped content), and static/js/forms.js also focuses the
// first invalid field of a swapped form and orders the summary's links.
//
// Render puts one focusClaim in the context of each response; the first
// field in error rendered takes it, which is the first in document order.

type focusKey struct{}

type focusClaim struct{ taken bool }

// withFocus returns ctx carrying a fresh autofocus claim for one response.
func withFocus(ctx context.Context) context.Context {
	return context.WithValue(ctx, focusKey{}, &focusClaim{})
}

// autofocus reports whether the field name of f, when in error, is the first
// field in error of the response (and so carries autofocus).
func autofocus(ctx context.Context, f Form, name string) bool {
	if f.Error(name) == "" {
		return false
	}
	c, _ := ctx.Value(focusKey{}).(*focusClaim)
	if c == nil || c.taken {
		return false
	}
	c.taken = true
	return true
}
