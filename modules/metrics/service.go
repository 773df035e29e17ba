package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/agents"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Service holds the module's domain logic: the rollups at ingest, the host
// samples, the queries and the retention. Every statement goes through the
// pgx pool or the logs module's pgx transaction (the rollups run inside it).
type Service struct {
	pool            *pgxpool.Pool
	logger          *slog.Logger
	now             func() time.Time
	retentionMinute time.Duration
	retentionHour   time.Duration
	maxHosts        int
	// hostParts are host_metrics' daily partitions.
	hostParts *app.DailyPartitions
}

// hostPartitionLock serializes host_metrics partition changes across
// replicas (pg_advisory_xact_lock key).
const hostPartitionLock = 0x6e78686f7374 // "nxhost"

// HostPartitionsAhead is how many days after today get a host_metrics
// partition ahead (job metrics.partitions).
const HostPartitionsAhead = 3

// NewService returns the service over d.Pool, with d's logger, clock and
// metrics retention (metrics.retention_minute, metrics.retention_hour).
func NewService(d app.Deps, opts Options) *Service {
	maxHosts := opts.MaxHostsPerBatch
	if maxHosts <= 0 {
		maxHosts = DefaultMaxHostsPerBatch
	}
	return &Service{pool: d.Pool, logger: d.Logger, now: d.Clock, retentionMinute: d.Config.Metrics.RetentionMinute,
		retentionHour: d.Config.Metrics.RetentionHour, maxHosts: maxHosts,
		hostParts: app.NewDailyPartitions(d.Pool, "host_metrics", "ts", hostPartitionLock)}
}

// DefaultMaxHostsPerBatch is Options.MaxHostsPerBatch when it is not set.
const DefaultMaxHostsPerBatch = 64

// Rollup tables, by resolution.
const (
	tableMinute = "traffic_minute"
	tableHour   = "traffic_hour"
)

// ---- Rollups ----

// rollKey is one rollup row of a batch.
type rollKey struct {
	vh     uuid.UUID
	host   string
	bucket time.Time
}

type rollRow struct {
	requests int64
	status   [5]int64
	in, out  int64
	latency  []int64
}

func (r *rollRow) add(o *rollRow) {
	r.requests += o.requests
	for i := range r.status {
		r.status[i] += o.status[i]
	}
	r.in += o.in
	r.out += o.out
	for i := range r.latency {
		r.latency[i] += o.latency[i]
	}
}

// maxEntryBytes bounds the bytes one entry adds, so sums cannot overflow.
const maxEntryBytes = 1 << 44

func clampBytes(v uint64) int64 { return int64(min(v, maxEntryBytes)) }

// normalHost is a host name as rollups key it: lower case, without a
// trailing dot; "" when it is not storable text.
func normalHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	if len(h) > maxHostLen || !utf8.ValidString(h) || strings.IndexByte(h, 0) >= 0 {
		return ""
	}
	return h
}

// Rollup counts an access-log batch into the per-minute and hourly rollups
// of its workspace, agent, virtual host (or stream) and host name, in tx:
// the logs module's transaction that stores the batch (logs.RollupFunc), so
// the counts commit with the rows, once per batch. A stream's session
// (virtual_host_id empty, stream_id set) counts under its stream's id.
// Entries without a
// timestamp count at now, as they are stored. Past s.maxHosts distinct host
// names in one batch, the others count under host "". Rows are upserted in
// key order, so concurrent batches of an agent wait for each other instead
// of deadlocking.
func (s *Service) Rollup(ctx context.Context, tx pgx.Tx, b agents.LogBatch, now time.Time) error {
	if b.Access == nil || len(b.Access.GetEntries()) == 0 {
		return nil
	}
	if b.AgentID == uuid.Nil || b.WorkspaceID == uuid.Nil {
		return ErrNoAgent
	}
	minutes := map[rollKey]*rollRow{}
	hosts := map[string]bool{}
	for _, e := range b.Access.GetEntries() {
		ts := now
		if ms := e.GetTimestampMs(); ms > 0 {
			ts = time.UnixMilli(ms)
		}
		k := rollKey{bucket: ts.UTC().Truncate(time.Minute), host: normalHost(e.GetHost())}
		if id, err := uuid.Parse(e.GetVirtualHostId()); err == nil {
			k.vh = id
		} else if id, err := uuid.Parse(e.GetStreamId()); err == nil {
			k.vh = id // a stream's session: its stream is the key
		}
		if k.host != "" && !hosts[k.host] {
			if len(hosts) >= s.maxHosts {
				k.host = ""
			} else {
				hosts[k.host] = true
			}
		}
		r := minutes[k]
		if r == nil {
			r = &rollRow{latency: make([]int64, numBuckets)}
			minutes[k] = r
		}
		r.requests++
		if c := e.GetStatus() / 100; c >= 1 && c <= 5 {
			r.status[c-1]++
		}
		r.in += clampBytes(e.GetRequestLength())
		r.out += clampBytes(e.GetBytesSent())
		ms := e.GetRequestTimeMs()
		if math.IsNaN(ms) || ms < 0 {
			ms = 0
		}
		r.latency[bucketOf(ms)]++
	}
	hours := map[rollKey]*rollRow{}
	for k, r := range minutes {
		hk := k
		hk.bucket = k.bucket.Truncate(time.Hour)
		h := hours[hk]
		if h == nil {
			h = &rollRow{latency: make([]int64, numBuckets)}
			hours[hk] = h
		}
		h.add(r)
	}
	batch := &pgx.Batch{}
	for _, t := range []struct {
		table string
		rows  map[rollKey]*rollRow
	}{{tableMinute, minutes}, {tableHour, hours}} {
		queueRollupUpsert(batch, t.table, b.WorkspaceID, b.AgentID, t.rows)
	}
	br := tx.SendBatch(ctx, batch)
	for i := 0; i < batch.Len(); i++ {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return fmt.Errorf("upsert traffic rollups of agent %s: %w", b.AgentID, err)
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("upsert traffic rollups of agent %s: %w", b.AgentID, err)
	}
	return nil
}

// queueRollupUpsert queues one statement that adds rows into table: the
// rows travel as one array per column (latency counts as one flat array
// sliced per row) and are upserted in key order, so concurrent batches of an
// agent wait for each other instead of deadlocking.
func queueRollupUpsert(batch *pgx.Batch, table string, ws, agent uuid.UUID, rows map[rollKey]*rollRow) {
	keys := make([]rollKey, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b rollKey) int {
		if c := a.bucket.Compare(b.bucket); c != 0 {
			return c
		}
		if c := bytes.Compare(a.vh[:], b.vh[:]); c != 0 {
			return c
		}
		return strings.Compare(a.host, b.host)
	})
	n := len(keys)
	buckets := make([]time.Time, n)
	vhs := make([]uuid.UUID, n)
	hosts := make([]string, n)
	var cols [9][]int64 // requests, status 1xx…5xx, in, out
	for i := range cols {
		cols[i] = make([]int64, n)
	}
	latency := make([]int64, 0, n*numBuckets)
	for i, k := range keys {
		r := rows[k]
		buckets[i], vhs[i], hosts[i] = k.bucket, k.vh, k.host
		cols[0][i] = r.requests
		for c := range r.status {
			cols[1+c][i] = r.status[c]
		}
		cols[6][i], cols[7][i] = r.in, r.out
		latency = append(latency, r.latency...)
	}
	q := `INSERT INTO ` + table + ` AS t (workspace_id, bucket, agent_id, virtual_host_id, host, requests,
			status_1xx, status_2xx, status_3xx, status_4xx, status_5xx, in_bytes, out_bytes, latency_counts)
		SELECT $1, r.bucket, $2, r.vh, r.host, r.requests, r.s1, r.s2, r.s3, r.s4, r.s5, r.inb, r.outb,
			($14::bigint[])[((r.o - 1) * $15 + 1):(r.o * $15)]
		FROM unnest($3::timestamptz[], $4::uuid[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[],
			$9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[])
			WITH ORDINALITY AS r(bucket, vh, host, requests, s1, s2, s3, s4, s5, inb, outb, o)
		ORDER BY r.o
		ON CONFLICT (workspace_id, bucket, agent_id, virtual_host_id, host) DO UPDATE SET
			requests = t.requests + EXCLUDED.requests,
			status_1xx = t.status_1xx + EXCLUDED.status_1xx, status_2xx = t.status_2xx + EXCLUDED.status_2xx,
			status_3xx = t.status_3xx + EXCLUDED.status_3xx, status_4xx = t.status_4xx + EXCLUDED.status_4xx,
			status_5xx = t.status_5xx + EXCLUDED.status_5xx,
			in_bytes = t.in_bytes + EXCLUDED.in_bytes, out_bytes = t.out_bytes + EXCLUDED.out_bytes,
			latency_counts = metrics_add_counts(t.latency_counts, EXCLUDED.latency_counts)`
	batch.Queue(q, ws, agent, buckets, vhs, hosts, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5],
		cols[6], cols[7], latency, numBuckets)
}

// ---- Host metrics ----

// Bounds of a host sample.
const (
	maxFilesystems = 64
	maxInterfaces  = 64
	maxLabel       = 256
)

// hostSample is a MetricsBatch read into host_metrics' columns.
type hostSample struct {
	ts                                             time.Time
	cpu, load1, load5, load15                      float64
	memUsed, memTotal, memAvail, swapUsed, swapTot int64
	diskUsed, diskTotal, rx, tx                    int64
	nginxConns, nginxTotal                         *int64
	nginxRPS                                       *float64
	// nginxAccepts … nginxWaiting are the rest of stub_status.
	nginxAccepts, nginxHandled               *int64
	nginxReading, nginxWriting, nginxWaiting *int64
	cpuSeconds                               map[string]float64
	filesystems                              []Filesystem
	interfaces                               []Interface
}

func ptr[T any](v T) *T { return &v }

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func count(v float64) int64 {
	v = finite(v)
	if v <= 0 {
		return 0
	}
	if v >= math.MaxInt64/2 {
		return math.MaxInt64 / 2
	}
	return int64(v)
}

func label(m *agentv1.Metric, name string) string {
	s := m.GetLabels()[name]
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	s = strings.ReplaceAll(s, "\x00", "")
	if len(s) > maxLabel {
		s = s[:maxLabel]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// sampleOf reads the metrics the agent documents (agent/README.md: host.*,
// nginx.*); others are ignored. The disk figures are the root file system's
// ("/"), or the largest one's when "/" is not reported; rx and tx are summed
// over the interfaces other than lo.
func sampleOf(b *agentv1.MetricsBatch, now time.Time) hostSample {
	s := hostSample{ts: now, cpuSeconds: map[string]float64{}, filesystems: []Filesystem{}, interfaces: []Interface{}}
	if b.GetTimestamp() > 0 {
		s.ts = time.Unix(b.GetTimestamp(), 0)
	}
	s.ts = s.ts.UTC()
	fs := map[string]*Filesystem{}
	var fsOrder []string
	ifs := map[string]*Interface{}
	var ifOrder []string
	fsOf := func(m *agentv1.Metric) *Filesystem {
		mount := label(m, "mount")
		f := fs[mount]
		if f == nil {
			if len(fs) >= maxFilesystems {
				return &Filesystem{}
			}
			f = &Filesystem{Mount: mount, Device: label(m, "device"), Type: label(m, "fstype")}
			fs[mount] = f
			fsOrder = append(fsOrder, mount)
		}
		return f
	}
	ifOf := func(m *agentv1.Metric) *Interface {
		name := label(m, "iface")
		i := ifs[name]
		if i == nil {
			if len(ifs) >= maxInterfaces {
				return &Interface{}
			}
			i = &Interface{Name: name}
			ifs[name] = i
			ifOrder = append(ifOrder, name)
		}
		return i
	}
	for _, m := range b.GetMetrics() {
		v := finite(m.GetValue())
		switch m.GetName() {
		case "host.cpu.percent":
			s.cpu = v
		case "host.cpu.seconds":
			if mode := label(m, "mode"); mode != "" && len(s.cpuSeconds) < 16 {
				s.cpuSeconds[mode] = v
			}
		case "host.load.1m":
			s.load1 = v
		case "host.load.5m":
			s.load5 = v
		case "host.load.15m":
			s.load15 = v
		case "host.memory.total_bytes":
			s.memTotal = count(v)
		case "host.memory.used_bytes":
			s.memUsed = count(v)
		case "host.memory.available_bytes":
			s.memAvail = count(v)
		case "host.swap.total_bytes":
			s.swapTot = count(v)
		case "host.swap.used_bytes":
			s.swapUsed = count(v)
		case "host.fs.total_bytes":
			fsOf(m).TotalBytes = count(v)
		case "host.fs.used_bytes":
			fsOf(m).UsedBytes = count(v)
		case "host.fs.free_bytes":
			fsOf(m).FreeBytes = count(v)
		case "host.net.rx_bytes":
			ifOf(m).RxBytes = count(v)
		case "host.net.tx_bytes":
			ifOf(m).TxBytes = count(v)
		case "host.net.rx_packets":
			ifOf(m).RxPackets = count(v)
		case "host.net.tx_packets":
			ifOf(m).TxPackets = count(v)
		case "host.net.rx_errors":
			ifOf(m).RxErrors = count(v)
		case "host.net.tx_errors":
			ifOf(m).TxErrors = count(v)
		case "nginx.connections.active":
			n := count(v)
			s.nginxConns = &n
		case "nginx.requests.total":
			n := count(v)
			s.nginxTotal = &n
		case "nginx.requests.per_second":
			s.nginxRPS = &v
		case "nginx.connections.accepted":
			s.nginxAccepts = ptr(count(v))
		case "nginx.connections.handled":
			s.nginxHandled = ptr(count(v))
		case "nginx.connections.reading":
			s.nginxReading = ptr(count(v))
		case "nginx.connections.writing":
			s.nginxWriting = ptr(count(v))
		case "nginx.connections.waiting":
			s.nginxWaiting = ptr(count(v))
		}
	}
	var disk *Filesystem
	for _, mount := range fsOrder {
		f := fs[mount]
		s.filesystems = append(s.filesystems, *f)
		if mount == "/" || (disk == nil || (disk.Mount != "/" && f.TotalBytes > disk.TotalBytes)) {
			disk = f
		}
	}
	if disk != nil {
		s.diskUsed, s.diskTotal = disk.UsedBytes, disk.TotalBytes
	}
	for _, name := range ifOrder {
		i := ifs[name]
		s.interfaces = append(s.interfaces, *i)
		if name != "lo" {
			s.rx += i.RxBytes
			s.tx += i.TxBytes
		}
	}
	return s
}

// StoreHostMetrics stores an agent's metrics batch as one host_metrics row
// and counts it in the agent's host_metrics_hour row (agents.MetricsFunc).
// A batch without metrics stores nothing; a batch sent again (same agent and
// timestamp) is stored and counted once.
func (s *Service) StoreHostMetrics(ctx context.Context, b agents.MetricsBatch) error {
	if len(b.Batch.GetMetrics()) == 0 {
		return nil
	}
	if b.AgentID == uuid.Nil || b.WorkspaceID == uuid.Nil {
		return ErrNoAgent
	}
	h := sampleOf(b.Batch, s.now())
	if day := app.DayOf(h.ts); s.hostOnDemand(day) {
		if err := s.hostParts.Ensure(ctx, day); err != nil {
			return fmt.Errorf("store host metrics of agent %s: %w", b.AgentID, err)
		}
	}
	cpuSeconds, _ := json.Marshal(h.cpuSeconds)
	filesystems, _ := json.Marshal(h.filesystems)
	interfaces, _ := json.Marshal(h.interfaces)
	// One statement stores the sample and counts it in its hour: a sample
	// sent again is not inserted, so it is not counted twice.
	_, err := s.pool.Exec(ctx, `WITH sample AS (
			INSERT INTO host_metrics (agent_id, workspace_id, ts, cpu_percent, load_average_1m, load_average_5m,
				load_average_15m, memory_used_bytes, memory_total_bytes, memory_available_bytes, swap_used_bytes, swap_total_bytes,
				disk_used_bytes, disk_total_bytes, net_rx_bytes, net_tx_bytes, nginx_active_connections, nginx_requests_total,
				nginx_requests_per_second, cpu_seconds, filesystems, interfaces, nginx_accepts, nginx_handled, nginx_reading,
				nginx_writing, nginx_waiting)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
				$23, $24, $25, $26, $27)
			ON CONFLICT (agent_id, ts) DO NOTHING
			RETURNING *)
		INSERT INTO host_metrics_hour AS h (agent_id, workspace_id, bucket, samples, cpu_percent_sum, cpu_percent_max,
			load_average_1m_sum, load_average_5m_sum, load_average_15m_sum, memory_used_bytes_sum, memory_total_bytes_sum,
			disk_used_bytes_sum, disk_total_bytes_sum, nginx_samples, nginx_active_connections_max)
		SELECT agent_id, workspace_id, date_bin('1 hour', ts, TIMESTAMPTZ '1970-01-01 00:00:00+00'), 1, cpu_percent, cpu_percent,
			load_average_1m, load_average_5m, load_average_15m, memory_used_bytes, memory_total_bytes,
			disk_used_bytes, disk_total_bytes, (nginx_active_connections IS NOT NULL)::int, nginx_active_connections
		FROM sample
		ON CONFLICT (agent_id, bucket) DO UPDATE SET
			samples = h.samples + 1,
			cpu_percent_sum = h.cpu_percent_sum + EXCLUDED.cpu_percent_sum,
			cpu_percent_max = greatest(h.cpu_percent_max, EXCLUDED.cpu_percent_max),
			load_average_1m_sum = h.load_average_1m_sum + EXCLUDED.load_average_1m_sum,
			load_average_5m_sum = h.load_average_5m_sum + EXCLUDED.load_average_5m_sum,
			load_average_15m_sum = h.load_average_15m_sum + EXCLUDED.load_average_15m_sum,
			memory_used_bytes_sum = h.memory_used_bytes_sum + EXCLUDED.memory_used_bytes_sum,
			memory_total_bytes_sum = h.memory_total_bytes_sum + EXCLUDED.memory_total_bytes_sum,
			disk_used_bytes_sum = h.disk_used_bytes_sum + EXCLUDED.disk_used_bytes_sum,
			disk_total_bytes_sum = h.disk_total_bytes_sum + EXCLUDED.disk_total_bytes_sum,
			nginx_samples = h.nginx_samples + EXCLUDED.nginx_samples,
			nginx_active_connections_max = greatest(h.nginx_active_connections_max, EXCLUDED.nginx_active_connections_max)`,
		b.AgentID, b.WorkspaceID, h.ts, h.cpu, h.load1, h.load5, h.load15, h.memUsed, h.memTotal, h.memAvail, h.swapUsed, h.swapTot,
		h.diskUsed, h.diskTotal, h.rx, h.tx, h.nginxConns, h.nginxTotal, h.nginxRPS, string(cpuSeconds), string(filesystems), string(interfaces),
		h.nginxAccepts, h.nginxHandled, h.nginxReading, h.nginxWriting, h.nginxWaiting)
	if err != nil {
		return fmt.Errorf("store host metrics of agent %s: %w", b.AgentID, err)
	}
	return nil
}

// System returns an agent's latest host sample: its newest host_metrics
// row, or else the system figures of its last health report; nil when
// there is neither.
func (s *Service) System(ctx context.Context, agentID uuid.UUID) (*System, error) {
	var sys System
	var n Nginx
	var active, requests, accepts, handled, reading, writing, waiting *int64
	var rps *float64
	err := s.pool.QueryRow(ctx, `SELECT cpu_percent, memory_used_bytes, memory_total_bytes, disk_used_bytes, disk_total_bytes,
			load_average_1m, ts, nginx_active_connections, nginx_requests_total, nginx_requests_per_second, nginx_accepts,
			nginx_handled, nginx_reading, nginx_writing, nginx_waiting
		FROM host_metrics WHERE agent_id = $1 ORDER BY ts DESC LIMIT 1`, agentID).
		Scan(&sys.CPUPercent, &sys.MemoryUsedBytes, &sys.MemoryTotalBytes, &sys.DiskUsedBytes, &sys.DiskTotalBytes, &sys.LoadAverage1m, &sys.Timestamp,
			&active, &requests, &rps, &accepts, &handled, &reading, &writing, &waiting)
	if err == nil {
		sys.Timestamp = sys.Timestamp.UTC()
		if active != nil {
			n.ActiveConnections, n.Requests = *active, deref(requests)
			n.Accepts, n.Handled = deref(accepts), deref(handled)
			n.Reading, n.Writing, n.Waiting = deref(reading), deref(writing), deref(waiting)
			if rps != nil {
				n.RequestsPerSecond = *rps
			}
			sys.Nginx = &n
		}
		return &sys, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read host metrics of agent %s: %w", agentID, err)
	}
	// The agents module keeps the last health report as JSON (agents.health).
	var doc []byte
	err = s.pool.QueryRow(ctx, "SELECT health FROM agents WHERE id = $1 AND health IS NOT NULL", agentID).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read health of agent %s: %w", agentID, err)
	}
	var h struct {
		CPUPercent       float64   `json:"cpu_percent"`
		MemoryUsedBytes  int64     `json:"memory_used_bytes"`
		MemoryTotalBytes int64     `json:"memory_total_bytes"`
		DiskUsedBytes    int64     `json:"disk_used_bytes"`
		DiskTotalBytes   int64     `json:"disk_total_bytes"`
		LoadAverage1m    float64   `json:"load_average_1m"`
		ReportedAt       time.Time `json:"reported_at"`
		NginxRunning     bool      `json:"nginx_running"`
		Active           int64     `json:"active_connections"`
		Requests         int64     `json:"total_requests"`
		RPS              float64   `json:"requests_per_second"`
	}
	if err := json.Unmarshal(doc, &h); err != nil {
		return nil, fmt.Errorf("read health of agent %s: %w", agentID, err)
	}
	if h.ReportedAt.IsZero() {
		return nil, nil
	}
	out := &System{CPUPercent: h.CPUPercent, MemoryUsedBytes: h.MemoryUsedBytes, MemoryTotalBytes: h.MemoryTotalBytes,
		DiskUsedBytes: h.DiskUsedBytes, DiskTotalBytes: h.DiskTotalBytes, LoadAverage1m: h.LoadAverage1m, Timestamp: h.ReportedAt.UTC()}
	if h.NginxRunning {
		// A health report carries only part of stub_status (NginxStatus).
		out.Nginx = &Nginx{ActiveConnections: h.Active, Requests: h.Requests, RequestsPerSecond: h.RPS}
	}
	return out, nil
}

// ---- Queries ----

// table is the rollup resolution that answers q: the hourly rollups when
// the range starts before metrics.retention_minute (each hour then counts
// whole when it starts inside the range), or when the series' step is an
// hour or more and the range is on whole hours; the minutes otherwise.
func (s *Service) table(q Query) string {
	if q.From.Before(s.now().Add(-s.retentionMinute)) {
		return tableHour
	}
	if q.Interval >= time.Hour && q.From.Equal(q.From.Truncate(time.Hour)) && q.To.Equal(q.To.Truncate(time.Hour)) {
		return tableHour
	}
	return tableMinute
}

// Traffic returns the traffic of q: totals, rate, error rate, latency
// percentiles, the active connections of q's agents and, when q.Interval is
// set, the series (whose points sum to the totals).
func (s *Service) Traffic(ctx context.Context, q Query) (Summary, error) {
	step := q.Interval
	if step == 0 {
		step = 24 * time.Hour // grouping only; the points are summed
	}
	conds := []string{"workspace_id = $2", "bucket >= $3", "bucket < $4"}
	args := []any{strconv.FormatInt(int64(step/time.Second), 10) + " seconds", q.WorkspaceID, q.From, q.To}
	add := func(cond string, arg any) {
		args = append(args, arg)
		conds = append(conds, cond+" $"+strconv.Itoa(len(args)))
	}
	if q.AgentID != uuid.Nil {
		add("agent_id =", q.AgentID)
	}
	if q.VirtualHostID != uuid.Nil {
		add("virtual_host_id =", q.VirtualHostID)
	}
	if q.Host != "" {
		add("host =", q.Host)
	}
	rows, err := s.pool.Query(ctx, `SELECT date_bin($1::interval, bucket, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
			sum(requests)::bigint, sum(status_1xx)::bigint, sum(status_2xx)::bigint, sum(status_3xx)::bigint,
			sum(status_4xx)::bigint, sum(status_5xx)::bigint, sum(in_bytes)::bigint, sum(out_bytes)::bigint,
			`+sumCounts("latency_counts")+`
		FROM `+s.table(q)+` WHERE `+strings.Join(conds, " AND ")+` GROUP BY 1 ORDER BY 1`, args...)
	if err != nil {
		return Summary{}, fmt.Errorf("query traffic of workspace %s: %w", q.WorkspaceID, err)
	}
	type group struct {
		p       Point
		latency []int64
	}
	groups := map[int64]group{}
	for rows.Next() {
		var g group
		var ts time.Time
		sc := &g.p.StatusCodes
		if err := rows.Scan(&ts, &g.p.RequestsTotal, &sc.S1xx, &sc.S2xx, &sc.S3xx, &sc.S4xx, &sc.S5xx, &g.p.InBytes, &g.p.OutBytes, &g.latency); err != nil {
			rows.Close()
			return Summary{}, fmt.Errorf("read traffic of workspace %s: %w", q.WorkspaceID, err)
		}
		g.p.LatencyMs = latencyOf(g.latency)
		groups[ts.Unix()] = g
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Summary{}, fmt.Errorf("query traffic of workspace %s: %w", q.WorkspaceID, err)
	}
	var sum Summary
	latency := make([]int64, numBuckets)
	for _, g := range groups {
		sum.RequestsTotal += g.p.RequestsTotal
		sum.StatusCodes.add(g.p.StatusCodes)
		sum.Bandwidth.InBytes += g.p.InBytes
		sum.Bandwidth.OutBytes += g.p.OutBytes
		for i, c := range g.latency[:min(len(g.latency), numBuckets)] {
			latency[i] += c
		}
	}
	sum.LatencyMs = latencyOf(latency)
	if secs := q.To.Sub(q.From).Seconds(); secs > 0 {
		sum.RequestsPerSecond = float64(sum.RequestsTotal) / secs
	}
	if sum.RequestsTotal > 0 {
		sum.ErrorRate = float64(sum.StatusCodes.S5xx) / float64(sum.RequestsTotal)
	}
	if q.Interval > 0 {
		sum.Series = []Point{}
		for _, t := range buckets(q.From, q.To, q.Interval) {
			p := groups[t.Unix()].p
			p.Timestamp = t
			sum.Series = append(sum.Series, p)
		}
	}
	sum.ActiveConnections, err = s.activeConnections(ctx, q.WorkspaceID, q.AgentID)
	return sum, err
}

// activeConnections sums, over the workspace's online and degraded agents
// (one agent when agentID is set), the newest nginx active connections: of
// its newest host sample, or else of its last health report.
func (s *Service) activeConnections(ctx context.Context, workspaceID, agentID uuid.UUID) (int64, error) {
	// agents.state and agents.health are the agents module's.
	q := `SELECT coalesce(sum(coalesce(h.nginx_active_connections, (a.health->>'active_connections')::bigint, 0)), 0)::bigint
		FROM agents a LEFT JOIN LATERAL (
			SELECT nginx_active_connections FROM host_metrics m WHERE m.agent_id = a.id ORDER BY m.ts DESC LIMIT 1
		) h ON true
		WHERE a.workspace_id = $1 AND a.state = ANY($2)`
	args := []any{workspaceID, []string{agents.StateOnline, agents.StateDegraded}}
	if agentID != uuid.Nil {
		q += " AND a.id = $3"
		args = append(args, agentID)
	}
	var n int64
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("sum active connections of workspace %s: %w", workspaceID, err)
	}
	return n, nil
}

// AgentTraffic is Traffic for one agent (q.AgentID) with its latest host
// sample.
func (s *Service) AgentTraffic(ctx context.Context, q Query) (AgentSummary, error) {
	sum, err := s.Traffic(ctx, q)
	if err != nil {
		return AgentSummary{}, err
	}
	sys, err := s.System(ctx, q.AgentID)
	if err != nil {
		return AgentSummary{}, err
	}
	return AgentSummary{Summary: sum, System: sys}, nil
}

// ---- Retention ----

// RetentionResult counts the rows ApplyRetention deleted.
type RetentionResult struct {
	MinuteRows, HourRows, HostRows, HostHourRows int64
	// HostPartitions are the host_metrics partitions dropped.
	HostPartitions []string
}

// ApplyRetention deletes per-minute rollups older than
// metrics.retention_minute and hourly rollups older than
// metrics.retention_hour; host samples are kept like the per-minute rollups
// (whole daily partitions dropped, and the default partition's older rows
// deleted), their hourly rollups like the hourly ones.
func (s *Service) ApplyRetention(ctx context.Context) (RetentionResult, error) {
	var res RetentionResult
	now := s.now()
	for _, d := range []struct {
		what, q string
		cutoff  time.Time
		n       *int64
	}{
		{"per-minute rollups", "DELETE FROM traffic_minute WHERE bucket < $1", now.Add(-s.retentionMinute), &res.MinuteRows},
		{"hourly rollups", "DELETE FROM traffic_hour WHERE bucket < $1", now.Add(-s.retentionHour), &res.HourRows},
		{"hourly host rollups", "DELETE FROM host_metrics_hour WHERE bucket < $1", now.Add(-s.retentionHour), &res.HostHourRows},
	} {
		tag, err := s.pool.Exec(ctx, d.q, d.cutoff)
		if err != nil {
			return res, fmt.Errorf("metrics retention: delete %s: %w", d.what, err)
		}
		*d.n = tag.RowsAffected()
	}
	cutoff := now.Add(-s.retentionMinute)
	dropped, deleted, err := s.hostParts.DropBefore(ctx, cutoff)
	res.HostPartitions, res.HostRows = dropped, deleted
	if err != nil {
		return res, fmt.Errorf("metrics retention: %w", err)
	}
	// Rows of a partition that straddles the cutoff.
	tag, err := s.pool.Exec(ctx, "DELETE FROM host_metrics WHERE ts < $1", cutoff)
	if err != nil {
		return res, fmt.Errorf("metrics retention: delete host metrics: %w", err)
	}
	res.HostRows += tag.RowsAffected()
	return res, nil
}

// hostOnDemand reports whether storing a sample of day creates its
// host_metrics partition: days from the retention window to
// HostPartitionsAhead days ahead (others land in the default partition).
func (s *Service) hostOnDemand(day time.Time) bool {
	return app.InWindow(day, s.now(), s.retentionMinute, HostPartitionsAhead)
}

// EnsureHostPartitionsAhead creates the host_metrics partitions of today
// and the next HostPartitionsAhead days.
func (s *Service) EnsureHostPartitionsAhead(ctx context.Context) error {
	return s.hostParts.EnsureAhead(ctx, s.now(), HostPartitionsAhead)
}

// HostPartitions lists the days that have a host_metrics partition.
func (s *Service) HostPartitions(ctx context.Context) ([]time.Time, error) {
	return s.hostParts.Days(ctx)
}

// The names the metrics pages show of objects other modules own (read only).

// workspaceNames lists at most 200 agents, virtual hosts or streams (table)
// of workspace ws by name.
func (s *Service) workspaceNames(ctx context.Context, table string, ws uuid.UUID) ([]app.Named, error) {
	return app.WorkspaceNames(ctx, s.pool, table, ws, 200)
}

// virtualHostNames returns a virtual host's name and server_name.
func (s *Service) virtualHostNames(ctx context.Context, id uuid.UUID) (name, server string, err error) {
	if err := s.pool.QueryRow(ctx, "SELECT name, server_name FROM virtual_hosts WHERE id = $1", id).Scan(&name, &server); err != nil {
		return "", "", fmt.Errorf("read virtual host %s: %w", id, err)
	}
	return name, server, nil
}

// agentName returns an agent's name.
func (s *Service) agentName(ctx context.Context, id uuid.UUID) (string, error) {
	var name string
	if err := s.pool.QueryRow(ctx, "SELECT name FROM agents WHERE id = $1", id).Scan(&name); err != nil {
		return "", fmt.Errorf("read agent %s: %w", id, err)
	}
	return name, nil
}

// streamListener returns a stream's name, protocol and listen port.
func (s *Service) streamListener(ctx context.Context, id uuid.UUID) (name, protocol string, port int, err error) {
	if err := s.pool.QueryRow(ctx, "SELECT name, protocol, listen_port FROM streams WHERE id = $1", id).Scan(&name, &protocol, &port); err != nil {
		return "", "", 0, fmt.Errorf("read stream %s: %w", id, err)
	}
	return name, protocol, port, nil
}
