// Package static holds the admin's browser assets: vendored htmx, Pico CSS and
// uPlot and Swagger UI (exact versions and licenses in README.md), the
// admin's own stylesheet, its chart script (js/charts.js), its form script
// (js/forms.js) and the API
// reference page's files. They are embedded in the binary and served under
// /static/.
package static

import "embed"

// FS is the embedded asset tree: app.css, the API reference page's
// docs.css and docs.js, onboard.js, targets.js, js/* and vendor/*.
//
//go:embed app.css docs.css docs.js onboard.js targets.js vendor js
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
	// UPlot and UPlotCSS are the uPlot chart library, which the metrics
	// pages load with Charts, the admin's script drawing their charts.
	UPlot    = "/static/vendor/uplot-1.6.32.iife.min.js"
	UPlotCSS = "/static/vendor/uplot-1.6.32.min.css"
	Charts   = "/static/js/charts.js"
	// Forms is loaded by every page: it focuses the first field in error
	// after a failed submission, orders the error summary's links and shows
	// flash messages as a dismissable toast.
	Forms = "/static/js/forms.js"
	// SwaggerUI and SwaggerUICSS are the OpenAPI viewer of /docs; DocsJS
	// starts it on /v1/openapi.json and DocsCSS styles the page around it.
	SwaggerUI    = "/static/vendor/swagger-ui-bundle-5.35.0.js"
	SwaggerUICSS = "/static/vendor/swagger-ui-5.35.0.css"
	DocsJS       = "/static/docs.js"
	DocsCSS      = "/static/docs.css"
	// Onboard switches the tabs of the "Add agent" install commands and
	// copies a command to the clipboard (data-copy="<id of the element>").
	Onboard = "/static/onboard.js"
	// Targets is the agent picker of the virtual host and stream forms.
	Targets = "/static/targets.js"
)
