package agents

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunner(t *testing.T) {
	t.Parallel()
	t.Run("NoPassBeforeStartOrAfterStop", func(t *testing.T) {
		t.Parallel()
		var n atomic.Int32
		r := &runner{pass: func() { n.Add(1) }}
		r.kick()
		r.kick()
		time.Sleep(20 * time.Millisecond)
		if n.Load() != 0 {
			t.Fatalf("%d passes before start", n.Load())
		}
		r.start()
		deadline := time.Now().Add(2 * time.Second)
		for n.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if !r.stop(time.Second) {
			t.Fatal("stop did not wait for the pass")
		}
		if n.Load() != 1 {
			t.Fatalf("%d passes for kicks before start, want 1", n.Load())
		}
		r.kick()
		r.start()
		time.Sleep(20 * time.Millisecond)
		if n.Load() != 1 {
			t.Fatalf("a pass ran after stop")
		}
	})
	t.Run("KickDuringPassRunsAnotherOneNeverTwoAtOnce", func(t *testing.T) {
		t.Parallel()
		var running, most, passes atomic.Int32
		release := make(chan struct{})
		r := &runner{pass: func() {
			if v := running.Add(1); v > most.Load() {
				most.Store(v)
			}
			if passes.Add(1) == 1 {
				<-release
			}
			running.Add(-1)
		}}
		r.start()
		r.kick()
		for passes.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(r.kick)
		}
		wg.Wait()
		close(release)
		deadline := time.Now().Add(2 * time.Second)
		for passes.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		r.stop(time.Second)
		if p := passes.Load(); p != 2 {
			t.Fatalf("%d passes, want 2 (kicks during a pass coalesce into one)", p)
		}
		if most.Load() != 1 {
			t.Fatalf("%d passes at once", most.Load())
		}
	})
	t.Run("StopGivesUpAfterItsWait", func(t *testing.T) {
		t.Parallel()
		block := make(chan struct{})
		defer close(block)
		r := &runner{pass: func() { <-block }}
		r.start()
		r.kick()
		time.Sleep(10 * time.Millisecond)
		if r.stop(20 * time.Millisecond) {
			t.Fatal("stop reported idle while a pass was blocked")
		}
	})
}
