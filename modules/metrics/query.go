package metrics

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// Limits of a query.
const (
	// DefaultWindow is how far before ?to= the range starts without ?from=.
	DefaultWindow = time.Hour
	// MaxPoints caps the number of points of a series.
	MaxPoints  = 3000
	maxHostLen = 253
)

// Intervals are the values ?interval= accepts.
var Intervals = map[string]time.Duration{
	"1m": time.Minute,
	"5m": 5 * time.Minute,
	"1h": time.Hour,
	"1d": 24 * time.Hour,
}

// Query selects the traffic of a range.
type Query struct {
	WorkspaceID uuid.UUID
	// AgentID, VirtualHostID (a virtual host or a stream) and Host narrow
	// the traffic when set.
	AgentID       uuid.UUID
	VirtualHostID uuid.UUID
	Host          string
	// From (inclusive) and To (exclusive) bound the range: the minutes that
	// start inside it count.
	From, To time.Time
	// Interval, when not zero, asks for a series of that step.
	Interval time.Duration
}

// WorkspaceParamNames are the parameters of the workspace metrics route.
var WorkspaceParamNames = []string{"from", "to", "interval", "agent_id", "virtual_host_id", "host"}

// AgentParamNames are the parameters of the agent metrics route.
var AgentParamNames = []string{"from", "to", "interval", "virtual_host_id", "host"}

// ParseQuery reads from and to (RFC 3339; to defaults to now, from to
// DefaultWindow before to; from must be before to), interval (1m, 5m, 1h,
// 1d; at most MaxPoints points), agent_id and virtual_host_id (UUIDs) and
// host. Bad values are a *app.ValidationError naming each parameter.
func ParseQuery(get func(name string) string, now time.Time) (Query, error) {
	var v app.Validator
	q := Query{To: now.UTC()}
	times := v.OK()
	if s := strings.TrimSpace(get("to")); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if times = v.Check(err == nil, "to", app.FieldInvalidFormat, "must be an RFC 3339 time such as 2026-03-02T00:00:00Z"); times {
			q.To = t.UTC()
		}
	}
	q.From = q.To.Add(-DefaultWindow)
	if s := strings.TrimSpace(get("from")); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if v.Check(err == nil, "from", app.FieldInvalidFormat, "must be an RFC 3339 time such as 2026-03-01T00:00:00Z") {
			q.From = t.UTC()
		} else {
			times = false
		}
	}
	if times {
		times = v.Check(q.From.Before(q.To), "from", app.FieldInvalidValue, "must be before to")
	}
	if s := strings.ToLower(strings.TrimSpace(get("interval"))); s != "" {
		iv, ok := Intervals[s]
		if v.Check(ok, "interval", app.FieldInvalidValue, "must be one of 1m, 5m, 1h, 1d") {
			q.Interval = iv
			if times {
				n := len(buckets(q.From, q.To, iv))
				v.Check(n <= MaxPoints, "interval", app.FieldInvalidValue,
					fmt.Sprintf("gives %d points over this range, more than %d; choose a longer interval or a shorter range", n, MaxPoints))
			}
		}
	}
	id := func(name string, dst *uuid.UUID) {
		if s := strings.TrimSpace(get(name)); s != "" {
			u, err := uuid.Parse(s)
			if v.Check(err == nil, name, app.FieldInvalidFormat, "must be a UUID") {
				*dst = u
			}
		}
	}
	id("agent_id", &q.AgentID)
	id("virtual_host_id", &q.VirtualHostID)
	if s := strings.TrimSpace(get("host")); s != "" {
		if v.Check(len(s) <= maxHostLen, "host", app.FieldTooLong, fmt.Sprintf("at most %d bytes", maxHostLen)) {
			q.Host = normalHost(s)
			v.Check(q.Host != "", "host", app.FieldInvalidValue, "must be a host name (UTF-8 without NUL)")
		}
	}
	if err := v.Err(); err != nil {
		return Query{}, err
	}
	return q, nil
}

// buckets are the starts of the intervals of step iv (aligned on the Unix
// epoch, so days start at 00:00 UTC) from the one holding from to the one
// holding the last instant before to; never more than MaxPoints+1.
func buckets(from, to time.Time, iv time.Duration) []time.Time {
	step := int64(iv / time.Second)
	start := from.Unix() / step * step
	if start > from.Unix() {
		start -= step
	}
	var out []time.Time
	for t := time.Unix(start, 0).UTC(); t.Before(to) || len(out) == 0; t = t.Add(iv) {
		out = append(out, t)
		if len(out) > MaxPoints {
			break
		}
	}
	return out
}
