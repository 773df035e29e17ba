package certs

import (
	"testing"
	"time"
)

func TestUI_Left(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		expires time.Time
		want    string
	}{
		{now.Add(10*24*time.Hour - time.Minute), "in 10 days"},
		{now.Add(36 * time.Hour), "in 2 days"},
		{now.Add(25 * time.Hour), "in 1 day"},
		{now.Add(3 * time.Hour), "expires today"},
		{now.Add(-3 * time.Hour), "expired today"},
		{now.Add(-2 * 24 * time.Hour), "expired 2 days ago"},
	} {
		if got := uiLeft(&tc.expires, now); got != tc.want {
			t.Errorf("uiLeft(%s) = %q, want %q", tc.expires.Sub(now), got, tc.want)
		}
	}
	if got := uiLeft(nil, now); got != "" {
		t.Errorf("uiLeft(nil) = %q", got)
	}
}

func TestUI_Fingerprint(t *testing.T) {
	t.Parallel()
	if got := uiFingerprint("0a1b2c"); got != "0A:1B:2C" {
		t.Errorf("uiFingerprint = %q", got)
	}
}
