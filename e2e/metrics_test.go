package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/metrics"
)

// metricsSummary is GET /v1/{workspaces,agents}/{id}/metrics.
type metricsSummary struct {
	RequestsTotal int64   `json:"requests_total"`
	ErrorRate     float64 `json:"error_rate"`
	Bandwidth     struct {
		InBytes  int64 `json:"in_bytes"`
		OutBytes int64 `json:"out_bytes"`
	} `json:"bandwidth"`
	StatusCodes map[string]int64 `json:"status_codes"`
	Series      []struct {
		RequestsTotal int64            `json:"requests_total"`
		InBytes       int64            `json:"in_bytes"`
		OutBytes      int64            `json:"out_bytes"`
		StatusCodes   map[string]int64 `json:"status_codes"`
	} `json:"series"`
	System *struct {
		Timestamp time.Time `json:"timestamp"`
		Nginx     *struct {
			ActiveConnections int64 `json:"active_connections"`
			Accepts           int64 `json:"accepts"`
			Handled           int64 `json:"handled"`
			Requests          int64 `json:"requests"`
			Reading           int64 `json:"reading"`
			Writing           int64 `json:"writing"`
			Waiting           int64 `json:"waiting"`
		} `json:"nginx"`
	} `json:"system"`
}

// hook is a webhook receiver that records the deliveries it got.
type hook struct {
	mu     sync.Mutex
	secret []byte
	got    []metrics.WebhookPayload
	bad    []string
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if sig := r.Header.Get(metrics.SignatureHeader); sig != metrics.Sign(h.secret, body) {
		h.bad = append(h.bad, fmt.Sprintf("signature %q of %s", sig, body))
		w.WriteHeader(http.StatusOK)
		return
	}
	var p metrics.WebhookPayload
	if err := json.Unmarshal(body, &p); err != nil {
		h.bad = append(h.bad, fmt.Sprintf("%v: %s", err, body))
	} else {
		h.got = append(h.got, p)
	}
	w.WriteHeader(http.StatusOK)
}

func (h *hook) find(typ string) (metrics.WebhookPayload, bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var types []string
	for _, p := range h.got {
		if p.Type == typ {
			return p, true, ""
		}
		types = append(types, p.Type)
	}
	return metrics.WebhookPayload{}, false, fmt.Sprintf("got %v, unsigned %v", types, h.bad)
}

// TestAgentMetrics sends requests of known statuses and sizes through the
// real agent's nginx and reads them back, exactly, from the workspace and
// agent metrics; reads the agent's host metrics and stub_status; and fires
// and resolves an error-rate alert rule, delivered to a signed webhook.
func TestAgentMetrics(t *testing.T) {
	if _, err := os.Stat(fleetNginx); err != nil {
		t.Fatalf("nginx is required at %s: %v", fleetNginx, err)
	}
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	m := newFleetMaster(t, bins.master, apptest.NewDatabase(t), dir)
	m.proc.env = append(m.proc.env, "NXMESH_METRICS_ALERT_INTERVAL=1s")
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

	// The backend answers /s/{status}/{size} with that status and a body of
	// that many bytes.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/s/"), "/")
		code, _ := strconv.Atoi(parts[0])
		size := 0
		if len(parts) > 1 {
			size, _ = strconv.Atoi(parts[1])
		}
		if code == 0 {
			code = http.StatusOK
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(code)
		_, _ = w.Write(bytes.Repeat([]byte("x"), size))
	}), ReadHeaderTimeout: 5 * time.Second}
	go backend.Serve(l)
	t.Cleanup(func() { backend.Close() })

	tok := m.api.createToken(t, ws, "metrics", map[string]string{"env": "metrics"})
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
	online := time.Now()
	m.api.awaitAgent(t, agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })

	var up, web fleetID
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/upstreams", map[string]any{
		"name": "backend", "servers": []map[string]any{{"address": l.Addr().String()}},
	}, http.StatusCreated, &up)
	port := fleetFreePort(t)
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "web", "server_name": fleetHost, "listen_port": port,
		"locations":     []map[string]any{{"path": "/", "upstream_id": up.ID}},
		"target_agents": map[string]any{"type": "agents", "agent_ids": []string{agentID}},
	}, http.StatusCreated, &web)
	m.api.awaitApplied(t, ws, agentID)

	client := &http.Client{Timeout: 10 * time.Second}
	send := func(t *testing.T, status, size, n int) {
		t.Helper()
		for range n {
			req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/s/%d/%d", port, status, size), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = fleetHost
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != status || len(body) != size {
				t.Fatalf("GET /s/%d/%d = %d with %d bytes", status, size, resp.StatusCode, len(body))
			}
		}
	}
	summary := func(t *testing.T, path string, q url.Values) metricsSummary {
		t.Helper()
		var s metricsSummary
		m.api.call(t, http.MethodGet, path+"?"+q.Encode(), nil, http.StatusOK, &s)
		return s
	}
	wsPath, agentPath := "/v1/workspaces/"+ws+"/metrics", "/v1/agents/"+agentID+"/metrics"

	t.Run("HostMetricsWithin15s", func(t *testing.T) {
		fleetEventually(t, time.Until(online.Add(15*time.Second))+time.Second, "host metrics with nginx's stub_status", func() (bool, string) {
			s := summary(t, agentPath, url.Values{})
			if s.System == nil || s.System.Nginx == nil || s.System.Timestamp.Before(online.Add(-time.Minute)) {
				return false, fmt.Sprintf("%+v", s.System)
			}
			n := s.System.Nginx
			ok := n.ActiveConnections >= 1 && n.Accepts >= n.Handled && n.Handled >= 1 && n.Requests >= n.Handled &&
				n.Reading+n.Writing+n.Waiting == n.ActiveConnections
			return ok, fmt.Sprintf("%+v", *n)
		})
		if time.Since(online) > 16*time.Second {
			t.Errorf("host metrics took %s", time.Since(online))
		}
	})

	start := time.Now().UTC()
	type batch struct{ status, size, n int }
	known := []batch{{200, 1000, 20}, {201, 10, 3}, {301, 0, 5}, {404, 50, 10}, {503, 7, 2}}
	var total int64
	classes := map[string]int64{"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}

	t.Run("ExactTotals", func(t *testing.T) {
		for _, b := range known {
			send(t, b.status, b.size, b.n)
			total += int64(b.n)
			classes[strconv.Itoa(b.status/100)+"xx"] += int64(b.n)
		}
		// The access logs hold each request's bytes as nginx counted them.
		var entries []struct {
			Status        int   `json:"status"`
			BodyBytesSent int64 `json:"body_bytes_sent"`
			RequestLength int64 `json:"request_length"`
			BytesSent     int64 `json:"bytes_sent"`
		}
		fleetEventually(t, fleetWait, fmt.Sprintf("%d access-log entries", total), func() (bool, string) {
			var page struct {
				Data json.RawMessage `json:"data"`
			}
			m.api.call(t, http.MethodGet, "/v1/workspaces/"+ws+"/access-logs?limit=1000&virtual_host_id="+web.ID, nil, http.StatusOK, &page)
			entries = entries[:0]
			_ = json.Unmarshal(page.Data, &entries)
			return int64(len(entries)) == total, fmt.Sprintf("%d entries", len(entries))
		})
		var in, out int64
		sizes := map[int]int64{}
		for _, b := range known {
			sizes[b.status] = int64(b.size)
		}
		for _, e := range entries {
			in += e.RequestLength
			out += e.BytesSent
			if e.BodyBytesSent != sizes[e.Status] {
				t.Errorf("status %d: body_bytes_sent %d, want %d", e.Status, e.BodyBytesSent, sizes[e.Status])
			}
		}
		covers := url.Values{"from": {start.Truncate(time.Minute).Add(-time.Minute).Format(time.RFC3339)},
			"to": {time.Now().UTC().Truncate(time.Minute).Add(2 * time.Minute).Format(time.RFC3339)}}
		wantRate := float64(classes["5xx"]) / float64(total)
		for _, path := range []string{wsPath, agentPath} {
			var s metricsSummary
			fleetEventually(t, fleetWait, path+" totals", func() (bool, string) {
				s = summary(t, path, covers)
				return s.RequestsTotal == total, fmt.Sprintf("%d requests", s.RequestsTotal)
			})
			for c, n := range classes {
				if s.StatusCodes[c] != n {
					t.Errorf("%s: status_codes[%s] = %d, want %d", path, c, s.StatusCodes[c], n)
				}
			}
			if s.ErrorRate != wantRate || s.Bandwidth.InBytes != in || s.Bandwidth.OutBytes != out {
				t.Errorf("%s: error_rate %v in %d out %d, want %v, %d, %d", path, s.ErrorRate, s.Bandwidth.InBytes, s.Bandwidth.OutBytes, wantRate, in, out)
			}
			// The per-minute series adds up to the totals.
			q := url.Values{"from": covers["from"], "to": covers["to"], "interval": {"1m"}}
			ser := summary(t, path, q)
			var req, sin, sout int64
			sc := map[string]int64{}
			for _, p := range ser.Series {
				req, sin, sout = req+p.RequestsTotal, sin+p.InBytes, sout+p.OutBytes
				for c, n := range p.StatusCodes {
					sc[c] += n
				}
			}
			if len(ser.Series) == 0 || req != total || sin != in || sout != out {
				t.Errorf("%s interval=1m: %d points summing to %d requests, %d in, %d out; want %d, %d, %d", path, len(ser.Series), req, sin, sout, total, in, out)
			}
			for c, n := range classes {
				if sc[c] != n {
					t.Errorf("%s interval=1m: status %s sums to %d, want %d", path, c, sc[c], n)
				}
			}
			// A range before the requests counts nothing.
			before := url.Values{"from": {start.Add(-2 * time.Hour).Truncate(time.Minute).Format(time.RFC3339)},
				"to": {start.Add(-time.Hour).Truncate(time.Minute).Format(time.RFC3339)}}
			if z := summary(t, path, before); z.RequestsTotal != 0 || z.Bandwidth.InBytes != 0 || z.Bandwidth.OutBytes != 0 || z.ErrorRate != 0 ||
				z.StatusCodes["2xx"]+z.StatusCodes["3xx"]+z.StatusCodes["4xx"]+z.StatusCodes["5xx"] != 0 {
				t.Errorf("%s: range before the requests: %+v", path, z)
			}
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		now := time.Now().UTC()
		cases := []struct {
			name, method, path string
			body               any
			field              string
		}{
			{"FromAfterTo", http.MethodGet, wsPath + "?from=" + now.Format(time.RFC3339) + "&to=" + now.Add(-time.Hour).Format(time.RFC3339), nil, "from"},
			{"UnknownInterval", http.MethodGet, agentPath + "?interval=7m", nil, "interval"},
			{"UnknownMetric", http.MethodPost, "/v1/workspaces/" + ws + "/alert-rules",
				map[string]any{"name": "x", "metric": "coffee", "operator": ">", "threshold": 1}, "metric"},
			{"ThresholdNotANumber", http.MethodPost, "/v1/workspaces/" + ws + "/alert-rules",
				map[string]any{"name": "x", "metric": "error_rate", "operator": ">", "threshold": "high"}, "threshold"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				code, raw, err := m.api.try(c.method, c.path, c.body)
				if err != nil || code != http.StatusUnprocessableEntity || !strings.Contains(string(raw), `"field":"`+c.field+`"`) {
					t.Fatalf("%s %s: %d %v %s, want 422 naming %s", c.method, c.path, code, err, raw, c.field)
				}
			})
		}
		var rules struct {
			Data []json.RawMessage `json:"data"`
		}
		m.api.call(t, http.MethodGet, "/v1/workspaces/"+ws+"/alert-rules", nil, http.StatusOK, &rules)
		if len(rules.Data) != 0 {
			t.Fatalf("refused rules were stored: %s", rules.Data)
		}
	})

	t.Run("ErrorRateAlert", func(t *testing.T) {
		h := &hook{secret: []byte("webhook-secret-1")}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		var wsInfo struct {
			OrganizationID string `json:"organization_id"`
		}
		m.api.call(t, http.MethodGet, "/v1/workspaces/"+ws, nil, http.StatusOK, &wsInfo)
		var channel struct {
			ID string `json:"id"`
		}
		m.api.call(t, http.MethodPost, "/v1/organizations/"+wsInfo.OrganizationID+"/notification-channels", map[string]any{
			"name": "e2e hook", "type": "webhook", "url": srv.URL + "/hook", "secret": string(h.secret),
		}, http.StatusCreated, &channel)
		m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/alert-rules", map[string]any{
			"name": "errors", "metric": "error_rate", "operator": ">", "threshold": 0.5, "for": "0s", "window": "1m",
			"severity": "critical", "scope": map[string]any{"type": "all"}, "notify": []string{channel.ID},
		}, http.StatusCreated, nil)
		send(t, 500, 5, 60)
		var fired metrics.WebhookPayload
		fleetEventually(t, 90*time.Second, "a signed health.alert delivery", func() (bool, string) {
			p, ok, why := h.find("health.alert")
			fired = p
			return ok, why
		})
		if fired.Data["metric"] != "error_rate" || fired.WorkspaceID.String() != ws {
			t.Errorf("health.alert payload %+v", fired)
		}
		if v, ok := fired.Data["value"].(float64); !ok || v <= 0.5 || v > 1 {
			t.Errorf("health.alert value %v, want above 0.5", fired.Data["value"])
		}
		// The burst stops: good traffic brings the rate down and the alert resolves.
		send(t, 200, 10, 300)
		fleetEventually(t, 90*time.Second, "a signed alert.resolved delivery", func() (bool, string) {
			_, ok, why := h.find("alert.resolved")
			return ok, why
		})
		h.mu.Lock()
		bad := h.bad
		h.mu.Unlock()
		if len(bad) > 0 {
			t.Errorf("deliveries with a bad signature: %v", bad)
		}
	})
}
