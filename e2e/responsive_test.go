package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/nxmesh/nxmesh/modules/upstreams"
)

// phoneWidth is the CSS width of a small phone (iPhone 12 to 15).
const phoneWidth = 390

// overflowReport lists the elements reaching past the viewport's right edge,
// for the failure message.
const overflowReport = `(() => {
	const w = document.documentElement.clientWidth, out = [];
	for (const el of document.querySelectorAll('body *')) {
		const r = el.getBoundingClientRect();
		if (r.width > 0 && r.right > w + 1 && out.length < 12) {
			let scrolled = false;
			for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
				const s = getComputedStyle(p);
				if (s.overflowX === 'auto' || s.overflowX === 'scroll' || s.overflowX === 'hidden') { scrolled = true; break; }
			}
			if (!scrolled) out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().replace(/\s+/g, '.') : '') + ' right=' + Math.round(r.right));
		}
	}
	return out.join('\n');
})()`

// inViewport reports whether the element of sel is displayed and lies within
// the viewport's width.
func inViewport(sel string) string {
	return `(() => {
		const el = document.querySelector(` + "`" + sel + "`" + `);
		if (!el) return 'missing';
		const r = el.getBoundingClientRect();
		if (r.width === 0 || r.height === 0) return 'not displayed';
		if (r.left < 0 || r.right > document.documentElement.clientWidth) return 'outside the viewport: ' + r.left + '..' + r.right;
		return 'ok';
	})()`
}

// TestResponsive_Phone opens admin pages at 390 CSS pixels in Chromium: no
// page is wider than the screen, the switchers and sign-out stay on screen,
// the first Tab stop is a "Skip to content" link that shows a focus ring and
// moves focus to the content, and the pages follow a dark colour scheme.
func TestResponsive_Phone(t *testing.T) {
	b := setupConfig(t)
	up := b.upstream(t, "backend-with-a-rather-long-name", "127.0.0.1:8081")
	b.vhost(t, "shop-frontend-with-a-long-name", up.ID)
	if _, err := b.ups.Create(context.Background(), upstreams.CreateParams{WorkspaceID: b.ws.ID, Name: "second", Servers: []upstreams.ServerInput{{Address: "127.0.0.1:8082"}}}); err != nil {
		t.Fatal(err)
	}
	browser := openBrowser(t)
	if err := chromedp.Run(browser,
		chromedp.EmulateViewport(phoneWidth, 844, chromedp.EmulateMobile),
		b.signInAt(b.wsPath(""), "#workspace-switcher"),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}

	pages := []struct{ name, path, ready string }{
		{"workspace", b.wsPath(""), "#workspace-switcher"},
		{"virtual hosts list", b.wsPath("/virtual-hosts"), "table"},
		{"virtual host form", b.wsPath("/virtual-hosts/new"), "form"},
		{"upstreams list", b.wsPath("/upstreams"), "table"},
		{"workspaces of the organization", b.workspacesPath(), "#org-switcher"},
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			var width int
			var report string
			if err := chromedp.Run(browser,
				chromedp.Navigate(b.baseURL+p.path),
				chromedp.WaitVisible(p.ready, chromedp.ByQuery),
				chromedp.Evaluate(`document.documentElement.scrollWidth`, &width),
				chromedp.Evaluate(overflowReport, &report),
			); err != nil {
				t.Fatalf("open %s: %v", p.path, err)
			}
			if width > phoneWidth {
				t.Errorf("%s is %d px wide at a %d px screen; past the edge:\n%s", p.path, width, phoneWidth, report)
			}
			for _, sel := range []string{`#org-switcher > summary`, `#workspace-switcher > summary`, `form[action="/logout"] button`, `a.skip-link`} {
				var where string
				js := inViewport(sel)
				if sel == `a.skip-link` {
					// Off screen until focused: only its presence counts here.
					js = `document.querySelector('a.skip-link[href="#content"]') ? 'ok' : 'missing'`
				}
				if err := chromedp.Run(browser, chromedp.Evaluate(js, &where)); err != nil {
					t.Fatal(err)
				}
				if where != "ok" {
					t.Errorf("%s on %s: %s", sel, p.path, where)
				}
			}
		})
	}

	t.Run("skip link and focus ring", func(t *testing.T) {
		var first, outline, visible, focused string
		if err := chromedp.Run(browser,
			chromedp.Navigate(b.baseURL+b.wsPath("/virtual-hosts")),
			chromedp.WaitVisible(`table`, chromedp.ByQuery),
			chromedp.KeyEvent(kb.Tab),
			chromedp.Evaluate(`(document.activeElement.className || '') + ' ' + document.activeElement.textContent.trim()`, &first),
			chromedp.Evaluate(`(() => { const s = getComputedStyle(document.activeElement); return s.outlineStyle + ' ' + s.outlineWidth; })()`, &outline),
			chromedp.Evaluate(inViewport(`a.skip-link`), &visible),
			chromedp.KeyEvent(kb.Enter),
			chromedp.Evaluate(`document.activeElement.id`, &focused),
		); err != nil {
			t.Fatal(err)
		}
		if first != "skip-link Skip to content" {
			t.Errorf("first Tab stop %q, want the skip link", first)
		}
		if visible != "ok" {
			t.Errorf("focused skip link: %s", visible)
		}
		style, width, _ := strings.Cut(outline, " ")
		if style == "none" || width == "0px" {
			t.Errorf("focused skip link has no focus ring: outline %q", outline)
		}
		if focused != "content" {
			t.Errorf("after the skip link focus is on %q, want the content", focused)
		}
		// A form field shows the ring too.
		var fieldOutline string
		if err := chromedp.Run(browser,
			chromedp.Navigate(b.baseURL+b.wsPath("/virtual-hosts/new")),
			chromedp.WaitVisible(`form`, chromedp.ByQuery),
			chromedp.Focus(`input[name="name"]`, chromedp.ByQuery),
			chromedp.Evaluate(`(() => { const s = getComputedStyle(document.activeElement); return s.outlineStyle + ' ' + s.outlineWidth + ' ' + s.boxShadow; })()`, &fieldOutline),
		); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(fieldOutline, "none") && !strings.Contains(fieldOutline, "rgb") {
			t.Errorf("focused field has no focus ring: %q", fieldOutline)
		}
	})

	t.Run("dark colour scheme", func(t *testing.T) {
		var light, dark string
		bg := `getComputedStyle(document.body).backgroundColor + ' ' + getComputedStyle(document.querySelector('table')).color`
		if err := chromedp.Run(browser,
			chromedp.Navigate(b.baseURL+b.wsPath("/virtual-hosts")),
			chromedp.WaitVisible(`table`, chromedp.ByQuery),
			chromedp.Evaluate(bg, &light),
			emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}),
			chromedp.Evaluate(bg, &dark),
		); err != nil {
			t.Fatal(err)
		}
		if !isDark(t, dark) || isDark(t, light) {
			t.Errorf("body background and text colour: light scheme %q, dark scheme %q", light, dark)
		}
	})
}

// isDark reports whether the first rgb() colour of s (the background) is dark
// and the second (the text) is light.
func isDark(t *testing.T, s string) bool {
	t.Helper()
	var colours [][3]int
	for _, part := range strings.Split(s, "rgb")[1:] {
		var c [3]int
		part = strings.TrimPrefix(strings.TrimPrefix(part, "a"), "(")
		fields := strings.FieldsFunc(part, func(r rune) bool { return r == ',' || r == ' ' || r == ')' })
		for i := 0; i < 3 && i < len(fields); i++ {
			for _, d := range fields[i] {
				if d >= '0' && d <= '9' {
					c[i] = c[i]*10 + int(d-'0')
				}
			}
		}
		colours = append(colours, c)
	}
	if len(colours) < 2 {
		t.Fatalf("colours %q", s)
	}
	lum := func(c [3]int) int { return (c[0]*299 + c[1]*587 + c[2]*114) / 1000 }
	return lum(colours[0]) < 80 && lum(colours[1]) > 160
}
