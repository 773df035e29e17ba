package agents

import (
	"context"
	"errors"
	"sync"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Health reports from the streams of a replica are stored in batches: a
// report waits at most healthCoalesce for others to join it, and one
// transaction (Service.recordHealthBatch) stores up to healthBatchMax of
// them with one UPDATE. Ten thousand agents with 10 s heartbeats make about
// five transactions a second instead of a thousand, and what the API shows
// is at most healthCoalesce older. A report whose stream is no longer the
// agent's ends that stream, as before.
const (
	healthCoalesce = 200 * time.Millisecond
	healthBatchMax = 1000
	// healthPendingMax bounds the reports waiting while the database is
	// slow; past it the oldest are dropped (the next heartbeat replaces
	// them).
	healthPendingMax = 50_000
	// healthFlushTimeout bounds one batch's transaction.
	healthFlushTimeout = 30 * time.Second
)

type pendingHealth struct {
	item healthItem
	conn *conn
}

// healthWriter batches the health reports of this replica's streams.
type healthWriter struct {
	hub  *Hub
	wake chan struct{}

	mu      sync.Mutex
	pending []pendingHealth
	dropped int
}

func newHealthWriter(h *Hub) *healthWriter {
	return &healthWriter{hub: h, wake: make(chan struct{}, 1)}
}

// add queues a report received on c's stream.
func (w *healthWriter) add(c *conn, rep *agentv1.HealthReport) {
	sid := c.streamID
	w.mu.Lock()
	if len(w.pending) >= healthPendingMax {
		w.pending = w.pending[1:]
		w.dropped++
	}
	w.pending = append(w.pending, pendingHealth{item: healthItem{agentID: c.agentID, streamID: &sid, rep: rep}, conn: c})
	n := len(w.pending)
	w.mu.Unlock()
	if n == 1 || n >= healthBatchMax {
		signal(w.wake)
	}
}

// run stores the queued reports until ctx ends, then stores what is left.
func (w *healthWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			w.flush(fctx)
			cancel()
			return
		case <-w.wake:
		}
		// Let the reports arriving meanwhile join this batch, unless it
		// is full already.
		t := time.NewTimer(healthCoalesce)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-w.wake:
		}
		t.Stop()
		w.flush(ctx)
	}
}

// flush stores every queued report, healthBatchMax per transaction.
func (w *healthWriter) flush(ctx context.Context) {
	w.mu.Lock()
	batch, dropped := w.pending, w.dropped
	w.pending, w.dropped = nil, 0
	w.mu.Unlock()
	log := w.hub.logger
	if dropped > 0 {
		log.WarnContext(ctx, "agents hub: health reports dropped while the database was slow", "reports", dropped)
	}
	for len(batch) > 0 {
		n := min(len(batch), healthBatchMax)
		part := batch[:n]
		batch = batch[n:]
		items := make([]healthItem, n)
		for i, p := range part {
			items[i] = p.item
		}
		fctx, cancel := context.WithTimeout(ctx, healthFlushTimeout)
		errs, err := w.hub.svc.recordHealthBatch(fctx, items)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				log.ErrorContext(ctx, "agents hub: record health reports", "reports", n, "error", err)
			}
			continue
		}
		for i, p := range part {
			if errors.Is(errs[i], errGone) {
				p.conn.close(ReasonReplaced)
				continue
			}
			w.hub.observed("message", p.item.agentID)
		}
	}
}
