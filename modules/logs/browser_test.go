package logs

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// TestUI_LiveTailInBrowser opens the Logs page in headless Chromium (the
// admin's Content-Security-Policy applies) and waits for lines ingested
// meanwhile to appear at the top of the live table.
func TestUI_LiveTailInBrowser(t *testing.T) {
	apptest.ChromiumPath(t)
	r := newReplica(t, apptest.Config(t))
	w := newWorld(t, r)
	cookie, _, err := r.auth.CreateWebSession(context.Background(), w.users[authz.RoleViewer].ID, "127.0.0.1", "test")
	if err != nil {
		t.Fatal(err)
	}
	browser := apptest.Browser(t, 1280, 900, 90*time.Second)

	page := r.base + "/workspaces/" + w.ws.String() + "/logs?status=5xx"
	if err := chromedp.Run(browser,
		network.SetCookie(auth.SessionCookie, cookie).WithDomain("127.0.0.1").WithPath("/"),
		chromedp.Navigate(page),
		chromedp.WaitVisible(`#live-tail`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("open the Logs page: %v", err)
	}
	// The stream connects after the page loads: send lines until they show.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		uri := fmt.Sprintf("/browser-%d", i)
		w.ingest(t, r, w.agent, []*agentv1.AccessLogEntry{accessEntry(200, "/quiet"), accessEntry(502, uri)}, nil)
		var first string
		ctx, stop := context.WithTimeout(browser, time.Second)
		err := chromedp.Run(ctx,
			chromedp.WaitVisible(`#live-tail tr.live-line`, chromedp.ByQuery),
			chromedp.Text(`#live-tail tbody tr.live-line`, &first, chromedp.ByQuery),
		)
		stop()
		if err == nil {
			if !strings.Contains(first, `"GET /browser-`) || !strings.Contains(first, "INFO") {
				t.Fatalf("top live row %q", first)
			}
			var all string
			if err := chromedp.Run(browser, chromedp.Text(`#live-tail tbody`, &all, chromedp.ByQuery)); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(all, "/quiet") {
				t.Fatalf("the tail shows a line its filter excludes: %q", all)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no live row appeared: %v", err)
		}
	}
}
