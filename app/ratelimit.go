package app

import (
	"sync"
	"time"
)

// rateLimiter grants each key (a credential, a client address) limit events
// per window (a fixed window, counted per replica). Buckets of idle keys are
// dropped as windows roll.
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
	if retry := l.exhausted(key, now); retry > 0 {
		return retry
	}
	l.counts[key]++
	return 0
}

// blocked returns the number of seconds until the window resets when key
// has used its budget at now, 0 otherwise; it counts nothing. With take
// counting failures only, it tells whether key may try again.
func (l *rateLimiter) blocked(key string, now time.Time) int {
	if l == nil || l.limit <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exhausted(key, now)
}

// exhausted rolls the window to now and returns the seconds until it resets
// when key has used its budget, 0 otherwise. l.mu is held.
func (l *rateLimiter) exhausted(key string, now time.Time) int {
	if now.Sub(l.start) >= l.window {
		l.start = now.Truncate(l.window)
		clear(l.counts)
	}
	if l.counts[key] < l.limit {
		return 0
	}
	retry := int(l.start.Add(l.window).Sub(now).Seconds() + 0.999)
	if retry < 1 {
		retry = 1
	}
	return retry
}
