package events

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

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

// TestEvents_DecodedDataPassesThrough: what a stream receives carries the
// data as published, and each in-process subscriber gets its own decoded
// copy (numbers kept exact).
func TestEvents_DecodedDataPassesThrough(t *testing.T) {
	t.Parallel()
	org, ws := uuid.New(), uuid.New()
	for _, tc := range []struct {
		name string
		data map[string]any
		want map[string]any
	}{
		{"values", map[string]any{"agent_id": "a", "version": int64(9007199254740993), "ok": true, "nested": map[string]any{"x": []any{1, "<b>"}}},
			map[string]any{"agent_id": "a", "version": json.Number("9007199254740993"), "ok": true, "nested": map[string]any{"x": []any{json.Number("1"), "<b>"}}}},
		{"no data", nil, map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			packs, err := packNotifications([]Event{{Type: "config.applied", OrgID: org, WorkspaceID: ws, Data: tc.data}})
			if err != nil {
				t.Fatal(err)
			}
			ds, err := decodeNotifications(packs[0])
			if err != nil || len(ds) != 1 {
				t.Fatalf("decoded %d events: %v", len(ds), err)
			}
			d := ds[0]
			var got struct {
				Type        string
				WorkspaceID uuid.UUID `json:"workspace_id"`
				OrgID       uuid.UUID `json:"org_id"`
				Data        map[string]any
			}
			dec := json.NewDecoder(strings.NewReader(string(d.json)))
			dec.UseNumber()
			if err := dec.Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.Type != "config.applied" || got.WorkspaceID != ws || got.OrgID != org || !reflect.DeepEqual(got.Data, tc.want) {
				t.Fatalf("stream message %s", d.json)
			}
			a, b := d.event(), d.event()
			if !reflect.DeepEqual(a.Data, tc.want) || a.OrgID != org || a.Type != "config.applied" {
				t.Fatalf("event() = %+v", a)
			}
			a.Data["changed"] = true
			if _, shared := b.Data["changed"]; shared {
				t.Fatal("two subscribers share one data map")
			}
		})
	}
	if _, err := decodeNotification(`{"type":"x","data":[1]}`); err == nil {
		t.Fatal("data that is not an object was accepted")
	}
	// A bad event in an array is skipped and reported; the others go out,
	// in order, whichever way the array is taken apart.
	for _, payload := range []string{
		`[{"type":"a","data":{"x":1}},{"type":"b","data":[1]},{"type":"c"}]`,
		`[{"type":"a","data":{"x":1}},"not an event",{"type":"c"}]`,
	} {
		ds, err := decodeNotifications(payload)
		if err == nil || len(ds) != 2 || ds[0].ev.Type != "a" || ds[1].ev.Type != "c" {
			t.Fatalf("%s: %d deliveries, error %v", payload, len(ds), err)
		}
		if !strings.Contains(string(ds[1].json), `"data":{}`) {
			t.Fatalf("an event without data is sent as %s", ds[1].json)
		}
	}
}

// TestEvents_ParsePackedMatchesEncodingJSON: what the fast reader of packed
// notifications makes of a payload is what encoding/json makes of it, for
// payloads written by hand (appendNotification) and by encoding/json
// (data it does not encode by hand); payloads in another form are left to
// encoding/json.
func TestEvents_ParsePackedMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	org, ws := uuid.New(), uuid.New()
	ts := time.Date(2026, 12, 4, 5, 6, 7, 890123000, time.UTC)
	evs := []Event{
		{Type: "config.applied", OrgID: org, WorkspaceID: ws, Timestamp: ts, Data: map[string]any{"agent_id": "a", "version": int64(7), "success": true}},
		{Type: "agent.connected", OrgID: org, Timestamp: ts, Object: "agents.agent", Data: map[string]any{"braces": "}{][", "quote": `a "b" \c`, "nil": nil}},
		{Type: "metrics.alert", OrgID: org, WorkspaceID: ws, Timestamp: ts, Data: map[string]any{"value": 1.25, "nested": map[string]any{"x": []any{1, "}"}}}},
		{Type: "cert.renewed", OrgID: org, WorkspaceID: ws, Timestamp: ts, Data: map[string]any{}},
	}
	packs, err := packNotifications(evs)
	if err != nil {
		t.Fatal(err)
	}
	if len(packs) != 1 {
		t.Fatalf("%d packs", len(packs))
	}
	got, ok := parsePacked(packs[0])
	if !ok {
		t.Fatalf("parsePacked refused %s", packs[0])
	}
	var want []receivedNotification
	if err := json.Unmarshal([]byte(packs[0]), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsePacked:\n%+v\nencoding/json:\n%+v", got, want)
	}

	for _, payload := range []string{
		`[]`,
		`{"type":"a.b"}`,
		`[{"data":{},"type":"a.b","timestamp":"2026-12-04T05:06:07Z","workspace_id":"` + ws.String() + `","org_id":"` + org.String() + `"}]`,
		`[{"type":"a\u002eb","timestamp":"2026-12-04T05:06:07Z","data":{},"workspace_id":"` + ws.String() + `","org_id":"` + org.String() + `"}]`,
		`[{"type":"a.b","timestamp":"2026-12-04T05:06:07Z","data":{},"workspace_id":"` + ws.String() + `","org_id":"` + org.String() + `"}`,
		`[{"type":"a.b","timestamp":"2026-12-04T05:06:07Z","data":{},"workspace_id":"` + ws.String() + `","org_id":"` + org.String() + `"}] `,
	} {
		if _, ok := parsePacked(payload); ok {
			t.Errorf("parsePacked accepted %s", payload)
		}
	}
}

// TestEvents_AppendNotificationMatchesEncodingJSON: an event written by
// hand is byte for byte what encoding/json writes; data it cannot write
// are refused.
func TestEvents_AppendNotificationMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	for _, tc := range []struct {
		name string
		n    notification
		ok   bool
	}{
		{"flat data", notification{Type: "config.applied", Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC), WorkspaceID: id, OrgID: id,
			Data: map[string]any{"agent_id": id.String(), "version": int64(3), "duration_ms": int64(0), "success": true, "error_message": "<x> & \"y\""}}, true},
		{"an object, no workspace", notification{Type: "agent.connected", Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), OrgID: id, Object: "agents.agent", Data: map[string]any{}}, true},
		{"a float", notification{Type: "metrics.alert", Timestamp: time.Now().UTC(), Data: map[string]any{"value": 0.5}}, false},
		{"year 10000", notification{Type: "a.b", Timestamp: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Data: map[string]any{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := appendNotification(nil, &tc.n)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			want, err := json.Marshal(tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}
