package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/views"
)

// The admin's sign-in pages.
//
//  1. GET /login shows the form and sets a random nxmesh_csrf cookie whose value
//     the form repeats in _csrf (double submit: there is no session yet whose
//     token could be used, and a cross-site page can neither read nor set the
//     cookie).
//  2. POST /login checks the CSRF pair, then the password through
//     VerifyPassword (throttled per account and per IP). A user who must confirm
//     an emailed code, or who ticked email_code (organizations with
//     require_email_code admit only sessions confirmed so), gets one
//     (StartEmailCode); the address waits in the short-lived nxmesh_login
//     cookie and the browser goes to /login/code. GET /login?email_code=true
//     shows the form with the box ticked, even to a signed-in user.
//  3. POST /login/code checks the code with VerifyEmailCode.
//  4. Either way the sign-in ends in CreateWebSession (CreateEmailCodeWebSession
//     after a code): the nxmesh_session cookie
//     (HttpOnly, SameSite=Lax, Path=/, Secure on HTTPS) and a redirect to the
//     local ?next= path.
//
// POST /logout revokes the session and clears the cookie; the guard has already
// checked its CSRF token.

// Cookies of the sign-in flow, scoped to /login.
const (
	uiCSRFCookie  = "nxmesh_csrf"
	uiLoginCookie = "nxmesh_login"
	uiLoginPath   = "/login"
	// uiCodeWait is how long the address waits for its code (codes live 5 minutes).
	uiCodeWait = 10 * time.Minute
)

// mountUI mounts the sign-in pages and logout; Routes calls it with the UI router.
func (m *Module) mountUI(ui *app.Router) {
	ui.Get("/login", app.Public(), app.Doc{Summary: "Sign-in page", Query: []string{"next"}}, m.uiLogin)
	ui.Post("/login", app.Public(), app.Doc{Summary: "Sign in with email and password (form)"}, m.uiLoginSubmit)
	ui.Get("/login/code", app.Public(), app.Doc{Summary: "One-time code page of the two-step sign-in", Query: []string{"next"}}, m.uiCode)
	ui.Post("/login/code", app.Public(), app.Doc{Summary: "Confirm the emailed one-time code (form)"}, m.uiCodeSubmit)
	ui.Post("/logout", app.Authenticated(), app.Doc{Summary: "Sign out of the admin (form)"}, m.uiLogout)
}

// uiSecureCookies decides the Secure attribute of the admin's cookies: set when
// http.secure_cookies is on (browsers accept Secure cookies from http://localhost
// and 127.0.0.1 too), or when the request reached the master over HTTPS.
func (m *Module) uiSecureCookies(c *fiber.Ctx) bool { return m.secureCookies || c.Secure() }

// uiSafeNext returns next when it is a path on this site, else "/": it must
// start with one "/" (not "//" or "/\", which browsers treat as another host)
// and must not lead back into the sign-in pages.
func uiSafeNext(next string) string {
	if next == "" || next[0] != '/' || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\\\r\n\t") || len(next) > 2048 {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.Opaque != "" {
		return "/"
	}
	if u.Path == uiLoginPath || strings.HasPrefix(u.Path, uiLoginPath+"/") || u.Path == "/logout" {
		return "/"
	}
	return next
}

func uiRandomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func (m *Module) uiSetCookie(c *fiber.Ctx, name, value, path string, maxAge time.Duration) {
	ck := &fiber.Cookie{
		Name:     name,
		Value:    value,
		Path:     path,
		HTTPOnly: true,
		Secure:   m.uiSecureCookies(c),
		SameSite: fiber.CookieSameSiteLaxMode,
	}
	if maxAge > 0 {
		ck.MaxAge = int(maxAge / time.Second)
		ck.Expires = time.Now().Add(maxAge)
	} else {
		ck.MaxAge = -1
		ck.Expires = time.Unix(0, 0)
	}
	c.Cookie(ck)
}

// uiLoginCSRF returns the sign-in form's CSRF token, reusing the browser's
// cookie when it holds a well-formed one (so two open tabs both work).
func (m *Module) uiLoginCSRF(c *fiber.Ctx) (string, error) {
	tok := c.Cookies(uiCSRFCookie)
	if len(tok) != 43 || strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		var err error
		if tok, err = uiRandomToken(); err != nil {
			return "", err
		}
	}
	m.uiSetCookie(c, uiCSRFCookie, tok, uiLoginPath, time.Hour)
	return tok, nil
}

// uiCheckLoginCSRF reports whether the form's _csrf matches the cookie.
func uiCheckLoginCSRF(c *fiber.Ctx) bool {
	cookie, sent := c.Cookies(uiCSRFCookie), c.FormValue("_csrf")
	return len(cookie) == 43 && subtle.ConstantTimeCompare([]byte(cookie), []byte(sent)) == 1
}

// uiExpired is the message of a sign-in form whose CSRF pair does not match,
// mostly a form left open past its cookie.
const uiExpired = "The sign-in form expired. Please try again."

// ---- Password step ----

func (m *Module) uiLogin(c *fiber.Ctx) error {
	next := uiSafeNext(c.Query("next"))
	withCode := c.Query("email_code") == "true"
	if tok := c.Cookies(SessionCookie); tok != "" && !withCode {
		if p, err := m.svc.AuthenticateWebSession(app.Ctx(c), tok); err == nil && p != nil {
			return c.Redirect(next, http.StatusSeeOther)
		}
	}
	form := views.Form{}
	if withCode {
		form.Values = map[string]string{"email_code": "true"}
	}
	return m.renderLogin(c, http.StatusOK, form, next)
}

func (m *Module) renderLogin(c *fiber.Ctx, status int, form views.Form, next string) error {
	tok, err := m.uiLoginCSRF(c)
	if err != nil {
		return err
	}
	return views.Render(c, status, loginPage(uiLoginData{Form: form, CSRF: tok, Next: next, Flash: views.TakeFlash(c)}))
}

func (m *Module) uiLoginSubmit(c *fiber.Ctx) error {
	next := uiSafeNext(c.FormValue("next"))
	vals := map[string]string{"email": c.FormValue("email"), "email_code": c.FormValue("email_code")}
	if !uiCheckLoginCSRF(c) {
		return m.renderLogin(c, http.StatusForbidden, views.Form{Values: vals, Message: uiExpired}, next)
	}
	ctx := app.Ctx(c)
	u, err := m.svc.VerifyPassword(ctx, vals["email"], c.FormValue("password"), c.IP())
	if err != nil {
		return m.uiLoginFailed(c, err, vals, next)
	}
	required, err := m.svc.EmailCodeRequired(ctx, u)
	if err != nil {
		return err
	}
	if !required && vals["email_code"] != "true" {
		return m.uiStartSession(c, u, next, false)
	}
	if _, err := m.svc.StartEmailCode(ctx, u); err != nil {
		return m.uiLoginFailed(c, err, vals, next)
	}
	m.uiSetCookie(c, uiLoginCookie, u.Email, uiLoginPath, uiCodeWait)
	return c.Redirect("/login/code?next="+url.QueryEscape(next), http.StatusSeeOther)
}

// uiLoginFailed re-renders the sign-in form with the service's message.
func (m *Module) uiLoginFailed(c *fiber.Ctx, err error, vals map[string]string, next string) error {
	form, status, ok := uiFormError(c, err, vals, "email", "password")
	if !ok {
		return err
	}
	return m.renderLogin(c, status, form, next)
}

// uiFormError is views.FormFromError plus Retry-After and a readable wait for
// throttled attempts.
func uiFormError(c *fiber.Ctx, err error, vals map[string]string, fields ...string) (views.Form, int, bool) {
	form, status, ok := views.FormFromError(err, vals, fields...)
	var he *app.HTTPError
	if !ok || !errors.As(err, &he) || he.RetryAfter <= 0 {
		return form, status, ok
	}
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(he.RetryAfter))
	if he.Status == http.StatusTooManyRequests {
		wait := (he.RetryAfter + 59) / 60
		unit := "minutes"
		if wait == 1 {
			unit = "minute"
		}
		form.Message = "Too many failed attempts. Try again in " + strconv.Itoa(wait) + " " + unit + "."
	}
	return form, status, ok
}

// uiStartSession signs u in: a new admin session (confirmed with an emailed
// code when emailCode), its cookie, and the way on.
func (m *Module) uiStartSession(c *fiber.Ctx, u User, next string, emailCode bool) error {
	ctx := app.Ctx(c)
	if old := c.Cookies(SessionCookie); old != "" {
		if err := m.svc.RevokeWebSession(ctx, old); err != nil {
			return err
		}
	}
	create := m.svc.CreateWebSession
	if emailCode {
		create = m.svc.CreateEmailCodeWebSession
	}
	tok, _, err := create(ctx, u.ID, c.IP(), c.Get(fiber.HeaderUserAgent))
	if err != nil {
		return err
	}
	m.uiSetCookie(c, SessionCookie, tok, "/", m.svc.WebSessionTTL())
	m.uiSetCookie(c, uiCSRFCookie, "", uiLoginPath, 0)
	m.uiSetCookie(c, uiLoginCookie, "", uiLoginPath, 0)
	return c.Redirect(next, http.StatusSeeOther)
}

// ---- One-time code step ----

func (m *Module) uiCode(c *fiber.Ctx) error {
	next := uiSafeNext(c.Query("next"))
	email := c.Cookies(uiLoginCookie)
	if email == "" {
		return c.Redirect("/login?next="+url.QueryEscape(next), http.StatusSeeOther)
	}
	return m.renderCode(c, http.StatusOK, views.Form{}, email, next)
}

func (m *Module) renderCode(c *fiber.Ctx, status int, form views.Form, email, next string) error {
	tok, err := m.uiLoginCSRF(c)
	if err != nil {
		return err
	}
	return views.Render(c, status, codePage(uiCodeData{Form: form, CSRF: tok, Next: next, Masked: MaskEmail(email)}))
}

func (m *Module) uiCodeSubmit(c *fiber.Ctx) error {
	next := uiSafeNext(c.FormValue("next"))
	email := c.Cookies(uiLoginCookie)
	if email == "" {
		views.SetFlash(c, views.Flash{Kind: views.FlashInfo, Message: "The sign-in took too long. Please sign in again."})
		return c.Redirect("/login?next="+url.QueryEscape(next), http.StatusSeeOther)
	}
	if !uiCheckLoginCSRF(c) {
		return m.renderCode(c, http.StatusForbidden, views.Form{Message: uiExpired}, email, next)
	}
	u, err := m.svc.VerifyEmailCode(app.Ctx(c), email, c.FormValue("code"), c.IP())
	if err != nil {
		form, status, ok := uiFormError(c, err, nil, "code")
		if !ok {
			return err
		}
		if errors.Is(err, ErrInvalidCode) {
			form.Errors["code"], form.Message = form.Message, ""
		}
		return m.renderCode(c, status, form, email, next)
	}
	return m.uiStartSession(c, u, next, true)
}

// ---- Logout ----

func (m *Module) uiLogout(c *fiber.Ctx) error {
	if err := m.svc.RevokeWebSession(app.Ctx(c), c.Cookies(SessionCookie)); err != nil {
		return err
	}
	m.uiSetCookie(c, SessionCookie, "", "/", 0)
	views.SetFlash(c, views.Flash{Kind: views.FlashInfo, Message: "You are signed out."})
	return views.Redirect(c, "/login")
}
