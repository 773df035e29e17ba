package app

import (
	"sync"
	"time"
)

// failureLimiter counts failures per key (a client address) in a fixed
// window on this replica, and tells when a key has used its budget: the
// failed first-message authentications of the live sockets. Buckets of idle
// keys are dropped as windows roll.
type failureLimiter struct {
	limit  int
	window time.Duration

	mu     sync.Mutex
	start  time.Time
	counts map[string]int
}

func newFailureLimiter(limit int, window time.Duration) *failureLimiter {
	return &failureLimiter{limit: limit, window: window, counts: map[string]int{}}
}

// take counts one failure for key at now and returns 0 when it was within
// the budget, or the number of seconds until the window resets.
func (l *failureLimiter) take(key string, now time.Time) int {
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
// has used its budget at now, 0 otherwise; it counts nothing.
func (l *failureLimiter) blocked(key string, now time.Time) int {
	if l == nil || l.limit <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exhausted(key, now)
}

// exhausted rolls the window to now and returns the seconds until it resets
// when key has used its budget, 0 otherwise. l.mu is held.
func (l *failureLimiter) exhausted(key string, now time.Time) int {
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
