package views

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/a-h/templ"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

func TestFormFromError(t *testing.T) {
	t.Parallel()
	errSlugTaken := fmt.Errorf("%w: a workspace with this slug already exists", app.ErrConflict)
	for _, tc := range []struct {
		name       string
		err        error
		wantOK     bool
		wantStatus int
		wantErrors map[string]string
		wantMsg    string
	}{
		{
			name:       "PutsFieldErrorsNextToTheirFields",
			err:        &app.ValidationError{Fields: []app.FieldError{{Field: "name", Message: "is required"}, {Field: "slug", Message: "must be lowercase"}}},
			wantOK:     true,
			wantStatus: http.StatusUnprocessableEntity,
			wantErrors: map[string]string{"name": "This field is required", "slug": "Must be lowercase"},
		},
		{
			name:       "MovesUnknownFieldsToFormMessage",
			err:        &app.ValidationError{Fields: []app.FieldError{{Field: "expires_at", Message: "must be in the future"}}},
			wantOK:     true,
			wantStatus: http.StatusUnprocessableEntity,
			wantErrors: map[string]string{},
			wantMsg:    "Expires at must be in the future",
		},
		{
			name:       "ShowsConflictAsFormMessage",
			err:        fmt.Errorf("create workspace %q: %w", "x", errSlugTaken),
			wantOK:     true,
			wantStatus: http.StatusConflict,
			wantErrors: map[string]string{},
			wantMsg:    "A workspace with this slug already exists",
		},
		{
			name:       "ShowsServiceRuleAsFormMessage",
			err:        fmt.Errorf("%w: only an owner can grant the owner role", app.ErrForbidden),
			wantOK:     true,
			wantStatus: http.StatusForbidden,
			wantErrors: map[string]string{},
			wantMsg:    "Only an owner can grant the owner role",
		},
		{
			name:       "ShowsThrottlingAsFormMessage",
			err:        app.RateLimited(30),
			wantOK:     true,
			wantStatus: http.StatusTooManyRequests,
			wantErrors: map[string]string{},
			wantMsg:    "Too many requests",
		},
		{name: "LeavesNotFoundToErrorPage", err: fmt.Errorf("%w: no such workspace", app.ErrNotFound)},
		{name: "LeavesInternalErrorsToErrorPage", err: fmt.Errorf("connect: refused")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vals := map[string]string{"name": "kept"}
			f, status, ok := FormFromError(tc.err, vals, "name", "slug")
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			if status != tc.wantStatus {
				t.Errorf("status = %d, want %d", status, tc.wantStatus)
			}
			if f.Message != tc.wantMsg {
				t.Errorf("message = %q, want %q", f.Message, tc.wantMsg)
			}
			if len(f.Errors) != len(tc.wantErrors) {
				t.Errorf("errors = %v, want %v", f.Errors, tc.wantErrors)
			}
			for k, v := range tc.wantErrors {
				if f.Errors[k] != v {
					t.Errorf("errors[%s] = %q, want %q", k, f.Errors[k], v)
				}
			}
			if f.Value("name") != "kept" {
				t.Errorf("submitted value lost: %v", f.Values)
			}
		})
	}
}

func TestPager(t *testing.T) {
	t.Parallel()
	p := NewPager(app.Page{Page: 2, PerPage: 20}, 41, "/orgs/x/audit", url.Values{"actor": {"a b"}})
	if got := p.Pages(); got != 3 {
		t.Errorf("Pages = %d, want 3", got)
	}
	if !p.HasPrev() || !p.HasNext() {
		t.Errorf("HasPrev, HasNext = %v, %v; want both", p.HasPrev(), p.HasNext())
	}
	if got, want := p.Href(3), "/orgs/x/audit?actor=a+b&page=3"; got != want {
		t.Errorf("Href(3) = %q, want %q", got, want)
	}
	if got := (Pager{Page: 1, PerPage: 20}).Pages(); got != 1 {
		t.Errorf("empty list: Pages = %d, want 1", got)
	}
}

// serve runs h for one request and returns the response.
func serve(t *testing.T, h fiber.Handler, headers ...string) (*http.Response, string) {
	t.Helper()
	f := fiber.New()
	f.Get("/", h)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := f.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestPage(t *testing.T) {
	t.Parallel()
	content := templ.ComponentFunc(func(_ context.Context, w io.Writer) error {
		_, err := io.WriteString(w, "<p>the content</p>")
		return err
	})
	shell := Shell{Title: "Things <&>", User: "u@example.com", CSRF: "tok"}
	h := func(c *fiber.Ctx) error { return Page(c, http.StatusOK, shell, content) }

	t.Run("RendersFullPage", func(t *testing.T) {
		t.Parallel()
		resp, body := serve(t, h)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		for _, want := range []string{"<html", `hx-headers="{&#34;X-CSRF-Token&#34;:&#34;tok&#34;}"`, "Things &lt;&amp;&gt;", "<p>the content</p>", `id="content"`} {
			if !strings.Contains(body, want) {
				t.Errorf("page lacks %q:\n%s", want, body)
			}
		}
	})

	t.Run("RendersFragmentForHTMX", func(t *testing.T) {
		t.Parallel()
		_, body := serve(t, h, "HX-Request", "true")
		if strings.Contains(body, "<html") || strings.Contains(body, "topbar") {
			t.Errorf("fragment contains the layout:\n%s", body)
		}
		if !strings.Contains(body, "<p>the content</p>") || !strings.Contains(body, `id="flash"`) {
			t.Errorf("fragment lacks the content or the flash area:\n%s", body)
		}
	})

	t.Run("RendersFullPageForHistoryRestore", func(t *testing.T) {
		t.Parallel()
		_, body := serve(t, h, "HX-Request", "true", "HX-History-Restore-Request", "true")
		if !strings.Contains(body, "<html") {
			t.Errorf("history restore got a fragment:\n%s", body)
		}
	})
}

func TestErrorPage(t *testing.T) {
	t.Parallel()
	h := func(c *fiber.Ctx) error { return ErrorPage(c, http.StatusNotFound, "No such <workspace>") }

	t.Run("RendersDocument", func(t *testing.T) {
		t.Parallel()
		resp, body := serve(t, h)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("status %d, want 404", resp.StatusCode)
		}
		for _, want := range []string{"<html", "Not Found", "No such &lt;workspace&gt;"} {
			if !strings.Contains(body, want) {
				t.Errorf("error page lacks %q:\n%s", want, body)
			}
		}
	})

	t.Run("RetargetsFlashForHTMX", func(t *testing.T) {
		t.Parallel()
		resp, body := serve(t, h, "HX-Request", "true")
		if got := resp.Header.Get("HX-Retarget"); got != "#flash" {
			t.Errorf("HX-Retarget = %q, want #flash", got)
		}
		if strings.Contains(body, "<html") || !strings.Contains(body, "flash-error") {
			t.Errorf("htmx error is not a flash message:\n%s", body)
		}
	})
}

func TestSeeOther(t *testing.T) {
	t.Parallel()
	h := func(c *fiber.Ctx) error { return SeeOther(c, "/orgs/x/workspaces") }

	t.Run("RedirectsPlainForms", func(t *testing.T) {
		t.Parallel()
		resp, _ := serve(t, h)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/orgs/x/workspaces" {
			t.Errorf("status %d Location %q, want 303 to the page", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	t.Run("LocatesHTMX", func(t *testing.T) {
		t.Parallel()
		resp, _ := serve(t, h, "HX-Request", "true")
		if got, want := resp.Header.Get("HX-Location"), `{"path":"/orgs/x/workspaces","target":"#content"}`; got != want {
			t.Errorf("HX-Location = %q, want %q", got, want)
		}
	})
}

func TestFlash(t *testing.T) {
	t.Parallel()
	f := fiber.New()
	f.Get("/set", func(c *fiber.Ctx) error {
		SetFlash(c, Flash{Kind: FlashSuccess, Message: "Saved <b>."})
		return nil
	})
	f.Get("/take", func(c *fiber.Ctx) error {
		fl := TakeFlash(c)
		if fl == nil {
			return c.SendString("none")
		}
		return c.SendString(string(fl.Kind) + ":" + fl.Message)
	})
	resp, err := f.Test(httptest.NewRequest(http.MethodGet, "/set", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == FlashCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly {
		t.Fatalf("flash cookie missing or not HttpOnly: %v", resp.Cookies())
	}
	take := func(value string) string {
		req := httptest.NewRequest(http.MethodGet, "/take", nil)
		req.AddCookie(&http.Cookie{Name: FlashCookie, Value: value})
		resp, err := f.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := take(cookie.Value); got != "success:Saved <b>." {
		t.Errorf("taken flash = %q", got)
	}
	if got := take("not base64!"); got != "none" {
		t.Errorf("malformed cookie gave %q, want none", got)
	}
}

func TestSavedFlash(t *testing.T) {
	t.Parallel()
	ws := uuid.MustParse("0b7a3c52-54a4-4d1b-9d0e-8f1c2a3b4c5d")
	for _, tc := range []struct {
		name    string
		version int64
		cookie  func(string) string // rewrites the cookie's value; nil keeps it
		want    string
	}{
		{name: "Version", version: 7, want: `info|Saved as version 7: Virtual host "www" saved.|/workspaces/0b7a3c52-54a4-4d1b-9d0e-8f1c2a3b4c5d/config/versions/7/rollout` +
			`|<div class="rollout-loading" hx-get="/workspaces/0b7a3c52-54a4-4d1b-9d0e-8f1c2a3b4c5d/config/versions/7/rollout" hx-trigger="load" hx-swap="outerHTML">`},
		{name: "NoVersion", version: 0, want: `success|Virtual host "www" saved.||`},
		{name: "ForeignPathDropped", version: 7, cookie: func(string) string {
			raw, _ := json.Marshal(flashCookie{K: "info", M: "Saved as version 7.", R: "https://evil.example/x"})
			return base64.RawURLEncoding.EncodeToString(raw)
		}, want: `info|Saved as version 7.||`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := fiber.New()
			f.Get("/set", func(c *fiber.Ctx) error {
				SetSavedFlash(c, ws, tc.version, `Virtual host "www" saved.`)
				return nil
			})
			f.Get("/take", func(c *fiber.Ctx) error {
				fl := TakeFlash(c)
				if fl == nil {
					return c.SendString("none")
				}
				var b strings.Builder
				if err := FlashMessage(fl).Render(context.Background(), &b); err != nil {
					return err
				}
				html := b.String()
				if i := strings.Index(html, `<div class="rollout-loading"`); i >= 0 {
					html = html[i : i+strings.Index(html[i:], ">")+1]
				} else {
					html = ""
				}
				return c.SendString(string(fl.Kind) + "|" + fl.Message + "|" + fl.Rollout + "|" + html)
			})
			resp, err := f.Test(httptest.NewRequest(http.MethodGet, "/set", nil), -1)
			if err != nil {
				t.Fatal(err)
			}
			var value string
			for _, ck := range resp.Cookies() {
				if ck.Name == FlashCookie {
					value = ck.Value
				}
			}
			if tc.cookie != nil {
				value = tc.cookie(value)
			}
			req := httptest.NewRequest(http.MethodGet, "/take", nil)
			req.AddCookie(&http.Cookie{Name: FlashCookie, Value: value})
			resp, err = f.Test(req, -1)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if html := strings.ReplaceAll(string(got), "&#34;", `"`); html != tc.want {
				t.Errorf("flash = %s\nwant    %s", html, tc.want)
			}
		})
	}
}
