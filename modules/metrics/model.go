package metrics

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// LatencyBucketsMs are the upper bounds, in milliseconds, of the fixed
// latency histogram counted per rollup row: an entry whose request time
// (nginx's $request_time; streams: $session_time) is t falls in the first
// bucket with t <= bound, or in a last, unbounded bucket after 60 s. The
// order and values are part of the stored data (traffic_*.latency_counts):
// changing them needs a migration.
var LatencyBucketsMs = []float64{1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
	1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000}

// numBuckets is the length of a latency_counts array.
var numBuckets = len(LatencyBucketsMs) + 1

// sumCounts is the SQL expression of the element-wise sum of the latency
// count arrays in column col over a group: one built-in sum per bucket,
// which is many times faster than the metrics_sum_counts aggregate (a SQL
// function called once per row) over a month of rollups.
func sumCounts(col string) string {
	var b strings.Builder
	b.WriteString("ARRAY[")
	for i := 1; i <= numBuckets; i++ {
		if i > 1 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "coalesce(sum(%s[%d]), 0)", col, i)
	}
	b.WriteString("]::bigint[]")
	return b.String()
}

// bucketOf is the histogram bucket of a request time.
func bucketOf(ms float64) int {
	for i, b := range LatencyBucketsMs {
		if ms <= b {
			return i
		}
	}
	return len(LatencyBucketsMs)
}

// percentile is the q-quantile (0 < q <= 1) of a histogram, interpolated
// linearly inside the bucket holding it (as Prometheus' histogram_quantile:
// the first bucket starts at 0; a quantile in the unbounded bucket is its
// lower bound, 60000). An empty histogram gives 0. Values are rounded to
// microseconds.
func percentile(counts []int64, q float64) float64 {
	var total int64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum int64
	for i, c := range counts {
		if c == 0 || float64(cum+c) < rank {
			cum += c
			continue
		}
		if i >= len(LatencyBucketsMs) {
			return LatencyBucketsMs[len(LatencyBucketsMs)-1]
		}
		lower := 0.0
		if i > 0 {
			lower = LatencyBucketsMs[i-1]
		}
		upper := LatencyBucketsMs[i]
		v := lower + (upper-lower)*(rank-float64(cum))/float64(c)
		return math.Round(v*1000) / 1000
	}
	return LatencyBucketsMs[len(LatencyBucketsMs)-1]
}

// Latency are latency percentiles in milliseconds, from the histogram.
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

func latencyOf(counts []int64) Latency {
	return Latency{P50: percentile(counts, 0.50), P95: percentile(counts, 0.95), P99: percentile(counts, 0.99)}
}

// Bandwidth is bytes received from clients (request_length; streams:
// bytes_received) and sent to them (bytes_sent).
type Bandwidth struct {
	InBytes  int64 `json:"in_bytes"`
	OutBytes int64 `json:"out_bytes"`
}

// StatusCodes counts requests by status class. requests_total also counts
// entries with a status outside 100-599 (none of these classes).
type StatusCodes struct {
	S1xx int64 `json:"1xx"`
	S2xx int64 `json:"2xx"`
	S3xx int64 `json:"3xx"`
	S4xx int64 `json:"4xx"`
	S5xx int64 `json:"5xx"`
}

func (s *StatusCodes) add(o StatusCodes) {
	s.S1xx += o.S1xx
	s.S2xx += o.S2xx
	s.S3xx += o.S3xx
	s.S4xx += o.S4xx
	s.S5xx += o.S5xx
}

// Summary is the traffic of a range: the workspace metrics object, with
// the latency percentiles and, when an interval was asked for, the series.
type Summary struct {
	RequestsTotal int64 `json:"requests_total"`
	// RequestsPerSecond is requests_total over the range's length.
	RequestsPerSecond float64 `json:"requests_per_second"`
	// ErrorRate is 5xx responses ÷ requests_total (0 without requests).
	ErrorRate float64 `json:"error_rate"`
	// ActiveConnections is the latest nginx active connections reported by
	// each online (or degraded) agent, summed; not limited by the range nor by
	// the virtual host or host filters.
	ActiveConnections int64       `json:"active_connections"`
	Bandwidth         Bandwidth   `json:"bandwidth"`
	StatusCodes       StatusCodes `json:"status_codes"`
	LatencyMs         Latency     `json:"latency_ms"`
	// Series has one point per interval from the interval holding from to
	// the one holding to, empty intervals included; its points sum to the
	// totals. Absent without ?interval=.
	Series []Point `json:"series,omitempty"`
}

// Point is one interval of a series.
type Point struct {
	// Timestamp is the interval's start (UTC, aligned on the interval).
	Timestamp     time.Time   `json:"timestamp"`
	RequestsTotal int64       `json:"requests_total"`
	StatusCodes   StatusCodes `json:"status_codes"`
	InBytes       int64       `json:"in_bytes"`
	OutBytes      int64       `json:"out_bytes"`
	LatencyMs     Latency     `json:"latency_ms"`
}

// AgentSummary is one agent's traffic and its latest host metrics.
type AgentSummary struct {
	Summary
	// System is the latest host sample of the agent; null when it never sent one.
	System *System `json:"system"`
}

// System is an agent's host at one moment: the SystemMetrics fields of the
// agent protocol, and when they were sampled.
type System struct {
	CPUPercent       float64   `json:"cpu_percent"`
	MemoryUsedBytes  int64     `json:"memory_used_bytes"`
	MemoryTotalBytes int64     `json:"memory_total_bytes"`
	DiskUsedBytes    int64     `json:"disk_used_bytes"`
	DiskTotalBytes   int64     `json:"disk_total_bytes"`
	LoadAverage1m    float64   `json:"load_average_1m"`
	Timestamp        time.Time `json:"timestamp"`
	// Nginx is nginx's stub_status in the same sample; null when the sample
	// has none (nginx not running, or only a health report is known).
	Nginx *Nginx `json:"nginx"`
}

// Nginx is nginx's stub_status at one moment (host_metrics nginx_*).
type Nginx struct {
	ActiveConnections int64   `json:"active_connections"`
	Accepts           int64   `json:"accepts"`
	Handled           int64   `json:"handled"`
	Requests          int64   `json:"requests"`
	Reading           int64   `json:"reading"`
	Writing           int64   `json:"writing"`
	Waiting           int64   `json:"waiting"`
	RequestsPerSecond float64 `json:"requests_per_second"`
}

// Filesystem is one mounted file system of a host sample (host_metrics.filesystems).
type Filesystem struct {
	Mount      string `json:"mount"`
	Device     string `json:"device"`
	Type       string `json:"fstype"`
	TotalBytes int64  `json:"total_bytes"`
	UsedBytes  int64  `json:"used_bytes"`
	FreeBytes  int64  `json:"free_bytes"`
}

// Interface is one network interface's counters of a host sample
// (host_metrics.interfaces).
type Interface struct {
	Name      string `json:"name"`
	RxBytes   int64  `json:"rx_bytes"`
	TxBytes   int64  `json:"tx_bytes"`
	RxPackets int64  `json:"rx_packets"`
	TxPackets int64  `json:"tx_packets"`
	RxErrors  int64  `json:"rx_errors"`
	TxErrors  int64  `json:"tx_errors"`
}
