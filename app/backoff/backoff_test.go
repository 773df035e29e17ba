package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReconnect waits longer after each failed attempt, starts over after
// one that connected, and stops when the context ends.
func TestReconnect(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := []bool{false, false, true, false}
	var waits []time.Duration
	n := 0
	Reconnect(ctx, time.Millisecond, 3*time.Millisecond, func(context.Context) (bool, error) {
		if n == len(results) {
			cancel()
			return false, nil
		}
		n++
		return results[n-1], errors.New("gone")
	}, func(err error, retryIn time.Duration) {
		if err == nil {
			t.Error("lost without the reason")
		}
		waits = append(waits, retryIn)
	})
	want := []time.Duration{time.Millisecond, 2 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}
	if len(waits) != len(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
}
