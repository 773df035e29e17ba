package app

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// rateLimiter grants each credential limit requests per fixed window (the
// wall-clock minute), counted over every replica together.
//
// A request does not wait for the database as long as the credential is
// within this replica's share of its remaining limit: take decides from
// memory, with the cluster's total for the credential as of the last flush
// plus what this replica admitted since. About once every rateFlushInterval
// (at once when a credential's unflushed count reaches limit/rateKickDivisor
// or its share) one statement adds this replica's counts to
// rate_limit_windows and reads back the totals of every credential this
// replica saw in the window and the number of replicas up. A replica admits
// between two flushes at most the remainder of the limit divided by the
// replicas up; a request past that waits for the next flush. So replicas
// together admit the limit and then refuse, each within about a flush of the
// others, without a round trip per request.
//
// Without a pool (tests of the plumbing) the counts are this replica's
// only. Buckets of idle credentials are dropped as windows roll.
type rateLimiter struct {
	limit  int
	window time.Duration
	pool   *pgxpool.Pool
	logger *slog.Logger

	mu     sync.Mutex
	start  time.Time
	counts map[string]*rateCount
	// replicas is the number of replicas up at the last flush (at least 1).
	replicas int
	// flushed is closed, and replaced, when a flush ends.
	flushed chan struct{}

	kick    chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
	flushes int
}

// rateCount is one credential's requests in the current window.
type rateCount struct {
	// cluster is the total over every replica read back by the last flush
	// (this replica's flushed requests included).
	cluster int
	// inflight are admitted requests a running flush is adding.
	inflight int
	// pending are admitted requests not flushed yet.
	pending int
}

const (
	// rateFlushInterval is how often the counts are flushed.
	rateFlushInterval = time.Second
	// rateFlushGap is the least time between two flushes.
	rateFlushGap = 20 * time.Millisecond
	// rateShareWait is how long a request over its replica's share waits
	// for a flush, and rateShareWaits how many times, before it is admitted
	// on the limit alone (the database is slow or unreachable).
	rateShareWait  = 500 * time.Millisecond
	rateShareWaits = 3
	// rateKickDivisor: a credential's unflushed count of limit/rateKickDivisor
	// (at least 1) flushes at once.
	rateKickDivisor = 50
)

// newRateLimiter returns a limiter of limit requests per window; with a pool
// it starts flushing the counts to PostgreSQL until stop.
func newRateLimiter(limit int, window time.Duration, pool *pgxpool.Pool, logger *slog.Logger) *rateLimiter {
	l := &rateLimiter{limit: limit, window: window, counts: map[string]*rateCount{}, logger: logger, replicas: 1, flushed: make(chan struct{})}
	if pool == nil || limit <= 0 {
		return l
	}
	if l.logger == nil {
		l.logger = slog.New(slog.DiscardHandler)
	}
	l.pool = pool
	l.kick = make(chan struct{}, 1)
	l.done = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.run(ctx)
	return l
}

// stop ends the flushing (a last flush is attempted first).
func (l *rateLimiter) stop() {
	if l == nil || l.cancel == nil {
		return
	}
	l.cancel()
	<-l.done
	l.cancel = nil
}

// take counts one request for key at now and returns 0 when allowed, or the
// number of seconds until the window resets.
//
// Besides the limit, a replica admits between two flushes at most its share
// of what remains of the credential's limit (the remainder divided by the
// replicas up), so replicas admitting a burst at once cannot together pass
// the limit; a request over the share waits for the next flush (a few
// milliseconds, at most rateShareWait) and is decided again.
func (l *rateLimiter) take(key string, now time.Time) int {
	if l == nil || l.limit <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for waits := 0; ; waits++ {
		l.roll(now)
		c := l.counts[key]
		if c == nil {
			c = &rateCount{}
			l.counts[key] = c
		}
		local := c.inflight + c.pending
		if c.cluster+local >= l.limit {
			retry := int(l.start.Add(l.window).Sub(now).Seconds() + 0.999)
			if retry < 1 {
				retry = 1
			}
			return retry
		}
		share := (l.limit - c.cluster + l.replicas - 1) / l.replicas
		if l.kick == nil || local < share || waits >= rateShareWaits {
			c.pending++
			if l.kick != nil && c.pending >= max(1, min(share, l.limit/rateKickDivisor)) {
				l.kickFlush()
			}
			return 0
		}
		// Over this replica's share: learn the cluster's total first.
		l.kickFlush()
		flushed := l.flushed
		l.mu.Unlock()
		select {
		case <-flushed:
		case <-time.After(rateShareWait):
		}
		l.mu.Lock()
	}
}

// kickFlush asks for a flush now; l.mu is held.
func (l *rateLimiter) kickFlush() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// roll starts a new window when now is past the current one; l.mu is held.
func (l *rateLimiter) roll(now time.Time) {
	if now.Sub(l.start) >= l.window || now.Before(l.start) {
		l.start = now.Truncate(l.window)
		clear(l.counts)
	}
}

func (l *rateLimiter) run(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(rateFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			l.flush(fctx)
			cancel()
			return
		case <-t.C:
		case <-l.kick:
		}
		l.flush(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(rateFlushGap):
		}
	}
}

// flush adds this replica's pending counts to rate_limit_windows and reads
// back the cluster totals of every credential seen in the window, in one
// statement; once a minute it also deletes old windows.
func (l *rateLimiter) flush(ctx context.Context) {
	l.mu.Lock()
	l.roll(time.Now())
	window := l.start
	var keys, seen []string
	var deltas []int32
	for k, c := range l.counts {
		if c.pending > 0 {
			keys, deltas = append(keys, k), append(deltas, int32(c.pending))
			c.inflight, c.pending = c.pending, 0
		} else {
			seen = append(seen, k)
		}
	}
	l.mu.Unlock()
	if len(keys) == 0 && len(seen) == 0 {
		return
	}
	defer func() {
		l.mu.Lock()
		close(l.flushed)
		l.flushed = make(chan struct{})
		l.mu.Unlock()
	}()
	totals := make(map[string]int, len(keys)+len(seen))
	rows, err := l.pool.Query(ctx, `
WITH up AS (
    INSERT INTO rate_limit_windows (credential, window_start, count)
    SELECT d.credential, $1, d.n FROM unnest($2::text[], $3::int[]) AS d(credential, n)
    ON CONFLICT (credential, window_start) DO UPDATE SET count = rate_limit_windows.count + EXCLUDED.count
    RETURNING credential, count
)
SELECT credential, count FROM up
UNION ALL
SELECT credential, count FROM rate_limit_windows WHERE window_start = $1 AND credential = ANY($4::text[])
UNION ALL
SELECT '', count(*)::int FROM replicas WHERE stopped_at IS NULL AND last_seen_at > now() - make_interval(secs => $5)`,
		window, keys, deltas, seen, ReplicaDownAfter.Seconds())
	if err == nil {
		for rows.Next() {
			var k string
			var n int
			if err = rows.Scan(&k, &n); err != nil {
				break
			}
			totals[k] = n
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	l.mu.Lock()
	if n := totals[""]; err == nil {
		l.replicas = max(1, n)
	}
	if l.start.Equal(window) {
		for _, k := range keys {
			c := l.counts[k]
			if c == nil {
				continue
			}
			if err != nil {
				c.pending += c.inflight // retried by the next flush
			} else if n, ok := totals[k]; ok {
				c.cluster = n
			} else {
				c.cluster += c.inflight
			}
			c.inflight = 0
		}
		if err == nil {
			for _, k := range seen {
				if c, ok := l.counts[k]; ok && totals[k] > c.cluster {
					c.cluster = totals[k]
				}
			}
		}
	}
	l.flushes++
	prune := l.flushes%60 == 1
	l.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			l.logger.Warn("rate limit flush", "error", err)
		}
		return
	}
	if prune {
		if _, err := l.pool.Exec(ctx, `DELETE FROM rate_limit_windows WHERE window_start < $1`, window.Add(-2*l.window)); err != nil && ctx.Err() == nil {
			l.logger.Warn("rate limit prune", "error", err)
		}
	}
}
