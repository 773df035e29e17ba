package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nxmesh/nxmesh/modules/agents"
)

// Prometheus figures.
//
// The master's /metrics carries the fleet's state through fleetCollector:
// it queries the database when scraped, at most once per fleetCacheTTL (a
// scrape within it is answered from the previous figures), and every label
// takes values from a bounded set: agent states, apply results and
// certificate statuses are fixed lists, workspace_id is one of the
// workspaces the administrators created.
//
//	nxmesh_fleet_agents{workspace_id, state}            agents by state
//	nxmesh_fleet_agent_applies{result}                  agents by the result of their last apply
//	nxmesh_fleet_config_versions_behind{workspace_id}   the most configuration versions an agent lags behind
//	nxmesh_fleet_agents_behind{workspace_id}            agents not on the workspace's configuration version
//	nxmesh_fleet_certificates{status}                   certificates by status
//	nxmesh_fleet_certificate_days_left_min              smallest days left of an active or expiring certificate
//	nxmesh_fleet_ingest_lag_seconds{kind}               metrics: the stalest online agent's newest host sample;
//	                                                    logs: the newest stored log batch
//	nxmesh_fleet_collect_errors_total                   failed fleet queries (the figures are then left out)
//
// GET /v1/workspaces/:id/metrics/prometheus serves a workspace's traffic per
// virtual host (or stream) in the text exposition format: counters summed
// over the hourly rollups, which are counted at ingest and so are current
// (they fall when metrics.retention_hour deletes old hours, which
// Prometheus reads as a counter reset), and the latency histogram of the
// same buckets as the rollups (LatencyBucketsMs), in seconds. The rollups
// keep bucket counts only, so the histogram has no _sum.

// fleetCacheTTL is how long a scrape's fleet figures answer later scrapes.
const fleetCacheTTL = 10 * time.Second

// applyResults are the values of agents.apply_status, "none" for ”.
var applyResults = []string{"none", "pending", "validating", "applying", "success", "failed", "rolled_back"}

// certStatuses are the values of certificates.status.
var certStatuses = []string{"pending", "active", "expiring", "expired", "failed"}

var (
	descAgents        = prometheus.NewDesc("nxmesh_fleet_agents", "Agents by workspace and state.", []string{"workspace_id", "state"}, nil)
	descApplies       = prometheus.NewDesc("nxmesh_fleet_agent_applies", "Agents by the result of their last configuration apply.", []string{"result"}, nil)
	descBehind        = prometheus.NewDesc("nxmesh_fleet_config_versions_behind", "The most configuration versions an agent of the workspace lags behind the workspace's version.", []string{"workspace_id"}, nil)
	descAgentsBehind  = prometheus.NewDesc("nxmesh_fleet_agents_behind", "Agents of the workspace whose applied configuration version is not the workspace's.", []string{"workspace_id"}, nil)
	descCerts         = prometheus.NewDesc("nxmesh_fleet_certificates", "Certificates by status.", []string{"status"}, nil)
	descCertDaysLeft  = prometheus.NewDesc("nxmesh_fleet_certificate_days_left_min", "Smallest number of days left before an active or expiring certificate expires.", nil, nil)
	descIngestLag     = prometheus.NewDesc("nxmesh_fleet_ingest_lag_seconds", "metrics: age of the stalest online agent's newest host sample; logs: age of the newest stored log batch.", []string{"kind"}, nil)
	descCollectErrors = prometheus.NewDesc("nxmesh_fleet_collect_errors_total", "Fleet figure queries that failed.", nil, nil)
)

// fleetCollector is the prometheus.Collector of the fleet figures.
type fleetCollector struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex
	at      time.Time
	cached  []prometheus.Metric
	errors  float64
	queryCt int // queries run, for tests
}

var _ prometheus.Collector = (*fleetCollector)(nil)

func newFleetCollector(pool *pgxpool.Pool, logger *slog.Logger, now func() time.Time) *fleetCollector {
	return &fleetCollector{pool: pool, logger: logger, now: now}
}

// Describe sends the descriptors.
func (f *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAgents, descApplies, descBehind, descAgentsBehind, descCerts, descCertDaysLeft, descIngestLag, descCollectErrors} {
		ch <- d
	}
}

// Collect sends the figures, queried again when the cached ones are older
// than fleetCacheTTL.
func (f *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cached == nil || time.Since(f.at) >= fleetCacheTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ms, err := f.query(ctx)
		cancel()
		f.queryCt++
		if err != nil {
			f.errors++
			f.logger.Warn("metrics: collect fleet figures", "error", err)
			ms = nil
		}
		f.cached, f.at = ms, time.Now()
	}
	for _, m := range f.cached {
		ch <- m
	}
	ch <- prometheus.MustNewConstMetric(descCollectErrors, prometheus.CounterValue, f.errors)
}

func (f *fleetCollector) query(ctx context.Context) ([]prometheus.Metric, error) {
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	// agents, workspaces and certificates are the agents', orgs' and certs'
	// modules' tables: read only.
	rows, err := f.pool.Query(ctx, `SELECT w.id, s.state, count(a.id)
		FROM workspaces w CROSS JOIN unnest($1::text[]) AS s(state)
		LEFT JOIN agents a ON a.workspace_id = w.id AND a.state = s.state
		WHERE EXISTS (SELECT 1 FROM agents x WHERE x.workspace_id = w.id)
		GROUP BY w.id, s.state ORDER BY w.id, s.state`,
		[]string{agents.StatePending, agents.StateOnline, agents.StateDegraded, agents.StateOffline})
	if err != nil {
		return nil, fmt.Errorf("count agents by state: %w", err)
	}
	for rows.Next() {
		var ws uuid.UUID
		var state string
		var n int64
		if err := rows.Scan(&ws, &state, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count agents by state: %w", err)
		}
		gauge(descAgents, float64(n), ws.String(), state)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count agents by state: %w", err)
	}

	applies := map[string]int64{}
	rows, err = f.pool.Query(ctx, `SELECT apply_status, count(*) FROM agents GROUP BY apply_status`)
	if err != nil {
		return nil, fmt.Errorf("count applies by result: %w", err)
	}
	for rows.Next() {
		var status string
		var n int64
		if err := rows.Scan(&status, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count applies by result: %w", err)
		}
		if status == "" {
			status = "none"
		}
		applies[status] += n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count applies by result: %w", err)
	}
	for _, r := range applyResults {
		gauge(descApplies, float64(applies[r]), r)
	}

	rows, err = f.pool.Query(ctx, `SELECT w.id, coalesce(max(greatest(w.config_version - a.applied_version, 0)), 0),
			count(*) FILTER (WHERE a.applied_version <> w.config_version)
		FROM workspaces w JOIN agents a ON a.workspace_id = w.id
		WHERE a.state <> 'pending' GROUP BY w.id ORDER BY w.id`)
	if err != nil {
		return nil, fmt.Errorf("count configuration versions behind: %w", err)
	}
	for rows.Next() {
		var ws uuid.UUID
		var behind, n int64
		if err := rows.Scan(&ws, &behind, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count configuration versions behind: %w", err)
		}
		gauge(descBehind, float64(behind), ws.String())
		gauge(descAgentsBehind, float64(n), ws.String())
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count configuration versions behind: %w", err)
	}

	certs := map[string]int64{}
	rows, err = f.pool.Query(ctx, `SELECT status, count(*) FROM certificates GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count certificates by status: %w", err)
	}
	for rows.Next() {
		var status string
		var n int64
		if err := rows.Scan(&status, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count certificates by status: %w", err)
		}
		certs[status] += n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count certificates by status: %w", err)
	}
	for _, s := range certStatuses {
		gauge(descCerts, float64(certs[s]), s)
	}
	now := f.now()
	var minExpiry *time.Time
	if err := f.pool.QueryRow(ctx, `SELECT min(expires_at) FROM certificates
		WHERE status IN ('active', 'expiring') AND expires_at IS NOT NULL`).Scan(&minExpiry); err != nil {
		return nil, fmt.Errorf("find the next certificate expiry: %w", err)
	}
	if minExpiry != nil {
		gauge(descCertDaysLeft, math.Round(minExpiry.Sub(now).Hours()/24*100)/100)
	}

	var stalest, newestBatch *time.Time
	if err := f.pool.QueryRow(ctx, `SELECT min(h.ts) FROM agents a JOIN LATERAL (
			SELECT max(ts) AS ts FROM host_metrics m WHERE m.agent_id = a.id) h ON true
		WHERE a.state IN ('online', 'degraded') AND h.ts IS NOT NULL`).Scan(&stalest); err != nil {
		return nil, fmt.Errorf("find the stalest host sample: %w", err)
	}
	if err := f.pool.QueryRow(ctx, `SELECT max(received_at) FROM log_batches`).Scan(&newestBatch); err != nil {
		return nil, fmt.Errorf("find the newest log batch: %w", err)
	}
	for kind, t := range map[string]*time.Time{"metrics": stalest, "logs": newestBatch} {
		if t != nil {
			gauge(descIngestLag, math.Max(0, now.Sub(*t).Seconds()), kind)
		}
	}
	return out, nil
}

// registerFleet registers c on reg, once per registry (a second module on
// the same registry keeps the first collector).
func registerFleet(reg prometheus.Registerer, c prometheus.Collector) {
	if reg == nil {
		return
	}
	if err := reg.Register(c); err != nil {
		if _, ok := err.(prometheus.AlreadyRegisteredError); !ok {
			panic(fmt.Sprintf("register fleet collector: %v", err))
		}
	}
}

// ---- Workspace exposition ----

// vhostTraffic is one virtual host's (or stream's) cumulative traffic.
type vhostTraffic struct {
	id, name string
	requests int64
	status   [5]int64
	in, out  int64
	latency  []int64
}

// WritePrometheus writes the workspace's per-virtual-host traffic in the
// Prometheus text exposition format (version 0.0.4) to w.
func (s *Service) WritePrometheus(ctx context.Context, workspaceID uuid.UUID, w io.Writer) error {
	// virtual_hosts and streams are the vhosts module's: read only, for names.
	rows, err := s.pool.Query(ctx, `SELECT t.virtual_host_id, coalesce(v.name, st.name, ''), sum(t.requests)::bigint,
			sum(t.status_1xx)::bigint, sum(t.status_2xx)::bigint, sum(t.status_3xx)::bigint, sum(t.status_4xx)::bigint,
			sum(t.status_5xx)::bigint, sum(t.in_bytes)::bigint, sum(t.out_bytes)::bigint, `+sumCounts("t.latency_counts")+`
		FROM traffic_hour t
		LEFT JOIN virtual_hosts v ON v.id = t.virtual_host_id AND v.workspace_id = t.workspace_id
		LEFT JOIN streams st ON st.id = t.virtual_host_id AND st.workspace_id = t.workspace_id
		WHERE t.workspace_id = $1
		GROUP BY 1, 2 ORDER BY 1`, workspaceID)
	if err != nil {
		return fmt.Errorf("read traffic of workspace %s: %w", workspaceID, err)
	}
	var vhs []vhostTraffic
	for rows.Next() {
		var id uuid.UUID
		var v vhostTraffic
		if err := rows.Scan(&id, &v.name, &v.requests, &v.status[0], &v.status[1], &v.status[2], &v.status[3], &v.status[4],
			&v.in, &v.out, &v.latency); err != nil {
			rows.Close()
			return fmt.Errorf("read traffic of workspace %s: %w", workspaceID, err)
		}
		if id != uuid.Nil {
			v.id = id.String()
		}
		vhs = append(vhs, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read traffic of workspace %s: %w", workspaceID, err)
	}
	bw := bufio.NewWriter(w)
	labels := func(v vhostTraffic, extra ...string) string {
		var b strings.Builder
		b.WriteString(`{virtual_host_id="`)
		b.WriteString(escapeLabel(v.id))
		b.WriteString(`",virtual_host="`)
		b.WriteString(escapeLabel(v.name))
		b.WriteString(`"`)
		for i := 0; i+1 < len(extra); i += 2 {
			b.WriteString("," + extra[i] + `="` + escapeLabel(extra[i+1]) + `"`)
		}
		b.WriteString("}")
		return b.String()
	}
	family := func(name, typ, help string, each func(v vhostTraffic)) {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, v := range vhs {
			each(v)
		}
	}
	family("nxmesh_vhost_requests_total", "counter", "Requests served, by virtual host or stream (empty virtual_host_id: traffic of no known virtual host).", func(v vhostTraffic) {
		fmt.Fprintf(bw, "nxmesh_vhost_requests_total%s %d\n", labels(v), v.requests)
	})
	family("nxmesh_vhost_responses_total", "counter", "Responses by status class.", func(v vhostTraffic) {
		for i, n := range v.status {
			fmt.Fprintf(bw, "nxmesh_vhost_responses_total%s %d\n", labels(v, "status_class", strconv.Itoa(i+1)+"xx"), n)
		}
	})
	family("nxmesh_vhost_received_bytes_total", "counter", "Bytes received from clients (request length; streams: bytes received).", func(v vhostTraffic) {
		fmt.Fprintf(bw, "nxmesh_vhost_received_bytes_total%s %d\n", labels(v), v.in)
	})
	family("nxmesh_vhost_sent_bytes_total", "counter", "Bytes sent to clients.", func(v vhostTraffic) {
		fmt.Fprintf(bw, "nxmesh_vhost_sent_bytes_total%s %d\n", labels(v), v.out)
	})
	family("nxmesh_vhost_request_duration_seconds", "histogram", "Request time (streams: session time); bucket counts only, no _sum.", func(v vhostTraffic) {
		var cum, total int64
		for _, c := range v.latency {
			total += c
		}
		for i, bound := range LatencyBucketsMs {
			if i < len(v.latency) {
				cum += v.latency[i]
			}
			le := strconv.FormatFloat(bound/1000, 'g', -1, 64)
			fmt.Fprintf(bw, "nxmesh_vhost_request_duration_seconds_bucket%s %d\n", labels(v, "le", le), cum)
		}
		fmt.Fprintf(bw, "nxmesh_vhost_request_duration_seconds_bucket%s %d\n", labels(v, "le", "+Inf"), total)
		fmt.Fprintf(bw, "nxmesh_vhost_request_duration_seconds_count%s %d\n", labels(v), total)
	})
	return bw.Flush()
}

// escapeLabel escapes a label value for the text format.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
