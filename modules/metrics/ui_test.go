package metrics

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
	"github.com/nxmesh/nxmesh/static"
)

// chartOf decodes the data-chart of the chart whose series are labelled
// first in body.
func chartOf(t *testing.T, body, first string) chartSpec {
	t.Helper()
	for _, raw := range charts(body) {
		var c chartSpec
		if err := json.Unmarshal([]byte(raw), &c); err != nil {
			t.Fatalf("data-chart %q: %v", raw, err)
		}
		if len(c.Series) > 0 && c.Series[0].Label == first {
			return c
		}
	}
	t.Fatalf("no chart with a series %q in %d charts", first, len(charts(body)))
	return chartSpec{}
}

func sumOf(vals []*float64) float64 {
	var s float64
	for _, v := range vals {
		if v != nil {
			s += *v
		}
	}
	return s
}

// TestUI_Pages renders the metrics pages server-side with the chart data of
// the traffic ingested, the tops, the scripts that draw them and the live
// panel; the reset button only for the roles whose route accepts them.
func TestUI_Pages(t *testing.T) {
	w := setupWide(t)
	now := time.Now().UTC()
	w.ingest(t, w.online, "ui-1",
		request(now.Add(-3*time.Minute), "www.example.com", "/a", 200, "10.0.0.1", "curl/8.5", w.vh),
		request(now.Add(-3*time.Minute), "www.example.com", "/a", 502, "10.0.0.1", "curl/8.5", w.vh),
		request(now.Add(-2*time.Minute), "www.example.com", "/b", 404, "10.0.0.2", "curl/8.5", w.vh),
		session(now.Add(-2*time.Minute), w.stream, 200, 100, 1000, 10, "10.0.0.3"),
	)
	if err := w.mod.StoreHostMetrics(context.Background(), agents.MetricsBatch{AgentID: w.online, WorkspaceID: w.ws, Batch: &agentv1.MetricsBatch{
		Timestamp: now.Add(-time.Minute).Unix(),
		Metrics: []*agentv1.Metric{{Name: "host.cpu.percent", Value: 37.5}, {Name: "host.memory.used_bytes", Value: 1 << 30},
			{Name: "host.memory.total_bytes", Value: 4 << 30}, {Name: "nginx.connections.active", Value: 9}},
	}}); err != nil {
		t.Fatal(err)
	}
	wsPage := "/workspaces/" + w.ws.String() + "/metrics"

	t.Run("workspace", func(t *testing.T) {
		status, body, _ := w.page(t, authz.RoleViewer, http.MethodGet, wsPage, nil)
		if status != http.StatusOK {
			t.Fatalf("status %d: %.2000s", status, body)
		}
		for _, want := range []string{static.UPlot, static.UPlotCSS, static.Charts, `id="metrics-panel"`, `hx-trigger="every 10s"`,
			`hx-get="` + wsPage + `?fragment=panel&amp;range=1h"`, `>Metrics</a>`, "/a</code>", "10.0.0.1</code>",
			"/agents/" + w.online.String() + "/metrics", "/virtual-hosts/" + w.vh.String() + "/metrics", "/streams/" + w.stream.String() + "/metrics"} {
			if !strings.Contains(body, want) {
				t.Errorf("page lacks %q", want)
			}
		}
		if strings.Contains(body, "<script>") {
			t.Error("the page has an inline script")
		}
		status5 := chartOf(t, body, "2xx")
		if len(status5.X) < 60 || len(status5.X) > 61 || len(status5.Series) != 4 {
			t.Fatalf("status chart: %d points, %d series", len(status5.X), len(status5.Series))
		}
		// 2xx, 3xx, 4xx, 5xx: the request and the session; none; one; one.
		for i, want := range []float64{2, 0, 1, 1} {
			if got := sumOf(status5.Series[i].Values); got != want {
				t.Errorf("%s: %v, want %v", status5.Series[i].Label, got, want)
			}
		}
		lat := chartOf(t, body, "p50")
		if len(lat.Series) != 3 || lat.Series[0].Values[0] != nil {
			t.Fatalf("latency chart %+v: an empty minute must be null", lat.Series)
		}
	})
	t.Run("ranges", func(t *testing.T) {
		for _, tc := range []struct {
			query  string
			status int
			points int
			want   string
		}{
			{"range=24h", http.StatusOK, 288, "per 5 minutes"},
			{"range=7d", http.StatusOK, 169, "per hour"},
			{"range=custom&from=" + now.Add(-3*time.Hour).Format("2006-01-02T15:04") + "&to=" + now.Format("2006-01-02T15:04"), http.StatusOK, 0, "per minute"},
			{"range=2h", http.StatusUnprocessableEntity, -1, "must be one of 1h, 24h, 7d, custom"},
			{"range=custom", http.StatusUnprocessableEntity, -1, "is required for a custom range"},
			{"range=custom&from=2026-03-02T10:00&to=2026-03-01T10:00", http.StatusUnprocessableEntity, -1, "must be before to"},
			{"range=custom&from=noon", http.StatusUnprocessableEntity, -1, "RFC 3339"},
		} {
			status, body, _ := w.page(t, authz.RoleViewer, http.MethodGet, wsPage+"?"+tc.query, nil)
			if status != tc.status || !strings.Contains(strings.ToLower(body), strings.ToLower(tc.want)) {
				t.Errorf("%s: status %d, want %d with %q: %s", tc.query, status, tc.status, tc.want, body[strings.Index(body, "<main"):])
				continue
			}
			if tc.status != http.StatusOK {
				if len(charts(body)) != 0 {
					t.Errorf("%s: charts drawn for a bad range", tc.query)
				}
				continue
			}
			live := strings.Contains(body, `hx-trigger="every 10s"`)
			if want := !strings.HasPrefix(tc.query, "range=custom"); live != want {
				t.Errorf("%s: live refresh %v", tc.query, live)
			}
			if tc.points > 0 {
				if c := chartOf(t, body, "2xx"); len(c.X) < tc.points-1 || len(c.X) > tc.points+1 {
					t.Errorf("%s: %d points, want about %d", tc.query, len(c.X), tc.points)
				}
			}
		}
	})
	t.Run("panel", func(t *testing.T) {
		status, body, _ := w.page(t, authz.RoleViewer, http.MethodGet, wsPage+"?range=1h&fragment=panel", nil)
		if status != http.StatusOK || !strings.HasPrefix(strings.TrimSpace(body), `<div id="metrics-panel"`) || strings.Contains(body, "<html") ||
			len(charts(body)) != 4 || !strings.Contains(body, `hx-trigger="every 10s"`) {
			t.Fatalf("panel: status %d: %.2000s", status, body)
		}
	})
	t.Run("virtual host", func(t *testing.T) {
		status, body, _ := w.page(t, authz.RoleViewer, http.MethodGet, "/virtual-hosts/"+w.vh.String()+"/metrics", nil)
		if status != http.StatusOK || !strings.Contains(body, "www.example.com") {
			t.Fatalf("status %d: %.2000s", status, body)
		}
		// The session is the stream's, not the virtual host's.
		c := chartOf(t, body, "2xx")
		if got := sumOf(c.Series[0].Values) + sumOf(c.Series[2].Values) + sumOf(c.Series[3].Values); got != 3 {
			t.Fatalf("virtual host requests %v, want 3", got)
		}
	})
	t.Run("agent", func(t *testing.T) {
		status, body, _ := w.page(t, authz.RoleViewer, http.MethodGet, "/agents/"+w.online.String()+"/metrics", nil)
		if status != http.StatusOK || !strings.Contains(body, "37.50 %") || !strings.Contains(body, "1.0 GiB of 4.0 GiB") {
			t.Fatalf("status %d: %.3000s", status, body)
		}
		for _, first := range []string{"CPU %", "Memory used", "Disk used", "1 min", "Active connections", "2xx"} {
			chartOf(t, body, first)
		}
		if cpu := chartOf(t, body, "CPU %"); sumOf(cpu.Series[0].Values) != 37.5 {
			t.Fatalf("cpu chart %+v", cpu.Series)
		}
	})
	t.Run("stream and its reset", func(t *testing.T) {
		page := "/streams/" + w.stream.String() + "/metrics"
		for _, tc := range []struct {
			role  string
			reset bool
		}{{authz.RoleViewer, false}, {authz.RoleOperator, true}, {authz.RoleOwner, true}} {
			status, body, _ := w.page(t, tc.role, http.MethodGet, page, nil)
			if status != http.StatusOK || !strings.Contains(body, "postgres") {
				t.Fatalf("%s: status %d: %.2000s", tc.role, status, body)
			}
			if got := strings.Contains(body, `action="`+page+`/reset"`); got != tc.reset {
				t.Fatalf("%s: reset offered %v, want %v", tc.role, got, tc.reset)
			}
			if c := chartOf(t, body, "Sessions"); sumOf(c.Series[0].Values) != 1 {
				t.Fatalf("%s: sessions chart %+v", tc.role, c.Series)
			}
		}
		if status, _, _ := w.page(t, authz.RoleViewer, http.MethodPost, page+"/reset", url.Values{}); status != http.StatusForbidden {
			t.Fatalf("viewer reset: status %d, want 403", status)
		}
		status, _, hdr := w.page(t, authz.RoleOperator, http.MethodPost, page+"/reset", url.Values{})
		if status != http.StatusSeeOther || hdr.Get("Location") != page {
			t.Fatalf("operator reset: status %d, location %q", status, hdr.Get("Location"))
		}
		_, body, _ := w.page(t, authz.RoleOperator, http.MethodGet, page, nil)
		if c := chartOf(t, body, "Sessions"); sumOf(c.Series[0].Values) != 0 || strings.Contains(body, "Counters reset</small><strong>never") {
			t.Fatalf("after the reset: sessions %v: %.3000s", sumOf(c.Series[0].Values), body)
		}
	})
}
