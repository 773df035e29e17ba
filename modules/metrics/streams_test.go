package metrics

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app/authz"
)

// TestAPI_StreamsMetricsAndReset counts a stream's sessions from the rollups,
// resets its counters (operator and above only) and counts from the reset
// on, while the workspace keeps the sessions.
func TestAPI_StreamsMetricsAndReset(t *testing.T) {
	w := setupWide(t)
	ctx := context.Background()
	at := func(d time.Duration) time.Time { return w.base.Add(d) }
	w.ingest(t, w.online, "s1",
		session(at(10*time.Second), w.stream, 200, 100, 1000, 1500, "10.0.0.1"),
		session(at(70*time.Second), w.stream, 200, 200, 2000, 30, "10.0.0.2"),
		session(at(80*time.Second), w.stream, 502, 50, 0, 1, "10.0.0.2"),
		// Another stream, and an HTTP request of the virtual host.
		session(at(90*time.Second), uuid.New(), 200, 9999, 9999, 1, "10.0.0.3"),
		request(at(95*time.Second), "www.example.com", "/", 200, "10.0.0.4", "curl", w.vh),
	)
	path := "/v1/streams/" + w.stream.String()
	now := time.Now().UTC()
	var m StreamMetrics
	w.get(t, path+"/metrics", map[string]string{"from": rfc(w.base), "to": rfc(w.base.Add(time.Hour)), "interval": "1m"}, &m)
	if m.StreamID != w.stream || m.CountersResetAt != nil || m.Sessions != 3 || m.Bandwidth != (Bandwidth{350, 3000}) ||
		m.StatusCodes.S2xx != 2 || m.StatusCodes.S5xx != 1 {
		t.Fatalf("stream metrics %+v, want 3 sessions, 350 bytes in, 3000 out", m)
	}
	if len(m.Series) != 60 || m.Series[0].Sessions != 1 || m.Series[1].Sessions != 2 || m.Series[1].InBytes != 250 {
		t.Fatalf("series of %d points, first %+v, second %+v", len(m.Series), m.Series[0], m.Series[1])
	}
	if m.SessionTimeMs.P99 < 1000 {
		t.Fatalf("session time %+v, want the 1.5 s session in p99", m.SessionTimeMs)
	}

	// Only operators and above reset; a viewer is refused and nothing changes.
	for _, tc := range []struct {
		who  string
		want int
	}{
		{authz.RoleViewer, http.StatusForbidden},
		{"outsider", http.StatusNotFound},
		{authz.RoleOperator, http.StatusOK},
	} {
		r := w.clients[tc.who].Do(t, http.MethodPost, path+"/reset-counters", nil)
		if r.Status != tc.want {
			t.Fatalf("reset as %s: status %d, want %d: %s", tc.who, r.Status, tc.want, r.Body)
		}
		if tc.want != http.StatusOK {
			var n int
			if err := w.a.Deps.Pool.QueryRow(ctx, "SELECT count(*) FROM stream_counter_resets").Scan(&n); err != nil || n != 0 {
				t.Fatalf("after a refused reset: %d rows, %v", n, err)
			}
		}
	}
	resetAt, err := w.mod.Service().StreamResetAt(ctx, w.stream)
	if err != nil || resetAt == nil || resetAt.Before(now.Add(-time.Minute)) {
		t.Fatalf("reset at %v, %v", resetAt, err)
	}
	var audits int
	if err := w.a.Deps.Pool.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE action = 'stream.reset_counters' AND object_id = $1", w.stream.String()).Scan(&audits); err != nil || audits != 1 {
		t.Fatalf("audit entries %d, %v", audits, err)
	}

	// From the reset on: the sessions before it are not counted, those of a
	// later minute are.
	later := resetAt.Truncate(time.Minute).Add(time.Minute + 5*time.Second)
	w.ingest(t, w.online, "s2",
		session(resetAt.Add(-time.Millisecond), w.stream, 200, 7, 7, 1, "10.0.0.1"),
		session(later, w.stream, 200, 10, 20, 1, "10.0.0.1"))
	params := map[string]string{"from": rfc(w.base), "to": rfc(later.Add(5 * time.Minute))}
	m = StreamMetrics{}
	w.get(t, path+"/metrics", params, &m)
	if m.CountersResetAt == nil || !m.CountersResetAt.Equal(*resetAt) || !m.From.Equal(*resetAt) || m.Sessions != 1 || m.Bandwidth != (Bandwidth{10, 20}) {
		t.Fatalf("after the reset: %+v, want the later session only, from %s", m, resetAt)
	}
	// A range ending before the reset counts nothing.
	m = StreamMetrics{}
	w.get(t, path+"/metrics", map[string]string{"from": rfc(w.base), "to": rfc(w.base.Add(time.Hour)), "interval": "5m"}, &m)
	if m.Sessions != 0 || len(m.Series) != 0 || !m.From.Equal(*resetAt) {
		t.Fatalf("range before the reset: %+v", m)
	}
	// The workspace's traffic keeps every session.
	var sum Summary
	w.get(t, "/v1/workspaces/"+w.ws.String()+"/metrics", params, &sum)
	if sum.RequestsTotal != 7 {
		t.Fatalf("workspace requests %d, want 7 (the reset changes no rollup)", sum.RequestsTotal)
	}
	// A second reset replaces the first.
	var res StreamReset
	w.clients[authz.RoleOwner].Call(t, http.MethodPost, path+"/reset-counters", nil, http.StatusOK, &res)
	if res.StreamID != w.stream || res.CountersResetAt.Before(*resetAt) {
		t.Fatalf("second reset %+v", res)
	}
	if again, _ := w.mod.Service().StreamResetAt(ctx, w.stream); again == nil || !again.Equal(res.CountersResetAt) {
		t.Fatalf("reset at %v, want %v", again, res.CountersResetAt)
	}
}

// TestAPI_StreamsBadInput answers 422 naming the parameter and 404 for a
// stream that is not one, reading and resetting.
func TestAPI_StreamsBadInput(t *testing.T) {
	w := setupWide(t)
	path := "/v1/streams/" + w.stream.String() + "/metrics"
	for _, tc := range []struct {
		name, query, field string
	}{
		{"from not a time", "from=soon", "from"},
		{"to not a time", "to=later", "to"},
		{"from after to", "from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", "from"},
		{"interval unknown", "interval=2m", "interval"},
		{"too many points", "from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z&interval=1m", "interval"},
		{"agent_id not a UUID", "agent_id=edge", "agent_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.client.Do(t, http.MethodGet, path+"?"+tc.query, nil)
			if r.Status != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422: %s", r.Status, r.Body)
			}
			if d := r.Envelope(t).Error.Details; len(d) == 0 || d[0].Field != tc.field {
				t.Fatalf("details %+v, want %s", d, tc.field)
			}
		})
	}
	for _, p := range []string{"/v1/streams/" + uuid.NewString(), "/v1/streams/not-a-uuid", "/v1/streams/" + w.vh.String()} {
		if r := w.client.Do(t, http.MethodGet, p+"/metrics", nil); r.Status != http.StatusNotFound {
			t.Fatalf("GET %s/metrics: status %d, want 404", p, r.Status)
		}
		if r := w.clients[authz.RoleOwner].Do(t, http.MethodPost, p+"/reset-counters", nil); r.Status != http.StatusNotFound {
			t.Fatalf("POST %s/reset-counters: status %d, want 404", p, r.Status)
		}
	}
}
