package metrics

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// parse reads a text exposition with the Prometheus parser.
func parse(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	return fams
}

// metricOf finds the metric of fam whose labels include want.
func metricOf(t *testing.T, fams map[string]*dto.MetricFamily, fam string, want map[string]string) *dto.Metric {
	t.Helper()
	f := fams[fam]
	if f == nil {
		t.Fatalf("no family %s", fam)
	}
	for _, m := range f.GetMetric() {
		match := 0
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
				match++
			}
		}
		if match == len(want) {
			return m
		}
	}
	t.Fatalf("no %s%v among %v", fam, want, f.GetMetric())
	return nil
}

// TestAPI_PrometheusWorkspace ingests traffic of two virtual hosts through the
// logs path and reads the workspace's exposition: counters and histogram
// as the entries say, for a token and for an API key, not for anonymous.
func TestAPI_PrometheusWorkspace(t *testing.T) {
	l := newLab(t, labOpts{})
	ctx := context.Background()
	var vh uuid.UUID
	if err := l.a.Deps.Pool.QueryRow(ctx, `INSERT INTO virtual_hosts (workspace_id, name, server_name, listen_port)
		VALUES ($1, 'www "main"', 'www.example.com', 80) RETURNING id`, l.ws).Scan(&vh); err != nil {
		t.Fatal(err)
	}
	other := uuid.New() // a virtual host the workspace no longer has
	now := l.a.Deps.Clock()
	l.ingest(t,
		entry(now, 200, 3, vh, "www.example.com"),     // bucket le=0.005
		entry(now, 204, 40, vh, "www.example.com"),    // le=0.05
		entry(now, 503, 900, vh, "www.example.com"),   // le=1
		entry(now, 404, 70000, vh, "www.example.com"), // above 60 s
		entry(now, 301, 1, other, "old.example.com"),
	)
	path := "/v1/workspaces/" + l.ws.String() + "/metrics/prometheus"
	for _, who := range []string{l.tokens["viewer"], l.key} {
		resp := apptest.NewClient(l.a).As(who).Do(t, http.MethodGet, path, nil)
		if resp.Status != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
			t.Fatalf("status %d, type %q: %s", resp.Status, resp.Header.Get("Content-Type"), resp.Body)
		}
		fams := parse(t, resp.Body)
		id := map[string]string{"virtual_host_id": vh.String(), "virtual_host": `www "main"`}
		if v := metricOf(t, fams, "nxmesh_vhost_requests_total", id).GetCounter().GetValue(); v != 4 {
			t.Errorf("requests %v, want 4", v)
		}
		for class, want := range map[string]float64{"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 1} {
			labels := map[string]string{"virtual_host_id": vh.String(), "status_class": class}
			if v := metricOf(t, fams, "nxmesh_vhost_responses_total", labels).GetCounter().GetValue(); v != want {
				t.Errorf("%s responses %v, want %v", class, v, want)
			}
		}
		if v := metricOf(t, fams, "nxmesh_vhost_received_bytes_total", id).GetCounter().GetValue(); v != 400 {
			t.Errorf("received bytes %v, want 400", v)
		}
		if v := metricOf(t, fams, "nxmesh_vhost_sent_bytes_total", id).GetCounter().GetValue(); v != 4000 {
			t.Errorf("sent bytes %v, want 4000", v)
		}
		h := metricOf(t, fams, "nxmesh_vhost_request_duration_seconds", id).GetHistogram()
		if h.GetSampleCount() != 4 {
			t.Errorf("histogram count %d, want 4", h.GetSampleCount())
		}
		cum := map[float64]uint64{}
		for _, b := range h.GetBucket() {
			cum[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		for le, want := range map[float64]uint64{0.001: 0, 0.005: 1, 0.05: 2, 1: 3, 60: 3} {
			if cum[le] != want {
				t.Errorf("bucket le=%v: %d, want %d (%v)", le, cum[le], want, cum)
			}
		}
		if v := metricOf(t, fams, "nxmesh_vhost_requests_total", map[string]string{"virtual_host_id": other.String(), "virtual_host": ""}).GetCounter().GetValue(); v != 1 {
			t.Errorf("requests of the other virtual host %v, want 1", v)
		}
	}
	if resp := apptest.NewClient(l.a).Do(t, http.MethodGet, path, nil); resp.Status != http.StatusUnauthorized {
		t.Fatalf("anonymous: %d", resp.Status)
	}
	if resp := apptest.NewClient(l.a).As(l.tokens["outsider"]).Do(t, http.MethodGet, path, nil); resp.Status != http.StatusNotFound {
		t.Fatalf("outsider: %d", resp.Status)
	}
}

// TestAPI_PrometheusFleet scrapes the master's /metrics: the fleet figures are
// there with their values, and a second scrape within the cache's life does
// not query again.
func TestAPI_PrometheusFleet(t *testing.T) {
	l := newLab(t, labOpts{})
	ctx := context.Background()
	pool := l.a.Deps.Pool
	for _, q := range []string{
		`UPDATE workspaces SET config_version = 7 WHERE id = $1`,
		`UPDATE agents SET applied_version = 7, apply_status = 'success' WHERE workspace_id = $1`,
		`INSERT INTO agents (workspace_id, name, state, applied_version, apply_status) VALUES ($1, 'web-02', 'offline', 4, 'failed')`,
		`INSERT INTO agents (workspace_id, name, state) VALUES ($1, 'web-03', 'pending')`,
		`INSERT INTO certificates (workspace_id, domain, provider, status, certificate_pem, private_key_sealed, issued_at, expires_at)
			VALUES ($1, 'a.example.com', 'upload', 'active', 'PEM', '\x00', now() - interval '1 day', now() + interval '20 days')`,
		`INSERT INTO certificates (workspace_id, domain, provider, status, certificate_pem, private_key_sealed, issued_at, expires_at)
			VALUES ($1, 'b.example.com', 'upload', 'expiring', 'PEM', '\x00', now() - interval '80 days', now() + interval '5 days')`,
		`INSERT INTO certificates (workspace_id, domain, provider, status) VALUES ($1, 'c.example.com', 'letsencrypt', 'pending')`,
	} {
		if _, err := pool.Exec(ctx, q, l.ws); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	l.sample(t, 10, 1, 2)
	l.ingest(t, entry(l.a.Deps.Clock(), 200, 1, uuid.Nil, ""))

	scrape := func() map[string]*dto.MetricFamily {
		t.Helper()
		resp, err := l.a.Fiber().Test(httptest.NewRequest(http.MethodGet, "/metrics", nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(resp.Body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d %s", resp.StatusCode, buf.Bytes())
		}
		return parse(t, buf.Bytes())
	}
	fams := scrape()
	ws := l.ws.String()
	gauge := func(fam string, labels map[string]string) float64 {
		t.Helper()
		return metricOf(t, fams, fam, labels).GetGauge().GetValue()
	}
	for state, want := range map[string]float64{"online": 1, "offline": 1, "pending": 1, "degraded": 0} {
		if v := gauge("nxmesh_fleet_agents", map[string]string{"workspace_id": ws, "state": state}); v != want {
			t.Errorf("%s agents %v, want %v", state, v, want)
		}
	}
	for result, want := range map[string]float64{"success": 1, "failed": 1, "none": 1, "rolled_back": 0} {
		if v := gauge("nxmesh_fleet_agent_applies", map[string]string{"result": result}); v != want {
			t.Errorf("%s applies %v, want %v", result, v, want)
		}
	}
	if v := gauge("nxmesh_fleet_config_versions_behind", map[string]string{"workspace_id": ws}); v != 3 {
		t.Errorf("versions behind %v, want 3", v)
	}
	if v := gauge("nxmesh_fleet_agents_behind", map[string]string{"workspace_id": ws}); v != 1 {
		t.Errorf("agents behind %v, want 1", v)
	}
	for status, want := range map[string]float64{"active": 1, "expiring": 1, "pending": 1, "expired": 0} {
		if v := gauge("nxmesh_fleet_certificates", map[string]string{"status": status}); v != want {
			t.Errorf("%s certificates %v, want %v", status, v, want)
		}
	}
	if v := gauge("nxmesh_fleet_certificate_days_left_min", nil); v < 4.9 || v > 5.01 {
		t.Errorf("smallest days left %v, want 5", v)
	}
	for _, kind := range []string{"metrics", "logs"} {
		if v := gauge("nxmesh_fleet_ingest_lag_seconds", map[string]string{"kind": kind}); v < 0 || v > 60 {
			t.Errorf("%s ingest lag %v, want a few seconds", kind, v)
		}
	}
	if v := metricOf(t, fams, "nxmesh_fleet_collect_errors_total", nil).GetCounter().GetValue(); v != 0 {
		t.Errorf("collect errors %v", v)
	}
	if _, err := pool.Exec(ctx, `UPDATE agents SET state = 'degraded' WHERE name = 'web-01'`); err != nil {
		t.Fatal(err)
	}
	fams = scrape()
	if v := gauge("nxmesh_fleet_agents", map[string]string{"workspace_id": ws, "state": "online"}); v != 1 {
		t.Errorf("online agents %v within the cache's life, want the cached 1", v)
	}
	l.mod.fleet.mu.Lock()
	queries := l.mod.fleet.queryCt
	l.mod.fleet.mu.Unlock()
	if queries != 1 {
		t.Errorf("%d fleet queries for two scrapes within %s, want 1", queries, fleetCacheTTL)
	}
}
