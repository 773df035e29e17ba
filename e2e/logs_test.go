package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// logEntry is an access-log entry as GET /v1/workspaces/{id}/access-logs
// returns it.
type logEntry struct {
	AgentID       string  `json:"agent_id"`
	Method        string  `json:"method"`
	URI           string  `json:"uri"`
	Host          string  `json:"host"`
	Status        int     `json:"status"`
	RequestID     string  `json:"request_id"`
	VirtualHostID *string `json:"virtual_host_id"`
	Kind          string  `json:"kind"`
	ServerPort    int     `json:"server_port"`
	UpstreamAddr  string  `json:"upstream_addr"`
}

// errorLine is an error-log line as GET /v1/agents/{id}/error-logs returns
// it.
type errorLine struct {
	Level   string `json:"level"`
	Message string `json:"message"`
}

// TestAgentLogs sends requests through the agent's nginx and finds them,
// once each, through the master's access-log API, across an agent restart
// during which nginx keeps serving; and finds nginx's error-log line of a
// failed upstream connection through the error-log API.
func TestAgentLogs(t *testing.T) {
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
			t.Logf("master log (successful requests left out):\n%s", fleetTail(fleetWithoutOKRequests(m.proc.log()), 200))
			t.Logf("agent log:\n%s", fleetTail(agent.log(), 200))
		}
	})
	m.start(t)
	m.login(t)
	ws := m.workspace(t)
	backend := fleetBackend(t, "backend")

	tok := m.api.createToken(t, ws, "logs", map[string]string{"env": "logs"})
	agentID := tok.AgentID
	agent.args = []string{
		"--master", m.grpcAddr, "--data-dir", agentData, "--nginx-prefix", prefix, "--nginx-binary", fleetNginx,
		"--ca-fingerprint", tok.fingerprint(t), "--log-batch-interval", "500ms", "--log-level", "debug",
	}
	if os.Geteuid() == 0 {
		agent.args = append(agent.args, "--nginx-user", "root")
	}
	agent.env = fleetEnv("NXMESH_AGENT_TOKEN=" + tok.Token)
	agent.start(t)
	m.api.awaitAgent(t, agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })

	// A host proxying to the backend, and one whose upstream refuses
	// connections (nginx logs the failure in its error log).
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()
	target := map[string]any{"type": "agents", "agent_ids": []string{agentID}}
	var up, dead, web, broken fleetID
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/upstreams", map[string]any{
		"name": "backend", "servers": []map[string]any{{"address": backend}},
	}, http.StatusCreated, &up)
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/upstreams", map[string]any{
		"name": "dead", "servers": []map[string]any{{"address": deadAddr}},
	}, http.StatusCreated, &dead)
	webPort, brokenPort := fleetFreePort(t), fleetFreePort(t)
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "web", "server_name": fleetHost, "listen_port": webPort,
		"locations": []map[string]any{{"path": "/", "upstream_id": up.ID}}, "target_agents": target,
	}, http.StatusCreated, &web)
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "broken", "server_name": fleetHost, "listen_port": brokenPort,
		"locations": []map[string]any{{"path": "/", "upstream_id": dead.ID}}, "target_agents": target,
	}, http.StatusCreated, &broken)
	m.api.awaitApplied(t, ws, agentID)

	get := func(port int, path string, want int) {
		t.Helper()
		r, err := fleetGet(port, path)
		if err != nil || r.status != want {
			t.Fatalf("GET %s on port %d = %+v, %v; want %d", path, port, r, err, want)
		}
	}
	sent := 0
	send := func(n int) {
		t.Helper()
		for range n {
			get(webPort, fmt.Sprintf("/logs-e2e/%d?q=x", sent), http.StatusOK)
			sent++
		}
	}
	// accessLogs returns the workspace's entries matching the query.
	accessLogs := func(t *testing.T, q url.Values) []logEntry {
		t.Helper()
		var page struct {
			Data []logEntry `json:"data"`
		}
		q.Set("limit", "1000")
		m.api.call(t, http.MethodGet, "/v1/workspaces/"+ws+"/access-logs?"+q.Encode(), nil, http.StatusOK, &page)
		return page.Data
	}
	// awaitAll waits until every request sent so far is stored and checks
	// that each is stored once, with its virtual host, status and request id.
	awaitAll := func(t *testing.T) {
		t.Helper()
		q := url.Values{"virtual_host_id": {web.ID}, "uri_prefix": {"/logs-e2e/"}, "status_code": {"200"}}
		var entries []logEntry
		fleetEventually(t, fleetWait, fmt.Sprintf("%d access-log entries", sent), func() (bool, string) {
			entries = accessLogs(t, q)
			return len(entries) >= sent, fmt.Sprintf("%d entries", len(entries))
		})
		// A little longer: a duplicate would arrive in a later batch.
		time.Sleep(1500 * time.Millisecond)
		entries = accessLogs(t, q)
		seen, ids := map[string]int{}, map[string]bool{}
		for _, e := range entries {
			seen[e.URI]++
			if e.Status != http.StatusOK || e.Method != http.MethodGet || e.Host != fleetHost || e.AgentID != agentID ||
				e.VirtualHostID == nil || *e.VirtualHostID != web.ID || e.Kind != "http" || e.ServerPort != webPort ||
				e.UpstreamAddr != backend || e.RequestID == "" || ids[e.RequestID] {
				t.Errorf("entry %+v", e)
			}
			ids[e.RequestID] = true
		}
		for i := range sent {
			if u := fmt.Sprintf("/logs-e2e/%d?q=x", i); seen[u] != 1 {
				t.Errorf("%s stored %d times, want once", u, seen[u])
			}
		}
		if len(entries) != sent {
			t.Errorf("%d entries stored for %d requests", len(entries), sent)
		}
	}

	t.Run("AccessLogs", func(t *testing.T) {
		send(25)
		awaitAll(t)
		// The filter is applied: no entry of this host has status 404.
		if e := accessLogs(t, url.Values{"virtual_host_id": {web.ID}, "status_code": {"404"}}); len(e) != 0 {
			t.Errorf("status_code=404: %d entries", len(e))
		}
	})

	t.Run("AgentRestartLosesAndDuplicatesNothing", func(t *testing.T) {
		send(5)
		if !agent.stop(t) {
			t.Fatal("the agent did not stop cleanly")
		}
		// nginx keeps serving, and logging, while the agent is away.
		send(15)
		agent.env = fleetEnv()
		agent.start(t)
		m.api.awaitAgent(t, agentID, "the agent online again", func(a fleetAgent) bool { return a.State == "online" })
		send(5)
		awaitAll(t)
	})

	t.Run("ErrorLog", func(t *testing.T) {
		get(brokenPort, "/fails", http.StatusBadGateway)
		fleetEventually(t, fleetWait, "the 502 in the access logs", func() (bool, string) {
			e := accessLogs(t, url.Values{"virtual_host_id": {broken.ID}, "status_code": {"502"}})
			return len(e) == 1 && e[0].URI == "/fails", fmt.Sprintf("%+v", e)
		})
		fleetEventually(t, fleetWait, "nginx's connect() error in the agent's error logs", func() (bool, string) {
			var page struct {
				Data []errorLine `json:"data"`
			}
			m.api.call(t, http.MethodGet, "/v1/agents/"+agentID+"/error-logs?level=error&limit=100", nil, http.StatusOK, &page)
			for _, l := range page.Data {
				if l.Level == "error" && strings.Contains(l.Message, "connect() failed (111: Connection refused)") &&
					strings.Contains(l.Message, deadAddr) && strings.Contains(l.Message, `request: "GET /fails HTTP/1.1"`) {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%+v", page.Data)
		})
	})
}
