// Package backoff holds the reconnect loop of the master's long-lived
// database listeners (live events, cache invalidation, the live log tail).
package backoff

import (
	"context"
	"time"
)

// Reconnect calls attempt until ctx ends. Between attempts it waits, starting
// at first and doubling up to max; an attempt that connected before it ended
// starts the wait over at first. lost, when not nil, is told why an attempt
// ended and how long the next wait is (it is not called once ctx has ended).
func Reconnect(ctx context.Context, first, max time.Duration,
	attempt func(ctx context.Context) (connected bool, err error), lost func(err error, retryIn time.Duration)) {
	wait := first
	for ctx.Err() == nil {
		connected, err := attempt(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			wait = first
		}
		if lost != nil {
			lost(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, max)
	}
}
