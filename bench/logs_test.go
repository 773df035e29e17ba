package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nxmesh/nxmesh/agent/collect/logs"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

const (
	// ingestLines is the prepared access log the agent ships.
	ingestLines = 200_000
	// loadWindow is how long the load generator sends requests through
	// nginx while the CPU of nginx's workers and of the agent is measured.
	loadWindow = 8 * time.Second
	// loadClients are the load generator's concurrent keep-alive clients.
	loadClients = 4
	// queryRounds is how many times each query is timed.
	queryRounds = 7
)

// queryRows is how many rows the query latencies are measured over
// (NXMESH_BENCH_LOG_ROWS overrides the default ten million).
func queryRows() int {
	if n, err := strconv.Atoi(os.Getenv("NXMESH_BENCH_LOG_ROWS")); err == nil && n > 0 {
		return n
	}
	return 10_000_000
}

// BenchmarkLogsIngest measures the access-log path end to end, each figure
// beside its floor in the same run:
//
//  1. Ingest: the real agent (`nxmesh-agent`, its Tailer and Shipper) reads
//     a prepared access log of ingestLines lines appended at once to the
//     file its nginx writes, sends the batches over its gRPC stream to the
//     master (`nxmesh serve`, modules/logs), which COPYs them into
//     access_logs; the clock stops when the last row is committed. The
//     floor is pgx CopyFrom of the same rows, parsed in memory, into the
//     same table in one COPY.
//  2. CPU: a load generator sends requests through the agent's nginx for
//     loadWindow; the CPU time of nginx's workers serving them is read from
//     /proc beside the agent's own CPU time (it tails, parses, spools and
//     ships those lines) until every line is stored; both per 10,000
//     lines (requests) a second.
//  3. Queries: queryRows rows are generated in the workspace's last hour
//     (INSERT … SELECT generate_series); the API's filtered page (status
//     and host filters, with its count) and its unfiltered first page
//     (counting every row of the window), and the count statement alone,
//     are timed queryRounds times each (p50, p95).
func BenchmarkLogsIngest(b *testing.B) {
	if _, err := os.Stat(benchNginx); err != nil {
		b.Fatalf("nginx is required at %s: %v", benchNginx, err)
	}
	needFiles(b, 4096)
	masterBin, agentBin := buildMaster(b), buildAgent(b)
	m := startMaster(b, masterBin)
	api := newREST(b, m.httpURL)
	ws := api.defaultWorkspace(b)
	tokens, fp := api.createTokens(b, ws, 1, "logs-bench")
	ctx := context.Background()
	db, err := pgx.Connect(ctx, m.dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close(ctx)

	// The agent, supervising its own nginx.
	dir := b.TempDir()
	agentData, prefix := filepath.Join(dir, "agent"), filepath.Join(dir, "nginx")
	args := []string{"--master", m.grpcAddr, "--data-dir", agentData, "--nginx-prefix", prefix, "--nginx-binary", benchNginx,
		"--ca-fingerprint", fp, "--log-level", "warn", "--labels", "env=bench", "--log-batch-interval", "500ms"}
	if os.Geteuid() == 0 {
		args = append(args, "--nginx-user", "root")
	}
	agentPID := startAgent(b, agentBin, args, tokens[0], filepath.Join(dir, "agent.log"), prefix)
	api.waitOnline(b, ws, 1, time.Minute)

	backend := benchBackend(b)
	var up, vh struct {
		ID string `json:"id"`
	}
	if err := api.do(ctx, http.MethodPost, "/v1/workspaces/"+ws+"/upstreams",
		map[string]any{"name": "bench", "servers": []map[string]any{{"address": backend}}}, &up, http.StatusCreated); err != nil {
		b.Fatal(err)
	}
	port := freePort(b)
	if err := api.do(ctx, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "bench", "server_name": "bench.test", "listen_port": port,
		"locations":     []map[string]any{{"path": "/", "upstream_id": up.ID}},
		"target_agents": map[string]string{"type": "selector", "label_selector": "env=bench"},
	}, &vh, http.StatusCreated); err != nil {
		b.Fatal(err)
	}
	api.waitApplied(b, ws, api.configVersion(b, ws), 1, time.Minute)

	stored := func(prefix string) int64 {
		var n int64
		if err := db.QueryRow(ctx, "SELECT count(*) FROM access_logs WHERE workspace_id = $1 AND starts_with(uri, $2)", ws, prefix).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	waitStored := func(prefix string, want int64, timeout time.Duration) time.Time {
		deadline := time.Now().Add(timeout)
		for {
			n := stored(prefix)
			if n >= want {
				return time.Now()
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d lines under %s stored after %s", n, want, prefix, timeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// 1. Ingest of a prepared access log.
	lines := prepareAccessLog(ingestLines, vh.ID, port)
	accessLog := filepath.Join(agentData, "logs", "access.log")
	f, err := os.OpenFile(accessLog, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := ownTicks(b, agentPID)
	t0 := time.Now()
	if _, err := f.Write(lines); err != nil {
		b.Fatal(err)
	}
	f.Close()
	t1 := waitStored("/prepared/", ingestLines, 2*time.Minute)
	ingestSecs := t1.Sub(t0).Seconds()
	agentIngestCPU := float64(ownTicks(b, agentPID)-cpu0) / clockTicks
	ingestRate := ingestLines / ingestSecs

	floorSecs := copyFloor(b, db, lines)
	floorRate := ingestLines / floorSecs
	b.Logf("ingest %.1f s, floor %.1f s", ingestSecs, floorSecs)

	// 2. CPU of nginx serving requests beside the agent shipping their lines.
	nginxPID := readPID(b, filepath.Join(prefix, "run", "nginx.pid"))
	agent0, nginx0 := ownTicks(b, agentPID), childTicks(nginxPID)
	served, loadSecs := loadNginx(b, port, loadWindow)
	nginxCPU := float64(childTicks(nginxPID)-nginx0) / clockTicks
	waitStored("/load/", served, time.Minute)
	agentLoadCPU := float64(ownTicks(b, agentPID)-agent0) / clockTicks
	loadRate := float64(served) / loadSecs
	b.Logf("load: %d requests in %.1f s", served, loadSecs)

	// 3. Query latency over queryRows rows.
	rows := queryRows()
	genStart := time.Now()
	if _, err := db.Exec(ctx, `INSERT INTO access_logs (workspace_id, agent_id, virtual_host_id, ts, method, uri, host, status, kind, remote_addr)
		SELECT $1, $2, $3, now() - (g % 3000000) * interval '1 millisecond', 'GET', '/gen/' || (g % 1000),
			CASE WHEN g % 3 = 0 THEN 'api.test' ELSE 'bench.test' END,
			(ARRAY[200,200,200,200,200,200,301,404,500,503])[g % 10 + 1], 'http', '10.0.0.' || (g % 250)
		FROM generate_series(1, $4::int) g`, ws, uuid.New(), vh.ID, rows); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(ctx, "VACUUM ANALYZE access_logs"); err != nil {
		b.Fatal(err)
	}
	genSecs := time.Since(genStart).Seconds()
	b.Logf("%d rows generated in %.1f s", rows, genSecs)
	timeAPI := func(q string) []time.Duration {
		var ds []time.Duration
		for range queryRounds {
			start := time.Now()
			var page struct {
				Meta struct {
					Total int64 `json:"total"`
				} `json:"meta"`
			}
			if err := api.do(ctx, http.MethodGet, "/v1/workspaces/"+ws+"/access-logs?"+q, nil, &page, http.StatusOK); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
			if page.Meta.Total == 0 {
				b.Fatalf("%s: no rows", q)
			}
		}
		return ds
	}
	filtered := timeAPI("status_code=404&host=api.test&limit=100")
	firstPage := timeAPI("limit=100")
	var counts []time.Duration
	for range queryRounds {
		start := time.Now()
		var n int64
		if err := db.QueryRow(ctx, "SELECT count(*) FROM access_logs WHERE workspace_id = $1 AND ts >= $2 AND ts <= $3",
			ws, time.Now().Add(-time.Hour), time.Now()).Scan(&n); err != nil {
			b.Fatal(err)
		}
		counts = append(counts, time.Since(start))
		if n < int64(rows) {
			b.Fatalf("count %d, want at least %d", n, rows)
		}
	}

	ratio := ingestRate / floorRate
	b.ReportMetric(ingestRate, "ingest-lines/s")
	b.ReportMetric(floorRate, "copy-floor-lines/s")
	b.ReportMetric(ratio, "ingest/floor")
	per10k := func(cpuSecs, lines float64) float64 { return cpuSecs / lines * 10_000 }
	b.ReportMetric(per10k(agentLoadCPU, float64(served)), "agent-cores/10k-lines/s")
	b.ReportMetric(per10k(nginxCPU, float64(served)), "nginx-cores/10k-req/s")
	b.ReportMetric(ms(percentile(filtered, 0.5)), "filtered-page-p50-ms")
	b.ReportMetric(ms(percentile(counts, 0.5)), "count-p50-ms")
	fmt.Fprintf(os.Stderr, "\naccess-log ingest (%d lines, one agent):\n", ingestLines)
	fmt.Fprintf(os.Stderr, "  agent → gRPC → master → COPY: %8.0f lines/s (%.2f s; agent CPU %.2f s)\n", ingestRate, ingestSecs, agentIngestCPU)
	fmt.Fprintf(os.Stderr, "  floor, one pgx CopyFrom:      %8.0f lines/s (%.2f s)\n", floorRate, floorSecs)
	fmt.Fprintf(os.Stderr, "  ratio ingest/floor:           %8.2f\n", ratio)
	fmt.Fprintf(os.Stderr, "CPU per 10,000 lines/s (load: %d requests in %.1f s, %.0f req/s through nginx):\n", served, loadSecs, loadRate)
	fmt.Fprintf(os.Stderr, "  agent (tail, parse, spool, ship): %.3f cores\n", per10k(agentLoadCPU, float64(served)))
	fmt.Fprintf(os.Stderr, "  nginx workers serving them:       %.3f cores\n", per10k(nginxCPU, float64(served)))
	fmt.Fprintf(os.Stderr, "  ratio agent/nginx:                %.2f\n", agentLoadCPU/nginxCPU)
	fmt.Fprintf(os.Stderr, "  agent while ingesting the prepared log: %.3f cores per 10,000 lines/s\n", per10k(agentIngestCPU, ingestLines))
	fmt.Fprintf(os.Stderr, "queries over %d rows in the window (generated in %.1f s), %d rounds:\n", rows, genSecs, queryRounds)
	for _, q := range []struct {
		name string
		ds   []time.Duration
	}{{"API filtered page (status_code, host) + its count", filtered}, {"API first page + count of the window", firstPage}, {"count statement alone", counts}} {
		fmt.Fprintf(os.Stderr, "  %-50s p50 %8.1f ms  p95 %8.1f ms\n", q.name, ms(percentile(q.ds, 0.5)), ms(percentile(q.ds, 0.95)))
	}
}

// buildAgent builds the agent binary from the repository root.
func buildAgent(b *testing.B) string {
	b.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(b.TempDir(), "nxmesh-agent")
	cmd := exec.Command("go", "build", "-o", bin, "./agent")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./agent: %v\n%s", err, out)
	}
	return bin
}

// startAgent runs the agent and stops it (SIGTERM) and its nginx when the
// benchmark ends.
func startAgent(b *testing.B, bin string, args []string, token, logPath, nginxPrefix string) int {
	b.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NXMESH_") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(env, "NXMESH_AGENT_TOKEN="+token)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start agent: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if data, err := os.ReadFile(filepath.Join(nginxPrefix, "run", "nginx.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	return cmd.Process.Pid
}

// prepareAccessLog is n lines in the agent's http log format, as nginx
// writes them, with distinct URIs under /prepared/.
func prepareAccessLog(n int, vhostID string, port int) []byte {
	var sb strings.Builder
	now := float64(time.Now().UnixMilli()) / 1000
	for i := range n {
		fmt.Fprintf(&sb, `{"kind":"http","time":"%.3f","remote_addr":"10.1.%d.%d","method":"GET","uri":"/prepared/%d?page=%d",`+
			`"protocol":"HTTP/1.1","host":"bench.test","status":"%d","body_bytes_sent":"%d","request_time":"0.00%d",`+
			`"user_agent":"Mozilla/5.0 (X11; Linux x86_64) bench/%d","referer":"https://bench.test/from/%d","request_id":"%032x",`+
			`"virtual_host_id":"%s","request_length":"%d","bytes_sent":"%d","upstream_addr":"127.0.0.1:8080",`+
			`"upstream_response_time":"0.00%d","scheme":"http","server_port":"%d"}`+"\n",
			now-float64(n-i)/1000, i/250%250, i%250, i, i%7, []int{200, 200, 200, 404, 500}[i%5], 512+i%1000, i%10,
			i%3, i%100, i, vhostID, 300+i%50, 700+i%1000, i%10, port)
	}
	return []byte(sb.String())
}

// copyFloor parses lines as the agent does and COPYs the same columns the
// master's ingest writes into access_logs in one statement, from memory.
func copyFloor(b *testing.B, db *pgx.Conn, data []byte) float64 {
	b.Helper()
	ws, agent := uuid.New(), uuid.New()
	var rows [][]any
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		e, err := logs.ParseAccessLine([]byte(l))
		if err != nil {
			b.Fatal(err)
		}
		rows = append(rows, floorRow(ws, agent, e))
	}
	columns := []string{"workspace_id", "agent_id", "virtual_host_id", "kind", "ts", "remote_addr", "method", "uri",
		"protocol", "host", "status", "body_bytes_sent", "request_time_ms", "user_agent", "referer", "request_id",
		"request_length", "bytes_sent", "upstream_addr", "upstream_response_time_ms", "scheme", "server_port", "stream_id"}
	ctx := context.Background()
	start := time.Now()
	n, err := db.CopyFrom(ctx, pgx.Identifier{"access_logs"}, columns, pgx.CopyFromRows(rows))
	secs := time.Since(start).Seconds()
	if err != nil || n != int64(len(rows)) {
		b.Fatalf("floor copy: %d rows, %v", n, err)
	}
	if _, err := db.Exec(ctx, "DELETE FROM access_logs WHERE workspace_id = $1", ws); err != nil {
		b.Fatal(err)
	}
	return secs
}

func floorRow(ws, agent uuid.UUID, e *agentv1.AccessLogEntry) []any {
	var vh any
	if id, err := uuid.Parse(e.GetVirtualHostId()); err == nil {
		vh = id
	}
	return []any{ws, agent, vh, "http", time.UnixMilli(e.GetTimestampMs()).UTC(), e.GetRemoteAddr(), e.GetMethod(), e.GetUri(),
		e.GetProtocol(), e.GetHost(), int(e.GetStatus()), int64(e.GetBodyBytesSent()), e.GetRequestTimeMs(), e.GetUserAgent(),
		e.GetReferer(), e.GetRequestId(), int64(e.GetRequestLength()), int64(e.GetBytesSent()), e.GetUpstreamAddr(),
		e.GetUpstreamResponseTimeMs(), e.GetScheme(), int(e.GetServerPort()), e.GetStreamId()}
}

// loadNginx sends GET /load/<n> through nginx on port from loadClients
// keep-alive clients for window; it returns the requests answered 200.
func loadNginx(b *testing.B, port int, window time.Duration) (int64, float64) {
	b.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: loadClients}}
	defer client.CloseIdleConnections()
	var ok, failed, seq atomic.Int64
	start := time.Now()
	deadline := start.Add(window)
	var wg sync.WaitGroup
	for range loadClients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/load/%d", port, seq.Add(1)), nil)
				req.Host = "bench.test"
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if failed.Load() > 0 {
		b.Fatalf("%d requests through nginx failed", failed.Load())
	}
	return ok.Load(), secs
}

// benchBackend answers every request with a small body.
func benchBackend(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func readPID(b *testing.B, path string) int {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		b.Fatal(err)
	}
	return pid
}

// ownTicks is a process's own CPU time in clock ticks.
func ownTicks(b *testing.B, pid int) uint64 {
	b.Helper()
	own, _, _, err := procTimes(pid)
	if err != nil {
		b.Fatal(err)
	}
	return own
}

// childTicks is the CPU time of a process's living children (nginx's
// workers).
func childTicks(parent int) uint64 {
	var total uint64
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if t, _, ppid, err := procTimes(pid); err == nil && ppid == parent {
			total += t
		}
	}
	return total
}
