package logs

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app"
)

// Limits of a query.
const (
	// DefaultLimit is the page size without ?limit=.
	DefaultLimit = 100
	// MaxLimit caps ?limit= (meta.limit reports the size used).
	MaxLimit = 1000
	// DefaultWindow is how far before ?to= the window starts without ?from=.
	DefaultWindow = time.Hour
	maxFilterLen  = 2048
)

// Filter selects access-log entries; the zero value selects every entry.
// The live tail applies the same filter to lines as they arrive.
type Filter struct {
	// Status is an exact status code; StatusClass the hundreds digit (2 for
	// 2xx).
	Status        int
	StatusClass   int
	Host          string
	Method        string
	URIPrefix     string
	RemoteAddr    string
	AgentID       uuid.UUID
	VirtualHostID uuid.UUID
}

// Matches reports whether e passes f.
func (f Filter) Matches(e *Entry) bool {
	switch {
	case f.Status != 0 && e.Status != f.Status,
		f.StatusClass != 0 && e.Status/100 != f.StatusClass,
		f.Host != "" && !strings.EqualFold(e.Host, f.Host),
		f.Method != "" && e.Method != f.Method,
		f.URIPrefix != "" && !strings.HasPrefix(e.URI, f.URIPrefix),
		f.RemoteAddr != "" && e.RemoteAddr != f.RemoteAddr,
		f.AgentID != uuid.Nil && e.AgentID != f.AgentID:
		return false
	case f.VirtualHostID != uuid.Nil:
		return e.VirtualHostID != nil && *e.VirtualHostID == f.VirtualHostID
	}
	return true
}

// Query is a search of a workspace's access logs.
type Query struct {
	WorkspaceID uuid.UUID
	Filter
	// From and To bound the window (both inclusive).
	From, To time.Time
	// Limit is the page size (1 to MaxLimit); 0 returns every entry (export).
	Limit int
	// After continues after the entry the cursor names (keyset pagination).
	After *Cursor
}

// Cursor is the position of an entry in the newest-first order.
type Cursor struct {
	TS time.Time
	ID uuid.UUID
}

type cursorJSON struct {
	T string    `json:"t"`
	I uuid.UUID `json:"i"`
}

// Encode is the cursor as an opaque URL-safe string.
func (c Cursor) Encode() string {
	b, _ := json.Marshal(cursorJSON{T: c.TS.UTC().Format(time.RFC3339Nano), I: c.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor reads a cursor made by Encode.
func DecodeCursor(s string) (Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, fmt.Errorf("decode cursor: %w", err)
	}
	var cj cursorJSON
	if err := json.Unmarshal(b, &cj); err != nil {
		return Cursor{}, fmt.Errorf("decode cursor: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, cj.T)
	if err != nil || cj.I == uuid.Nil {
		return Cursor{}, fmt.Errorf("decode cursor: bad position")
	}
	return Cursor{TS: t, ID: cj.I}, nil
}

// Params reads query parameters by name (fiber's c.Query, url.Values.Get).
type Params func(name string) string

// QueryParamNames are the parameters ParseQuery reads.
var QueryParamNames = []string{"from", "to", "status_code", "status_class", "host", "method", "uri_prefix",
	"agent_id", "virtual_host_id", "remote_addr", "limit", "cursor"}

// ParseQuery reads the API's access-log query (from, to, status_code,
// limit) and the extra filters (status_class, host, method, uri_prefix,
// agent_id, virtual_host_id, remote_addr) and cursor. to defaults to now,
// from to DefaultWindow before to; limit to DefaultLimit, capped at
// MaxLimit. Bad values are a *app.ValidationError naming each parameter.
func ParseQuery(get Params, now time.Time) (Query, error) {
	var v app.Validator
	var q Query
	q.To = now
	if s := strings.TrimSpace(get("to")); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if v.Check(err == nil, "to", app.FieldInvalidFormat, "must be an RFC 3339 time such as 2026-03-02T00:00:00Z") {
			q.To = t
		}
	}
	q.From = q.To.Add(-DefaultWindow)
	if s := strings.TrimSpace(get("from")); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if v.Check(err == nil, "from", app.FieldInvalidFormat, "must be an RFC 3339 time such as 2026-03-01T00:00:00Z") {
			q.From = t
		}
	}
	if v.OK() {
		v.Check(!q.From.After(q.To), "from", app.FieldInvalidValue, "must not be after to")
	}
	if s := strings.TrimSpace(get("status_code")); s != "" {
		n, err := strconv.Atoi(s)
		if v.Check(err == nil && n >= 100 && n <= 599, "status_code", app.FieldInvalidValue, "must be an HTTP status code from 100 to 599") {
			q.Status = n
		}
	}
	if s := strings.ToLower(strings.TrimSpace(get("status_class"))); s != "" {
		ok := len(s) == 3 && s[0] >= '1' && s[0] <= '5' && s[1:] == "xx"
		if v.Check(ok, "status_class", app.FieldInvalidValue, "must be one of 1xx, 2xx, 3xx, 4xx, 5xx") {
			q.StatusClass = int(s[0] - '0')
		}
	}
	text := func(name string, dst *string) {
		s := strings.TrimSpace(get(name))
		if v.Check(len(s) <= maxFilterLen, name, app.FieldTooLong, fmt.Sprintf("at most %d bytes", maxFilterLen)) {
			*dst = s
		}
	}
	text("host", &q.Host)
	text("method", &q.Method)
	q.Method = strings.ToUpper(q.Method)
	text("uri_prefix", &q.URIPrefix)
	text("remote_addr", &q.RemoteAddr)
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
	q.Limit = DefaultLimit
	if s := strings.TrimSpace(get("limit")); s != "" {
		n, err := strconv.Atoi(s)
		if v.Check(err == nil && n >= 1, "limit", app.FieldInvalidValue, "must be a positive integer") {
			q.Limit = min(n, MaxLimit)
		}
	}
	if s := strings.TrimSpace(get("cursor")); s != "" {
		c, err := DecodeCursor(s)
		if v.Check(err == nil, "cursor", app.FieldInvalidFormat, "must be a meta.next_cursor of an earlier page") {
			q.After = &c
		}
	}
	if err := v.Err(); err != nil {
		return Query{}, err
	}
	return q, nil
}

// ErrorQuery is a search of an agent's error-log lines.
type ErrorQuery struct {
	AgentID  uuid.UUID
	From, To time.Time
	// Levels are nginx severities (error, warn, …); empty: all.
	Levels []string
	Limit  int
}

// nginxLevels are nginx's error-log severities.
var nginxLevels = []string{"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"}

// ParseErrorQuery reads from, to, level (one severity or a comma-separated
// list) and limit, with ParseQuery's defaults.
func ParseErrorQuery(get Params, now time.Time) (ErrorQuery, error) {
	base, err := ParseQuery(func(name string) string {
		switch name {
		case "from", "to", "limit":
			return get(name)
		}
		return ""
	}, now)
	var v app.Validator
	if err := v.Merge("", err); err != nil {
		return ErrorQuery{}, err
	}
	q := ErrorQuery{From: base.From, To: base.To, Limit: base.Limit}
	for _, l := range strings.Split(strings.ToLower(get("level")), ",") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if v.Check(contains(nginxLevels, l), "level", app.FieldInvalidValue, "must be nginx severities: "+strings.Join(nginxLevels, ", ")) {
			q.Levels = append(q.Levels, l)
		}
	}
	if err := v.Err(); err != nil {
		return ErrorQuery{}, err
	}
	return q, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
