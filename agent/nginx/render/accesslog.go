package render

import (
	"strings"

	crossplane "github.com/nginxinc/nginx-go-crossplane"
)

// Access log formats the agent defines when Options.AccessLog is set. Every
// value is a JSON string (escape=json); the agent's log collector converts
// the numbers.
const (
	// HTTPLogFormat is the log_format name used by every http server.
	HTTPLogFormat = "nxmesh_json"
	// StreamLogFormat is the log_format name used by every stream server.
	StreamLogFormat = "nxmesh_stream"
	// vhostIDVar holds the virtual host id, set in each server{}.
	vhostIDVar = "$nxmesh_vhost_id"
	// streamIDVar maps "$protocol:$server_port" to the stream id.
	streamIDVar = "$nxmesh_stream_id"
)

// httpLogFields are the JSON fields of HTTPLogFormat.
var httpLogFields = [][2]string{
	{"kind", "http"},
	{"time", "$msec"},
	{"remote_addr", "$remote_addr"},
	{"method", "$request_method"},
	{"uri", "$request_uri"},
	{"protocol", "$server_protocol"},
	{"host", "$host"},
	{"status", "$status"},
	{"body_bytes_sent", "$body_bytes_sent"},
	{"request_time", "$request_time"},
	{"user_agent", "$http_user_agent"},
	{"referer", "$http_referer"},
	{"request_id", "$request_id"},
	{"virtual_host_id", vhostIDVar},
	{"request_length", "$request_length"},
	{"bytes_sent", "$bytes_sent"},
	{"upstream_addr", "$upstream_addr"},
	{"upstream_response_time", "$upstream_response_time"},
	{"scheme", "$scheme"},
	{"server_port", "$server_port"},
}

// streamLogFields are the JSON fields of StreamLogFormat.
var streamLogFields = [][2]string{
	{"kind", "$protocol"},
	{"time", "$msec"},
	{"remote_addr", "$remote_addr"},
	{"status", "$status"},
	{"bytes_received", "$bytes_received"},
	{"bytes_sent", "$bytes_sent"},
	{"session_time", "$session_time"},
	{"upstream_addr", "$upstream_addr"},
	{"upstream_session_time", "$upstream_session_time"},
	{"stream_id", streamIDVar},
	{"server_port", "$server_port"},
}

// jsonFormat builds a one-line JSON object template.
func jsonFormat(fields [][2]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + f[0] + `":"` + f[1] + `"`)
	}
	b.WriteByte('}')
	return b.String()
}

// httpLogFormat is the log_format directive of http.conf.
func httpLogFormat() *crossplane.Directive {
	return dir("log_format", HTTPLogFormat, "escape=json", jsonFormat(httpLogFields))
}

// streamLogFormat is the log_format directive of stream.conf.
func streamLogFormat() *crossplane.Directive {
	return dir("log_format", StreamLogFormat, "escape=json", jsonFormat(streamLogFields))
}

// withAccessLog prepends the id variable and access_log to a server body
// when access logging is on. id is an agent-validated id (or "").
func (r *renderer) withAccessLog(id string, body crossplane.Directives) crossplane.Directives {
	if r.opts.AccessLog == "" {
		return body
	}
	return append(crossplane.Directives{
		dir("set", vhostIDVar, id),
		dir("access_log", r.opts.AccessLog, HTTPLogFormat),
	}, body...)
}
