package events

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestEvents_PackNotifications(t *testing.T) {
	t.Parallel()
	org := uuid.New()
	event := func(i, pad int) Event {
		return Event{Type: "config.applied", OrgID: org, Data: map[string]any{"i": i, "pad": strings.Repeat("x", pad)}}
	}
	for _, tc := range []struct {
		name      string
		evs       []Event
		wantPacks int
	}{
		{"one", []Event{event(0, 10)}, 1},
		{"a thousand small ones", func() []Event {
			evs := make([]Event, 1000)
			for i := range evs {
				evs[i] = event(i, 150)
			}
			return evs
		}(), 50},
		{"a large one between small ones", []Event{event(0, 10), event(1, 7800), event(2, 10)}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			packs, err := packNotifications(tc.evs)
			if err != nil {
				t.Fatal(err)
			}
			if len(packs) > tc.wantPacks {
				t.Errorf("%d notifications for %d events, want at most %d", len(packs), len(tc.evs), tc.wantPacks)
			}
			next := 0
			for _, p := range packs {
				if len(p) > maxEventPayload {
					t.Fatalf("a notification of %d bytes, over PostgreSQL's limit", len(p))
				}
				ds, err := decodeNotifications(p)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range ds {
					var got struct{ Data map[string]any }
					if err := json.Unmarshal(d.json, &got); err != nil {
						t.Fatal(err)
					}
					if got.Data["i"] != float64(next) {
						t.Fatalf("event %v where %d was due", got.Data["i"], next)
					}
					next++
				}
			}
			if next != len(tc.evs) {
				t.Fatalf("%d events decoded, want %d", next, len(tc.evs))
			}
		})
	}
}
