package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// backend is an HTTP server on a fixed loopback address that can be stopped
// and started again; it answers every request with its name.
type backend struct {
	name, addr string
	mu         sync.Mutex
	srv        *http.Server
	done       chan struct{}
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: l.Addr().String()}
	b.serve(l)
	t.Cleanup(b.stop)
	return b
}

func (b *backend) serve(l net.Listener) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, b.name)
	}), ReadHeaderTimeout: 5 * time.Second}
	b.done = make(chan struct{})
	srv, done := b.srv, b.done
	go func() { defer close(done); _ = srv.Serve(l) }()
}

func (b *backend) start(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", b.addr, err)
	}
	b.serve(l)
}

func (b *backend) stop() {
	b.mu.Lock()
	srv, done := b.srv, b.done
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Close()
		<-done
	}
}

// renderedDown returns, for each address, whether the live http.conf renders
// its server line with "down".
func renderedDown(t *testing.T, prefix string, addrs ...string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(prefix, "current", "http.conf"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(strings.TrimSuffix(strings.TrimSpace(line), ";"))
		if len(f) < 2 || f[0] != "server" {
			continue
		}
		for _, a := range addrs {
			if f[1] == a {
				out[a] = f[len(f)-1] == "down"
			}
		}
	}
	if len(out) != len(addrs) {
		t.Fatalf("http.conf has servers %v of %v:\n%s", out, addrs, data)
	}
	return out
}

// TestAgent_HealthChecks runs the agent against a real nginx with an
// upstream of two backends probed every second: a stopped backend is
// rendered down and traffic goes to the other, a restarted one is restored,
// and when both fail the last healthy one stays up. Each change reaches the
// master as a health report at once (the heartbeat is an hour), with the
// master's version and checksum and no config status.
func TestAgent_HealthChecks(t *testing.T) {
	t.Parallel()
	bin := nginxBinary(t)
	m, addr, fp := startMaster(t)
	dir := t.TempDir()
	cfg := &config{
		Master: addr, Token: "nxmesh_agent_health", CAFingerprint: fp,
		DataDir: filepath.Join(dir, "data"), NginxPrefix: filepath.Join(dir, "nginx"),
		NginxBinary: bin, AutoRestart: true, Heartbeat: time.Hour,
		DeploymentMode: agentv1.DeploymentMode_STANDALONE,
	}
	if os.Geteuid() == 0 {
		cfg.NginxUser = "root"
	}
	t.Cleanup(func() { killNginx(t, cfg.NginxPrefix) })
	stop := runAgent(t, cfg)
	defer stop()
	waitFor(t, m, "first heartbeat", func(msg *agentv1.AgentMessage) bool { return msg.GetHealth() != nil })

	a, b := newBackend(t, "backend-a"), newBackend(t, "backend-b")
	port := freePort(t)
	const checksum = "feedface00112233"
	m.toAgent <- &agentv1.MasterMessage{Payload: &agentv1.MasterMessage_ConfigUpdate{ConfigUpdate: &agentv1.ConfigUpdate{
		ConfigId: "cfg-1", Version: 1, Checksum: checksum,
		Upstreams: []*agentv1.Upstream{{Id: "up", Servers: []*agentv1.UpstreamServer{
			{Address: a.addr, MaxFails: 1, FailTimeoutSeconds: 1}, {Address: b.addr, MaxFails: 1, FailTimeoutSeconds: 1},
		}, HealthCheck: &agentv1.HealthCheckConfig{
			Enabled: true, Path: "/healthz", IntervalSeconds: 1, TimeoutSeconds: 1, HealthyThreshold: 1, UnhealthyThreshold: 2,
		}}},
		VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", ServerName: "localhost", ListenPort: port, DefaultServer: true,
			Locations: []*agentv1.Location{{Path: "/", UpstreamId: "up"}}}},
	}}}
	st := waitFor(t, m, "config status", func(msg *agentv1.AgentMessage) bool {
		return msg.GetConfigStatus().GetStatus() >= agentv1.ConfigApplyStatus_SUCCESS
	}).GetConfigStatus()
	if st.GetStatus() != agentv1.ConfigApplyStatus_SUCCESS {
		t.Fatalf("apply = %v", st)
	}

	// report waits for a health report whose upstream_health satisfies
	// match, failing on any config status meanwhile.
	report := func(what string, match func(map[string]*agentv1.UpstreamServerHealth) bool) *agentv1.HealthReport {
		t.Helper()
		return waitFor(t, m, what, func(msg *agentv1.AgentMessage) bool {
			if s := msg.GetConfigStatus(); s != nil {
				t.Errorf("health-driven re-apply sent a config status: %v", s)
			}
			h := msg.GetHealth()
			if h == nil {
				return false
			}
			byAddr := map[string]*agentv1.UpstreamServerHealth{}
			for _, s := range h.GetUpstreamHealth() {
				if s.GetUpstreamId() == "up" {
					byAddr[s.GetAddress()] = s
				}
			}
			return len(byAddr) == 2 && match(byAddr)
		}).GetHealth()
	}
	checkReport := func(h *agentv1.HealthReport) {
		t.Helper()
		if h.GetConfigVersion() != 1 || h.GetConfigChecksum() != checksum || len(h.GetAlerts()) != 0 {
			t.Errorf("report: version %d checksum %q alerts %v", h.GetConfigVersion(), h.GetConfigChecksum(), h.GetAlerts())
		}
	}
	get := func() (string, error) { return httpGet(port) }

	// Both pass: nothing is marked down.
	if d := renderedDown(t, cfg.NginxPrefix, a.addr, b.addr); d[a.addr] || d[b.addr] {
		t.Errorf("rendered down while healthy: %v", d)
	}

	// b stops: it is marked down and every request is served by a.
	b.stop()
	h := report("b marked down", func(s map[string]*agentv1.UpstreamServerHealth) bool {
		return !s[b.addr].GetHealthy() && s[b.addr].GetMarkedDown() && s[a.addr].GetHealthy()
	})
	checkReport(h)
	for _, s := range h.GetUpstreamHealth() {
		if s.GetAddress() == b.addr && (s.GetLastError() == "" || s.GetChangedAt() == 0) {
			t.Errorf("b's state = %v", s)
		}
	}
	if d := renderedDown(t, cfg.NginxPrefix, a.addr, b.addr); d[a.addr] || !d[b.addr] {
		t.Errorf("rendered down with b stopped: %v", d)
	}
	for range 20 {
		if body, err := get(); err != nil || body != "backend-a" {
			t.Fatalf("GET through nginx with b down = %q, %v", body, err)
		}
	}

	// b starts again: restored.
	b.start(t)
	checkReport(report("b restored", func(s map[string]*agentv1.UpstreamServerHealth) bool {
		return s[b.addr].GetHealthy() && !s[b.addr].GetMarkedDown()
	}))
	if d := renderedDown(t, cfg.NginxPrefix, a.addr, b.addr); d[a.addr] || d[b.addr] {
		t.Errorf("rendered down after b came back: %v", d)
	}
	seen := map[string]bool{}
	for range 20 {
		body, err := get()
		if err != nil {
			t.Fatalf("GET through nginx after b came back: %v", err)
		}
		seen[body] = true
	}
	if !seen["backend-b"] {
		t.Errorf("b gets no requests after it was restored: %v", seen)
	}

	// Both stop, b first: b is marked down, a fails too but stays up as
	// the last healthy server.
	b.stop()
	report("b marked down again", func(s map[string]*agentv1.UpstreamServerHealth) bool {
		return s[b.addr].GetMarkedDown()
	})
	a.stop()
	checkReport(report("a failing but kept up", func(s map[string]*agentv1.UpstreamServerHealth) bool {
		return !s[a.addr].GetHealthy() && !s[a.addr].GetMarkedDown() && s[b.addr].GetMarkedDown()
	}))
	if d := renderedDown(t, cfg.NginxPrefix, a.addr, b.addr); d[a.addr] || !d[b.addr] {
		t.Errorf("rendered down with both stopped: %v", d)
	}

	// a comes back and serves again.
	a.start(t)
	report("a healthy again", func(s map[string]*agentv1.UpstreamServerHealth) bool {
		return s[a.addr].GetHealthy() && s[b.addr].GetMarkedDown()
	})
	if body, err := get(); err != nil || body != "backend-a" {
		t.Errorf("GET through nginx with a back = %q, %v", body, err)
	}
}
