package app

import (
	"testing"
	"time"
)

func TestInWindow(t *testing.T) {
	now := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	keep := 7 * 24 * time.Hour
	for _, tc := range []struct {
		name string
		day  time.Time
		want bool
	}{
		{"today", now, true},
		{"first day of the window", time.Date(2026, 3, 3, 23, 59, 0, 0, time.UTC), true},
		{"before the window", time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC), false},
		{"last day ahead", time.Date(2026, 3, 13, 0, 0, 0, 0, time.UTC), true},
		{"past the days ahead", time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := InWindow(tc.day, now, keep, 3); got != tc.want {
				t.Fatalf("InWindow(%s) = %v, want %v", tc.day, got, tc.want)
			}
		})
	}
}
