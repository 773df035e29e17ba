package app

import (
	"testing"
	"time"
)

func TestBurstWatch(t *testing.T) {
	const (
		every = 2 * time.Second
		mib   = 1 << 20
	)
	// step is one sample: allocation over the step (MiB) and the heap goal
	// (MiB) at its end.
	type step struct{ allocMiB, goalMiB uint64 }
	steady := func(n int, alloc, goal uint64) []step {
		s := make([]step, n)
		for i := range s {
			s[i] = step{alloc, goal}
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		steps []step
		want  []int // indexes of steps that return memory
	}{
		{
			name:  "steady heavy work never returns",
			steps: steady(200, 200, 700),
		},
		{
			name:  "a burst that raised the goal returns once when it ends",
			steps: cat(steady(10, 4, 120), steady(30, 200, 300), steady(20, 4, 300)),
			want:  []int{40},
		},
		{
			name: "a short allocation spike that leaves the goal alone does not return",
			// A periodic job allocates a lot, briefly; the goal stays.
			steps: cat(steady(10, 4, 120), steady(2, 100, 125), steady(20, 4, 120)),
		},
		{
			name:  "a goal raised by less than 25 % does not return",
			steps: cat(steady(10, 4, 400), steady(10, 200, 480), steady(10, 4, 480)),
		},
		{
			name:  "a goal raised by less than 16 MiB does not return",
			steps: cat(steady(10, 1, 20), steady(10, 50, 34), steady(10, 1, 34)),
		},
		{
			name:  "a rate that falls by less than four times does not return",
			steps: cat(steady(10, 4, 120), steady(10, 200, 300), steady(10, 60, 300)),
		},
		{
			name:  "two bursts return twice",
			steps: cat(steady(5, 4, 120), steady(10, 200, 300), steady(5, 4, 300), steady(5, 4, 120), steady(10, 200, 300), steady(5, 4, 300)),
			want:  []int{15, 35},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newBurstWatch(every)
			var allocs uint64
			w.observe(memorySample{allocs: 0, goal: tt.steps[0].goalMiB * mib})
			var got []int
			for i, s := range tt.steps {
				allocs += s.allocMiB * mib
				if w.observe(memorySample{allocs: allocs, goal: s.goalMiB * mib}) {
					got = append(got, i)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("returned at steps %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("returned at steps %v, want %v", got, tt.want)
				}
			}
		})
	}
}
