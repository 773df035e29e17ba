// Package logs turns the lines nginx writes into the agent's log messages:
// access-log lines in the renderer's JSON formats (render.HTTPLogFormat,
// render.StreamLogFormat) become AccessLogEntry values, error-log lines
// become LogEntry values.
package logs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// accessLine is one JSON line of nxmesh_json or nxmesh_stream; every value
// is a string.
type accessLine struct {
	Kind                 string `json:"kind"`
	Time                 string `json:"time"`
	RemoteAddr           string `json:"remote_addr"`
	Method               string `json:"method"`
	URI                  string `json:"uri"`
	Protocol             string `json:"protocol"`
	Host                 string `json:"host"`
	Status               string `json:"status"`
	BodyBytesSent        string `json:"body_bytes_sent"`
	RequestTime          string `json:"request_time"`
	UserAgent            string `json:"user_agent"`
	Referer              string `json:"referer"`
	RequestID            string `json:"request_id"`
	VirtualHostID        string `json:"virtual_host_id"`
	RequestLength        string `json:"request_length"`
	BytesSent            string `json:"bytes_sent"`
	UpstreamAddr         string `json:"upstream_addr"`
	UpstreamResponseTime string `json:"upstream_response_time"`
	Scheme               string `json:"scheme"`
	ServerPort           string `json:"server_port"`
	// Stream fields.
	BytesReceived       string `json:"bytes_received"`
	SessionTime         string `json:"session_time"`
	UpstreamSessionTime string `json:"upstream_session_time"`
	StreamID            string `json:"stream_id"`
}

// ParseAccessLine parses one access-log line. nginx's "-" (no value)
// becomes an empty string or zero; times in seconds become milliseconds;
// several upstream times ("0.001, 0.002 : 0.003") are summed.
func ParseAccessLine(line []byte) (*agentv1.AccessLogEntry, error) {
	var l accessLine
	if !l.scan(line) {
		l = accessLine{}
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("parse access log line: %w", err)
		}
	}
	e := &agentv1.AccessLogEntry{
		TimestampMs:  msec(l.Time),
		RemoteAddr:   str(l.RemoteAddr),
		UpstreamAddr: str(l.UpstreamAddr),
		Status:       uint32(num(l.Status)),
		BytesSent:    num(l.BytesSent),
		ServerPort:   uint32(num(l.ServerPort)),
	}
	switch kind := strings.ToLower(l.Kind); kind {
	case "tcp", "udp":
		e.Kind = kind
		e.StreamId = str(l.StreamID)
		e.RequestLength = num(l.BytesReceived)
		e.RequestTimeMs = millis(l.SessionTime)
		e.UpstreamResponseTimeMs = millis(l.UpstreamSessionTime)
	default:
		e.Kind = "http"
		e.Method = str(l.Method)
		e.Uri = str(l.URI)
		e.Protocol = str(l.Protocol)
		e.Host = str(l.Host)
		e.BodyBytesSent = num(l.BodyBytesSent)
		e.RequestTimeMs = millis(l.RequestTime)
		e.UserAgent = str(l.UserAgent)
		e.Referer = str(l.Referer)
		e.RequestId = str(l.RequestID)
		e.VirtualHostId = str(l.VirtualHostID)
		e.RequestLength = num(l.RequestLength)
		e.UpstreamResponseTimeMs = millis(l.UpstreamResponseTime)
		e.Scheme = str(l.Scheme)
	}
	return e, nil
}

// scan fills l from a line in the renderer's shape (a flat object of
// string values with the exact field names) without reflection; false
// means the line is in another shape and encoding/json decides.
func (l *accessLine) scan(line []byte) bool {
	ok := true
	return scanFlatObject(line, func(key []byte, v string) {
		if p := l.field(key); p != nil {
			*p = v
		} else if ok {
			// encoding/json matches names without regard to case.
			for _, name := range accessFieldNames {
				if bytes.EqualFold(key, []byte(name)) {
					ok = false
				}
			}
		}
	}) && ok
}

// accessFieldNames are accessLine's JSON names.
var accessFieldNames = []string{"kind", "time", "remote_addr", "method", "uri", "protocol", "host", "status",
	"body_bytes_sent", "request_time", "user_agent", "referer", "request_id", "virtual_host_id", "request_length",
	"bytes_sent", "upstream_addr", "upstream_response_time", "scheme", "server_port", "bytes_received",
	"session_time", "upstream_session_time", "stream_id"}

// field is the member of l named key, nil for another name.
func (l *accessLine) field(key []byte) *string {
	switch string(key) {
	case "kind":
		return &l.Kind
	case "time":
		return &l.Time
	case "remote_addr":
		return &l.RemoteAddr
	case "method":
		return &l.Method
	case "uri":
		return &l.URI
	case "protocol":
		return &l.Protocol
	case "host":
		return &l.Host
	case "status":
		return &l.Status
	case "body_bytes_sent":
		return &l.BodyBytesSent
	case "request_time":
		return &l.RequestTime
	case "user_agent":
		return &l.UserAgent
	case "referer":
		return &l.Referer
	case "request_id":
		return &l.RequestID
	case "virtual_host_id":
		return &l.VirtualHostID
	case "request_length":
		return &l.RequestLength
	case "bytes_sent":
		return &l.BytesSent
	case "upstream_addr":
		return &l.UpstreamAddr
	case "upstream_response_time":
		return &l.UpstreamResponseTime
	case "scheme":
		return &l.Scheme
	case "server_port":
		return &l.ServerPort
	case "bytes_received":
		return &l.BytesReceived
	case "session_time":
		return &l.SessionTime
	case "upstream_session_time":
		return &l.UpstreamSessionTime
	case "stream_id":
		return &l.StreamID
	}
	return nil
}

func str(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func num(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// msec converts nginx's $msec ("1700000000.123") to Unix milliseconds.
func msec(s string) int64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return int64(math.Round(f * 1000))
}

// millis converts seconds, or a list of them separated by ", " and " : ",
// to their sum in milliseconds; "-" counts as zero.
func millis(s string) float64 {
	var sum float64
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ':' || r == ' ' }) {
		if f, err := strconv.ParseFloat(part, 64); err == nil {
			sum += f
		}
	}
	return math.Round(sum*1e6) / 1e3
}

// errorPrefix is "2024/01/02 15:04:05 [error] 12#13: *45 ".
var errorPrefix = regexp.MustCompile(`^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] (\d+)#(\d+): (?:\*(\d+) )?`)

// ParseErrorLine parses one nginx error-log line, whose time is in loc
// (nginx writes local time). Timestamp is in seconds and
// fields["timestamp_ms"] in milliseconds; pid, tid and connection (when
// present) are fields too. A line without nginx's prefix is kept whole
// with level "info".
func ParseErrorLine(line string, loc *time.Location) *agentv1.LogEntry {
	m := errorPrefix.FindStringSubmatch(line)
	if m == nil {
		return &agentv1.LogEntry{Level: "info", Message: line, Fields: map[string]string{"source": "nginx"}}
	}
	t, err := time.ParseInLocation("2006/01/02 15:04:05", m[1], loc)
	if err != nil {
		return &agentv1.LogEntry{Level: "info", Message: line, Fields: map[string]string{"source": "nginx"}}
	}
	fields := map[string]string{"source": "nginx", "timestamp_ms": strconv.FormatInt(t.UnixMilli(), 10), "pid": m[3], "tid": m[4]}
	if m[5] != "" {
		fields["connection"] = m[5]
	}
	return &agentv1.LogEntry{Timestamp: t.Unix(), Level: m[2], Message: line[len(m[0]):], Fields: fields}
}
