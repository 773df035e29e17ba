package agents

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A replica stores what its streams report in batches rather than one
// transaction per message:
//
//   - Health reports wait at most healthCoalesce for others to join them;
//     one transaction (Service.recordHealthBatch) stores up to batchMax with
//     one UPDATE. Ten thousand agents with 10 s heartbeats make about five
//     transactions a second instead of a thousand, and what the API shows is
//     at most healthCoalesce older.
//   - Configuration pushes and statuses share one batcher, so an answer is
//     always stored after the push it answers. A batch is stored once no
//     item came for rolloutGap (at most gapMax after its first), pushes then
//     statuses in one transaction (Service.recordRollout): a rollout to a
//     thousand agents whose answers come at once is one transaction, where
//     a push answered in the same batch is written once, with its answer.
//     While pushes of a batch are not answered yet, it waits for answerGap
//     without items rather than rolloutGap, so that the answers of agents
//     that apply at once join it; once every push has its answer it is
//     stored at once. Once settledFlush of its pushes are answered, those
//     agents' items are stored at once and the others wait on, so that a
//     large rollout is recorded while its last answers are still coming.
//     A push is sent without waiting for its record.
//
// Items are stored in the order they arrived. A report whose stream is no
// longer the agent's ends that stream, as before.
const (
	healthCoalesce = 200 * time.Millisecond
	batchMax       = 1000
	// batchPendingMax bounds what waits while the database is slow; past it
	// the oldest items are dropped (a heartbeat is replaced by the next one;
	// an unrecorded status by the resend of its configuration).
	batchPendingMax = 50_000
	// rolloutGap is the pause in pushes and statuses that ends a rollout
	// batch.
	rolloutGap = 5 * time.Millisecond
	// batchTimeout bounds one batch's transaction.
	batchTimeout = 30 * time.Second
)

// tracker follows whether the items of a batch expect others, item by item
// as they are added (the batcher's lock held), until reset when the batch
// is taken.
type tracker[T any] interface {
	add(it T)
	// state: waiting when some items expect others still; complete when
	// some expected others and all have them.
	state() (waiting, complete bool)
	// met is how many expectations were met since the batch began or since
	// the last rebase.
	met() int
	// settled reports whether it can be stored without what is still
	// expected: the items it belongs with expect nothing more.
	settled(it T) bool
	// rebase starts counting met afresh once the settled items were taken,
	// the others staying in the batch.
	rebase()
	reset()
}

// batcher collects items and hands them to store in batches of at most
// batchMax, in order, from one goroutine (run).
type batcher[T any] struct {
	what     string
	coalesce time.Duration
	// gap, when set, lets a batch wait while items keep arriving: it is
	// stored once none came for gap, or gapMax after the first.
	gap time.Duration
	// answers, when set, follows what the items waiting expect (pushes
	// their answers). A waiting batch is stored after answerGap without
	// new items rather than gap; a complete one at once.
	answers tracker[T]
	// complete is signalled when an item makes the batch complete.
	complete chan struct{}
	// max is the most items one call of store gets.
	max    int
	logger *slog.Logger
	store  func(ctx context.Context, items []T)
	wake   chan struct{}

	mu      sync.Mutex
	pending []T
	dropped int
	lastAdd time.Time
}

func newBatcher[T any](what string, coalesce time.Duration, logger *slog.Logger, store func(context.Context, []T)) *batcher[T] {
	return &batcher[T]{what: what, coalesce: coalesce, logger: logger, store: store, wake: make(chan struct{}, 1), complete: make(chan struct{}, 1), max: batchMax}
}

// gapMax bounds how long a batch with a gap waits for more items.
const gapMax = 250 * time.Millisecond

// answerGap is how long a rollout batch whose pushes are not all answered
// waits without new items: the answers of agents that apply at once then
// join their pushes, and one transaction records both (a push answered in
// its batch is written once, with its answer). Agents that take longer are
// answered in a later batch, as before.
const answerGap = 30 * time.Millisecond

// settledFlush is how many met expectations (answered pushes) make a
// waiting batch store its settled part at once, the rest waiting on: a
// rollout to a thousand agents is then recorded while the later answers are
// still coming, instead of all after the last one.
const settledFlush = 256

// waitGap waits until no item was added for b.gap (answerGap while answers
// are awaited), the batch is complete or full, or gapMax passed; or, with
// settledPart true, until settledFlush expectations were met in a batch
// still waiting for others.
func (b *batcher[T]) waitGap(ctx context.Context) (settledPart bool) {
	deadline := time.Now().Add(gapMax)
	wait := b.gap
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		case <-b.complete:
			t.Stop()
		}
		b.mu.Lock()
		full, since := len(b.pending) >= b.max, time.Since(b.lastAdd)
		waiting, complete, met := false, false, 0
		if b.answers != nil {
			waiting, complete = b.answers.state()
			met = b.answers.met()
		}
		b.mu.Unlock()
		gap := b.gap
		if waiting {
			gap = answerGap
		}
		now := time.Now()
		if full || complete || since >= gap || !now.Before(deadline) {
			return false
		}
		if met >= settledFlush {
			return true
		}
		wait = min(gap-since, deadline.Sub(now))
	}
}

// add queues an item.
func (b *batcher[T]) add(it T) {
	b.mu.Lock()
	if len(b.pending) >= batchPendingMax {
		b.pending = b.pending[1:]
		b.dropped++
	}
	b.pending = append(b.pending, it)
	complete := false
	if b.answers != nil {
		b.answers.add(it)
		_, complete = b.answers.state()
		complete = complete || b.answers.met() == settledFlush
	}
	n := len(b.pending)
	if b.gap > 0 {
		b.lastAdd = time.Now()
	}
	b.mu.Unlock()
	if n == 1 || n >= b.max {
		signal(b.wake)
	}
	if complete {
		signal(b.complete)
	}
}

// run stores the queued items until ctx ends, then stores what is left.
func (b *batcher[T]) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			b.flush(fctx)
			cancel()
			return
		case <-b.wake:
		}
		if b.coalesce > 0 {
			// Let the items arriving meanwhile join this batch, unless
			// it is full already.
			t := time.NewTimer(b.coalesce)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-b.wake:
			}
			t.Stop()
		}
		if b.gap > 0 {
			for b.waitGap(ctx) {
				b.flushSettled(ctx)
			}
		}
		b.flush(ctx)
	}
}

// flushSettled stores the queued items the tracker finds settled, in order,
// and keeps the others queued, in order.
func (b *batcher[T]) flushSettled(ctx context.Context) {
	b.mu.Lock()
	var ready, rest []T
	for _, it := range b.pending {
		if b.answers.settled(it) {
			ready = append(ready, it)
		} else {
			rest = append(rest, it)
		}
	}
	b.pending = rest
	b.answers.rebase()
	b.mu.Unlock()
	b.storeAll(ctx, ready)
}

// flush stores every queued item, b.max per call of store.
func (b *batcher[T]) flush(ctx context.Context) {
	b.mu.Lock()
	items, dropped := b.pending, b.dropped
	b.pending, b.dropped = nil, 0
	if b.answers != nil {
		b.answers.reset()
	}
	b.mu.Unlock()
	if dropped > 0 {
		b.logger.WarnContext(ctx, "agents hub: items dropped while the database was slow", "what", b.what, "items", dropped)
	}
	b.storeAll(ctx, items)
}

// storeAll stores items, b.max per call of store.
func (b *batcher[T]) storeAll(ctx context.Context, items []T) {
	for len(items) > 0 {
		n := min(len(items), b.max)
		sctx, cancel := context.WithTimeout(ctx, batchTimeout)
		b.store(sctx, items[:n])
		cancel()
		items = items[n:]
	}
}
