package app

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Memory return after bursts. The Go runtime keeps the heap it grew to
// during a burst of work (an API load, a rollout to thousands of agents)
// until its next collection, and an idle master allocates so little that
// the next one can be two minutes away; the pages it then frees go back to
// the system slowly. The master watches its own allocation and, once a
// burst that raised the heap goal is over, collects and returns the free
// pages at once (debug.FreeOSMemory). Steady work, however heavy, does not
// trigger it: the goal must stand well above its lowest value of the last
// minutes and the allocation rate must have fallen to a quarter of its
// recent peak.
const (
	// memorySampleEvery is how often the allocation counters are read.
	memorySampleEvery = 2 * time.Second
	// memoryPeakWindow is how far back the allocation peak is looked for.
	memoryPeakWindow = time.Minute
	// memoryGoalWindow is how far back the lowest heap goal is looked for.
	memoryGoalWindow = 10 * time.Minute
	// memoryRateDrop is how far the allocation rate must fall below its
	// peak: the burst is over.
	memoryRateDrop = 4
	// memoryGoalRise and memoryGoalRiseBytes are how far the heap goal must
	// stand above its lowest value, as a fraction and in bytes.
	memoryGoalRise      = 1.25
	memoryGoalRiseBytes = 16 << 20
)

// memorySample is one reading of the runtime's counters.
type memorySample struct {
	allocs uint64 // bytes allocated since start
	goal   uint64 // heap goal of the current cycle
}

// burstWatch decides from successive samples when a burst has ended. It is
// not safe for concurrent use.
type burstWatch struct {
	every time.Duration
	rates []float64 // allocation rates, bytes/s, oldest first
	goals []uint64  // heap goals, oldest first
	last  memorySample
	begun bool
}

func newBurstWatch(every time.Duration) *burstWatch {
	return &burstWatch{every: every}
}

// observe takes the next sample and reports whether memory should be
// returned now. After a return the peak is forgotten, so one burst leads
// to one return.
func (w *burstWatch) observe(s memorySample) bool {
	if !w.begun {
		w.last, w.begun = s, true
		w.goals = append(w.goals, s.goal)
		return false
	}
	rate := float64(s.allocs-w.last.allocs) / w.every.Seconds()
	w.last = s
	peak := 0.0
	for _, r := range w.rates {
		peak = max(peak, r)
	}
	lowest := s.goal
	for _, g := range w.goals {
		lowest = min(lowest, g)
	}
	w.rates = keepLast(append(w.rates, rate), int(memoryPeakWindow/w.every))
	w.goals = keepLast(append(w.goals, s.goal), int(memoryGoalWindow/w.every))

	ended := peak > 0 && rate*memoryRateDrop <= peak
	raised := float64(s.goal) >= float64(lowest)*memoryGoalRise && s.goal-lowest >= memoryGoalRiseBytes
	if !ended || !raised {
		return false
	}
	w.rates = w.rates[:0]
	return true
}

// keepLast drops the oldest elements of s beyond n.
func keepLast[T any](s []T, n int) []T {
	if len(s) <= n {
		return s
	}
	return append(s[:0], s[len(s)-n:]...)
}

// memoryMetricNames are the runtime metrics memorySample is made of.
var memoryMetricNames = []string{"/gc/heap/allocs:bytes", "/gc/heap/goal:bytes"}

// returnMemory runs the burst watch until ctx ends, counting each return
// in returns.
func returnMemory(ctx context.Context, logger *slog.Logger, returns prometheus.Counter) {
	samples := make([]metrics.Sample, len(memoryMetricNames))
	for i, name := range memoryMetricNames {
		samples[i].Name = name
	}
	read := func() memorySample {
		metrics.Read(samples)
		var s memorySample
		if samples[0].Value.Kind() == metrics.KindUint64 {
			s.allocs = samples[0].Value.Uint64()
		}
		if samples[1].Value.Kind() == metrics.KindUint64 {
			s.goal = samples[1].Value.Uint64()
		}
		return s
	}
	w := newBurstWatch(memorySampleEvery)
	w.observe(read())
	t := time.NewTicker(memorySampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := read()
		if !w.observe(s) {
			continue
		}
		start := time.Now()
		debug.FreeOSMemory()
		returns.Inc()
		logger.Debug("memory returned after a burst", "heap_goal_before", s.goal, "took", time.Since(start))
	}
}
