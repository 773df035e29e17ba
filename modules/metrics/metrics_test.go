package metrics

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/agent/collect"
	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/logs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestMain(m *testing.M) { apptest.Main(m) }

// bundle is a master with auth, orgs, logs and metrics wired as main.go
// wires them, the logs ingest running, one organization with a workspace,
// a viewer's token and two agents: online and offline.
type bundle struct {
	a       *app.App
	mod     *Module
	logs    *logs.Module
	client  *apptest.Client
	ws      uuid.UUID
	online  uuid.UUID
	offline uuid.UUID
	// base is a whole hour three hours ago: the entries of the tests are
	// stamped after it.
	base time.Time
}

func setup(t *testing.T) *bundle {
	t.Helper()
	a := apptest.NewApp(t, func(c *app.Config) { c.Auth.RateLimitPerMinute = 1 << 30 })
	ctx := context.Background()
	base := orgstest.New(t, a)
	authMod, orgsMod := base.Auth, base.Orgs
	mod, err := New(a.Deps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	logsMod, err := logs.New(a.Deps, logs.Options{RollupFunc: mod.Rollup})
	if err != nil {
		t.Fatal(err)
	}
	base.Mount(t, logsMod, mod)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = logsMod.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	b := &bundle{a: a, mod: mod, logs: logsMod, base: time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)}
	owner, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: "owner@example.com", Password: "password-owner"})
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: "viewer@example.com", Password: "password-viewer"})
	if err != nil {
		t.Fatal(err)
	}
	org, err := orgsMod.Service().CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Org", Slug: "org", OwnerID: owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := orgsMod.Service().AddMember(ctx, orgs.AddMemberParams{OrgID: org.ID, Email: viewer.Email, Role: authz.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	ws, err := orgsMod.Service().CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "WS", Slug: "ws"})
	if err != nil {
		t.Fatal(err)
	}
	b.ws = ws.ID
	pair, err := authMod.Service().Login(ctx, auth.LoginParams{Email: viewer.Email, Password: "password-viewer", IP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	b.client = apptest.NewClient(a).As(pair.AccessToken)
	// Agents as the agents module records them; the health documents carry
	// the active connections of their last health report.
	for _, ag := range []struct {
		dst    *uuid.UUID
		state  string
		health string
	}{
		{&b.online, agents.StateOnline, `{"active_connections": 7, "cpu_percent": 12.5, "reported_at": "2026-03-02T10:00:00Z"}`},
		{&b.offline, agents.StateOffline, `{"active_connections": 100}`},
	} {
		if err := a.Deps.Pool.QueryRow(ctx, "INSERT INTO agents (workspace_id, name, state, health) VALUES ($1, $2, $3, $4) RETURNING id",
			ws.ID, ag.state, ag.state, ag.health).Scan(ag.dst); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// acks collects the acknowledgements of ingested batches.
type acks struct {
	mu  sync.Mutex
	got []*agentv1.Ack
	ch  chan struct{}
}

func newAcks() *acks { return &acks{ch: make(chan struct{}, 64)} }

func (a *acks) ack(x *agentv1.Ack) bool {
	a.mu.Lock()
	a.got = append(a.got, x)
	a.mu.Unlock()
	a.ch <- struct{}{}
	return true
}

// ingest hands batch to the logs ingest and waits for its acknowledgement,
// which must be a success.
func (b *bundle) ingest(t *testing.T, agent uuid.UUID, id string, entries ...*agentv1.AccessLogEntry) {
	t.Helper()
	ak := newAcks()
	b.logs.Ingest(context.Background(), agents.LogBatch{AgentID: agent, WorkspaceID: b.ws,
		Access: &agentv1.AccessLogBatch{BatchId: id, Entries: entries}, Ack: ak.ack})
	select {
	case <-ak.ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("batch %s not acknowledged", id)
	}
	ak.mu.Lock()
	defer ak.mu.Unlock()
	if x := ak.got[0]; !x.GetSuccess() || x.GetMessageId() != id {
		t.Fatalf("batch %s: ack %+v", id, x)
	}
}

func entry(ts time.Time, status uint32, ms float64, vh uuid.UUID, host string) *agentv1.AccessLogEntry {
	e := &agentv1.AccessLogEntry{TimestampMs: ts.UnixMilli(), Method: "GET", Uri: "/", Host: host, Status: status,
		RequestTimeMs: ms, RequestLength: 100, BytesSent: 1000, Kind: "http"}
	if vh != uuid.Nil {
		e.VirtualHostId = vh.String()
	}
	return e
}

func (b *bundle) get(t *testing.T, path string, params map[string]string, out any) {
	t.Helper()
	v := url.Values{}
	for k, x := range params {
		v.Set(k, x)
	}
	b.client.Call(t, http.MethodGet, path+"?"+v.Encode(), nil, http.StatusOK, out)
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// TestAPI_RollupExactlyOnce ingests a batch twice and another once through the
// logs ingest: the redelivery is not counted, in either resolution.
func TestAPI_RollupExactlyOnce(t *testing.T) {
	b := setup(t)
	vh := uuid.New()
	first := []*agentv1.AccessLogEntry{
		entry(b.base.Add(30*time.Second), 200, 3, vh, "www.example.com"),
		entry(b.base.Add(40*time.Second), 500, 30, vh, "www.example.com"),
		entry(b.base.Add(90*time.Second), 404, 300, vh, "WWW.Example.com."),
	}
	b.ingest(t, b.online, "b1", first...)
	b.ingest(t, b.online, "b1", first...) // redelivery
	b.ingest(t, b.online, "b2", entry(b.base.Add(50*time.Second), 200, 3, vh, "www.example.com"))
	ctx := context.Background()
	for _, tc := range []struct {
		table      string
		rows, reqs int64
	}{
		{tableMinute, 2, 4},
		{tableHour, 1, 4},
	} {
		var rows, reqs, s5 int64
		if err := b.a.Deps.Pool.QueryRow(ctx, "SELECT count(*), coalesce(sum(requests), 0), coalesce(sum(status_5xx), 0) FROM "+tc.table+
			" WHERE agent_id = $1 AND host = 'www.example.com' AND virtual_host_id = $2", b.online, vh).Scan(&rows, &reqs, &s5); err != nil {
			t.Fatal(err)
		}
		if rows != tc.rows || reqs != tc.reqs || s5 != 1 {
			t.Errorf("%s: %d rows, %d requests, %d 5xx; want %d rows, %d requests, 1 5xx", tc.table, rows, reqs, s5, tc.rows, tc.reqs)
		}
	}
	var sum Summary
	b.get(t, "/v1/workspaces/"+b.ws.String()+"/metrics", map[string]string{"from": rfc(b.base), "to": rfc(b.base.Add(time.Hour))}, &sum)
	if sum.RequestsTotal != 4 || sum.StatusCodes.S2xx != 2 || sum.StatusCodes.S4xx != 1 || sum.StatusCodes.S5xx != 1 ||
		sum.Bandwidth.InBytes != 400 || sum.Bandwidth.OutBytes != 4000 {
		t.Fatalf("summary %+v, want the 4 entries counted once", sum)
	}
}

// TestAPI_TrafficTotalsSeriesFiltersPercentiles checks the totals, series,
// filters and latency percentiles of known entries, and zeros outside them.
func TestAPI_TrafficTotalsSeriesFiltersPercentiles(t *testing.T) {
	b := setup(t)
	vhA, vhB := uuid.New(), uuid.New()
	// 100 requests of 1..100 ms on vhost A, minute 0 and 1: 90 2xx, 5 3xx, 3 4xx, 2 5xx.
	var es []*agentv1.AccessLogEntry
	for i := 1; i <= 100; i++ {
		st := uint32(200)
		switch {
		case i > 98:
			st = 503
		case i > 95:
			st = 404
		case i > 90:
			st = 302
		}
		es = append(es, entry(b.base.Add(time.Duration(i)*time.Second), st, float64(i), vhA, "a.example.com"))
	}
	b.ingest(t, b.online, "a1", es...)
	// One slow 502 on vhost B through the offline agent, minute 7.
	b.ingest(t, b.offline, "b1", entry(b.base.Add(7*time.Minute+5*time.Second), 502, 2500, vhB, "b.example.com"))

	ws := "/v1/workspaces/" + b.ws.String() + "/metrics"
	from, to := rfc(b.base), rfc(b.base.Add(10*time.Minute))

	t.Run("Totals", func(t *testing.T) {
		var s Summary
		b.get(t, ws, map[string]string{"from": from, "to": to}, &s)
		want := StatusCodes{S2xx: 90, S3xx: 5, S4xx: 3, S5xx: 3}
		if s.RequestsTotal != 101 || s.StatusCodes != want || s.Bandwidth != (Bandwidth{InBytes: 10100, OutBytes: 101000}) {
			t.Fatalf("summary %+v", s)
		}
		if s.RequestsPerSecond != 101.0/600 || s.ErrorRate != 3.0/101 {
			t.Fatalf("rps %v error rate %v; want %v and %v", s.RequestsPerSecond, s.ErrorRate, 101.0/600, 3.0/101)
		}
		// Only the online agent counts: its health report's 7 (no host sample yet).
		if s.ActiveConnections != 7 {
			t.Fatalf("active_connections %d, want 7", s.ActiveConnections)
		}
		if s.Series != nil {
			t.Fatalf("series without interval: %+v", s.Series)
		}
	})
	t.Run("LatencyPercentiles", func(t *testing.T) {
		// 1..100 ms: buckets ≤30: 30, ≤50: 20, ≤75: 25, ≤100: 25, so p50 is
		// the top of (30, 50], p95 and p99 are 80% and 96% into (75, 100].
		var s Summary
		b.get(t, ws, map[string]string{"from": from, "to": to, "virtual_host_id": vhA.String()}, &s)
		if s.LatencyMs != (Latency{P50: 50, P95: 95, P99: 99}) {
			t.Fatalf("latency %+v, want p50 50, p95 95, p99 99", s.LatencyMs)
		}
		b.get(t, ws, map[string]string{"from": from, "to": to, "virtual_host_id": vhB.String()}, &s)
		// One entry of 2500 ms: every quantile is the top of (2000, 3000] scaled by q.
		if s.LatencyMs != (Latency{P50: 2500, P95: 2950, P99: 2990}) || s.RequestsTotal != 1 {
			t.Fatalf("vhost B: %+v", s)
		}
	})
	t.Run("Series", func(t *testing.T) {
		for _, tc := range []struct {
			interval string
			points   int
			first    int64
		}{{"1m", 10, 59}, {"5m", 2, 100}} {
			var s Summary
			b.get(t, ws, map[string]string{"from": from, "to": to, "interval": tc.interval}, &s)
			if len(s.Series) != tc.points {
				t.Fatalf("%s: %d points, want %d", tc.interval, len(s.Series), tc.points)
			}
			var total Point
			for i, p := range s.Series {
				step := Intervals[tc.interval]
				if !p.Timestamp.Equal(b.base.Add(time.Duration(i) * step)) {
					t.Fatalf("%s: point %d at %s", tc.interval, i, p.Timestamp)
				}
				total.RequestsTotal += p.RequestsTotal
				total.StatusCodes.add(p.StatusCodes)
				total.InBytes += p.InBytes
				total.OutBytes += p.OutBytes
			}
			if total.RequestsTotal != s.RequestsTotal || total.StatusCodes != s.StatusCodes ||
				total.InBytes != s.Bandwidth.InBytes || total.OutBytes != s.Bandwidth.OutBytes {
				t.Fatalf("%s: points sum to %+v, totals %+v", tc.interval, total, s)
			}
			if s.Series[0].RequestsTotal != tc.first {
				t.Fatalf("%s: first point %d requests, want %d", tc.interval, s.Series[0].RequestsTotal, tc.first)
			}
		}
		// Hour-aligned with 1h steps: answered from the hourly rollups.
		var s Summary
		b.get(t, ws, map[string]string{"from": rfc(b.base.Add(-time.Hour)), "to": rfc(b.base.Add(2 * time.Hour)), "interval": "1h"}, &s)
		if len(s.Series) != 3 || s.Series[0].RequestsTotal != 0 || s.Series[1].RequestsTotal != 101 || s.Series[2].RequestsTotal != 0 || s.RequestsTotal != 101 {
			t.Fatalf("hourly series %+v", s.Series)
		}
	})
	t.Run("Filters", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			params map[string]string
			want   int64
		}{
			{"Agent", map[string]string{"agent_id": b.offline.String()}, 1},
			{"VirtualHost", map[string]string{"virtual_host_id": vhA.String()}, 100},
			{"HostAnyCase", map[string]string{"host": "A.Example.COM"}, 100},
			{"UnknownHost", map[string]string{"host": "c.example.com"}, 0},
			{"HostAndVirtualHostDisagree", map[string]string{"host": "a.example.com", "virtual_host_id": vhB.String()}, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.params["from"], tc.params["to"] = from, to
				var s Summary
				b.get(t, ws, tc.params, &s)
				if s.RequestsTotal != tc.want {
					t.Fatalf("%d requests, want %d", s.RequestsTotal, tc.want)
				}
			})
		}
	})
	t.Run("RangesOutsideAreZero", func(t *testing.T) {
		for _, r := range [][2]time.Time{
			{b.base.Add(-2 * time.Hour), b.base},                         // ends where the entries start (to is exclusive)
			{b.base.Add(8 * time.Minute), b.base.Add(time.Hour)},         // after them
			{b.base.Add(100 * time.Second), b.base.Add(7 * time.Minute)}, // between minute 1 and minute 7
		} {
			var s Summary
			b.get(t, ws, map[string]string{"from": rfc(r[0]), "to": rfc(r[1]), "interval": "1m"}, &s)
			if s.RequestsTotal != 0 || s.StatusCodes != (StatusCodes{}) || s.Bandwidth != (Bandwidth{}) || s.LatencyMs != (Latency{}) || s.ErrorRate != 0 {
				t.Fatalf("%s..%s: %+v, want zeros", r[0], r[1], s)
			}
			for _, p := range s.Series {
				if p.RequestsTotal != 0 {
					t.Fatalf("%s..%s: point %+v", r[0], r[1], p)
				}
			}
		}
	})
	t.Run("Agent", func(t *testing.T) {
		var s AgentSummary
		b.get(t, "/v1/agents/"+b.offline.String()+"/metrics", map[string]string{"from": from, "to": to, "interval": "5m"}, &s)
		if s.RequestsTotal != 1 || s.StatusCodes.S5xx != 1 || len(s.Series) != 2 || s.Series[1].RequestsTotal != 1 || s.ActiveConnections != 0 {
			t.Fatalf("offline agent: %+v", s)
		}
		// No host sample and no dated health report.
		if s.System != nil {
			t.Fatalf("system of an agent without samples: %+v", s.System)
		}
		// agent_id is the path's; a query parameter does not change it.
		b.get(t, "/v1/agents/"+b.online.String()+"/metrics", map[string]string{"from": from, "to": to, "agent_id": b.offline.String()}, &s)
		// No host sample: the figures of its last health report.
		if s.RequestsTotal != 100 || s.ActiveConnections != 7 || s.System == nil || s.System.CPUPercent != 12.5 ||
			!s.System.Timestamp.Equal(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)) {
			t.Fatalf("online agent: %+v system %+v", s.Summary, s.System)
		}
	})
}

// TestAPI_QueryBadInput answers 422 naming the parameter, for the
// workspace and the agent route.
func TestAPI_QueryBadInput(t *testing.T) {
	b := setup(t)
	now := time.Now().UTC()
	for _, tc := range []struct {
		name   string
		params map[string]string
		field  string
	}{
		{"FromAfterTo", map[string]string{"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"},
		{"FromEqualsTo", map[string]string{"from": "2026-03-02T00:00:00Z", "to": "2026-03-02T00:00:00Z"}, "from"},
		{"MalformedFrom", map[string]string{"from": "yesterday"}, "from"},
		{"MalformedTo", map[string]string{"to": "2026-13-01"}, "to"},
		{"UnknownInterval", map[string]string{"interval": "2m"}, "interval"},
		{"TooManyPoints", map[string]string{"from": rfc(now.AddDate(0, 0, -10)), "to": rfc(now), "interval": "1m"}, "interval"},
		{"MalformedAgent", map[string]string{"agent_id": "agent-1"}, "agent_id"},
		{"MalformedVirtualHost", map[string]string{"virtual_host_id": "x"}, "virtual_host_id"},
		{"HostTooLong", map[string]string{"host": strings.Repeat("a", 300)}, "host"},
		{"HostWithNUL", map[string]string{"host": "a\x00b"}, "host"},
		{"HostOnlyADot", map[string]string{"host": "."}, "host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/workspaces/" + b.ws.String() + "/metrics", "/v1/agents/" + b.online.String() + "/metrics"} {
				if tc.field == "agent_id" && strings.HasPrefix(path, "/v1/agents/") {
					continue // the agent route takes the agent from its path
				}
				v := url.Values{}
				for k, x := range tc.params {
					v.Set(k, x)
				}
				r := b.client.Do(t, http.MethodGet, path+"?"+v.Encode(), nil)
				r.Expect(t, http.StatusUnprocessableEntity, "")
				if f := r.Fields(t); !slices.Contains(f, tc.field) {
					t.Fatalf("%s: fields %v, want %s; body %s", path, f, tc.field, r.Body)
				}
			}
		})
	}
}

// TestAPI_HostMetricsStoredOnceAndReturned stores the agent's own metric names
// (collect.HostSample.Metrics, NginxSample.Metrics) twice and reads them back.
func TestAPI_HostMetricsStoredOnceAndReturned(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	ts := time.Now().UTC().Truncate(time.Second).Add(-time.Minute)
	host := collect.HostSample{
		CPUPercent: 42.5, Load1: 1.5, Load5: 1.25, Load15: 1,
		Memory: collect.Memory{Total: 8 << 30, Used: 3 << 30, Available: 5 << 30, Free: 1 << 30, SwapTotal: 1 << 30, SwapUsed: 1 << 20},
		Filesystems: []collect.Filesystem{
			{Mount: "/boot", Device: "/dev/sda1", Type: "ext4", Total: 1 << 30, Used: 1 << 28, Free: 3 << 28},
			{Mount: "/", Device: "/dev/sda2", Type: "ext4", Total: 100 << 30, Used: 40 << 30, Free: 60 << 30},
		},
		Interfaces: []collect.NetInterface{{Name: "lo", RxBytes: 999, TxBytes: 999}, {Name: "eth0", RxBytes: 1000, TxBytes: 2000}},
	}
	ms := append(host.Metrics(ts.Unix()), collect.NginxSample{ActiveConnections: 11, Accepts: 40, Handled: 39,
		TotalRequests: 500, Reading: 1, Writing: 3, Waiting: 7, RequestsPerSecond: 2.5}.Metrics(ts.Unix())...)
	batch := agents.MetricsBatch{AgentID: b.online, WorkspaceID: b.ws, Batch: &agentv1.MetricsBatch{Timestamp: ts.Unix(), Metrics: ms}}
	for i := 0; i < 2; i++ {
		if err := b.mod.StoreHostMetrics(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.mod.StoreHostMetrics(ctx, agents.MetricsBatch{AgentID: b.online, WorkspaceID: b.ws, Batch: &agentv1.MetricsBatch{}}); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
	if err := b.mod.StoreHostMetrics(ctx, agents.MetricsBatch{Batch: batch.Batch}); err == nil {
		t.Fatal("a batch without its agent was stored")
	}
	var n int
	var load5 float64
	var rx, tx, avail, conns int64
	var fss string
	if err := b.a.Deps.Pool.QueryRow(ctx, `SELECT count(*), max(load_average_5m), max(net_rx_bytes), max(net_tx_bytes),
		max(memory_available_bytes), max(nginx_active_connections), max(filesystems::text) FROM host_metrics WHERE agent_id = $1`, b.online).
		Scan(&n, &load5, &rx, &tx, &avail, &conns, &fss); err != nil {
		t.Fatal(err)
	}
	if n != 1 || load5 != 1.25 || rx != 1000 || tx != 2000 || avail != 5<<30 || conns != 11 || !strings.Contains(fss, `"mount": "/boot"`) {
		t.Fatalf("%d rows, load5 %v, rx %d, tx %d, available %d, connections %d, filesystems %s", n, load5, rx, tx, avail, conns, fss)
	}
	var s AgentSummary
	b.get(t, "/v1/agents/"+b.online.String()+"/metrics", nil, &s)
	want := System{CPUPercent: 42.5, MemoryUsedBytes: 3 << 30, MemoryTotalBytes: 8 << 30, DiskUsedBytes: 40 << 30, DiskTotalBytes: 100 << 30,
		LoadAverage1m: 1.5, Timestamp: ts}
	if s.System == nil || !s.System.Timestamp.Equal(want.Timestamp) {
		t.Fatalf("system %+v, want %+v", s.System, want)
	}
	got := *s.System
	wantNginx := Nginx{ActiveConnections: 11, Accepts: 40, Handled: 39, Requests: 500, Reading: 1, Writing: 3, Waiting: 7, RequestsPerSecond: 2.5}
	if got.Nginx == nil || *got.Nginx != wantNginx {
		t.Fatalf("system.nginx %+v, want %+v", got.Nginx, wantNginx)
	}
	got.Timestamp, want.Timestamp, got.Nginx = time.Time{}, time.Time{}, nil
	if got != want {
		t.Fatalf("system %+v, want %+v", got, want)
	}
	// The newest sample's connections replace the health report's 7.
	if s.ActiveConnections != 11 {
		t.Fatalf("active_connections %d, want 11", s.ActiveConnections)
	}
	var ws Summary
	b.get(t, "/v1/workspaces/"+b.ws.String()+"/metrics", nil, &ws)
	if ws.ActiveConnections != 11 {
		t.Fatalf("workspace active_connections %d, want 11 (the offline agent does not count)", ws.ActiveConnections)
	}
}

// TestAPI_RetentionPerResolution deletes what is older than each resolution's
// retention and keeps the rest.
func TestAPI_RetentionPerResolution(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	now := time.Now().UTC()
	day := 24 * time.Hour
	zeros := make([]int64, numBuckets)
	for _, r := range []struct {
		table string
		age   time.Duration
	}{
		{tableMinute, time.Hour}, {tableMinute, 8 * day},
		{tableHour, 8 * day}, {tableHour, 91 * day},
	} {
		if _, err := b.a.Deps.Pool.Exec(ctx, "INSERT INTO "+r.table+" (workspace_id, agent_id, virtual_host_id, host, bucket, requests, latency_counts) VALUES ($1, $2, $3, '', $4, 1, $5)",
			b.ws, b.online, uuid.Nil, now.Add(-r.age).Truncate(time.Minute), zeros); err != nil {
			t.Fatal(err)
		}
	}
	for _, age := range []time.Duration{time.Minute, 8 * day} {
		if _, err := b.a.Deps.Pool.Exec(ctx, "INSERT INTO host_metrics (agent_id, workspace_id, ts) VALUES ($1, $2, $3)", b.online, b.ws, now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := b.mod.Service().ApplyRetention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.MinuteRows != 1 || res.HourRows != 1 || res.HostRows != 1 {
		t.Fatalf("deleted %+v, want one row of each", res)
	}
	for _, table := range []string{tableMinute, tableHour, "host_metrics"} {
		var n int
		if err := b.a.Deps.Pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%s: %d rows left (%v), want 1", table, n, err)
		}
	}
	// A range older than the minute retention is answered from the hours.
	var s Summary
	b.get(t, "/v1/workspaces/"+b.ws.String()+"/metrics", map[string]string{"from": rfc(now.Add(-9 * day)), "to": rfc(now)}, &s)
	if s.RequestsTotal != 1 {
		t.Fatalf("%d requests over 9 days, want 1 (the hourly row kept): %+v", s.RequestsTotal, s)
	}
}

// TestService_Percentile covers the histogram's edges.
func TestService_Percentile(t *testing.T) {
	counts := func(pairs ...float64) []int64 {
		c := make([]int64, numBuckets)
		for i := 0; i+1 < len(pairs); i += 2 {
			c[bucketOf(pairs[i])] += int64(pairs[i+1])
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		counts []int64
		q      float64
		want   float64
	}{
		{"Empty", counts(), 0.5, 0},
		{"FirstBucketFromZero", counts(0.5, 4), 0.5, 0.5},
		{"BoundaryBelongsToLowerBucket", counts(1, 1), 1, 1},
		{"Unbounded", counts(120000, 1), 0.99, 60000},
		{"Interpolated", counts(15, 10), 0.25, 12.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.counts, tc.q); got != tc.want {
				t.Fatalf("percentile %v = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

// TestService_RollupBoundsHostNames counts the host names past the batch's limit
// under host "", keeping the totals.
func TestService_RollupBoundsHostNames(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	svc := NewService(b.a.Deps, Options{MaxHostsPerBatch: 2})
	var es []*agentv1.AccessLogEntry
	for i := 0; i < 5; i++ {
		es = append(es, entry(b.base.Add(time.Duration(i)*time.Second), 200, 1, uuid.Nil, fmt.Sprintf("h%d.example.com", i)))
	}
	es = append(es, entry(b.base, 200, 1, uuid.Nil, "h0.example.com"), entry(b.base, 200, 1, uuid.Nil, "bad\x00host"))
	tx, err := b.a.Deps.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Rollup(ctx, tx, agents.LogBatch{AgentID: b.online, WorkspaceID: b.ws, Access: &agentv1.AccessLogBatch{Entries: es}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := b.a.Deps.Pool.Query(ctx, "SELECT host, requests FROM traffic_minute WHERE agent_id = $1 ORDER BY host", b.online)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for rows.Next() {
		var h string
		var n int64
		if err := rows.Scan(&h, &n); err != nil {
			t.Fatal(err)
		}
		got[h] = n
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	want := map[string]int64{"h0.example.com": 2, "h1.example.com": 1, "": 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows %v, want %v", got, want)
	}
}

// TestService_HostMetricsPartitionedAndRolledUpHourly stores host samples into
// their day's partition and counts each once in its hour; hour-step series
// come from the hourly rollups, which outlive the samples; retention drops
// whole days.
func TestService_HostMetricsPartitionedAndRolledUpHourly(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	svc := b.mod.Service()
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	store := func(ts time.Time, cpu float64, conns uint64) {
		t.Helper()
		host := collect.HostSample{CPUPercent: cpu, Load1: cpu / 10, Memory: collect.Memory{Total: 8 << 30, Used: 2 << 30}}
		ms := append(host.Metrics(ts.Unix()), collect.NginxSample{ActiveConnections: conns}.Metrics(ts.Unix())...)
		batch := agents.MetricsBatch{AgentID: b.online, WorkspaceID: b.ws, Batch: &agentv1.MetricsBatch{Timestamp: ts.Unix(), Metrics: ms}}
		if err := b.mod.StoreHostMetrics(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	store(hour.Add(5*time.Minute), 10, 3)
	store(hour.Add(10*time.Minute), 20, 9)
	store(hour.Add(10*time.Minute), 20, 9) // sent again: stored and counted once
	store(hour.Add(50*time.Minute), 60, 4)
	store(hour.Add(70*time.Minute), 50, 1)

	var parts []string
	rows, err := b.a.Deps.Pool.Query(ctx, "SELECT DISTINCT tableoid::regclass::text FROM host_metrics")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, n)
	}
	rows.Close()
	wantPart := "host_metrics_p" + hour.Format("20060102")
	if len(parts) == 0 || !slices.Contains(parts, wantPart) || slices.Contains(parts, "host_metrics_default") {
		t.Fatalf("samples stored in %v, want %s", parts, wantPart)
	}

	var samples int64
	var cpuSum, cpuMax float64
	if err := b.a.Deps.Pool.QueryRow(ctx, `SELECT samples, cpu_percent_sum, cpu_percent_max FROM host_metrics_hour
		WHERE agent_id = $1 AND bucket = $2`, b.online, hour).Scan(&samples, &cpuSum, &cpuMax); err != nil {
		t.Fatal(err)
	}
	if samples != 3 || cpuSum != 90 || cpuMax != 60 {
		t.Fatalf("hour rollup: %d samples, cpu sum %v, max %v; want 3, 90, 60", samples, cpuSum, cpuMax)
	}

	check := func(what string) {
		t.Helper()
		pts, err := svc.HostSeries(ctx, b.online, hour, hour.Add(2*time.Hour), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) != 2 || pts[0].Samples != 3 || pts[0].CPUPercent != 30 || pts[0].ActiveConnections == nil || *pts[0].ActiveConnections != 9 ||
			pts[1].Samples != 1 || pts[1].CPUPercent != 50 || pts[0].MemoryUsedBytes != 2<<30 {
			t.Fatalf("%s: hourly series %+v", what, pts)
		}
	}
	check("with samples")
	// The hourly rollups answer once the samples are gone.
	if _, err := b.a.Deps.Pool.Exec(ctx, "DELETE FROM host_metrics WHERE agent_id = $1", b.online); err != nil {
		t.Fatal(err)
	}
	check("from the rollups alone")

	// A sample from before the retention window lands in the default
	// partition; retention drops whole old days and the default's old rows.
	old := time.Now().UTC().Add(-30 * 24 * time.Hour)
	store(old, 5, 0)
	oldDay := time.Now().UTC().Add(-20 * 24 * time.Hour)
	if err := svc.hostParts.Ensure(ctx, oldDay); err != nil {
		t.Fatal(err)
	}
	if _, err := b.a.Deps.Pool.Exec(ctx, "INSERT INTO host_metrics (agent_id, workspace_id, ts) VALUES ($1, $2, $3)", b.online, b.ws, oldDay); err != nil {
		t.Fatal(err)
	}
	res, err := svc.ApplyRetention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.HostPartitions, "host_metrics_p"+oldDay.Format("20060102")) || res.HostRows != 1 {
		t.Fatalf("retention %+v: want the 20-day-old partition dropped and the 30-day-old default row deleted", res)
	}
	days, err := svc.HostPartitions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range days {
		if d.Before(app.DayOf(time.Now().Add(-8 * 24 * time.Hour))) {
			t.Fatalf("partition of %s kept", d.Format(time.DateOnly))
		}
	}
	if err := svc.EnsureHostPartitionsAhead(ctx); err != nil {
		t.Fatal(err)
	}
	if days, _ = svc.HostPartitions(ctx); len(days) == 0 || !days[len(days)-1].Equal(app.DayOf(time.Now()).AddDate(0, 0, HostPartitionsAhead)) {
		t.Fatalf("partitions after EnsureHostPartitionsAhead: %v", days)
	}
}
