package logs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

const benchLines = 100_000

// writeBenchLog prepares an access log of benchLines lines.
func writeBenchLog(b *testing.B) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "access.log")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range benchLines {
		fmt.Fprintf(w, `{"kind":"http","time":"1700000000.%03d","remote_addr":"10.0.%d.%d","method":"GET","uri":"/api/items/%d?page=2","protocol":"HTTP/1.1","host":"api.example.com","status":"200","body_bytes_sent":"%d","request_time":"0.012","user_agent":"Mozilla/5.0 (X11; Linux x86_64)","referer":"https://example.com/","request_id":"%032x","virtual_host_id":"0190f0e0-0000-7000-8000-000000000001","request_length":"412","bytes_sent":"1544","upstream_addr":"127.0.0.1:8080","upstream_response_time":"0.011","scheme":"https","server_port":"443"}`+"\n",
			i%1000, i%256, i%200, i, 1000+i%500, i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return p
}

// BenchmarkParseAccessLog reads 100,000 access-log lines with parsing,
// beside plain bufio.Scanner reading of the same file.
func BenchmarkParseAccessLog(b *testing.B) {
	p := writeBenchLog(b)
	scan := func(parse bool) time.Duration {
		start := time.Now()
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		n := 0
		for sc.Scan() {
			if parse {
				if _, err := ParseAccessLine(sc.Bytes()); err != nil {
					b.Fatal(err)
				}
			}
			n++
		}
		if n != benchLines {
			b.Fatalf("%d lines", n)
		}
		return time.Since(start)
	}
	var base, parsed time.Duration
	for b.Loop() {
		base += scan(false)
		parsed += scan(true)
	}
	lines := float64(b.N) * benchLines
	b.ReportMetric(lines/parsed.Seconds(), "lines/s")
	b.ReportMetric(float64(parsed.Nanoseconds())/lines, "ns/line")
	b.ReportMetric(float64(base.Nanoseconds())/lines, "baseline-ns/line")
	b.ReportMetric(float64(parsed)/float64(base), "x-baseline")
}

// BenchmarkTailParseBatch follows a 100,000-line access log with a Tailer,
// parses every line and spools batches of DefaultBatchLines (the Shipper's
// path up to the stream), beside plain bufio.Scanner reading of the same
// file.
func BenchmarkTailParseBatch(b *testing.B) {
	p := writeBenchLog(b)
	raw := func() time.Duration {
		start := time.Now()
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		n := 0
		for sc.Scan() {
			n++
		}
		if n != benchLines {
			b.Fatalf("%d lines", n)
		}
		return time.Since(start)
	}
	ship := func() time.Duration {
		spool, err := OpenSpool(b.TempDir(), DefaultSpoolMax)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		t := NewTailer(p, Position{})
		defer t.Close()
		var lines [][]byte
		entries := make([]*agentv1.AccessLogEntry, 0, DefaultBatchLines)
		n := 0
		for n < benchLines {
			lines, err = t.Lines(lines[:0], DefaultBatchLines)
			if err != nil {
				b.Fatal(err)
			}
			if len(lines) == 0 {
				b.Fatalf("stopped at %d lines", n)
			}
			entries = entries[:0]
			for _, l := range lines {
				e, err := ParseAccessLine(l)
				if err != nil {
					b.Fatal(err)
				}
				entries = append(entries, e)
			}
			if _, err := spool.AddAccess(entries); err != nil {
				b.Fatal(err)
			}
			n += len(lines)
		}
		return time.Since(start)
	}
	var base, shipped time.Duration
	for b.Loop() {
		base += raw()
		shipped += ship()
	}
	lines := float64(b.N) * benchLines
	b.ReportMetric(lines/shipped.Seconds(), "lines/s")
	b.ReportMetric(float64(shipped.Nanoseconds())/lines, "ns/line")
	b.ReportMetric(float64(base.Nanoseconds())/lines, "baseline-ns/line")
	b.ReportMetric(float64(shipped)/float64(base), "x-baseline")
}
