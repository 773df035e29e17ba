package vhosts

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// TestUI_VhostAccessFormInBrowser edits a host's access list and basic-auth
// users through the form in headless Chromium: after each save the host
// page's nginx preview (loaded by htmx) shows the allow, deny and auth_basic
// lines of what was typed, and the page never holds the password.
func TestUI_VhostAccessFormInBrowser(t *testing.T) {
	apptest.ChromiumPath(t)
	e := newEnv(t)
	b := e.setup(t)
	vh, err := b.svc.CreateVirtualHost(b.ctx, b.ws, VirtualHostInput{
		Name: "browser-access", ServerName: "browser.example.test",
		Locations: []Location{{Path: "/", ProxyPass: "http://127.0.0.1:8080"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	session := e.webSession(t, "operator")
	base := apptest.Serve(t, e.app)
	browser := apptest.Browser(t, 1280, 2400, 90*time.Second)

	preview := func(t *testing.T, cond string) string {
		t.Helper()
		var text string
		js := `(() => { const c = document.querySelector("#preview-panel code"); return !!c && (` + cond + `)(c.textContent); })()`
		if err := chromedp.Run(browser,
			chromedp.Poll(js, nil, chromedp.WithPollingTimeout(15*time.Second)),
			chromedp.Text(`#preview-panel code`, &text, chromedp.ByQuery),
		); err != nil {
			var now string
			_ = chromedp.Run(browser, chromedp.Evaluate(`document.querySelector("#content")?.innerText ?? ""`, &now))
			t.Fatalf("preview never matched %s: %v\npage:\n%.4000s", cond, err, now)
		}
		return text
	}
	input := func(name string) string { return `input[name="` + name + `"]` }
	// click clicks an element from the page's script: the panels htmx loads
	// move the layout, so a click at coordinates could miss.
	click := func(sel string) chromedp.Action {
		var ok bool
		return chromedp.Evaluate(fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (el) el.click(); return !!el; })()`, sel), &ok)
	}
	noPassword := func(t *testing.T, pw string) {
		t.Helper()
		var html string
		if err := chromedp.Run(browser, chromedp.OuterHTML("html", &html, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(html, pw) || strings.Contains(html, "$2y$") {
			t.Error("the page holds the password or its hash")
		}
	}

	if err := chromedp.Run(browser,
		network.SetCookie(auth.SessionCookie, session.cookie).WithDomain("127.0.0.1").WithPath("/"),
		chromedp.Navigate(base+uiVhostPath(vh.ID)),
		chromedp.WaitVisible(`#vhost-form`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("open the host page: %v", err)
	}
	before := preview(t, `t => t.includes("server_name browser.example.test")`)
	if strings.Contains(before, "allow ") || strings.Contains(before, "auth_basic") {
		t.Fatalf("a host without an access list renders one:\n%s", before)
	}

	// Allow a network, deny a part of it, add a user.
	if err := chromedp.Run(browser,
		chromedp.Evaluate(`document.getElementById("access-section").open = true`, nil),
		chromedp.SendKeys(input("access_list.allow[0]"), "10.0.0.0/8", chromedp.ByQuery),
		chromedp.SendKeys(input("access_list.deny[0]"), "10.9.0.0/16", chromedp.ByQuery),
		chromedp.SendKeys(input("access_list.basic_auth_users[0].username"), "alice", chromedp.ByQuery),
		chromedp.SendKeys(input("access_list.basic_auth_users[0].password"), newPassword, chromedp.ByQuery),
		click(`#save-virtual-host`),
	); err != nil {
		t.Fatalf("fill in the access list: %v", err)
	}
	after := preview(t, `t => t.includes("allow 10.0.0.0/8;")`)
	for _, want := range []string{"deny 10.9.0.0/16;", "allow 10.0.0.0/8;", "deny all;", "auth_basic Restricted;", "auth_basic_user_file "} {
		if !strings.Contains(after, want) {
			t.Errorf("the preview after the save lacks %q:\n%s", want, after)
		}
	}
	noPassword(t, newPassword)
	stored, err := b.svc.GetVirtualHost(b.ctx, vh.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.AccessList == nil || len(stored.AccessList.BasicAuthUsers) != 1 || stored.AccessList.BasicAuthUsers[0].Username != "alice" {
		t.Fatalf("stored access list %+v", stored.AccessList)
	}

	// Replace the allowed network and remove the user: the preview follows.
	if err := chromedp.Run(browser,
		chromedp.WaitVisible(input("access_list.allow[0]"), chromedp.ByQuery),
		chromedp.SetValue(input("access_list.allow[0]"), "192.0.2.0/24", chromedp.ByQuery),
		click(input("access_list.basic_auth_users[0].remove")),
		click(`#save-virtual-host`),
	); err != nil {
		t.Fatalf("edit the access list: %v", err)
	}
	edited := preview(t, `t => t.includes("allow 192.0.2.0/24;")`)
	if strings.Contains(edited, "10.0.0.0/8") || strings.Contains(edited, "auth_basic") || !strings.Contains(edited, "deny 10.9.0.0/16;") {
		t.Errorf("the preview after the second save:\n%s", edited)
	}
}
