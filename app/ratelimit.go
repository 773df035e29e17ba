package app

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// rateLimiter grants each credential limit requests per fixed window (the
// wall-clock minute), over every replica together.
//
// Replicas claim a credential's requests from rate_limit_windows in batches
// (a lease of limit/(rateBatchDivisor × replicas up), at least one) and
// admit them from memory; the row never grants more than limit in a window,
// so the replicas together never admit more. A replica asks for the next
// batch when half of its lease is used, so a request waits for the database
// only when its credential's lease ran out (near the limit, or the first
// request of a credential in a window on this replica). All the claims of a
// moment go in one statement. What a replica claimed but did not use is
// lost when the window ends: at most one batch per replica, 1/rateBatchDivisor
// of the limit in all. Once the row granted everything, every replica
// refuses the credential (429 with Retry-After) until the window ends.
//
// If the database does not answer within rateClaimWait, the request is
// admitted on this replica's own count. Without a pool (tests of the
// plumbing), or with a limit of 2^30 or more, the counts are this replica's
// only. Buckets of idle credentials
// are dropped as windows roll.
type rateLimiter struct {
	limit  int
	window time.Duration
	pool   *pgxpool.Pool
	logger *slog.Logger

	mu     sync.Mutex
	start  time.Time
	counts map[string]*rateCount
	// replicas is the number of replicas up, as last read (at least 1).
	replicas int
	// claimed is closed, and replaced, when a claim ends.
	claimed chan struct{}

	kick    chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
	flushes int
}

// rateCount is one credential's requests in the current window on this
// replica.
type rateCount struct {
	// granted are the requests this replica claimed, used those it admitted.
	granted, used int
	// want: a claim is due; claiming: it is in flight.
	want, claiming bool
	// exhausted: the window's limit is granted; refuse once used = granted.
	exhausted bool
}

const (
	// rateRefreshInterval is how often the number of replicas up is read
	// (and old windows pruned, every 60th time).
	rateRefreshInterval = time.Second
	// rateBatchDivisor: a claim asks for limit/(rateBatchDivisor × replicas).
	rateBatchDivisor = 40
	// rateClaimWait is how long a request waits for its credential's claim.
	rateClaimWait = 2 * time.Second
)

// newRateLimiter returns a limiter of limit requests per window; with a pool
// it claims from PostgreSQL until stop.
func newRateLimiter(limit int, window time.Duration, pool *pgxpool.Pool, logger *slog.Logger) *rateLimiter {
	l := &rateLimiter{limit: limit, window: window, counts: map[string]*rateCount{}, logger: logger, replicas: 1, claimed: make(chan struct{})}
	// A limit this large is no limit (tests and benchmarks set it so); the
	// row's integer counts stay in range.
	if pool == nil || limit <= 0 || limit >= 1<<30 {
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

// stop ends the claiming.
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
func (l *rateLimiter) take(key string, now time.Time) int {
	if l == nil || l.limit <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	deadline := time.Now().Add(rateClaimWait)
	for {
		l.roll(now)
		c := l.counts[key]
		if c == nil {
			c = &rateCount{}
			l.counts[key] = c
		}
		if l.pool == nil {
			c.granted = l.limit
		}
		if c.used < c.granted {
			c.used++
			if !c.exhausted && c.granted-c.used <= l.batch()/2 {
				l.want(c)
			}
			return 0
		}
		if c.exhausted {
			retry := int(l.start.Add(l.window).Sub(now).Seconds() + 0.999)
			if retry < 1 {
				retry = 1
			}
			return retry
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			// The database is slow or down: admit on this replica's count.
			c.granted++
			c.used++
			return 0
		}
		l.want(c)
		claimed := l.claimed
		l.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-claimed:
		case <-t.C:
		}
		t.Stop()
		l.mu.Lock()
		now = time.Now()
	}
}

// batch is the number of requests a claim asks for; l.mu is held.
func (l *rateLimiter) batch() int {
	return max(1, l.limit/(rateBatchDivisor*l.replicas))
}

// want marks c for the next claim and asks for one now; l.mu is held.
func (l *rateLimiter) want(c *rateCount) {
	c.want = true
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
	t := time.NewTicker(rateRefreshInterval)
	defer t.Stop()
	l.refresh(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.refresh(ctx)
		case <-l.kick:
		}
		if err := l.claim(ctx); err != nil {
			select { // the database failed: do not retry at once
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// refresh reads the number of replicas up and, once a minute, deletes old
// windows.
func (l *rateLimiter) refresh(ctx context.Context) {
	var n int
	err := l.pool.QueryRow(ctx, `SELECT count(*) FROM replicas WHERE stopped_at IS NULL AND last_seen_at > now() - make_interval(secs => $1)`,
		ReplicaDownAfter.Seconds()).Scan(&n)
	l.mu.Lock()
	if err == nil {
		l.replicas = max(1, n)
	}
	window := l.start
	l.flushes++
	prune := l.flushes%60 == 1
	l.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		l.logger.Warn("rate limit: count replicas", "error", err)
	}
	if prune && !window.IsZero() {
		if _, err := l.pool.Exec(ctx, `DELETE FROM rate_limit_windows WHERE window_start < $1`, window.Add(-2*l.window)); err != nil && ctx.Err() == nil {
			l.logger.Warn("rate limit prune", "error", err)
		}
	}
}

// claim asks rate_limit_windows, in one statement, for a batch of every
// credential that wants one, and wakes the requests waiting for them.
func (l *rateLimiter) claim(ctx context.Context) error {
	l.mu.Lock()
	l.roll(time.Now())
	window := l.start
	batch := l.batch()
	var keys []string
	for k, c := range l.counts {
		if c.want && !c.claiming && !c.exhausted {
			c.want, c.claiming = false, true
			keys = append(keys, k)
		}
	}
	l.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	grants := make(map[string]int, len(keys))
	rows, err := l.pool.Query(ctx, `
INSERT INTO rate_limit_windows AS w (credential, window_start, count, last_grant)
SELECT k, $1, LEAST($3::int, $4::int), LEAST($3::int, $4::int) FROM unnest($2::text[]) AS k
ON CONFLICT (credential, window_start) DO UPDATE
SET count = w.count + LEAST($3::int, GREATEST(0, $4::int - w.count)),
    last_grant = LEAST($3::int, GREATEST(0, $4::int - w.count))
RETURNING credential, last_grant`, window, keys, batch, l.limit)
	if err == nil {
		for rows.Next() {
			var k string
			var n int
			if err = rows.Scan(&k, &n); err != nil {
				break
			}
			grants[k] = n
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	l.mu.Lock()
	for _, k := range keys {
		c := l.counts[k]
		if c == nil || !l.start.Equal(window) {
			continue
		}
		c.claiming = false
		if err != nil {
			continue
		}
		n := grants[k]
		c.granted += n
		if n < batch {
			c.exhausted = true
		}
	}
	close(l.claimed)
	l.claimed = make(chan struct{})
	l.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		l.logger.Warn("rate limit claim", "error", err)
	}
	return err
}
