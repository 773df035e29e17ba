package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestCertificates_RequestFormBrowser fills the ACME request form in
// Chromium: a refused wildcard shows its message next to the challenge, the
// DNS provider's inputs appear when it is chosen, a row of other settings is
// added with htmx, and the submitted request lands on the certificate page,
// which follows the pending issuance and never shows a credential.
func TestCertificates_RequestFormBrowser(t *testing.T) {
	t.Parallel()
	m := startConfigMaster(t)
	b := openBrowser(t)
	const token, zoneToken = "e2e-cf-token-93f1c7d2", "e2e-zone-token-5a0b64e1"

	var challengeErr, domainKept string
	err := chromedp.Run(b,
		m.signInAt(m.wsPath("/certificates/request"), "#request-form"),
		chromedp.SendKeys(byName("domain"), "*.wild.example.test", chromedp.ByQuery),
		chromedp.Click(`#request-certificate-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(errorOf("challenge"), chromedp.ByQuery),
		textOf(errorOf("challenge"), &challengeErr),
		chromedp.Value(byName("domain"), &domainKept, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("submit a wildcard with HTTP-01: %v", err)
	}
	mustContain(t, "challenge error", challengeErr, "need dns-01")
	if domainKept != "*.wild.example.test" {
		t.Errorf("domain after the failed submission = %q", domainKept)
	}

	var flash, live, html string
	err = chromedp.Run(b,
		setSelect("#f-challenge", "dns-01"),
		setSelect("#f-dns_provider", "cloudflare"),
		chromedp.WaitVisible(byName("dns_credentials.CLOUDFLARE_DNS_API_TOKEN"), chromedp.ByQuery),
		chromedp.SendKeys(byName("dns_credentials.CLOUDFLARE_DNS_API_TOKEN"), token, chromedp.ByQuery),
		chromedp.Click(`#add-credential`, chromedp.ByQuery),
		chromedp.WaitVisible(byName("dns_extra[1].name"), chromedp.ByQuery),
		chromedp.SendKeys(byName("dns_extra[1].name"), "CLOUDFLARE_ZONE_API_TOKEN", chromedp.ByQuery),
		chromedp.SendKeys(byName("dns_extra[1].value"), zoneToken, chromedp.ByQuery),
		chromedp.Click(`#request-certificate-submit`, chromedp.ByQuery),
		chromedp.WaitVisible(`#certificate-pending`, chromedp.ByQuery),
		textOf(`#flash`, &flash),
		textOf(`#certificate-live`, &live),
		chromedp.OuterHTML(`html`, &html, chromedp.ByQuery),
	)
	if err != nil {
		t.Fatalf("request a DNS-01 certificate: %v", err)
	}
	mustContain(t, "flash", flash, "Certificate for *.wild.example.test requested")
	mustContain(t, "certificate page", live, "*.wild.example.test", "Pending", "dns-01", "cloudflare",
		"CLOUDFLARE_DNS_API_TOKEN", "CLOUDFLARE_ZONE_API_TOKEN")
	for _, s := range []string{token, zoneToken} {
		if strings.Contains(html, s) {
			t.Errorf("the certificate page shows the credential %q", s)
		}
	}
	list, err := m.certs.ListAll(context.Background(), nil, m.ws.ID)
	if err != nil || len(list) != 1 || list[0].Status != "pending" {
		t.Fatalf("certificates after the request: %+v, %v", list, err)
	}

	// While pending, the status block fetches itself again: a marker set on
	// it disappears with the swap.
	var swapped bool
	err = chromedp.Run(b,
		chromedp.Evaluate(`document.getElementById("certificate-live").dataset.e2e = "old"`, nil),
		chromedp.Poll(`(() => { const el = document.getElementById("certificate-live"); return !!el && el.dataset.e2e !== "old"; })()`,
			&swapped, chromedp.WithPollingTimeout(15*time.Second)),
	)
	if err != nil || !swapped {
		t.Fatalf("the pending certificate's status block was not refreshed: %v", err)
	}
}
