package app

import (
	"sync"
	"time"
)

// rateLimiter grants each credential limit requests per window (a fixed window,
// counted per replica). Buckets of idle credentials are dropped as windows roll.
type rateLimiter struct {
	limit  int
	window time.Duration

	mu     sync.Mutex
	start  time.Time
	counts map[string]int
}

func newRateLimiter(limit int, window time.Duration) *rateLimiter {
	return &rateLimiter{limit: limit, window: window, counts: map[string]int{}}
}

// take counts one request for key at now and returns 0 when allowed, or the
// number of seconds until the window resets.
func (l *rateLimiter) take(key string, now time.Time) int {
	if l == nil || l.limit <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.window {
		l.start = now.Truncate(l.window)
		clear(l.counts)
	}
	if l.counts[key] >= l.limit {
		retry := int(l.start.Add(l.window).Sub(now).Seconds() + 0.999)
		if retry < 1 {
			retry = 1
		}
		return retry
	}
	l.counts[key]++
	return 0
}
