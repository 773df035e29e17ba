package metrics

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// TestUI_DashboardDrawsInBrowser opens the workspace's Metrics page in
// headless Chromium (the admin's Content-Security-Policy applies): uPlot
// draws a canvas for every chart, the live refresh replaces the panel and
// the charts are drawn again, and the console shows no error.
func TestUI_DashboardDrawsInBrowser(t *testing.T) {
	apptest.ChromiumPath(t)
	w := setupWide(t)
	now := time.Now().UTC()
	w.ingest(t, w.online, "browser-1",
		request(now.Add(-5*time.Minute), "www.example.com", "/a", 200, "10.0.0.1", "curl/8.5", w.vh),
		request(now.Add(-2*time.Minute), "www.example.com", "/b", 500, "10.0.0.2", "curl/8.5", w.vh))
	base := apptest.Serve(t, w.a)

	browser := apptest.Browser(t, 1280, 1600, 90*time.Second)

	var mu sync.Mutex
	var problems []string
	chromedp.ListenTarget(browser, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError || e.Type == runtime.APITypeWarning {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				problems = append(problems, fmt.Sprintf("console.%s: %s", e.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Error())
		case *log.EventEntryAdded:
			// The browser's own favicon request is no part of the page.
			if (e.Entry.Level == log.LevelError || e.Entry.Level == log.LevelWarning) && !strings.HasSuffix(e.Entry.URL, "/favicon.ico") {
				problems = append(problems, fmt.Sprintf("log %s (%s): %s %s", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL))
			}
		}
	})
	cookie := w.sessions[authz.RoleViewer].cookie
	page := base + "/workspaces/" + w.ws.String() + "/metrics"
	var canvases int
	if err := chromedp.Run(browser,
		log.Enable(),
		network.SetCookie(auth.SessionCookie, cookie).WithDomain("127.0.0.1").WithPath("/"),
		chromedp.Navigate(page),
		chromedp.WaitVisible(`#chart-requests canvas`, chromedp.ByQuery),
		chromedp.WaitVisible(`#chart-latency canvas`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll("#metrics-panel .chart canvas").length`, &canvases),
	); err != nil {
		t.Fatalf("open the Metrics page: %v", err)
	}
	if canvases != 4 {
		t.Fatalf("%d chart canvases, want 4", canvases)
	}
	var width int
	if err := chromedp.Run(browser, chromedp.Evaluate(`document.querySelector("#chart-requests canvas").width`, &width)); err != nil || width < 200 {
		t.Fatalf("requests canvas width %d, %v", width, err)
	}

	// The live refresh replaces the panel (every 10 s): mark the current
	// one and wait for its successor, drawn again.
	var marked bool
	if err := chromedp.Run(browser, chromedp.Evaluate(`document.getElementById("metrics-panel").dataset.old = "yes"; true`, &marked)); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(browser, 30*time.Second)
	defer stop()
	if err := chromedp.Run(ctx,
		chromedp.WaitVisible(`#metrics-panel:not([data-old]) #chart-requests canvas`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll("#metrics-panel .chart canvas").length`, &canvases),
	); err != nil {
		t.Fatalf("the panel was not refreshed and drawn again: %v", err)
	}
	if canvases != 4 {
		t.Fatalf("after the refresh: %d chart canvases, want 4", canvases)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("the browser reported:\n%s", strings.Join(problems, "\n"))
	}
}

// TestUI_RuleFormInBrowser creates an alert rule through the editor in
// headless Chromium (htmx posts the form): a threshold that is not a
// number is shown next to its input, a good rule lands on the alerts page.
func TestUI_RuleFormInBrowser(t *testing.T) {
	apptest.ChromiumPath(t)
	w := setupWide(t)
	base := apptest.Serve(t, w.a)
	browser := apptest.Browser(t, 1280, 1600, 90*time.Second)
	cookie := w.sessions[authz.RoleOperator].cookie
	agentBox := `input[name="scope.agent_ids"][value="` + w.online.String() + `"]`
	var errText, rows string
	if err := chromedp.Run(browser,
		network.SetCookie(auth.SessionCookie, cookie).WithDomain("127.0.0.1").WithPath("/"),
		chromedp.Navigate(base+"/workspaces/"+w.ws.String()+"/alerts"),
		chromedp.Click(`#new-alert-rule`, chromedp.ByQuery),
		chromedp.WaitVisible(`#alert-rule-form`, chromedp.ByQuery),
		chromedp.SendKeys(`#f-name`, "Browser CPU", chromedp.ByQuery),
		chromedp.SetValue(`#f-metric`, "cpu_percent", chromedp.ByQuery),
		chromedp.SendKeys(`#f-threshold`, "hot", chromedp.ByQuery),
		chromedp.SetValue(`#f-scope\.type`, "agents", chromedp.ByQuery),
		chromedp.Click(agentBox, chromedp.ByQuery),
		chromedp.Click(`#save-alert-rule`, chromedp.ByQuery),
		chromedp.WaitVisible(`#f-threshold-error`, chromedp.ByQuery),
		chromedp.Text(`#f-threshold-error`, &errText, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("submit a bad rule: %v", err)
	}
	if !strings.Contains(errText, "number") {
		t.Fatalf("threshold error %q", errText)
	}
	var checked bool
	if err := chromedp.Run(browser,
		chromedp.Evaluate(`document.querySelector('`+agentBox+`').checked`, &checked),
		chromedp.SetValue(`#f-threshold`, "90", chromedp.ByQuery),
		chromedp.Click(`#save-alert-rule`, chromedp.ByQuery),
		chromedp.WaitVisible(`#alert-rules`, chromedp.ByQuery),
		chromedp.Text(`#alert-rules`, &rows, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("submit the rule: %v", err)
	}
	if !checked {
		t.Error("the re-rendered form lost the ticked agent")
	}
	if !strings.Contains(rows, "Browser CPU") || !strings.Contains(rows, "cpu_percent > 90") || !strings.Contains(rows, "agents edge-1") {
		t.Fatalf("alerts page rules: %s", rows)
	}
}
