package logs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/agents"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// The ingest of one replica:
//
//  1. Ingest (the agents module's LogsFunc) takes a batch from an agent's
//     stream and queues it without waiting: the stream's receive loop, which
//     also carries configuration statuses, is never held up by the database.
//     When the queue (IngestConfig.QueueSize batches) is full the batch is
//     answered at once with success=false; the agent keeps it spooled and
//     sends it again.
//  2. IngestConfig.Workers goroutines store the queued batches. For an
//     access-log batch the partitions of its days are created first (see
//     partitions.go); then one transaction inserts (agent, kind, batch_id)
//     into log_batches, COPYs the rows and hands an access-log batch to
//     Options.RollupFunc (the traffic rollups). A batch id already there is a
//     redelivery: the transaction is rolled back and the batch acknowledged
//     without storing it again. Each attempt has StoreTimeout; a failure is
//     answered with success=false and the error.
//  3. After the commit the batch is acknowledged on the agent's stream
//     (Ack.message_id = batch_id, success = true) and its lines go to the
//     live tail (live.go) when somebody tails the workspace.

// IngestConfig sizes the ingest of one replica.
type IngestConfig struct {
	// QueueSize is how many batches may wait to be stored; default 256.
	QueueSize int
	// Workers store batches concurrently; default 2.
	Workers int
	// StoreTimeout bounds storing one batch; default 30 s.
	StoreTimeout time.Duration
}

func (c IngestConfig) withDefaults() IngestConfig {
	if c.QueueSize <= 0 {
		c.QueueSize = 256
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 30 * time.Second
	}
	return c
}

// Kinds of batches in log_batches.
const (
	batchAccess = "access"
	batchError  = "error"
)

type queued struct {
	b      agents.LogBatch
	queued time.Time
}

type ingestMetrics struct {
	received   *prometheus.CounterVec
	stored     *prometheus.CounterVec
	duplicates prometheus.Counter
	agentDrops *prometheus.CounterVec
	refused    *prometheus.CounterVec
	queueWait  prometheus.Histogram
	queueDepth prometheus.GaugeFunc
	lag        prometheus.Gauge
}

func newIngestMetrics(reg prometheus.Registerer, depth func() float64) *ingestMetrics {
	m := &ingestMetrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxmesh_logs_lines_received_total", Help: "Log lines received from agents, by kind (access, error).",
		}, []string{"kind"}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxmesh_logs_lines_stored_total", Help: "Log lines stored, by kind (access, error).",
		}, []string{"kind"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nxmesh_logs_duplicate_batches_total", Help: "Redelivered log batches acknowledged without storing them again.",
		}),
		agentDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxmesh_logs_agent_dropped_lines_total", Help: "Log lines agents report they dropped (spool full), by kind.",
		}, []string{"kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxmesh_logs_refused_batches_total", Help: "Log batches answered success=false, by reason (queue_full, error, stopped).",
		}, []string{"reason"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nxmesh_logs_ingest_queue_wait_seconds", Help: "Time a log batch waited in this replica's queue before it was stored.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
		queueDepth: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nxmesh_logs_ingest_queue_batches", Help: "Log batches waiting in this replica's ingest queue.",
		}, depth),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nxmesh_logs_ingest_lag_seconds", Help: "Now minus the timestamp of the newest line stored by the last batch.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.received, m.stored, m.duplicates, m.agentDrops, m.refused, m.queueWait, m.queueDepth, m.lag)
	}
	return m
}

// ingester is one replica's ingest (see the top of this file).
type ingester struct {
	svc     *Service
	cfg     IngestConfig
	queue   chan queued
	metrics *ingestMetrics
	live    *live
	rollup  RollupFunc

	mu      sync.Mutex
	stopped bool
	running bool
}

func newIngester(svc *Service, cfg IngestConfig, reg prometheus.Registerer, lv *live) *ingester {
	cfg = cfg.withDefaults()
	in := &ingester{svc: svc, cfg: cfg, queue: make(chan queued, cfg.QueueSize), live: lv}
	in.metrics = newIngestMetrics(reg, func() float64 { return float64(len(in.queue)) })
	return in
}

func refuse(b agents.LogBatch, msg string) {
	if id := b.BatchID(); id != "" && b.Ack != nil {
		b.Ack(&agentv1.Ack{MessageId: id, Success: false, ErrorMessage: msg})
	}
}

func kindOf(b agents.LogBatch) string {
	if b.Access != nil {
		return batchAccess
	}
	return batchError
}

// submit queues b without blocking; a full queue refuses it.
func (in *ingester) submit(b agents.LogBatch) error {
	if b.Access == nil && b.Errors == nil {
		return nil
	}
	kind := kindOf(b)
	n := len(b.Errors.GetEntries())
	if b.Access != nil {
		n = len(b.Access.GetEntries())
	}
	in.metrics.received.WithLabelValues(kind).Add(float64(n))
	in.mu.Lock()
	stopped := in.stopped
	in.mu.Unlock()
	if stopped {
		in.metrics.refused.WithLabelValues("stopped").Inc()
		refuse(b, ErrStopped.Error())
		return ErrStopped
	}
	select {
	case in.queue <- queued{b: b, queued: time.Now()}:
		return nil
	default:
		in.metrics.refused.WithLabelValues("queue_full").Inc()
		refuse(b, ErrQueueFull.Error())
		return ErrQueueFull
	}
}

// run stores queued batches with cfg.Workers goroutines until ctx ends; the
// batches still queued then are refused (the agents send them again).
func (in *ingester) run(ctx context.Context) {
	in.mu.Lock()
	if in.running {
		in.mu.Unlock()
		return
	}
	in.running = true
	in.mu.Unlock()
	var wg sync.WaitGroup
	for i := 0; i < in.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case q := <-in.queue:
					in.handle(ctx, q)
				}
			}
		}()
	}
	wg.Wait()
	in.mu.Lock()
	in.stopped = true
	in.mu.Unlock()
	for {
		select {
		case q := <-in.queue:
			in.metrics.refused.WithLabelValues("stopped").Inc()
			refuse(q.b, ErrStopped.Error())
		default:
			return
		}
	}
}

func (in *ingester) handle(ctx context.Context, q queued) {
	in.metrics.queueWait.Observe(time.Since(q.queued).Seconds())
	sctx, cancel := context.WithTimeout(ctx, in.cfg.StoreTimeout)
	defer cancel()
	lines, dup, err := in.store(sctx, q.b)
	id := q.b.BatchID()
	switch {
	case err != nil:
		in.metrics.refused.WithLabelValues("error").Inc()
		in.svc.logger.WarnContext(ctx, "logs: store batch", "agent_id", q.b.AgentID, "batch_id", id, "error", err)
		refuse(q.b, "store log batch: "+err.Error())
		return
	case dup:
		in.metrics.duplicates.Inc()
	}
	if id != "" && q.b.Ack != nil {
		q.b.Ack(&agentv1.Ack{MessageId: id, Success: true})
	}
	if !dup && in.live != nil && lines != nil {
		in.live.publish(lines)
	}
}

// store writes one batch (see the top of this file) and returns its lines
// for the live tail; dup reports a redelivered batch.
func (in *ingester) store(ctx context.Context, b agents.LogBatch) (lines []Line, dup bool, err error) {
	now := in.svc.now()
	kind := kindOf(b)
	var rows [][]any
	var table string
	var columns []string
	var newest time.Time
	// Lines for the live tail only when somebody tails the workspace.
	tailed := in.live != nil && in.live.wanted(b.WorkspaceID)
	if b.Access != nil {
		table, columns = "access_logs", copyColumns
		days := map[time.Time]bool{}
		for _, pe := range b.Access.GetEntries() {
			e := entryFromProto(b, pe, now)
			days[app.DayOf(e.Timestamp.Time)] = true
			rows = append(rows, e.copyRow())
			if tailed {
				lines = append(lines, e.line(b.OrgID))
			}
			if e.Timestamp.After(newest) {
				newest = e.Timestamp.Time
			}
		}
		for d := range days {
			if in.svc.onDemand(d) {
				if err := in.svc.EnsurePartition(ctx, d); err != nil {
					return nil, false, err
				}
			}
		}
	} else {
		table, columns = "error_logs", []string{"workspace_id", "agent_id", "ts", "level", "message", "fields"}
		for _, pe := range b.Errors.GetEntries() {
			l := errorLineFromProto(b, pe, now)
			fields, _ := json.Marshal(l.Fields)
			rows = append(rows, []any{b.WorkspaceID, b.AgentID, l.Timestamp.Time, l.Level, l.Message, string(fields)})
			if tailed {
				lines = append(lines, Line{WorkspaceID: b.WorkspaceID, OrgID: b.OrgID, AgentID: b.AgentID,
					Level: l.Level, Message: l.Message, Timestamp: l.Timestamp, Fields: l.Fields})
			}
			if l.Timestamp.After(newest) {
				newest = l.Timestamp.Time
			}
		}
	}
	id := clean(b.BatchID(), 200)
	err = pgx.BeginFunc(ctx, in.svc.pool, func(tx pgx.Tx) error {
		if id != "" {
			tag, err := tx.Exec(ctx, `INSERT INTO log_batches (agent_id, kind, batch_id, lines) VALUES ($1, $2, $3, $4)
				ON CONFLICT DO NOTHING`, b.AgentID, kind, id, len(rows))
			if err != nil {
				return fmt.Errorf("record batch: %w", err)
			}
			if tag.RowsAffected() == 0 {
				dup = true
				return errDuplicate
			}
		}
		if len(rows) == 0 {
			return nil
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{table}, columns, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("copy into %s: %w", table, err)
		}
		if b.Access != nil && in.rollup != nil {
			if err := in.rollup(ctx, tx, b, now); err != nil {
				return fmt.Errorf("roll up access logs: %w", err)
			}
		}
		return nil
	})
	if errors.Is(err, errDuplicate) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	in.metrics.stored.WithLabelValues(kind).Add(float64(len(rows)))
	// Counted once per stored batch: a refused batch sent again, or a
	// redelivery, reports the same dropped lines.
	dropped := b.Errors.GetDroppedLines()
	if b.Access != nil {
		dropped = b.Access.GetDroppedLines()
	}
	if dropped > 0 {
		in.metrics.agentDrops.WithLabelValues(kind).Add(float64(dropped))
	}
	if !newest.IsZero() {
		in.metrics.lag.Set(time.Since(newest).Seconds())
	}
	return lines, false, nil
}

// errDuplicate rolls back the transaction of a redelivered batch.
var errDuplicate = errors.New("batch already stored")

var copyColumns = []string{"workspace_id", "agent_id", "virtual_host_id", "kind", "ts", "remote_addr", "method", "uri",
	"protocol", "host", "status", "body_bytes_sent", "request_time_ms", "user_agent", "referer", "request_id",
	"request_length", "bytes_sent", "upstream_addr", "upstream_response_time_ms", "scheme", "server_port", "stream_id"}

func (e *Entry) copyRow() []any {
	// pgtype.UUID encodes straight to the wire; a uuid.UUID would go through
	// its driver.Valuer and a text round trip for each row.
	var vh pgtype.UUID
	if e.VirtualHostID != nil {
		vh = pgtype.UUID{Bytes: *e.VirtualHostID, Valid: true}
	}
	return []any{pgtype.UUID{Bytes: e.workspaceID, Valid: true}, pgtype.UUID{Bytes: e.AgentID, Valid: true}, vh, e.Kind, e.Timestamp.Time, e.RemoteAddr, e.Method, e.URI,
		e.Protocol, e.Host, e.Status, e.BodyBytesSent, e.ResponseTimeMs, e.UserAgent, e.Referer, e.RequestID,
		e.RequestLength, e.BytesSent, e.UpstreamAddr, e.UpstreamResponseTimeMs, e.Scheme, e.ServerPort, e.StreamID}
}

// Bounds of what an agent sends, applied before storing.
const (
	maxShort   = 256
	maxURI     = 8192
	maxMessage = 16384
)

// clean makes s storable: valid UTF-8 without NUL bytes (PostgreSQL text
// refuses them), at most n bytes.
func clean(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func clampInt64(v uint64) int64 {
	if v > 1<<62 {
		return 1 << 62
	}
	return int64(v)
}

func entryFromProto(b agents.LogBatch, pe *agentv1.AccessLogEntry, now time.Time) Entry {
	ts := now
	if ms := pe.GetTimestampMs(); ms > 0 {
		ts = time.UnixMilli(ms)
	}
	e := Entry{
		AgentID: b.AgentID, workspaceID: b.WorkspaceID, Timestamp: Millis{ts.UTC()},
		RemoteAddr: clean(pe.GetRemoteAddr(), maxShort), Method: clean(pe.GetMethod(), 32), URI: clean(pe.GetUri(), maxURI),
		Protocol: clean(pe.GetProtocol(), 32), Host: clean(pe.GetHost(), maxShort), Status: int(min(pe.GetStatus(), 999)),
		BodyBytesSent: clampInt64(pe.GetBodyBytesSent()), ResponseTimeMs: pe.GetRequestTimeMs(),
		UserAgent: clean(pe.GetUserAgent(), 1024), Referer: clean(pe.GetReferer(), maxURI), RequestID: clean(pe.GetRequestId(), maxShort),
		RequestLength: clampInt64(pe.GetRequestLength()), BytesSent: clampInt64(pe.GetBytesSent()),
		UpstreamAddr: clean(pe.GetUpstreamAddr(), 1024), UpstreamResponseTimeMs: pe.GetUpstreamResponseTimeMs(),
		Scheme: clean(pe.GetScheme(), 16), ServerPort: int(min(pe.GetServerPort(), 65535)),
		Kind: KindHTTP, StreamID: clean(pe.GetStreamId(), maxShort),
	}
	switch k := strings.ToLower(pe.GetKind()); k {
	case KindTCP, KindUDP:
		e.Kind = k
	}
	if id, err := uuid.Parse(pe.GetVirtualHostId()); err == nil {
		e.VirtualHostID = &id
	}
	return e
}

func errorLineFromProto(b agents.LogBatch, pe *agentv1.LogEntry, now time.Time) ErrorLine {
	ts := now
	if ms, err := strconv.ParseInt(pe.GetFields()["timestamp_ms"], 10, 64); err == nil && ms > 0 {
		ts = time.UnixMilli(ms)
	} else if s := pe.GetTimestamp(); s > 0 {
		ts = time.Unix(s, 0)
	}
	l := ErrorLine{AgentID: b.AgentID, Timestamp: Millis{ts.UTC()}, Level: clean(strings.ToLower(pe.GetLevel()), 16),
		Message: clean(pe.GetMessage(), maxMessage), Fields: map[string]string{}}
	for k, v := range pe.GetFields() {
		if len(l.Fields) >= 32 {
			break
		}
		l.Fields[clean(k, 64)] = clean(v, 1024)
	}
	return l
}
