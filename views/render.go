package views

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/a-h/templ"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// ContentTarget is the element htmx requests swap: the page content inside
// <main>. Forms use hx-target={ ContentTarget }.
const ContentTarget = "#content"

// FlashCookie carries a flash message across a redirect.
const FlashCookie = "nxmesh_flash"

// IsHTMX reports whether c is an htmx request that swaps a fragment (boosted
// and history-restore requests want whole pages).
func IsHTMX(c *fiber.Ctx) bool {
	return c.Get("HX-Request") == "true" && c.Get("HX-Boosted") != "true" &&
		c.Get("HX-History-Restore-Request") != "true"
}

// Render writes comp as an HTML response with status.
func Render(c *fiber.Ctx, status int, comp templ.Component) error {
	c.Status(status)
	c.Type("html", "utf-8")
	c.Set("Cache-Control", "no-store")
	return comp.Render(withFocus(c.UserContext()), c.Response().BodyWriter())
}

// Page renders content in the admin layout, or only the content fragment for an
// htmx request. A pending flash message is taken from the flash cookie when
// s.Flash is nil.
func Page(c *fiber.Ctx, status int, s Shell, content templ.Component) error {
	if s.Flash == nil {
		s.Flash = TakeFlash(c)
	}
	if IsHTMX(c) {
		return Render(c, status, fragment(s, content))
	}
	return Render(c, status, Layout(s, content))
}

// SeeOther ends a successful form submission: a 303 to path for a plain form,
// or an HX-Location that loads path's content fragment for htmx (which also
// pushes path into the browser history).
func SeeOther(c *fiber.Ctx, path string) error {
	if IsHTMX(c) {
		loc, err := json.Marshal(map[string]string{"path": path, "target": ContentTarget})
		if err != nil {
			return err
		}
		c.Set("HX-Location", string(loc))
		return c.SendStatus(http.StatusOK)
	}
	return c.Redirect(path, http.StatusSeeOther)
}

// Redirect navigates the whole window to path: a 303, or HX-Redirect for htmx
// (used when the layout changes, e.g. after signing in or out).
func Redirect(c *fiber.Ctx, path string) error {
	if c.Get("HX-Request") == "true" {
		c.Set("HX-Redirect", path)
		return c.SendStatus(http.StatusOK)
	}
	return c.Redirect(path, http.StatusSeeOther)
}

// SetFlash stores f for the next page rendered by Page.
func SetFlash(c *fiber.Ctx, f Flash) {
	raw, err := json.Marshal(flashCookie{K: string(f.Kind), M: f.Message, R: f.Rollout})
	if err != nil {
		return
	}
	c.Cookie(&fiber.Cookie{
		Name:     FlashCookie,
		Value:    base64.RawURLEncoding.EncodeToString(raw),
		Path:     "/",
		MaxAge:   60,
		HTTPOnly: true,
		Secure:   c.Secure(),
		SameSite: fiber.CookieSameSiteLaxMode,
	})
}

type flashCookie struct {
	K string `json:"k"`
	M string `json:"m"`
	R string `json:"r,omitempty"`
}

// TakeFlash returns the pending flash message and clears it, or nil.
func TakeFlash(c *fiber.Ctx) *Flash {
	v := c.Cookies(FlashCookie)
	if v == "" {
		return nil
	}
	c.Cookie(&fiber.Cookie{
		Name: FlashCookie, Value: "", Path: "/", MaxAge: -1,
		Expires: time.Unix(0, 0), HTTPOnly: true, Secure: c.Secure(), SameSite: fiber.CookieSameSiteLaxMode,
	})
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil
	}
	var fc flashCookie
	if err := json.Unmarshal(raw, &fc); err != nil || fc.M == "" || len(fc.M) > 500 {
		return nil
	}
	if fc.R != "" && !rolloutPath.MatchString(fc.R) {
		fc.R = ""
	}
	switch FlashKind(fc.K) {
	case FlashSuccess, FlashError, FlashInfo:
		return &Flash{Kind: FlashKind(fc.K), Message: fc.M, Rollout: fc.R}
	}
	return nil
}

// rolloutPath matches RolloutPath's answers.
var rolloutPath = regexp.MustCompile(`^/workspaces/[0-9a-f-]{36}/config/versions/[1-9][0-9]{0,18}/rollout$`)

// RolloutPath is the admin fragment showing, live, what each agent of
// workspace ws made of its configuration version v (mounted by the agents
// module).
func RolloutPath(ws uuid.UUID, v int64) string {
	return "/workspaces/" + ws.String() + "/config/versions/" + strconv.FormatInt(v, 10) + "/rollout"
}

// SetSavedFlash ends a change that created configuration version v of
// workspace ws: the next page says "Saved as version v: " and message (e.g.
// `Virtual host "www" saved.`), not that the change is live yet, and shows
// the version's rollout to the agents under it. Without a version (v 0: the
// change left the configuration as it was) it says message alone.
func SetSavedFlash(c *fiber.Ctx, ws uuid.UUID, v int64, message string) {
	if v <= 0 {
		SetFlash(c, Flash{Kind: FlashSuccess, Message: message})
		return
	}
	SetFlash(c, Flash{
		Kind:    FlashInfo,
		Message: "Saved as version " + strconv.FormatInt(v, 10) + ": " + message,
		Rollout: RolloutPath(ws, v),
	})
}

// ErrorPage renders a failed admin request (the app.Wiring.ErrorPage hook): a
// full error page, or for htmx an error message swapped into the page's flash
// area so the page the user is on stays usable.
func ErrorPage(c *fiber.Ctx, status int, message string) error {
	if message == "" {
		message = http.StatusText(status)
	}
	if IsHTMX(c) {
		c.Set("HX-Retarget", "#flash")
		c.Set("HX-Reswap", "innerHTML")
		return Render(c, status, FlashMessage(&Flash{Kind: FlashError, Message: message}))
	}
	return Render(c, status, ErrorDocument(ErrorInfo{
		Status:    status,
		Title:     http.StatusText(status),
		Message:   message,
		RequestID: app.RequestID(c),
	}))
}

// ErrorInfo is what the error page shows.
type ErrorInfo struct {
	Status    int
	Title     string
	Message   string
	RequestID string
}

// csrfHeaders is the hx-headers value that makes every htmx request carry the
// session's CSRF token.
func csrfHeaders(token string) string {
	b, err := json.Marshal(map[string]string{"X-CSRF-Token": token})
	if err != nil {
		return "{}"
	}
	return string(b)
}

// htmxConfig lets htmx swap 4xx/5xx answers: a form re-rendered with its errors
// (422, 409) replaces the form, and ErrorPage retargets other failures to the
// flash area. Eval stays off; the layout has no inline script or style. Pages
// are not cached in localStorage (an API key is shown once and must not linger
// there); going back reloads the page.
const htmxConfig = `{"responseHandling":[{"code":"204","swap":false},{"code":"[2345]..","swap":true}],` +
	`"allowEval":false,"includeIndicatorStyles":false,"historyCacheSize":0,"refreshOnHistoryMiss":true}`

// statusClass is the CSS class of an error page's status.
func statusClass(status int) string {
	if status >= 500 {
		return "status server"
	}
	return "status client"
}
