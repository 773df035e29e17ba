package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/nxmesh/nxmesh/modules/auth"
)

// pageProblems collects what the browser reports against a page: uncaught
// exceptions, console errors and Content-Security-Policy refusals.
type pageProblems struct {
	mu   sync.Mutex
	list []string
}

func watchProblems(ctx context.Context) *pageProblems {
	p := &pageProblems{}
	chromedp.ListenTarget(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *log.EventEntryAdded:
			// Browsers ask for /favicon.ico on their own; no page links it.
			if strings.HasSuffix(e.Entry.URL, "/favicon.ico") {
				return
			}
			if e.Entry.Level == log.LevelError || strings.Contains(e.Entry.Text, "Content Security Policy") {
				msg = "log: " + e.Entry.Text + " " + e.Entry.URL
			}
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				msg = "console.error: " + strings.Join(parts, " ")
			}
		}
		if msg != "" {
			p.mu.Lock()
			p.list = append(p.list, msg)
			p.mu.Unlock()
		}
	})
	return p
}

func (p *pageProblems) get() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.list...)
}

// TestDocs_Browser opens the API reference at /docs in Chromium: Swagger UI
// runs under the admin's Content-Security-Policy with no refusal or error,
// lists every operation of /v1/openapi.json, shows an operation's request and
// response schemas, and "Try it out" with a bearer token lists the caller's
// organizations.
func TestDocs_Browser(t *testing.T) {
	m := startConfigMaster(t)
	browser := openBrowser(t)
	problems := watchProblems(browser)

	resp, err := http.Get(m.baseURL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	ops := 0
	for _, item := range doc.Paths {
		ops += len(item)
	}

	var rendered int
	if err := chromedp.Run(browser,
		chromedp.Navigate(m.baseURL+"/docs"),
		chromedp.WaitVisible(`#operations-orgs-getOrganizations`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll('.opblock').length`, &rendered),
	); err != nil {
		t.Fatalf("open /docs: %v", err)
	}
	if rendered != ops {
		t.Errorf("/docs renders %d operations, the document has %d", rendered, ops)
	}

	// An operation with a body shows the request schema and the response schema.
	var login string
	if err := chromedp.Run(browser,
		chromedp.Click(`#operations-auth-postAuthLogin .opblock-summary-control`, chromedp.ByQuery),
		chromedp.WaitVisible(`#operations-auth-postAuthLogin .opblock-body`, chromedp.ByQuery),
		chromedp.Click(`#operations-auth-postAuthLogin .opblock-section-request-body .tablinks[data-name="model"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`#operations-auth-postAuthLogin .opblock-section-request-body .model-box`, chromedp.ByQuery),
		textOf(`#operations-auth-postAuthLogin .opblock-body`, &login),
	); err != nil {
		t.Fatalf("expand POST /auth/login: %v", err)
	}
	mustContain(t, "POST /auth/login", login, "LoginRequest", "email", "password", "200", "access_token", "422")

	// Try it out with a bearer token.
	pair, err := m.auth.Login(context.Background(), auth.LoginParams{Email: adminEmail, Password: adminPassword, IP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	var status, body string
	if err := chromedp.Run(browser,
		chromedp.Click(`button.authorize`, chromedp.ByQuery),
		chromedp.WaitVisible(`#auth-bearer-value`, chromedp.ByQuery),
		chromedp.SendKeys(`#auth-bearer-value`, pair.AccessToken, chromedp.ByQuery),
		chromedp.Click(`.auth-container:has(#auth-bearer-value) button.authorize`, chromedp.ByQuery),
		chromedp.Click(`.modal-ux button.btn-done`, chromedp.ByQuery),
		chromedp.Click(`#operations-orgs-getOrganizations .opblock-summary-control`, chromedp.ByQuery),
		chromedp.Click(`#operations-orgs-getOrganizations button.try-out__btn`, chromedp.ByQuery),
		chromedp.Click(`#operations-orgs-getOrganizations button.execute`, chromedp.ByQuery),
		chromedp.WaitVisible(`#operations-orgs-getOrganizations .live-responses-table tbody .response-col_status`, chromedp.ByQuery),
		textOf(`#operations-orgs-getOrganizations .live-responses-table tbody .response-col_status`, &status),
		textOf(`#operations-orgs-getOrganizations .live-responses-table tbody .response-col_description`, &body),
	); err != nil {
		t.Fatalf("try GET /organizations: %v", err)
	}
	if strings.TrimSpace(status) != "200" {
		t.Errorf("try-it GET /organizations: status %q, body %s", status, body)
	}
	mustContain(t, "try-it GET /organizations", body, m.org.ID.String(), `"total"`)

	if p := problems.get(); len(p) > 0 {
		t.Errorf("the browser reported problems on /docs:\n%s", strings.Join(p, "\n"))
	}
}
