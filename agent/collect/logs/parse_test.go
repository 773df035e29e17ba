package logs

import (
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestParseAccessLine(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, line string
		want       *agentv1.AccessLogEntry
	}{
		{"HTTPRequestThroughTwoUpstreams",
			`{"kind":"http","time":"1700000000.123","remote_addr":"10.0.0.1","method":"GET","uri":"/a?b=\"c\"","protocol":"HTTP/1.1","host":"example.com","status":"502","body_bytes_sent":"157","request_time":"0.250","user_agent":"curl/8","referer":"https://r/","request_id":"abc","virtual_host_id":"vh-1","request_length":"80","bytes_sent":"300","upstream_addr":"127.0.0.1:1, 127.0.0.1:2","upstream_response_time":"0.001, 0.002 : 0.004","scheme":"http","server_port":"8080"}`,
			&agentv1.AccessLogEntry{TimestampMs: 1700000000123, RemoteAddr: "10.0.0.1", Method: "GET", Uri: `/a?b="c"`, Protocol: "HTTP/1.1",
				Host: "example.com", Status: 502, BodyBytesSent: 157, RequestTimeMs: 250, UserAgent: "curl/8", Referer: "https://r/",
				RequestId: "abc", VirtualHostId: "vh-1", RequestLength: 80, BytesSent: 300, UpstreamAddr: "127.0.0.1:1, 127.0.0.1:2",
				UpstreamResponseTimeMs: 7, Scheme: "http", ServerPort: 8080, Kind: "http"}},
		{"HTTPWithoutUpstreamDashes",
			`{"kind":"http","time":"1700000000.000","status":"404","upstream_addr":"-","upstream_response_time":"-","referer":"-"}`,
			&agentv1.AccessLogEntry{TimestampMs: 1700000000000, Status: 404, Kind: "http"}},
		{"TCPStream",
			`{"kind":"TCP","time":"1700000001.500","remote_addr":"10.0.0.2","status":"200","bytes_received":"10","bytes_sent":"20","session_time":"1.250","upstream_addr":"127.0.0.1:9","upstream_session_time":"1.249","stream_id":"st-1","server_port":"5000"}`,
			&agentv1.AccessLogEntry{TimestampMs: 1700000001500, RemoteAddr: "10.0.0.2", Status: 200, RequestLength: 10, BytesSent: 20,
				RequestTimeMs: 1250, UpstreamAddr: "127.0.0.1:9", UpstreamResponseTimeMs: 1249, StreamId: "st-1", ServerPort: 5000, Kind: "tcp"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseAccessLine([]byte(c.line))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, c.want) {
				t.Errorf("got  %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestParseErrorLine(t *testing.T) {
	t.Parallel()
	e := ParseErrorLine(`2024/01/02 15:04:05 [error] 12#13: *45 connect() failed (111: Connection refused), client: 1.2.3.4`, time.UTC)
	want := time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC)
	if e.GetTimestamp() != want.Unix() || e.GetLevel() != "error" || e.GetMessage() != "connect() failed (111: Connection refused), client: 1.2.3.4" ||
		e.GetFields()["connection"] != "45" || e.GetFields()["pid"] != "12" || e.GetFields()["timestamp_ms"] != "1704207845000" {
		t.Errorf("got %v", e)
	}
	if e := ParseErrorLine("not nginx", time.UTC); e.GetLevel() != "info" || e.GetMessage() != "not nginx" {
		t.Errorf("unprefixed line: %v", e)
	}
}

// TestAccessLineScan_AgreesWithEncodingJSON: the fast scanner either gives
// exactly encoding/json's fields or hands the line to it.
func TestAccessLineScan_AgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, line string
		fast       bool // the scanner accepts the line
	}{
		{"Plain", `{"kind":"http","uri":"/a","status":"200"}`, true},
		{"Escapes", `{"uri":"/a\"b\\c\/d\n\t\u00e9\u0001"}`, true},
		{"SurrogatePair", `{"user_agent":"\ud83d\ude00 x"}`, true},
		{"LoneSurrogates", `{"user_agent":"\ud83d x \ude00 \ud83d\u0041"}`, true},
		{"Spaces", " { \"uri\" : \"/a\" , \"host\":\"h\" } \n", true},
		{"Empty", `{}`, true},
		{"UnknownKeyIgnored", `{"other":"x","uri":"/a"}`, true},
		{"DuplicateKeyLastWins", `{"uri":"/a","uri":"/b"}`, true},
		{"KeyOtherCase", `{"URI":"/a"}`, false},
		{"NumberValue", `{"status":200}`, false},
		{"NullValue", `{"uri":null}`, false},
		{"NestedValue", `{"uri":{"a":"b"}}`, false},
		{"InvalidUTF8", "{\"uri\":\"\xff\"}", false},
		{"TrailingBytes", `{"uri":"/a"}x`, false},
		{"Truncated", `{"uri":"/a`, false},
		{"BadEscape", `{"uri":"\x"}`, false},
		{"ControlByte", "{\"uri\":\"a\x01\"}", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var fast, std accessLine
			ok := fast.scan([]byte(c.line))
			if ok != c.fast {
				t.Fatalf("scan accepted = %v, want %v", ok, c.fast)
			}
			err := json.Unmarshal([]byte(c.line), &std)
			if ok && (err != nil || fast != std) {
				t.Errorf("scan %+v\njson %+v (%v)", fast, std, err)
			}
		})
	}
}

// FuzzAccessLineScan: whatever the line, a line the scanner accepts decodes
// to the same fields with encoding/json.
func FuzzAccessLineScan(f *testing.F) {
	f.Add(`{"kind":"http","time":"1700000000.123","uri":"/a?b=\"c\"","status":"502"}`)
	f.Add(`{"user_agent":"\ud83d\ude00\u00e9\\"}`)
	f.Add(`{"uri":"/a","URI":"/b"}`)
	f.Fuzz(func(t *testing.T, line string) {
		var fast, std accessLine
		if !fast.scan([]byte(line)) {
			return
		}
		if err := json.Unmarshal([]byte(line), &std); err != nil {
			t.Fatalf("scan accepted %q, encoding/json: %v", line, err)
		}
		if fast != std {
			t.Fatalf("%q:\nscan %+v\njson %+v", line, fast, std)
		}
	})
}
