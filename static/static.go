// Package static holds the admin's browser assets: vendored htmx and Pico CSS
// (exact versions and licenses in README.md) and the admin's own stylesheet.
// They are embedded in the binary and served under /static/.
package static

import "embed"

// FS is the embedded asset tree: app.css, onboard.js, targets.js and vendor/*.
//
//go:embed app.css onboard.js targets.js vendor
var FS embed.FS

// Paths of the assets the layout links to. The vendored file names carry their
// version, so a dependency upgrade changes the URL and no cache serves the old file.
const (
	HTMX   = "/static/vendor/htmx-2.0.4.min.js"
	Pico   = "/static/vendor/pico-2.0.6.min.css"
	AppCSS = "/static/app.css"
	// HTMXSSE is htmx's Server-Sent Events extension (hx-ext="sse"), which
	// live pages load themselves.
	HTMXSSE = "/static/vendor/htmx-ext-sse-2.2.4.min.js"
	// Onboard switches the tabs of the "Add agent" install commands and
	// copies a command to the clipboard (data-copy="<id of the element>").
	Onboard = "/static/onboard.js"
	// Targets is the agent picker of the virtual host and stream forms.
	Targets = "/static/targets.js"
)
