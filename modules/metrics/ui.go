package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	"github.com/nxmesh/nxmesh/views"
)

// The admin's metrics pages:
//
//	GET  /workspaces/:id/metrics       the workspace's traffic: requests, status classes,
//	                                   bandwidth, latency percentiles, and the analytics tops
//	GET  /virtual-hosts/:id/metrics    the same for one virtual host
//	GET  /agents/:id/metrics           one agent's host (CPU, memory, disk, load,
//	                                   connections) and traffic
//	GET  /streams/:id/metrics          one stream's counters since their last reset
//	POST /streams/:id/metrics/reset    reset them (vhosts.stream write)
//
// Every page takes ?range=1h|24h|7d (default 1h) or range=custom with from
// and to (datetime-local, UTC). The charts are drawn in the browser by
// /static/js/charts.js with the vendored uPlot, from the JSON each chart
// element carries in data-chart (the page's data, rendered server-side; no
// inline script, as the Content-Security-Policy allows none). For the
// relative ranges the panel re-fetches itself every uiRefresh through htmx
// (?fragment=panel answers the panel alone), so the charts follow the
// traffic live.

// uiRefresh is the live panel's refresh period, in htmx's trigger syntax.
const uiRefresh = "every 10s"

// uiMaxPoints bounds the points of a chart of a custom range.
const uiMaxPoints = 400

// uiRanges are the relative ranges of the range picker, in order.
var uiRanges = []struct {
	Key      string
	Label    string
	Window   time.Duration
	Interval string
}{
	{"1h", "Last hour", time.Hour, "1m"},
	{"24h", "Last 24 hours", 24 * time.Hour, "5m"},
	{"7d", "Last 7 days", 7 * 24 * time.Hour, "1h"},
}

var uiFormFields = []string{"range", "from", "to"}

// pages holds the admin handlers: the service and the shared navigation and
// permission checks of the admin.
type pages struct {
	svc *Service
	ui  *app.Pages
	// resetCounters resets a stream's traffic counters
	// (Module.ResetStreamCounters).
	resetCounters func(ctx context.Context, scope app.Scope, streamID uuid.UUID) (StreamReset, error)
}

// mountUI mounts the admin pages; Routes calls it with the UI router.
func (m *Module) mountUI(ui *app.Router) {
	p := &pages{svc: m.svc, ui: m.pages, resetCounters: m.ResetStreamCounters}
	ws := orgs.ScopeWorkspace(m.db, "id")
	vh := vhosts.ScopeVirtualHost(m.db, "id")
	ag := agents.ScopeAgent(m.db, "id")
	st := vhosts.ScopeStream(m.db, "id")
	query := append(uiFormFields[:len(uiFormFields):len(uiFormFields)], "fragment")
	ui.Get("/workspaces/:id/metrics", app.Require(ObjMetrics, authz.Read, ws),
		app.Doc{Summary: "Metrics page of a workspace: traffic charts and the analytics tops", Query: query}, p.uiWorkspace)
	ui.Get("/virtual-hosts/:id/metrics", app.Require(ObjMetrics, authz.Read, vh),
		app.Doc{Summary: "Metrics page of a virtual host: traffic charts and the analytics tops", Query: query}, p.uiVirtualHost)
	ui.Get("/agents/:id/metrics", app.Require(ObjMetrics, authz.Read, ag),
		app.Doc{Summary: "Metrics page of an agent: host metrics and traffic charts", Query: query}, p.uiAgent)
	ui.Get("/streams/:id/metrics", app.Require(vhosts.ObjStream, authz.Read, st),
		app.Doc{Summary: "Metrics page of a stream: its traffic counters since their last reset", Query: query}, p.uiStream)
	ui.Post("/streams/:id/metrics/reset", app.Require(vhosts.ObjStream, authz.Write, st),
		app.Doc{Summary: "Reset a stream's traffic counters (from the stream's Metrics page)"}, p.uiStreamReset)
}

// ---- Range ----

// uiRange is the range a page shows.
type uiRange struct {
	// Key is 1h, 24h, 7d or custom.
	Key      string
	From, To time.Time
	Interval time.Duration
}

// live reports whether the range follows now (and the panel refreshes).
func (r uiRange) live() bool { return r.Key != "custom" }

// uiTimeParam turns a datetime-local value ("2026-03-02T10:30") into RFC
// 3339 UTC; other values are passed as they are (and validated by ParseQuery).
func uiTimeParam(s string) string {
	s = strings.TrimSpace(s)
	switch len(s) {
	case len("2006-01-02T15:04"):
		return s + ":00Z"
	case len("2006-01-02T15:04:05"):
		return s + "Z"
	}
	return s
}

// parseRange reads the range picker's values. A bad value is a
// *app.ValidationError naming range, from or to.
func parseRange(vals map[string]string, now time.Time) (uiRange, error) {
	key := strings.ToLower(vals["range"])
	if key == "" {
		key = "1h"
		if vals["from"] != "" || vals["to"] != "" {
			key = "custom"
		}
	}
	for _, r := range uiRanges {
		if r.Key == key {
			to := now.UTC().Truncate(time.Second)
			return uiRange{Key: key, From: to.Add(-r.Window), To: to, Interval: Intervals[r.Interval]}, nil
		}
	}
	if key != "custom" {
		return uiRange{}, app.Invalid("range", app.FieldInvalidValue, "must be one of 1h, 24h, 7d, custom")
	}
	if vals["from"] == "" {
		return uiRange{}, app.Invalid("from", app.FieldRequired, "is required for a custom range")
	}
	q, err := ParseQuery(func(n string) string {
		switch n {
		case "from", "to":
			return uiTimeParam(vals[n])
		}
		return ""
	}, now)
	if err != nil {
		return uiRange{}, err
	}
	r := uiRange{Key: key, From: q.From, To: q.To, Interval: 24 * time.Hour}
	for _, name := range []string{"1m", "5m", "1h"} {
		if iv := Intervals[name]; len(buckets(q.From, q.To, iv)) <= uiMaxPoints {
			r.Interval = iv
			break
		}
	}
	return r, nil
}

// ---- Page data ----

// uiPageData is a metrics page.
type uiPageData struct {
	// Path is the page's path (the range picker's action).
	Path  string
	Range uiRange
	Form  views.Form
	// Intro describes what the page counts.
	Intro string
	Panel uiPanel
	// Links lead to the metrics of the workspace's agents, virtual hosts
	// and streams (the workspace page).
	Links []uiLinkGroup
	// Reset is the stream page's reset button, when the caller may reset.
	Reset *views.ActionProps
}

// uiPanel is the refreshed part of a page.
type uiPanel struct {
	// URL is what the panel re-fetches itself from; "" for a fixed range.
	URL     string
	Cards   []uiCard
	Charts  []uiChart
	Tops    []uiTop
	TopNote string
}

type uiCard struct{ Label, Value string }

// uiChart is one chart: its title and its data for charts.js.
type uiChart struct {
	ID    string
	Title string
	Spec  string
}

type uiTop struct {
	Title  string
	Values []TopValue
}

type uiLinkGroup struct {
	Title string
	Links []views.Link
}

// chartSpec is the JSON of a data-chart attribute, read by charts.js: x are
// Unix seconds, each series has a value per x (null: no data); unit selects
// the axis format (count, rate, bytes, ms, percent, number).
type chartSpec struct {
	Unit   string        `json:"unit"`
	X      []int64       `json:"x"`
	Series []chartSeries `json:"series"`
}

type chartSeries struct {
	Label  string     `json:"label"`
	Values []*float64 `json:"values"`
}

func num(v float64) *float64 { return &v }

func (c chartSpec) component(id, title string) uiChart {
	raw, _ := json.Marshal(c)
	return uiChart{ID: id, Title: title, Spec: string(raw)}
}

// trafficCharts are the charts of a traffic series: requests, status
// classes, bandwidth and latency percentiles.
func trafficCharts(series []Point, step time.Duration) []uiChart {
	x := make([]int64, len(series))
	req := chartSeries{Label: "Requests/s"}
	classes := []chartSeries{{Label: "2xx"}, {Label: "3xx"}, {Label: "4xx"}, {Label: "5xx"}}
	in, out := chartSeries{Label: "In (bytes/s)"}, chartSeries{Label: "Out (bytes/s)"}
	p50, p95, p99 := chartSeries{Label: "p50"}, chartSeries{Label: "p95"}, chartSeries{Label: "p99"}
	secs := step.Seconds()
	for i, p := range series {
		x[i] = p.Timestamp.Unix()
		req.Values = append(req.Values, num(float64(p.RequestsTotal)/secs))
		for j, n := range []int64{p.StatusCodes.S2xx, p.StatusCodes.S3xx, p.StatusCodes.S4xx, p.StatusCodes.S5xx} {
			classes[j].Values = append(classes[j].Values, num(float64(n)))
		}
		in.Values = append(in.Values, num(float64(p.InBytes)/secs))
		out.Values = append(out.Values, num(float64(p.OutBytes)/secs))
		var l50, l95, l99 *float64
		if p.RequestsTotal > 0 {
			l50, l95, l99 = num(p.LatencyMs.P50), num(p.LatencyMs.P95), num(p.LatencyMs.P99)
		}
		p50.Values, p95.Values, p99.Values = append(p50.Values, l50), append(p95.Values, l95), append(p99.Values, l99)
	}
	return []uiChart{
		chartSpec{Unit: "rate", X: x, Series: []chartSeries{req}}.component("chart-requests", "Requests"),
		chartSpec{Unit: "count", X: x, Series: classes}.component("chart-status", "Status classes (per "+uiStep(step)+")"),
		chartSpec{Unit: "bytes", X: x, Series: []chartSeries{in, out}}.component("chart-bandwidth", "Bandwidth (per second)"),
		chartSpec{Unit: "ms", X: x, Series: []chartSeries{p50, p95, p99}}.component("chart-latency", "Latency"),
	}
}

func trafficCards(s Summary) []uiCard {
	return []uiCard{
		{"Requests", uiCount(s.RequestsTotal)},
		{"Requests/s", strconv.FormatFloat(s.RequestsPerSecond, 'f', 2, 64)},
		{"Error rate (5xx)", uiPercent(s.ErrorRate * 100)},
		{"In / out", uiBytes(s.Bandwidth.InBytes) + " / " + uiBytes(s.Bandwidth.OutBytes)},
		{"Latency p50 / p95 / p99", uiMs(s.LatencyMs.P50) + " / " + uiMs(s.LatencyMs.P95) + " / " + uiMs(s.LatencyMs.P99)},
		{"Active connections", uiCount(s.ActiveConnections)},
	}
}

// tops are the analytics tables of a page.
func (p *pages) tops(ctx context.Context, q Query) ([]uiTop, string, error) {
	aq := AnalyticsQuery{Query: q, Limit: DefaultAnalyticsLimit}
	note := ""
	if aq.To.Sub(aq.From) > MaxAnalyticsRange {
		aq.From = aq.To.Add(-MaxAnalyticsRange)
		note = "The tops count the last 31 days of the range."
	}
	a, err := p.svc.Analytics(ctx, aq)
	if err != nil {
		return nil, "", err
	}
	if note == "" {
		note = uiCount(a.RequestsTotal) + " access-log entries in the range (as far back as the access logs are kept)."
	}
	return []uiTop{
		{"Hosts", a.Hosts}, {"Paths", a.Paths}, {"Status codes", a.StatusCodes},
		{"Client addresses", a.ClientAddresses}, {"User agents", a.UserAgents},
	}, note, nil
}

// ---- Handlers ----

// uiStart reads the range picker of c; on a bad value it renders the page
// with the form's errors (done is true).
func (p *pages) uiStart(c *fiber.Ctx, d *uiPageData, title, section string) (done bool, err error) {
	vals := map[string]string{}
	for _, f := range uiFormFields {
		vals[f] = strings.TrimSpace(c.Query(f))
	}
	d.Form = views.Form{Values: vals}
	r, err := parseRange(vals, p.svc.now())
	if err != nil {
		f, status, ok := views.FormFromError(err, vals, uiFormFields...)
		if !ok {
			return true, err
		}
		d.Form, d.Range = f, uiRange{Key: vals["range"]}
		shell, err := p.ui.Shell(c, title, section)
		if err != nil {
			return true, err
		}
		return true, views.Page(c, status, shell, uiMetricsPage(*d))
	}
	d.Range = r
	if r.live() {
		d.Panel.URL = d.Path + "?" + url.Values{"range": {r.Key}, "fragment": {"panel"}}.Encode()
	}
	return false, nil
}

// uiFinish renders the page, or only its panel for the live refresh.
func (p *pages) uiFinish(c *fiber.Ctx, d uiPageData, title, section string) error {
	if c.Query("fragment") == "panel" {
		return views.Render(c, http.StatusOK, uiPanelView(d.Panel))
	}
	shell, err := p.ui.Shell(c, title, section)
	if err != nil {
		return err
	}
	return views.Page(c, http.StatusOK, shell, uiMetricsPage(d))
}

func (p *pages) uiWorkspace(c *fiber.Ctx) error {
	ctx := app.Ctx(c)
	ws := app.ScopeOf(c).WorkspaceID
	d := uiPageData{Path: "/workspaces/" + ws.String() + "/metrics", Intro: "Traffic of every virtual host and stream of the workspace."}
	if done, err := p.uiStart(c, &d, "Metrics", views.SectionMetrics); done {
		return err
	}
	q := Query{WorkspaceID: ws, From: d.Range.From, To: d.Range.To, Interval: d.Range.Interval}
	if err := p.trafficPanel(ctx, &d, q, true); err != nil {
		return err
	}
	if c.Query("fragment") != "panel" {
		for _, g := range []struct{ title, table, path string }{
			{"Agents", "agents", "/agents/"},
			{"Virtual hosts", "virtual_hosts", "/virtual-hosts/"},
			{"Streams", "streams", "/streams/"},
		} {
			links, err := p.svc.workspaceNames(ctx, g.table, ws)
			if err != nil {
				return err
			}
			lg := uiLinkGroup{Title: g.title}
			for _, l := range links {
				lg.Links = append(lg.Links, views.Link{Label: l.Name, Href: g.path + l.ID.String() + "/metrics"})
			}
			d.Links = append(d.Links, lg)
		}
	}
	return p.uiFinish(c, d, "Metrics", views.SectionMetrics)
}

func (p *pages) trafficPanel(ctx context.Context, d *uiPageData, q Query, withTops bool) error {
	sum, err := p.svc.Traffic(ctx, q)
	if err != nil {
		return err
	}
	d.Panel.Cards = trafficCards(sum)
	d.Panel.Charts = trafficCharts(sum.Series, q.Interval)
	if withTops {
		if d.Panel.Tops, d.Panel.TopNote, err = p.tops(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

func (p *pages) uiVirtualHost(c *fiber.Ctx) error {
	ctx := app.Ctx(c)
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return err
	}
	name, server, err := p.svc.virtualHostNames(ctx, id)
	if err != nil {
		return err
	}
	title := "Metrics of " + name
	d := uiPageData{Path: "/virtual-hosts/" + id.String() + "/metrics", Intro: "Traffic of the virtual host " + name + " (" + server + ")."}
	if done, err := p.uiStart(c, &d, title, views.SectionVirtualHosts); done {
		return err
	}
	q := Query{WorkspaceID: app.ScopeOf(c).WorkspaceID, VirtualHostID: id, From: d.Range.From, To: d.Range.To, Interval: d.Range.Interval}
	if err := p.trafficPanel(ctx, &d, q, true); err != nil {
		return err
	}
	return p.uiFinish(c, d, title, views.SectionVirtualHosts)
}

func (p *pages) uiAgent(c *fiber.Ctx) error {
	ctx := app.Ctx(c)
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return err
	}
	name, err := p.svc.agentName(ctx, id)
	if err != nil {
		return err
	}
	title := "Metrics of " + name
	d := uiPageData{Path: "/agents/" + id.String() + "/metrics", Intro: "Host metrics and traffic of the agent " + name + "."}
	if done, err := p.uiStart(c, &d, title, views.SectionAgents); done {
		return err
	}
	q := Query{WorkspaceID: app.ScopeOf(c).WorkspaceID, AgentID: id, From: d.Range.From, To: d.Range.To, Interval: d.Range.Interval}
	sum, err := p.svc.AgentTraffic(ctx, q)
	if err != nil {
		return err
	}
	host, err := p.svc.HostSeries(ctx, id, q.From, q.To, q.Interval)
	if err != nil {
		return err
	}
	if s := sum.System; s != nil {
		d.Panel.Cards = []uiCard{
			{"CPU", uiPercent(s.CPUPercent)},
			{"Memory", uiBytes(s.MemoryUsedBytes) + " of " + uiBytes(s.MemoryTotalBytes)},
			{"Disk", uiBytes(s.DiskUsedBytes) + " of " + uiBytes(s.DiskTotalBytes)},
			{"Load (1 min)", strconv.FormatFloat(s.LoadAverage1m, 'f', 2, 64)},
			{"Active connections", uiCount(sum.ActiveConnections)},
			{"Sampled", s.Timestamp.UTC().Format("2006-01-02 15:04:05 UTC")},
		}
	} else {
		d.Panel.Cards = []uiCard{{"Host metrics", "none reported yet"}}
	}
	d.Panel.Charts = append(hostCharts(host), trafficCharts(sum.Series, q.Interval)...)
	return p.uiFinish(c, d, title, views.SectionAgents)
}

func (p *pages) uiStream(c *fiber.Ctx) error {
	ctx := app.Ctx(c)
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return err
	}
	name, protocol, port, err := p.svc.streamListener(ctx, id)
	if err != nil {
		return err
	}
	title := "Metrics of " + name
	path := "/streams/" + id.String() + "/metrics"
	d := uiPageData{Path: path, Intro: fmt.Sprintf("Traffic counters of the stream %s (%s port %d), counted since their last reset.", name, strings.ToUpper(protocol), port)}
	if p.ui.Allowed(c, vhosts.ObjStream, authz.Write) {
		d.Reset = &views.ActionProps{Action: path + "/reset", CSRF: uiCSRF(c), Label: "Reset counters",
			Confirm: "Reset the counters of " + name + "? They will count from now on.", Danger: true}
	}
	if done, err := p.uiStart(c, &d, title, views.SectionStreams); done {
		return err
	}
	q := Query{WorkspaceID: app.ScopeOf(c).WorkspaceID, VirtualHostID: id, From: d.Range.From, To: d.Range.To, Interval: d.Range.Interval}
	st, err := p.svc.StreamTraffic(ctx, q)
	if err != nil {
		return err
	}
	reset := "never"
	if st.CountersResetAt != nil {
		reset = st.CountersResetAt.Format("2006-01-02 15:04:05 UTC")
	}
	d.Panel.Cards = []uiCard{
		{"Sessions", uiCount(st.Sessions)},
		{"In / out", uiBytes(st.Bandwidth.InBytes) + " / " + uiBytes(st.Bandwidth.OutBytes)},
		{"Failed (5xx)", uiCount(st.StatusCodes.S5xx)},
		{"Session time p50 / p95", uiMs(st.SessionTimeMs.P50) + " / " + uiMs(st.SessionTimeMs.P95)},
		{"Counters reset", reset},
	}
	x := make([]int64, len(st.Series))
	sessions := chartSeries{Label: "Sessions"}
	in, out := chartSeries{Label: "In (bytes)"}, chartSeries{Label: "Out (bytes)"}
	for i, p := range st.Series {
		x[i] = p.Timestamp.Unix()
		sessions.Values = append(sessions.Values, num(float64(p.Sessions)))
		in.Values = append(in.Values, num(float64(p.InBytes)))
		out.Values = append(out.Values, num(float64(p.OutBytes)))
	}
	step := uiStep(q.Interval)
	d.Panel.Charts = []uiChart{
		chartSpec{Unit: "count", X: x, Series: []chartSeries{sessions}}.component("chart-sessions", "Sessions (per "+step+")"),
		chartSpec{Unit: "bytes", X: x, Series: []chartSeries{in, out}}.component("chart-bandwidth", "Bytes (per "+step+")"),
	}
	return p.uiFinish(c, d, title, views.SectionStreams)
}

func (p *pages) uiStreamReset(c *fiber.Ctx) error {
	id, err := app.ParamUUID(c, "id")
	if err != nil {
		return err
	}
	if _, err := p.resetCounters(app.Ctx(c), app.ScopeOf(c), id); err != nil {
		return err
	}
	views.SetFlash(c, views.Flash{Kind: views.FlashSuccess, Message: "The stream's counters were reset: they count from now on."})
	return views.SeeOther(c, "/streams/"+id.String()+"/metrics")
}

// uiCSRF is the session's CSRF token for the page's forms.
func uiCSRF(c *fiber.Ctx) string {
	if caller := app.Caller(c); caller != nil {
		return caller.CSRFToken
	}
	return ""
}

// ---- Host metrics ----

// HostPoint is an interval of an agent's host samples: the mean of each
// gauge over the samples of the interval (connections: the highest); nil
// fields when the interval has no sample.
type HostPoint struct {
	Timestamp         time.Time
	Samples           int64
	CPUPercent        float64
	MemoryUsedBytes   float64
	MemoryTotalBytes  float64
	DiskUsedBytes     float64
	DiskTotalBytes    float64
	Load1, Load5      float64
	Load15            float64
	ActiveConnections *float64
}

// HostSeries returns an agent's host samples from from (inclusive) to to
// (exclusive) in intervals of step, one point per interval (empty ones with
// Samples 0), as buckets numbers them. Steps of whole hours read the hourly
// rollups (host_metrics_hour), the others the samples.
func (s *Service) HostSeries(ctx context.Context, agentID uuid.UUID, from, to time.Time, step time.Duration) ([]HostPoint, error) {
	q := `SELECT date_bin($1::interval, ts, TIMESTAMPTZ '1970-01-01 00:00:00+00'), count(*),
			avg(cpu_percent), avg(memory_used_bytes), avg(memory_total_bytes), avg(disk_used_bytes), avg(disk_total_bytes),
			avg(load_average_1m), avg(load_average_5m), avg(load_average_15m), max(nginx_active_connections)::double precision
		FROM host_metrics WHERE agent_id = $2 AND ts >= $3 AND ts < $4 GROUP BY 1 ORDER BY 1`
	if step >= time.Hour && step%time.Hour == 0 {
		// Whole hours come from the hourly rollups, kept longer than the
		// samples: the means of the hour's samples, weighted by their count
		// (the hour that holds from counts whole).
		q = `SELECT date_bin($1::interval, bucket, TIMESTAMPTZ '1970-01-01 00:00:00+00'), sum(samples)::bigint,
				sum(cpu_percent_sum) / sum(samples), sum(memory_used_bytes_sum) / sum(samples),
				sum(memory_total_bytes_sum) / sum(samples), sum(disk_used_bytes_sum) / sum(samples),
				sum(disk_total_bytes_sum) / sum(samples), sum(load_average_1m_sum) / sum(samples),
				sum(load_average_5m_sum) / sum(samples), sum(load_average_15m_sum) / sum(samples),
				max(nginx_active_connections_max)::double precision
			FROM host_metrics_hour WHERE agent_id = $2 AND bucket >= date_bin('1 hour', $3::timestamptz, TIMESTAMPTZ '1970-01-01 00:00:00+00')
				AND bucket < $4 AND samples > 0 GROUP BY 1 ORDER BY 1`
	}
	rows, err := s.pool.Query(ctx, q, strconv.FormatInt(int64(step/time.Second), 10)+" seconds", agentID, from, to)
	if err != nil {
		return nil, fmt.Errorf("query host metrics of agent %s: %w", agentID, err)
	}
	byTime := map[int64]HostPoint{}
	for rows.Next() {
		var p HostPoint
		if err := rows.Scan(&p.Timestamp, &p.Samples, &p.CPUPercent, &p.MemoryUsedBytes, &p.MemoryTotalBytes, &p.DiskUsedBytes,
			&p.DiskTotalBytes, &p.Load1, &p.Load5, &p.Load15, &p.ActiveConnections); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read host metrics of agent %s: %w", agentID, err)
		}
		byTime[p.Timestamp.Unix()] = p
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query host metrics of agent %s: %w", agentID, err)
	}
	out := []HostPoint{}
	for _, t := range buckets(from, to, step) {
		p := byTime[t.Unix()]
		p.Timestamp = t
		out = append(out, p)
	}
	return out, nil
}

// hostCharts are the charts of an agent's host samples.
func hostCharts(points []HostPoint) []uiChart {
	x := make([]int64, len(points))
	cpu := chartSeries{Label: "CPU %"}
	memUsed, memTotal := chartSeries{Label: "Memory used"}, chartSeries{Label: "Memory total"}
	diskUsed, diskTotal := chartSeries{Label: "Disk used"}, chartSeries{Label: "Disk total"}
	l1, l5, l15 := chartSeries{Label: "1 min"}, chartSeries{Label: "5 min"}, chartSeries{Label: "15 min"}
	conns := chartSeries{Label: "Active connections"}
	for i, p := range points {
		x[i] = p.Timestamp.Unix()
		v := func(f float64) *float64 {
			if p.Samples == 0 || math.IsNaN(f) {
				return nil
			}
			return num(f)
		}
		cpu.Values = append(cpu.Values, v(p.CPUPercent))
		memUsed.Values, memTotal.Values = append(memUsed.Values, v(p.MemoryUsedBytes)), append(memTotal.Values, v(p.MemoryTotalBytes))
		diskUsed.Values, diskTotal.Values = append(diskUsed.Values, v(p.DiskUsedBytes)), append(diskTotal.Values, v(p.DiskTotalBytes))
		l1.Values, l5.Values, l15.Values = append(l1.Values, v(p.Load1)), append(l5.Values, v(p.Load5)), append(l15.Values, v(p.Load15))
		var c *float64
		if p.Samples > 0 && p.ActiveConnections != nil {
			c = num(*p.ActiveConnections)
		}
		conns.Values = append(conns.Values, c)
	}
	return []uiChart{
		chartSpec{Unit: "percent", X: x, Series: []chartSeries{cpu}}.component("chart-cpu", "CPU"),
		chartSpec{Unit: "bytes", X: x, Series: []chartSeries{memUsed, memTotal}}.component("chart-memory", "Memory"),
		chartSpec{Unit: "bytes", X: x, Series: []chartSeries{diskUsed, diskTotal}}.component("chart-disk", "Disk"),
		chartSpec{Unit: "number", X: x, Series: []chartSeries{l1, l5, l15}}.component("chart-load", "Load average"),
		chartSpec{Unit: "count", X: x, Series: []chartSeries{conns}}.component("chart-connections", "nginx connections"),
	}
}

// ---- Formatting ----

func uiCount(n int64) string { return strconv.FormatInt(n, 10) }

func uiPercent(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " %" }

func uiMs(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + " ms" }

// uiBytes is n in binary units (KiB, MiB…).
func uiBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, exp := float64(n), 0
	for v >= unit && exp < 6 {
		v /= unit
		exp++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + string("KMGTPE"[exp-1]) + "iB"
}

func uiStep(d time.Duration) string {
	for name, iv := range Intervals {
		if iv == d {
			switch name {
			case "1m":
				return "minute"
			case "5m":
				return "5 minutes"
			case "1h":
				return "hour"
			case "1d":
				return "day"
			}
		}
	}
	return d.String()
}

func (r uiRange) isKey(k string) bool { return r.Key == k }

func (r uiRange) describe() string {
	return r.From.UTC().Format("2006-01-02 15:04") + " – " + r.To.UTC().Format("2006-01-02 15:04") + " UTC, per " + uiStep(r.Interval)
}

func uiRangeHref(path, key string) string { return path + "?range=" + key }
