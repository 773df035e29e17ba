package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// queriedEntry is an access-log entry with every field the query returns.
type queriedEntry struct {
	ID            string    `json:"id"`
	AgentID       string    `json:"agent_id"`
	Timestamp     time.Time `json:"timestamp"`
	RemoteAddr    string    `json:"remote_addr"`
	Method        string    `json:"method"`
	URI           string    `json:"uri"`
	Protocol      string    `json:"protocol"`
	Host          string    `json:"host"`
	Status        int       `json:"status"`
	UserAgent     string    `json:"user_agent"`
	Referer       string    `json:"referer"`
	RequestID     string    `json:"request_id"`
	VirtualHostID *string   `json:"virtual_host_id"`
	Kind          string    `json:"kind"`
	ServerPort    int       `json:"server_port"`
}

// queriedPage is a page of GET /v1/workspaces/{id}/access-logs.
type queriedPage struct {
	Data []queriedEntry `json:"data"`
	Meta struct {
		Total      int64  `json:"total"`
		Limit      int    `json:"limit"`
		NextCursor string `json:"next_cursor"`
	} `json:"meta"`
}

// sentRequest is a request sent through nginx, as the test expects to find
// it in the access logs.
type sentRequest struct {
	method, uri, host, userAgent, referer string
	status, port                          int
	vhostID                               string
}

// statusBackend answers the status named by the second segment of a path
// under /q/ (/q/404/…), 200 otherwise.
func statusBackend(t *testing.T) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(r.URL.Path, "/")
		code := http.StatusOK
		if len(parts) > 2 && parts[1] == "q" {
			if n, err := strconv.Atoi(parts[2]); err == nil && n >= 200 && n <= 599 {
				code = n
			}
		}
		w.WriteHeader(code)
		io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 5 * time.Second}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// logsClient keeps connections to nginx open, so that a test can send
// thousands of requests quickly.
var logsClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}

// sendLogged sends r through nginx and checks its status.
func sendLogged(t *testing.T, r sentRequest) {
	t.Helper()
	req, err := http.NewRequest(r.method, "http://127.0.0.1:"+strconv.Itoa(r.port)+r.uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = r.host
	req.Header.Set("User-Agent", r.userAgent)
	if r.referer != "" {
		req.Header.Set("Referer", r.referer)
	}
	resp, err := logsClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.uri, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != r.status {
		t.Fatalf("%s %s through nginx: status %d, want %d", r.method, r.uri, resp.StatusCode, r.status)
	}
}

// killProc ends a program with SIGKILL, as a crash would.
func killProc(t *testing.T, p *fleetProc) {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		t.Fatalf("%s is not running", p.name)
	}
	_ = cmd.Process.Kill()
	<-done
	p.mu.Lock()
	p.cmd, p.done, p.err = nil, nil, nil
	p.mu.Unlock()
}

// metricValue reads one sample of the master's /metrics (0 when absent).
func metricValue(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	return 0
}

// TestAgentLogsQuery runs the whole log path (nginx → agent → master →
// PostgreSQL → query API and live WebSocket) and checks what an operator
// sees: every field of an entry, every filter and the cursor, the 422s of
// bad parameters, no loss across a master crash and a log rotation, the
// spool limit's dropped lines on /metrics, and the live socket's
// authentication and organization boundary.
func TestAgentLogsQuery(t *testing.T) {
	if _, err := os.Stat(fleetNginx); err != nil {
		t.Fatalf("nginx is required at %s: %v", fleetNginx, err)
	}
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	m := newFleetMaster(t, bins.master, apptest.NewDatabase(t), dir)
	agentData, prefix := filepath.Join(dir, "agent"), filepath.Join(dir, "nginx")
	t.Cleanup(func() { fleetKillNginx(t, prefix) })
	agent := newFleetProc(t, "agent", bins.agent, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master log (successful requests left out):\n%s", fleetTail(fleetWithoutOKRequests(m.proc.log()), 150))
			t.Logf("agent log:\n%s", fleetTail(agent.log(), 150))
		}
	})
	m.start(t)
	m.login(t)
	ws := m.workspace(t)
	backend := statusBackend(t)

	tok := m.api.createToken(t, ws, "logs-query", map[string]string{"env": "logs"})
	agentID := tok.AgentID
	baseArgs := []string{
		"--master", m.grpcAddr, "--data-dir", agentData, "--nginx-prefix", prefix, "--nginx-binary", fleetNginx,
		"--ca-fingerprint", tok.fingerprint(t), "--log-batch-interval", "300ms", "--log-level", "debug",
	}
	if os.Geteuid() == 0 {
		baseArgs = append(baseArgs, "--nginx-user", "root")
	}
	agent.args = baseArgs
	agent.env = fleetEnv("NXMESH_AGENT_TOKEN=" + tok.Token)
	agent.start(t)
	m.api.awaitAgent(t, agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })

	target := map[string]any{"type": "agents", "agent_ids": []string{agentID}}
	var up, web, api fleetID
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/upstreams", map[string]any{
		"name": "status", "servers": []map[string]any{{"address": backend}},
	}, http.StatusCreated, &up)
	webPort, apiPort := fleetFreePort(t), fleetFreePort(t)
	const apiHost = "api.logs.test"
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "web", "server_name": fleetHost, "listen_port": webPort,
		"locations": []map[string]any{{"path": "/", "upstream_id": up.ID}}, "target_agents": target,
	}, http.StatusCreated, &web)
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "api", "server_name": apiHost, "listen_port": apiPort,
		"locations": []map[string]any{{"path": "/", "upstream_id": up.ID}}, "target_agents": target,
	}, http.StatusCreated, &api)
	m.api.awaitApplied(t, ws, agentID)

	query := func(t *testing.T, q url.Values) queriedPage {
		t.Helper()
		var p queriedPage
		m.api.call(t, http.MethodGet, "/v1/workspaces/"+ws+"/access-logs?"+q.Encode(), nil, http.StatusOK, &p)
		return p
	}
	// awaitURIs waits until exactly the uris are stored under prefix, each
	// once, and returns the entries.
	awaitURIs := func(t *testing.T, timeout time.Duration, prefix string, uris []string) map[string]queriedEntry {
		t.Helper()
		want := map[string]bool{}
		for _, u := range uris {
			want[u] = true
		}
		var got map[string]queriedEntry
		var dups []string
		collect := func() {
			got, dups = map[string]queriedEntry{}, nil
			q := url.Values{"uri_prefix": {prefix}, "limit": {"1000"}}
			for {
				p := query(t, q)
				for _, e := range p.Data {
					if _, ok := got[e.URI]; ok {
						dups = append(dups, e.URI)
					}
					got[e.URI] = e
				}
				if p.Meta.NextCursor == "" {
					return
				}
				q.Set("cursor", p.Meta.NextCursor)
			}
		}
		fleetEventually(t, timeout, fmt.Sprintf("%d entries under %s", len(uris), prefix), func() (bool, string) {
			collect()
			return len(got) >= len(want), fmt.Sprintf("%d entries", len(got))
		})
		// A duplicate would come in a later batch.
		time.Sleep(time.Second)
		collect()
		if len(dups) > 0 {
			t.Errorf("stored more than once: %v", dups[:min(len(dups), 10)])
		}
		missing := 0
		for u := range want {
			if _, ok := got[u]; !ok {
				missing++
			}
		}
		for u := range got {
			if !want[u] {
				t.Errorf("unexpected entry %s", u)
			}
		}
		if missing > 0 {
			t.Errorf("%d of %d requests missing", missing, len(want))
		}
		return got
	}

	start := time.Now().UTC().Add(-time.Second)
	var sent []sentRequest
	t.Run("FieldsAndFilters", func(t *testing.T) {
		for _, r := range []sentRequest{
			{method: "GET", uri: "/q/200/home?i=0", host: fleetHost, userAgent: "probe/1.0", referer: "https://ref.example/a", status: 200},
			{method: "GET", uri: "/q/200/about", host: fleetHost, userAgent: "probe/1.0", status: 200},
			{method: "GET", uri: "/q/404/missing", host: fleetHost, userAgent: "crawler/2.0", referer: "https://ref.example/b", status: 404},
			{method: "GET", uri: "/q/410/gone", host: fleetHost, userAgent: "crawler/2.0", status: 410},
			{method: "GET", uri: "/q/503/busy", host: fleetHost, userAgent: "probe/1.0", status: 503},
			{method: "HEAD", uri: "/q/200/head", host: fleetHost, userAgent: "probe/1.0", status: 200},
			{method: "POST", uri: "/q/201/create", host: apiHost, userAgent: "sdk/3.1 (go)", referer: "https://app.example/", status: 201},
			{method: "GET", uri: "/q/200/list", host: apiHost, userAgent: "sdk/3.1 (go)", status: 200},
			{method: "DELETE", uri: "/q/404/none", host: apiHost, userAgent: "sdk/3.1 (go)", status: 404},
		} {
			r.port, r.vhostID = webPort, web.ID
			if r.host == apiHost {
				r.port, r.vhostID = apiPort, api.ID
			}
			sendLogged(t, r)
			sent = append(sent, r)
		}
		end := time.Now().UTC().Add(time.Second)
		uris := make([]string, len(sent))
		for i, r := range sent {
			uris[i] = r.uri
		}
		got := awaitURIs(t, 15*time.Second, "/q/", uris)
		for _, r := range sent {
			e, ok := got[r.uri]
			if !ok {
				continue
			}
			if e.Method != r.method || e.Status != r.status || e.Host != r.host || e.UserAgent != r.userAgent ||
				e.Referer != r.referer || e.AgentID != agentID || e.VirtualHostID == nil || *e.VirtualHostID != r.vhostID ||
				e.ServerPort != r.port || e.RemoteAddr != "127.0.0.1" || e.Protocol != "HTTP/1.1" || e.Kind != "http" ||
				e.RequestID == "" || e.ID == "" || e.Timestamp.Before(start) || e.Timestamp.After(end) {
				t.Errorf("entry of %s %s = %+v, want %+v", r.method, r.uri, e, r)
			}
		}

		all := func(pred func(sentRequest) bool) []string {
			var out []string
			for _, r := range sent {
				if pred(r) {
					out = append(out, r.uri)
				}
			}
			sort.Strings(out)
			return out
		}
		ts := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
		for _, c := range []struct {
			name string
			q    url.Values
			want func(sentRequest) bool
		}{
			{"all", url.Values{}, func(sentRequest) bool { return true }},
			{"status_code", url.Values{"status_code": {"404"}}, func(r sentRequest) bool { return r.status == 404 }},
			{"status_code none", url.Values{"status_code": {"302"}}, func(sentRequest) bool { return false }},
			{"status_class 2xx", url.Values{"status_class": {"2xx"}}, func(r sentRequest) bool { return r.status/100 == 2 }},
			{"status_class 4xx", url.Values{"status_class": {"4xx"}}, func(r sentRequest) bool { return r.status/100 == 4 }},
			{"status_class 5xx", url.Values{"status_class": {"5xx"}}, func(r sentRequest) bool { return r.status/100 == 5 }},
			{"host", url.Values{"host": {apiHost}}, func(r sentRequest) bool { return r.host == apiHost }},
			{"host any case", url.Values{"host": {strings.ToUpper(fleetHost)}}, func(r sentRequest) bool { return r.host == fleetHost }},
			{"virtual_host_id", url.Values{"virtual_host_id": {web.ID}}, func(r sentRequest) bool { return r.vhostID == web.ID }},
			{"virtual_host_id other", url.Values{"virtual_host_id": {uuid.NewString()}}, func(sentRequest) bool { return false }},
			{"agent_id", url.Values{"agent_id": {agentID}}, func(sentRequest) bool { return true }},
			{"agent_id other", url.Values{"agent_id": {uuid.NewString()}}, func(sentRequest) bool { return false }},
			{"method", url.Values{"method": {"post"}}, func(r sentRequest) bool { return r.method == "POST" }},
			{"uri_prefix", url.Values{"uri_prefix": {"/q/404/"}}, func(r sentRequest) bool { return strings.HasPrefix(r.uri, "/q/404/") }},
			{"remote_addr", url.Values{"remote_addr": {"127.0.0.1"}}, func(sentRequest) bool { return true }},
			{"remote_addr other", url.Values{"remote_addr": {"10.9.9.9"}}, func(sentRequest) bool { return false }},
			{"combined", url.Values{"status_class": {"4xx"}, "virtual_host_id": {api.ID}, "method": {"DELETE"}},
				func(r sentRequest) bool { return r.status/100 == 4 && r.vhostID == api.ID && r.method == "DELETE" }},
			{"from/to around", url.Values{"from": {ts(start)}, "to": {ts(end)}}, func(sentRequest) bool { return true }},
			{"to before", url.Values{"from": {ts(start.Add(-time.Hour))}, "to": {ts(start)}}, func(sentRequest) bool { return false }},
			{"from after", url.Values{"from": {ts(end)}, "to": {ts(end.Add(time.Hour))}}, func(sentRequest) bool { return false }},
		} {
			t.Run(c.name, func(t *testing.T) {
				q := c.q
				if q.Get("uri_prefix") == "" {
					q.Set("uri_prefix", "/q/")
				}
				q.Set("limit", "1000")
				p := query(t, q)
				var got []string
				for _, e := range p.Data {
					got = append(got, e.URI)
				}
				sort.Strings(got)
				want := all(c.want)
				if strings.Join(got, " ") != strings.Join(want, " ") || p.Meta.Total != int64(len(want)) {
					t.Errorf("%v: got %v (total %d), want %v", c.q, got, p.Meta.Total, want)
				}
			})
		}

		t.Run("cursor", func(t *testing.T) {
			q := url.Values{"uri_prefix": {"/q/"}, "limit": {"2"}}
			seen := map[string]bool{}
			var last *queriedEntry
			pages := 0
			for {
				p := query(t, q)
				pages++
				if p.Meta.Total != int64(len(sent)) || p.Meta.Limit != 2 || len(p.Data) > 2 {
					t.Fatalf("page %d: total %d limit %d with %d entries", pages, p.Meta.Total, p.Meta.Limit, len(p.Data))
				}
				for i := range p.Data {
					e := p.Data[i]
					if seen[e.URI] {
						t.Errorf("%s on two pages", e.URI)
					}
					seen[e.URI] = true
					if last != nil && (e.Timestamp.After(last.Timestamp) || e.Timestamp.Equal(last.Timestamp) && e.ID > last.ID) {
						t.Errorf("%s (%s) after %s (%s): not newest first", e.URI, e.Timestamp, last.URI, last.Timestamp)
					}
					last = &e
				}
				if p.Meta.NextCursor == "" {
					break
				}
				if pages > len(sent) {
					t.Fatal("the cursor does not end")
				}
				q.Set("cursor", p.Meta.NextCursor)
			}
			if len(seen) != len(sent) || pages != (len(sent)+1)/2 {
				t.Errorf("%d entries on %d pages, want %d on %d", len(seen), pages, len(sent), (len(sent)+1)/2)
			}
			// The cursor narrows the other filters' results too.
			p := query(t, url.Values{"uri_prefix": {"/q/"}, "status_class": {"2xx"}, "limit": {"1"}})
			if p.Meta.NextCursor == "" {
				t.Fatal("no next_cursor for a filter with several entries")
			}
			rest := query(t, url.Values{"uri_prefix": {"/q/"}, "status_class": {"2xx"}, "limit": {"1000"}, "cursor": {p.Meta.NextCursor}})
			if want := len(all(func(r sentRequest) bool { return r.status/100 == 2 })) - 1; len(rest.Data) != want {
				t.Errorf("after the cursor: %d entries, want %d", len(rest.Data), want)
			}
			for _, e := range rest.Data {
				if e.URI == p.Data[0].URI || e.Status/100 != 2 {
					t.Errorf("after the cursor: %+v", e)
				}
			}
		})
	})

	t.Run("BadParameters", func(t *testing.T) {
		now := time.Now().UTC()
		for _, c := range []struct {
			q     url.Values
			field string
		}{
			{url.Values{"from": {now.Format(time.RFC3339)}, "to": {now.Add(-time.Hour).Format(time.RFC3339)}}, "from"},
			{url.Values{"from": {"yesterday"}}, "from"},
			{url.Values{"to": {"2026-13-01T00:00:00Z"}}, "to"},
			{url.Values{"status_code": {"abc"}}, "status_code"},
			{url.Values{"status_code": {"99"}}, "status_code"},
			{url.Values{"status_class": {"6xx"}}, "status_class"},
			{url.Values{"cursor": {"not-a-cursor"}}, "cursor"},
			{url.Values{"cursor": {"eyJ0IjoieCJ9"}}, "cursor"},
			{url.Values{"agent_id": {"agent-1"}}, "agent_id"},
			{url.Values{"virtual_host_id": {"12"}}, "virtual_host_id"},
			{url.Values{"limit": {"0"}}, "limit"},
		} {
			code, body, err := m.api.try(http.MethodGet, "/v1/workspaces/"+ws+"/access-logs?"+c.q.Encode(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), `"field":"`+c.field+`"`) {
				t.Errorf("%v: %d %s; want 422 naming %s", c.q, code, body, c.field)
			}
		}
	})

	send := func(t *testing.T, prefix string, n int) []string {
		t.Helper()
		uris := make([]string, n)
		for i := range n {
			uris[i] = fmt.Sprintf("%s%d", prefix, i)
			sendLogged(t, sentRequest{method: "GET", uri: uris[i], host: fleetHost, userAgent: "e2e", status: 200, port: webPort})
		}
		return uris
	}

	t.Run("MasterDown", func(t *testing.T) {
		before := send(t, "/down/before/", 10)
		awaitURIs(t, 15*time.Second, "/down/before/", before)
		killProc(t, m.proc)
		// nginx serves, and the agent reads and spools, without the master.
		during := send(t, "/down/during/", 200)
		time.Sleep(time.Second)
		m.start(t)
		more := send(t, "/down/after/", 10)
		awaitURIs(t, fleetWait, "/down/", append(append(before, during...), more...))
	})

	t.Run("Rotation", func(t *testing.T) {
		accessLog := filepath.Join(agentData, "logs", "access.log")
		var mu sync.Mutex
		var uris []string
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := fmt.Sprintf("/rot/%d", i)
				req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(webPort)+u, nil)
				req.Host = fleetHost
				resp, err := logsClient.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				uris = append(uris, u)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
		// As logrotate does: rename, then ask nginx to reopen its logs.
		for round := range 2 {
			time.Sleep(700 * time.Millisecond)
			if err := os.Rename(accessLog, fmt.Sprintf("%s.rotated%d", accessLog, round)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(150 * time.Millisecond) // requests logged into the renamed file
			pidData, err := os.ReadFile(filepath.Join(prefix, "run", "nginx.pid"))
			if err != nil {
				t.Fatal(err)
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(string(pidData)))
			if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
				t.Fatalf("SIGUSR1 to nginx %d: %v", pid, err)
			}
		}
		time.Sleep(700 * time.Millisecond)
		close(stop)
		<-done
		if _, err := os.Stat(accessLog); err != nil {
			t.Fatalf("nginx did not reopen %s: %v", accessLog, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(uris) < 50 {
			t.Fatalf("only %d requests served during the rotations", len(uris))
		}
		awaitURIs(t, fleetWait, "/rot/", uris)
	})

	t.Run("LiveSocket", func(t *testing.T) {
		wsURL := "ws://" + m.httpAddr + "/v1/ws/logs/" + agentID
		dial := func(t *testing.T) *websocket.Conn {
			t.Helper()
			c, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
			if err != nil {
				t.Fatalf("dial %s: %v", wsURL, err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		type msg struct {
			Type    string          `json:"type"`
			Message string          `json:"message"`
			Data    json.RawMessage `json:"data"`
		}
		read := func(t *testing.T, c *websocket.Conn, wait time.Duration) (msg, error) {
			t.Helper()
			_ = c.SetReadDeadline(time.Now().Add(wait))
			var mm msg
			_, raw, err := c.ReadMessage()
			if err != nil {
				return mm, err
			}
			if err := json.Unmarshal(raw, &mm); err != nil {
				t.Fatalf("socket message %s: %v", raw, err)
			}
			return mm, nil
		}
		// refused checks that the socket answers an error and closes 1008.
		refused := func(t *testing.T, c *websocket.Conn) {
			t.Helper()
			mm, err := read(t, c, 10*time.Second)
			if err != nil || mm.Type != "error" {
				t.Fatalf("first answer %+v, %v; want an error", mm, err)
			}
			if _, err := read(t, c, 10*time.Second); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
				t.Fatalf("after the error: %v; want close 1008", err)
			}
		}

		t.Run("AuthFirst", func(t *testing.T) {
			c := dial(t)
			// Nothing is sent before the client authenticates.
			if mm, err := read(t, c, 700*time.Millisecond); err == nil {
				t.Fatalf("message before auth: %+v", mm)
			}
		})
		t.Run("BadToken", func(t *testing.T) {
			c := dial(t)
			if err := c.WriteJSON(map[string]string{"type": "auth", "token": "not-a-token"}); err != nil {
				t.Fatal(err)
			}
			refused(t, c)
		})
		t.Run("LinesArrive", func(t *testing.T) {
			c := dial(t)
			if err := c.WriteJSON(map[string]string{"type": "auth", "token": m.api.token}); err != nil {
				t.Fatal(err)
			}
			if mm, err := read(t, c, 10*time.Second); err != nil || mm.Type != "auth_success" {
				t.Fatalf("auth answer %+v, %v", mm, err)
			}
			uri := "/live/" + uuid.NewString()
			sendLogged(t, sentRequest{method: "GET", uri: uri, host: fleetHost, userAgent: "live", status: 200, port: webPort})
			deadline := time.Now().Add(15 * time.Second)
			for {
				mm, err := read(t, c, time.Until(deadline))
				if err != nil {
					t.Fatalf("waiting for %s on the socket: %v", uri, err)
				}
				if mm.Type == "log" && strings.Contains(string(mm.Data), uri) {
					return
				}
			}
		})
		t.Run("OtherOrganization", func(t *testing.T) {
			// A user who is only a member (owner) of another organization.
			const email, password = "outsider@e2e.test", "outsider-password-1"
			m.api.call(t, http.MethodPost, "/v1/users", map[string]any{"email": email, "password": password, "name": "Outsider"},
				http.StatusCreated, nil)
			outsider := &fleetAPI{base: m.base, http: m.api.http}
			var login struct {
				AccessToken string `json:"access_token"`
			}
			outsider.call(t, http.MethodPost, "/v1/auth/login", map[string]string{"email": email, "password": password}, http.StatusOK, &login)
			outsider.token = login.AccessToken
			outsider.call(t, http.MethodPost, "/v1/organizations", map[string]string{"name": "Elsewhere", "slug": "elsewhere"}, http.StatusCreated, nil)
			if code, body, _ := outsider.try(http.MethodGet, "/v1/workspaces/"+ws+"/access-logs", nil); code != http.StatusForbidden && code != http.StatusNotFound {
				t.Errorf("the outsider's access-log query: %d %s", code, body)
			}
			c := dial(t)
			if err := c.WriteJSON(map[string]string{"type": "auth", "token": outsider.token}); err != nil {
				t.Fatal(err)
			}
			sendLogged(t, sentRequest{method: "GET", uri: "/live/outsider", host: fleetHost, userAgent: "live", status: 200, port: webPort})
			refused(t, c)
		})
	})

	t.Run("SpoolLimitDropsOldest", func(t *testing.T) {
		spoolDir := filepath.Join(agentData, "logs", "spool")
		emptySpool := func() (bool, string) {
			entries, _ := os.ReadDir(spoolDir)
			var pb []string
			for _, e := range entries {
				if strings.HasSuffix(e.Name(), ".pb") {
					pb = append(pb, e.Name())
				}
			}
			return len(pb) == 0, fmt.Sprintf("%d batches spooled", len(pb))
		}
		// Every line served so far is stored and acknowledged.
		awaitURIs(t, fleetWait, "/spool-start/", send(t, "/spool-start/", 1))
		fleetEventually(t, fleetWait, "an empty spool", emptySpool)
		if !agent.stop(t) {
			t.Fatal("the agent did not stop cleanly")
		}
		agent.args = append(append([]string{}, baseArgs...), "--log-spool-max", "1MiB", "--log-batch-lines", "500")
		agent.start(t)
		m.api.awaitAgent(t, agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })
		m.stop(t)

		const n = 15000
		uris := send(t, "/spool/", n)
		// The agent reads every line while the master is away, and drops
		// the oldest batches to stay within 1 MiB (a position is saved once
		// the lines before it are spooled).
		fleetEventually(t, fleetWait, "the agent to read the whole access log", func() (bool, string) {
			var pos map[string]struct {
				Offset int64 `json:"offset"`
			}
			data, _ := os.ReadFile(filepath.Join(agentData, "logs", "positions.json"))
			_ = json.Unmarshal(data, &pos)
			fi, err := os.Stat(filepath.Join(agentData, "logs", "access.log"))
			if err != nil {
				return false, err.Error()
			}
			for p, v := range pos {
				if strings.HasSuffix(p, "access.log") && v.Offset == fi.Size() {
					return true, ""
				}
			}
			return false, fmt.Sprintf("positions %s, access.log %d bytes", data, fi.Size())
		})
		m.start(t)
		// Once the spool is sent, what is stored and what was reported
		// dropped add up to what nginx served.
		fleetEventually(t, fleetWait, "the spool sent", emptySpool)
		got := map[int]bool{}
		q := url.Values{"uri_prefix": {"/spool/"}, "limit": {"1000"}}
		for {
			p := query(t, q)
			for _, e := range p.Data {
				i, err := strconv.Atoi(strings.TrimPrefix(e.URI, "/spool/"))
				if err != nil || got[i] {
					t.Errorf("entry %s", e.URI)
				}
				got[i] = true
			}
			if p.Meta.NextCursor == "" {
				break
			}
			q.Set("cursor", p.Meta.NextCursor)
		}
		dropped := metricValue(t, m.base, `nxmesh_logs_agent_dropped_lines_total{kind="access"}`)
		if dropped <= 0 || len(got)+int(dropped) != n {
			t.Fatalf("%d stored + %v reported dropped, want %d in all with some dropped", len(got), dropped, n)
		}
		// The oldest were dropped: what is stored is the newest lines.
		for i := n - len(got); i < n; i++ {
			if !got[i] {
				t.Fatalf("%s missing though older lines are stored (%d stored, %v dropped)", uris[i], len(got), dropped)
			}
		}
		t.Logf("%d lines stored, %v dropped by the spool limit", len(got), dropped)
	})
}
