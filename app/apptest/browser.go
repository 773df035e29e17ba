package apptest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumPath returns the browser the tests drive: $NXMESH_CHROMIUM or
// /usr/bin/chromium. A missing browser fails the test, so CI cannot silently
// lose browser coverage, unless NXMESH_SKIP_BROWSER=1 is set on purpose.
func ChromiumPath(t testing.TB) string {
	t.Helper()
	if os.Getenv("NXMESH_SKIP_BROWSER") == "1" {
		t.Skip("NXMESH_SKIP_BROWSER=1: browser tests skipped")
	}
	path := os.Getenv("NXMESH_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("chromium not found at %s (%v): install it (apt-get install chromium) or set NXMESH_SKIP_BROWSER=1", path, err)
	}
	return path
}

// Browser starts a headless Chromium with its own profile, window width×height,
// and returns a chromedp context bounded by timeout. Everything stops when the
// test ends: the browser first, then its profile directory is removed
// (Chromium's helper processes may still be writing to it for a moment after
// the main process exits, so the removal retries and never fails the test).
func Browser(t testing.TB, width, height int, timeout time.Duration) context.Context {
	t.Helper()
	chromium := ChromiumPath(t)
	profile, err := os.MkdirTemp("", "nxmesh-chromium-")
	if err != nil {
		t.Fatalf("chromium profile: %v", err)
	}
	t.Cleanup(func() { removeProfile(t, profile) })
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(width, height),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(format string, args ...any) {
		if !strings.HasPrefix(format, "could not unmarshal event") {
			t.Logf("chromedp: "+format, args...)
		}
	}))
	t.Cleanup(cancelBrowser)
	browser, cancelTimeout := context.WithTimeout(browser, timeout)
	t.Cleanup(cancelTimeout)
	if err := chromedp.Run(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return browser
}

// removeProfile deletes a Chromium profile directory, retrying while
// Chromium's last helper processes finish writing to it.
func removeProfile(t testing.TB, dir string) {
	var err error
	for range 20 {
		if err = os.RemoveAll(dir); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("chromium profile %s left behind: %v", dir, err)
}
