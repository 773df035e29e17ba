package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nxmesh/nxmesh/app/apptest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// nginxBinary returns the nginx executable; without one the test fails
// unless NXMESH_SKIP_NGINX=1.
func nginxBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("NXMESH_NGINX"), "nginx", "/usr/sbin/nginx"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("NXMESH_SKIP_NGINX") == "1" {
		t.Skip("nginx not installed and NXMESH_SKIP_NGINX=1")
	}
	t.Fatal("nginx not found: install it with `bash deploy/setup/ensure-deps.sh nginx` (or set NXMESH_SKIP_NGINX=1)")
	return ""
}

// master is a minimal master: it registers the agent (signing its CSR with
// a throwaway CA), keeps the stream open, and lets the test send messages
// and read what the agent sends.
type master struct {
	agentv1.UnimplementedAgentServiceServer
	ca *apptest.CA
	// toAgent is sent to the agent after its registration.
	toAgent  chan *agentv1.MasterMessage
	received chan *agentv1.AgentMessage
}

func (m *master) Stream(stream grpc.BidiStreamingServer[agentv1.AgentMessage, agentv1.MasterMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	resp := &agentv1.RegistrationResponse{AgentId: "agent-e2e", Success: true, HeartbeatIntervalSeconds: 10}
	if csrPEM := first.GetRegistration().GetCsrPem(); csrPEM != "" {
		block, _ := pem.Decode([]byte(csrPEM))
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			return err
		}
		der, err := m.ca.TrySign(&x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "agent-e2e"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, csr.PublicKey)
		if err != nil {
			return err
		}
		resp.ClientCertificatePem = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		resp.CaCertificatePem = string(m.ca.PEM)
	}
	if err := stream.Send(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_RegistrationResponse{RegistrationResponse: resp}}); err != nil {
		return err
	}
	go func() {
		for {
			select {
			case msg := <-m.toAgent:
				if stream.Send(msg) != nil {
					return
				}
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			return nil
		}
		select {
		case m.received <- msg:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// startMaster serves a master over TLS on a loopback port and returns its
// address and CA fingerprint.
func startMaster(t *testing.T) (*master, string, string) {
	t.Helper()
	ca := apptest.NewCA(t, "e2e CA")
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvDER := ca.Sign(t, &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "master"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &srvKey.PublicKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	m := &master{
		ca:      ca,
		toAgent: make(chan *agentv1.MasterMessage, 8), received: make(chan *agentv1.AgentMessage, 256),
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER, ca.DER}, PrivateKey: srvKey}},
		ClientAuth:   tls.VerifyClientCertIfGiven, ClientCAs: pool,
	})))
	agentv1.RegisterAgentServiceServer(srv, m)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	sum := sha256.Sum256(ca.DER)
	return m, lis.Addr().String(), "sha256:" + hex.EncodeToString(sum[:])
}

// waitFor returns the first message from the agent that matches.
func waitFor(t *testing.T, m *master, what string, match func(*agentv1.AgentMessage) bool) *agentv1.AgentMessage {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case msg := <-m.received:
			if match(msg) {
				return msg
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
			return nil
		}
	}
}

func freePort(t *testing.T) uint32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

func httpGet(port uint32) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(int(port)) + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// runAgent runs serve in the background until the returned stop is called.
func runAgent(t *testing.T, cfg *config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

// TestAgent runs the agent program against a small master and a real
// nginx: registration, a config apply that serves traffic, heartbeats with
// nginx's numbers, commands, and a restart without the master.
func TestAgent(t *testing.T) {
	t.Parallel()
	bin := nginxBinary(t)
	m, addr, fp := startMaster(t)
	dir := t.TempDir()
	cfg := &config{
		Master: addr, Token: "nxmesh_agent_e2e", CAFingerprint: fp,
		DataDir: filepath.Join(dir, "data"), NginxPrefix: filepath.Join(dir, "nginx"),
		NginxBinary: bin, AutoRestart: true, Heartbeat: 200 * time.Millisecond,
		DeploymentMode: agentv1.DeploymentMode_STANDALONE, Labels: map[string]string{"env": "e2e"},
	}
	if os.Geteuid() == 0 {
		cfg.NginxUser = "root"
	}
	t.Cleanup(func() { killNginx(t, cfg.NginxPrefix) })
	stop := runAgent(t, cfg)

	// Registration and a first heartbeat with nginx running.
	first := waitFor(t, m, "heartbeat", func(msg *agentv1.AgentMessage) bool { return msg.GetHealth() != nil })
	h := first.GetHealth()
	if !h.GetNginx().GetIsRunning() || h.GetNginx().GetPid() == 0 || h.GetAgentInfo().GetVersion() != version {
		t.Errorf("first heartbeat = %v", h)
	}
	if !slices.Contains(h.GetAgentInfo().GetFeatures(), "stub_status") {
		t.Errorf("features = %v", h.GetAgentInfo().GetFeatures())
	}

	// A config update is applied and serves traffic.
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "e2e-backend") }))
	t.Cleanup(backend.Close)
	port := freePort(t)
	m.toAgent <- &agentv1.MasterMessage{Payload: &agentv1.MasterMessage_ConfigUpdate{ConfigUpdate: &agentv1.ConfigUpdate{
		ConfigId: "cfg-1", Version: 1, Checksum: "0123456789abcdef",
		AgentPolicy: &agentv1.AgentPolicy{AutoRestart: false},
		Upstreams:   []*agentv1.Upstream{{Id: "up", Servers: []*agentv1.UpstreamServer{{Address: strings.TrimPrefix(backend.URL, "http://")}}}},
		VirtualHosts: []*agentv1.VirtualHost{{Id: "vh", ServerName: "localhost", ListenPort: port, DefaultServer: true,
			Locations: []*agentv1.Location{{Path: "/", UpstreamId: "up"}}}},
	}}}
	var steps []agentv1.ConfigApplyStatus
	final := waitFor(t, m, "config status", func(msg *agentv1.AgentMessage) bool {
		st := msg.GetConfigStatus()
		if st == nil {
			return false
		}
		steps = append(steps, st.GetStatus())
		return st.GetStatus() >= agentv1.ConfigApplyStatus_SUCCESS
	}).GetConfigStatus()
	if final.GetStatus() != agentv1.ConfigApplyStatus_SUCCESS || final.GetVersion() != 1 || final.GetAppliedAt() == 0 {
		t.Fatalf("final status = %v (steps %v)", final, steps)
	}
	if !slices.Equal(steps, []agentv1.ConfigApplyStatus{agentv1.ConfigApplyStatus_VALIDATING, agentv1.ConfigApplyStatus_APPLYING, agentv1.ConfigApplyStatus_SUCCESS}) {
		t.Errorf("steps = %v", steps)
	}
	for range 3 {
		if body, err := httpGet(port); err != nil || body != "e2e-backend" {
			t.Fatalf("GET through nginx = %q, %v", body, err)
		}
	}
	h = waitFor(t, m, "heartbeat with traffic", func(msg *agentv1.AgentMessage) bool {
		return msg.GetHealth().GetNginx().GetTotalRequests() >= 3
	}).GetHealth()
	if h.GetConfigVersion() != 1 || h.GetConfigChecksum() != "0123456789abcdef" || len(h.GetAlerts()) != 0 {
		t.Errorf("heartbeat after apply = %v", h)
	}
	if h.GetSystem().GetMemoryTotalBytes() == 0 || h.GetSystem().GetDiskTotalBytes() == 0 {
		t.Errorf("system metrics = %v", h.GetSystem())
	}

	// Commands.
	send := func(id string, cmd *agentv1.Command) *agentv1.CommandResult {
		cmd.CommandId = id
		m.toAgent <- &agentv1.MasterMessage{Payload: &agentv1.MasterMessage_Command{Command: cmd}}
		return waitFor(t, m, "result of "+id, func(msg *agentv1.AgentMessage) bool {
			return msg.GetCommandResult().GetCommandId() == id
		}).GetCommandResult()
	}
	res := send("status", &agentv1.Command{Command: &agentv1.Command_GetStatus{GetStatus: &agentv1.GetStatusCommand{}}})
	var status struct {
		Health map[string]any `json:"health"`
		Nginx  struct {
			Running     bool `json:"running"`
			AutoRestart bool `json:"auto_restart"`
			Live        struct {
				Version int64 `json:"version"`
			} `json:"live"`
		} `json:"nginx"`
	}
	if err := json.Unmarshal([]byte(res.GetOutput()), &status); err != nil || !res.GetSuccess() || !status.Nginx.Running || status.Nginx.Live.Version != 1 || status.Health["nginx"] == nil {
		t.Errorf("get_status = %v (%v): %s", res.GetSuccess(), err, res.GetOutput())
	}
	if status.Nginx.AutoRestart {
		t.Error("auto-restart still on after the master's agent_policy turned it off")
	}
	res = send("validate", &agentv1.Command{Command: &agentv1.Command_ValidateConfig{ValidateConfig: &agentv1.ValidateConfigCommand{}}})
	if !res.GetSuccess() || !strings.Contains(res.GetOutput(), "test is successful") {
		t.Errorf("validate_config = %v", res)
	}
	res = send("reload", &agentv1.Command{Command: &agentv1.Command_Reload{Reload: &agentv1.ReloadCommand{Graceful: true}}})
	if !res.GetSuccess() {
		t.Errorf("reload = %v", res)
	}
	res = send("restart", &agentv1.Command{Command: &agentv1.Command_Restart{Restart: &agentv1.RestartCommand{}}})
	if !res.GetSuccess() {
		t.Errorf("restart = %v", res)
	}
	if body, err := httpGet(port); err != nil || body != "e2e-backend" {
		t.Errorf("GET after restart = %q, %v", body, err)
	}

	// The agent stops; nginx keeps serving.
	stop()
	if body, err := httpGet(port); err != nil || body != "e2e-backend" {
		t.Errorf("GET while the agent is down = %q, %v", body, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "identity", "agent.key")); err != nil {
		t.Errorf("identity not stored: %v", err)
	}

	// nginx dies too (a reboot); an agent whose master is unreachable
	// brings back the last good version.
	killNginx(t, cfg.NginxPrefix)
	if _, err := httpGet(port); err == nil {
		t.Fatal("nginx still serving after it was killed")
	}
	offline := *cfg
	offline.Master = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// Registered: neither the token nor a trust flag is needed any more.
	offline.Token, offline.CAFingerprint = "", ""
	stop = runAgent(t, &offline)
	defer stop()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		body, err := httpGet(port)
		if err == nil && body == "e2e-backend" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET with the master unreachable = %q, %v", body, err)
		}
		<-tick.C
	}
}

// killNginx kills the supervised nginx under prefix (its master and
// workers share the master's process group) and waits for the master to go.
func killNginx(t *testing.T, prefix string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(prefix, "run", "nginx.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("nginx %d still alive", pid)
			return
		}
		<-tick.C
	}
}
