package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/agents"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/logs"
	"github.com/nxmesh/nxmesh/modules/metrics"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

const (
	metricsDays     = 30
	metricsVHosts   = 100
	metricsAgents   = 10
	metricsRequests = 10 // sequential requests per measured query
)

// metricsStack is a master with the auth, orgs, logs and metrics modules in
// its own database; rollup says whether the logs module rolls traffic up.
type metricsStack struct {
	pool  *pgxpool.Pool
	logs  *logs.Module
	base  string
	token string
	ws    uuid.UUID
	agent []uuid.UUID
}

func newMetricsStack(b *testing.B, rollup bool) *metricsStack {
	b.Helper()
	ctx := context.Background()
	a := apptest.NewApp(b, func(c *app.Config) {
		c.Auth.RateLimitPerMinute = 1 << 30
		c.Database.MaxConns = 20
	})
	base := orgstest.New(b, a)
	authMod, orgsMod := base.Auth, base.Orgs
	metricsMod, err := metrics.New(a.Deps, metrics.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var lo logs.Options
	if rollup {
		lo.RollupFunc = metricsMod.Rollup
	}
	logsMod, err := logs.New(a.Deps, lo)
	if err != nil {
		b.Fatal(err)
	}
	base.Mount(b, logsMod, metricsMod)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = logsMod.Run(runCtx) }()
	b.Cleanup(func() { cancel(); <-done })

	user, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: "metrics@example.com", Password: "bench-password-1"})
	if err != nil {
		b.Fatal(err)
	}
	org, err := orgsMod.Service().CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Bench", Slug: "bench", OwnerID: user.ID})
	if err != nil {
		b.Fatal(err)
	}
	ws, err := orgsMod.Service().CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "Metrics", Slug: "metrics"})
	if err != nil {
		b.Fatal(err)
	}
	s := &metricsStack{pool: a.Deps.Pool, logs: logsMod, ws: ws.ID}
	for i := range metricsAgents {
		var id uuid.UUID
		if err := s.pool.QueryRow(ctx, "INSERT INTO agents (workspace_id, name, state) VALUES ($1, $2, $3) RETURNING id",
			ws.ID, fmt.Sprintf("agent-%02d", i), agents.StateOnline).Scan(&id); err != nil {
			b.Fatal(err)
		}
		s.agent = append(s.agent, id)
	}
	s.base = serve(b, a.Fiber())
	s.token = login(b, s.base, "metrics@example.com", "bench-password-1")
	return s
}

// BenchmarkMetricsQuery reads a workspace's traffic over 30 days of hourly
// rollups (100 virtual hosts × 10 agents, 720,000 rows) through the API, as
// totals and as an hourly series, beside a plain SELECT of the same
// aggregation over the same rows in the same database, and prints p50/p95
// and the ratio to the SELECT.
func BenchmarkMetricsQuery(b *testing.B) {
	ctx := context.Background()
	s := newMetricsStack(b, true)
	to := time.Now().UTC().Truncate(time.Hour)
	from := to.Add(-metricsDays * 24 * time.Hour)
	zeros := make([]int64, len(metrics.LatencyBucketsMs)+1)
	started := time.Now()
	tag, err := s.pool.Exec(ctx, `INSERT INTO traffic_hour (workspace_id, agent_id, virtual_host_id, host, bucket, requests,
			status_2xx, status_3xx, status_4xx, status_5xx, in_bytes, out_bytes, latency_counts)
		SELECT $1, a.id, v.id, 'host-' || v.n || '.example.com', h.bucket, 100, 90, 5, 4, 1, 10000, 100000, $4::bigint[]
		FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 hour', interval '1 hour') AS h(bucket)
		CROSS JOIN unnest($5::uuid[]) AS a(id)
		CROSS JOIN (SELECT n, md5('vh' || n)::uuid AS id FROM generate_series(1, $6::int) AS n) AS v`,
		s.ws, from, to, zeros, s.agent, metricsVHosts)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "ANALYZE traffic_hour"); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\nmetrics query: %d hourly rollup rows (%d days × %d virtual hosts × %d agents) inserted in %s\n",
		tag.RowsAffected(), metricsDays, metricsVHosts, metricsAgents, time.Since(started).Round(time.Millisecond))

	rangeQ := "from=" + from.Format(time.RFC3339) + "&to=" + to.Format(time.RFC3339)
	path := "/v1/workspaces/" + s.ws.String() + "/metrics?" + rangeQ
	// The same sums straight from SQL: the counters and one sum per latency
	// bucket.
	var lat []string
	for i := range len(metrics.LatencyBucketsMs) + 1 {
		lat = append(lat, fmt.Sprintf("sum(latency_counts[%d])", i+1))
	}
	plainTotals := `SELECT sum(requests), sum(status_1xx), sum(status_2xx), sum(status_3xx), sum(status_4xx), sum(status_5xx),
			sum(in_bytes), sum(out_bytes), ` + strings.Join(lat, ", ") + `
		FROM traffic_hour WHERE workspace_id = $1 AND bucket >= $2 AND bucket < $3`
	plainSeries := `SELECT bucket, sum(requests), sum(status_1xx), sum(status_2xx), sum(status_3xx), sum(status_4xx),
			sum(status_5xx), sum(in_bytes), sum(out_bytes), ` + strings.Join(lat, ", ") + `
		FROM traffic_hour WHERE workspace_id = $1 AND bucket >= $2 AND bucket < $3 GROUP BY bucket ORDER BY bucket`
	cl := client()
	defer closeIdle(cl)
	cases := []struct {
		name  string
		api   string
		plain string
	}{
		{"Totals30d", path, plainTotals},
		{"Hourly30d", path + "&interval=1h", plainSeries},
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "query\tAPI p50 ms\tAPI p95 ms\tSELECT p50 ms\tSELECT p95 ms\tp50 ratio\tp95 ratio")
	for _, c := range cases {
		body := get(b, s.base+c.api, s.token)
		if len(body) == 0 {
			b.Fatalf("%s: empty answer", c.name)
		}
		var api, plain []time.Duration
		for range metricsRequests {
			t0 := time.Now()
			get(b, s.base+c.api, s.token)
			api = append(api, time.Since(t0))
		}
		for range metricsRequests {
			t0 := time.Now()
			rows, err := s.pool.Query(ctx, c.plain, s.ws, from, to)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			if err := rows.Err(); err != nil {
				b.Fatal(err)
			}
			rows.Close()
			plain = append(plain, time.Since(t0))
			if n == 0 {
				b.Fatalf("%s: plain SELECT returned no row", c.name)
			}
		}
		a50, a95 := percentile(api, 0.50), percentile(api, 0.95)
		p50, p95 := percentile(plain, 0.50), percentile(plain, 0.95)
		fmt.Fprintf(w, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f×\t%.2f×\n", c.name, ms(a50), ms(a95), ms(p50), ms(p95),
			float64(a50)/float64(p50), float64(a95)/float64(p95))
		b.ReportMetric(ms(a50), c.name+"-p50-ms")
	}
	_ = w.Flush()
}

// BenchmarkMetricsRollupIngest stores the same access-log batches through
// the logs module's ingest with and without the metrics module's
// RollupFunc, each in its own database, and prints lines/s and the ratio.
func BenchmarkMetricsRollupIngest(b *testing.B) {
	const (
		batches   = 40
		batchSize = 500
	)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Printf("\nrollup cost: %d batches of %d access-log lines, %d agents, %d virtual hosts\n", batches, batchSize, metricsAgents, metricsVHosts)
	fmt.Fprintln(w, "ingest\tlines/s\tms per batch")
	var rates [2]float64
	for i, rollup := range []bool{false, true} {
		s := newMetricsStack(b, rollup)
		now := time.Now().UTC().Add(-time.Minute)
		all := make([]agents.LogBatch, batches)
		for n := range batches {
			entries := make([]*agentv1.AccessLogEntry, batchSize)
			for j := range entries {
				v := (n*batchSize + j) % metricsVHosts
				entries[j] = &agentv1.AccessLogEntry{TimestampMs: now.Add(time.Duration(j) * time.Millisecond).UnixMilli(),
					Method: "GET", Uri: fmt.Sprintf("/p/%d", j), Host: fmt.Sprintf("host-%d.example.com", v),
					Status: []uint32{200, 200, 200, 301, 404, 500}[j%6], RequestTimeMs: float64(j % 300),
					RequestLength: 300, BytesSent: 2000, BodyBytesSent: 1800, Kind: "http",
					VirtualHostId: uuid.NewSHA1(uuid.NameSpaceURL, fmt.Appendf(nil, "vh%d", v)).String()}
			}
			all[n] = agents.LogBatch{AgentID: s.agent[n%metricsAgents], WorkspaceID: s.ws,
				Access: &agentv1.AccessLogBatch{BatchId: fmt.Sprintf("b-%d", n), Entries: entries}}
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failed []string
		wg.Add(batches)
		started := time.Now()
		for n := range all {
			all[n].Ack = func(a *agentv1.Ack) bool {
				if !a.GetSuccess() {
					mu.Lock()
					failed = append(failed, a.GetMessageId()+": "+a.GetErrorMessage())
					mu.Unlock()
				}
				wg.Done()
				return true
			}
			s.logs.Ingest(context.Background(), all[n])
		}
		wg.Wait()
		took := time.Since(started)
		if len(failed) > 0 {
			b.Fatalf("batches refused: %v", failed)
		}
		var stored int64
		if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM access_logs WHERE workspace_id = $1", s.ws).Scan(&stored); err != nil {
			b.Fatal(err)
		}
		if stored != batches*batchSize {
			b.Fatalf("%d lines stored, want %d", stored, batches*batchSize)
		}
		var rolled int64
		if err := s.pool.QueryRow(context.Background(), "SELECT coalesce(sum(requests), 0) FROM traffic_minute WHERE workspace_id = $1", s.ws).Scan(&rolled); err != nil {
			b.Fatal(err)
		}
		if want := map[bool]int64{false: 0, true: batches * batchSize}[rollup]; rolled != want {
			b.Fatalf("rollup %v: %d requests rolled up, want %d", rollup, rolled, want)
		}
		rates[i] = float64(batches*batchSize) / took.Seconds()
		name := map[bool]string{false: "without RollupFunc", true: "with RollupFunc"}[rollup]
		fmt.Fprintf(w, "%s\t%.0f\t%.1f\n", name, rates[i], ms(took)/batches)
	}
	fmt.Fprintf(w, "rollup cost\t%.2f× the lines/s without\t\n", rates[1]/rates[0])
	_ = w.Flush()
	b.ReportMetric(rates[1], "lines/s-rollup")
}
