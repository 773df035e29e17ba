package upstreams

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// webSession signs the owner in to the admin: the session cookie and its
// CSRF token.
func (e *env) webSession(t *testing.T) (cookie, csrf string) {
	t.Helper()
	cookie, csrf, err := e.base.Auth.Service().CreateWebSession(context.Background(), e.users["owner"].ID, "127.0.0.1", "test")
	if err != nil {
		t.Fatalf("web session: %v", err)
	}
	return cookie, csrf
}

// TestUI_FailedSubmitFocusesFirstError submits the create form with only a
// field at the bottom of the page in error (the health check's interval).
// Without JavaScript the re-rendered page carries autofocus on that input
// alone and the summary links to it; in headless Chromium (htmx swap, the
// Content-Security-Policy applies) the input has the focus and the error
// summary is in the viewport next to it.
func TestUI_FailedSubmitFocusesFirstError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	base := apptest.Serve(t, e.app)
	cookie, csrf := e.webSession(t)
	newPath := "/workspaces/" + b.ws.String() + "/upstreams/new"
	const firstInvalid = "f-" + fHCInterval

	t.Run("WithoutJavaScript", func(t *testing.T) {
		form := url.Values{
			"_csrf": {csrf}, fName: {"far"}, "algorithm": {"round_robin"}, "keepalive_connections": {"0"},
			serverField(0, "address"): {"10.0.0.1:80"},
			fHCEnabled:                {"true"}, fHCPath: {"/healthz"}, fHCInterval: {"0"}, fHCTimeout: {"5"},
			fHCHealthy: {"2"}, fHCUnhealthy: {"3"},
		}
		req, _ := http.NewRequest(http.MethodPost, base+"/workspaces/"+b.ws.String()+"/upstreams", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: cookie})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		body := string(raw)
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("status %d, want 422", resp.StatusCode)
		}
		if n := strings.Count(body, " autofocus"); n != 1 {
			t.Fatalf("%d autofocus attributes, want 1", n)
		}
		input := regexp.MustCompile(`<input[^>]*\bautofocus\b[^>]*>`).FindString(body)
		if !strings.Contains(input, `id="`+firstInvalid+`"`) {
			t.Errorf("autofocus is on %s, want the input %s", input, firstInvalid)
		}
		for _, want := range []string{`class="error-summary" role="alert"`, `href="#` + firstInvalid + `"`, "1 problem"} {
			if !strings.Contains(body, want) {
				t.Errorf("page lacks %q", want)
			}
		}
	})

	t.Run("InBrowser", func(t *testing.T) {
		browser := apptest.Browser(t, 1100, 600, 90*time.Second)
		var active string
		var summaryInView, fieldInView bool
		var summaryText string
		err := chromedp.Run(browser,
			network.SetCookie(auth.SessionCookie, cookie).WithDomain("127.0.0.1").WithPath("/"),
			chromedp.Navigate(base+newPath),
			chromedp.WaitVisible(`#save-upstream`, chromedp.ByID),
			chromedp.Evaluate(`(function () {
				document.getElementById("f-name").value = "far";
				document.getElementById("f-servers[0].address").value = "10.0.0.1:80";
				document.getElementById("f-health_check.enabled").checked = true;
				document.getElementById("f-health_check.interval").value = "0";
			})()`, nil),
			chromedp.Click(`#save-upstream`, chromedp.ByID),
			chromedp.WaitVisible(`.error-summary`, chromedp.ByQuery),
			chromedp.Poll(`document.activeElement && document.activeElement.id === "`+firstInvalid+`"`, nil, chromedp.WithPollingTimeout(10*time.Second)),
			chromedp.Evaluate(`document.activeElement.id`, &active),
			chromedp.Evaluate(`(function () {
				var r = document.querySelector(".error-summary").getBoundingClientRect();
				return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;
			})()`, &summaryInView),
			chromedp.Evaluate(`(function () {
				var r = document.activeElement.getBoundingClientRect();
				return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;
			})()`, &fieldInView),
			chromedp.Text(`.error-summary`, &summaryText, chromedp.ByQuery),
		)
		if err != nil {
			t.Fatalf("submit the form: %v (focus on %q)", err, active)
		}
		if active != firstInvalid {
			t.Errorf("focus on %q, want %q", active, firstInvalid)
		}
		if !summaryInView || !fieldInView {
			t.Errorf("summary in view %v, field in view %v; want both", summaryInView, fieldInView)
		}
		// The script names the link by the field's label.
		if !strings.Contains(summaryText, "1 problem") || !strings.Contains(summaryText, "Interval (s)") {
			t.Errorf("summary %q, want the count and the field's label", summaryText)
		}

		// Corrected and saved from the bottom of the page: the flash is a
		// toast in the viewport, announced by the live region, and its
		// close button dismisses it.
		var toast string
		var closed bool
		if err := chromedp.Run(browser,
			chromedp.Evaluate(`document.getElementById("f-health_check.interval").value = "10"`, nil),
			chromedp.Click(`#save-upstream`, chromedp.ByID),
			chromedp.WaitVisible(`#flash .flash .flash-close`, chromedp.ByQuery),
			chromedp.Evaluate(`(function () {
				var f = document.querySelector("#flash .flash"), r = f.getBoundingClientRect();
				var live = f.closest("[aria-live]");
				return getComputedStyle(f).position + " " + (r.top >= 0 && r.bottom <= window.innerHeight) + " " +
					(live ? live.getAttribute("aria-live") : "none") + " " + f.textContent;
			})()`, &toast),
			chromedp.Click(`#flash .flash-close`, chromedp.ByQuery),
			chromedp.WaitNotPresent(`#flash .flash`, chromedp.ByQuery),
			chromedp.Evaluate(`document.querySelector("#flash .flash") === null`, &closed),
		); err != nil {
			t.Fatalf("save the corrected form: %v (toast %q)", err, toast)
		}
		if !strings.HasPrefix(toast, "fixed true polite") || !strings.Contains(toast, "far") {
			t.Errorf("flash after saving: %q, want a fixed toast in view in the live region naming the upstream", toast)
		}
		if !closed {
			t.Error("the close button left the flash")
		}
	})
}

// TestUI_SearchNarrowsListAsYouType types into the upstream list's search
// box in headless Chromium: the table narrows without a page load, the
// address follows, and a search matching nothing says so with a link that
// clears it.
func TestUI_SearchNarrowsListAsYouType(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	for _, name := range []string{"alpha-api", "beta-web", "gamma-web"} {
		mustCreate(t, b, name, "10.0.0.1:80")
	}
	base := apptest.Serve(t, e.app)
	cookie, _ := e.webSession(t)
	list := "/workspaces/" + b.ws.String() + "/upstreams"

	// Without JavaScript the form is a plain GET: the answer is the whole
	// page with the search kept in the box and a way back.
	req, _ := http.NewRequest(http.MethodGet, base+list+"?q=zzz", nil)
	req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: cookie})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"<html", `role="search"`, `name="q" type="search" value="zzz"`, "No matches", `href="` + list + `" class="clear-filter"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("list?q=zzz lacks %q", want)
		}
	}

	browser := apptest.Browser(t, 1100, 800, 90*time.Second)
	rows := `document.querySelectorAll("#upstream-list tbody tr[id^=upstream-]").length`
	var all, narrowed int
	var loc, empty string
	err = chromedp.Run(browser,
		network.SetCookie(auth.SessionCookie, cookie).WithDomain("127.0.0.1").WithPath("/"),
		chromedp.Navigate(base+list),
		chromedp.WaitVisible(`#upstream-list`, chromedp.ByID),
		chromedp.Evaluate(rows, &all),
		// A marker on the document proves the page is not reloaded.
		chromedp.Evaluate(`window.__noReload = true`, nil),
		chromedp.SendKeys(`#f-q`, "WEB", chromedp.ByID),
		chromedp.Poll(rows+` === 2`, nil, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Evaluate(rows, &narrowed),
		chromedp.Evaluate(`window.location.search`, &loc),
		chromedp.SendKeys(`#f-q`, "zzz", chromedp.ByID),
		chromedp.WaitVisible(`#upstream-list a.clear-filter`, chromedp.ByQuery),
		chromedp.Text(`#upstream-list td.empty`, &empty, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("search the list: %v", err)
	}
	if all != 3 || narrowed != 2 {
		t.Errorf("rows %d then %d, want 3 then 2", all, narrowed)
	}
	if loc != "?q=WEB" {
		t.Errorf("address query %q, want ?q=WEB", loc)
	}
	var kept bool
	if err := chromedp.Run(browser, chromedp.Evaluate(`window.__noReload === true`, &kept)); err != nil || !kept {
		t.Errorf("the page reloaded while searching (%v)", err)
	}
	if !strings.Contains(empty, "No matches") {
		t.Errorf("empty list says %q, want No matches", empty)
	}
	// The clear link leads back to the whole list.
	var cleared int
	if err := chromedp.Run(browser,
		chromedp.Click(`#upstream-list a.clear-filter`, chromedp.ByQuery),
		chromedp.WaitNotPresent(`#upstream-list a.clear-filter`, chromedp.ByQuery),
		chromedp.WaitVisible(`#upstream-list tbody tr[id^=upstream-]`, chromedp.ByQuery),
		chromedp.Evaluate(rows, &cleared),
	); err != nil || cleared != 3 {
		t.Errorf("after clearing: %d rows, %v", cleared, err)
	}
}
