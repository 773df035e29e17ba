package logs

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Kinds of access-log entries.
const (
	KindHTTP = "http"
	KindTCP  = "tcp"
	KindUDP  = "udp"
)

// Millis is a timestamp that marshals as RFC 3339 in UTC with milliseconds
// ("2026-03-02T10:30:00.125Z").
type Millis struct{ time.Time }

// millisLayout is RFC 3339 with exactly three fractional digits.
const millisLayout = "2006-01-02T15:04:05.000Z07:00"

// MarshalJSON writes RFC 3339 UTC with milliseconds.
func (t Millis) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(millisLayout) + `"`), nil
}

// String is the JSON form without quotes.
func (t Millis) String() string { return t.UTC().Format(millisLayout) }

// Entry is one stored access-log entry: the API's fields (response_time_ms
// is nginx's $request_time) and what the agent reports beyond them.
type Entry struct {
	ID             uuid.UUID `json:"id"`
	AgentID        uuid.UUID `json:"agent_id"`
	Timestamp      Millis    `json:"timestamp"`
	RemoteAddr     string    `json:"remote_addr"`
	Method         string    `json:"method"`
	URI            string    `json:"uri"`
	Protocol       string    `json:"protocol"`
	Host           string    `json:"host"`
	Status         int       `json:"status"`
	BodyBytesSent  int64     `json:"body_bytes_sent"`
	ResponseTimeMs float64   `json:"response_time_ms"`
	UserAgent      string    `json:"user_agent"`
	Referer        string    `json:"referer"`
	RequestID      string    `json:"request_id"`

	// VirtualHostID is the virtual host (http) or stream (tcp/udp) the entry
	// belongs to; null when the agent did not say.
	VirtualHostID          *uuid.UUID `json:"virtual_host_id"`
	RequestLength          int64      `json:"request_length"`
	BytesSent              int64      `json:"bytes_sent"`
	UpstreamAddr           string     `json:"upstream_addr"`
	UpstreamResponseTimeMs float64    `json:"upstream_response_time_ms"`
	Scheme                 string     `json:"scheme"`
	ServerPort             int        `json:"server_port"`
	// Kind is "http", "tcp" or "udp".
	Kind     string `json:"kind"`
	StreamID string `json:"stream_id"`

	workspaceID uuid.UUID
}

// RequestLine is the entry as nginx's $request ("GET /path HTTP/1.1"); for
// streams "TCP <remote_addr>" style lines.
func (e *Entry) RequestLine() string {
	if e.Kind == KindTCP || e.Kind == KindUDP {
		s := e.Kind + " session from " + e.RemoteAddr
		if e.UpstreamAddr != "" {
			s += " to " + e.UpstreamAddr
		}
		return s
	}
	s := e.Method + " " + e.URI
	if e.Protocol != "" {
		s += " " + e.Protocol
	}
	return s
}

// clfTime is nginx's $time_local layout.
const clfTime = "02/Jan/2006:15:04:05 -0700"

// Summary is the entry as one line of nginx's combined log format, followed
// by the host and the response time:
//
//	10.0.0.1 - - [02/Mar/2026:10:30:00 +0000] "GET /x HTTP/1.1" 500 123 "-" "curl/8.5" host=api.example.com rt=0.150
//
// and for TCP/UDP sessions the stream log's shape:
//
//	10.0.0.1 [02/Mar/2026:10:30:00 +0000] TCP 200 sent=123 received=45 upstream=10.0.0.2:5432 time=1.250
func (e *Entry) Summary() string {
	ts := e.Timestamp.UTC().Format(clfTime)
	if e.Kind == KindTCP || e.Kind == KindUDP {
		s := fmt.Sprintf("%s [%s] %s %d sent=%d received=%d", dash(e.RemoteAddr), ts, strings.ToUpper(e.Kind), e.Status, e.BytesSent, e.RequestLength)
		if e.UpstreamAddr != "" {
			s += " upstream=" + e.UpstreamAddr
		}
		return s + fmt.Sprintf(" time=%.3f", e.ResponseTimeMs/1000)
	}
	return fmt.Sprintf(`%s - - [%s] "%s" %d %d "%s" "%s" host=%s rt=%.3f`, dash(e.RemoteAddr), ts, quoted(e.RequestLine()),
		e.Status, e.BodyBytesSent, quoted(dash(e.Referer)), quoted(dash(e.UserAgent)), dash(e.Host), e.ResponseTimeMs/1000)
}

// dash is s, or nginx's "-" for an empty value.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// quoter escapes what would end a quoted field, as nginx writes it (a
// Replacer is immutable and safe for concurrent use; built once).
var quoter = strings.NewReplacer(`"`, `\x22`, `\`, `\x5C`, "\n", `\x0A`, "\r", `\x0D`)

// quoted escapes what would end a quoted field, as nginx writes it.
func quoted(s string) string { return quoter.Replace(s) }

// ErrorLine is one nginx error-log line of an agent.
type ErrorLine struct {
	ID        uuid.UUID         `json:"id"`
	AgentID   uuid.UUID         `json:"agent_id"`
	Timestamp Millis            `json:"timestamp"`
	Level     string            `json:"level"`
	Message   string            `json:"message"`
	Fields    map[string]string `json:"fields"`
}

// Page is a page of query results: the API's {data, meta}.
type Page[T any] struct {
	Data []T      `json:"data"`
	Meta PageMeta `json:"meta"`
}

// PageMeta describes a page. Total counts every entry that matches the
// filters in the time window (the cursor does not change it); Limit is the
// page size used (requests above the maximum are capped); NextCursor, when
// set, fetches the following (older) page.
type PageMeta struct {
	Total      int64  `json:"total"`
	Limit      int    `json:"limit"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Settings are a workspace's log settings.
type Settings struct {
	// RetentionDays is how many days the workspace's lines are kept.
	RetentionDays int `json:"retention_days"`
	// GlobalRetentionDays is logs.retention in days, the most a workspace
	// may keep.
	GlobalRetentionDays int `json:"global_retention_days"`
	// Override is true when the workspace keeps its lines for less than the
	// global retention.
	Override bool `json:"override"`
}

// SettingsParams set a workspace's retention: 1 to the global retention in
// days (the global value removes the override).
type SettingsParams struct {
	RetentionDays *int `json:"retention_days"`
}
