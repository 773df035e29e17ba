package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"

	"github.com/nxmesh/nxmesh/app/apptest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// fleetNginx is the nginx the agent supervises.
const fleetNginx = "/usr/sbin/nginx"

// fleet is the state the phases of TestFleet share: one master, one agent
// with its nginx, two backends, and what the phases created.
type fleet struct {
	m           *fleetMaster
	agent       *fleetProc
	agentData   string
	nginxPrefix string
	ws          string
	backendA    string
	backendB    string

	token    fleetToken // the agent's registration token (used)
	agentID  string
	upstream string // both backends
	web      string // the virtual host on webPort
	webPort  int
}

// agentArgs are the agent's flags for a master at addr.
func (f *fleet) agentArgs(addr string) []string {
	args := []string{
		"--master", addr, "--data-dir", f.agentData, "--nginx-prefix", f.nginxPrefix,
		"--nginx-binary", fleetNginx, "--labels", "env=blue", "--name", "e2e",
	}
	if os.Geteuid() == 0 {
		// Started by root, nginx's workers would otherwise run as nobody,
		// who cannot read files under the test's root-only temporary
		// directory.
		args = append(args, "--nginx-user", "root")
	}
	return args
}

// webLocations are the locations of the "web" virtual host; header, when
// set, is the X-Fleet header nginx adds to proxied requests.
func (f *fleet) webLocations(header string) []map[string]any {
	root := map[string]any{"path": "/", "upstream_id": f.upstream}
	if header == "" {
		return []map[string]any{root}
	}
	root["custom_headers"] = []map[string]any{{"name": "X-Fleet", "value": header}}
	return []map[string]any{root, {"path": "/only-a/", "proxy_pass": "http://" + f.backendA}}
}

// serves checks that the web virtual host answers from both backends (and,
// with header set, passes it on).
func (f *fleet) serves(t *testing.T, header string) {
	t.Helper()
	seen := map[string]int{}
	for i := 0; i < 20 && (seen["backend-a"] == 0 || seen["backend-b"] == 0); i++ {
		r, err := fleetGet(f.webPort, "/")
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("GET / through nginx: %+v %v", r, err)
		}
		if r.echo != header {
			t.Fatalf("backend %q received X-Fleet %q, want %q", r.body, r.echo, header)
		}
		seen[r.body]++
	}
	if seen["backend-a"] == 0 || seen["backend-b"] == 0 || len(seen) != 2 {
		t.Fatalf("answers through nginx came from %v, want both backend-a and backend-b", seen)
	}
}

// awaitServing waits until the web virtual host answers from a backend.
func (f *fleet) awaitServing(t *testing.T, what string) {
	t.Helper()
	fleetEventually(t, fleetWait, what, func() (bool, string) {
		r, err := fleetGet(f.webPort, "/")
		if err != nil {
			return false, err.Error()
		}
		return r.status == http.StatusOK && strings.HasPrefix(r.body, "backend-"), fmt.Sprintf("%d %q", r.status, r.body)
	})
}

// awaitRefused waits until nothing listens on the web virtual host's port.
func (f *fleet) awaitRefused(t *testing.T, what string) {
	t.Helper()
	fleetEventually(t, fleetWait, what, func() (bool, string) {
		r, err := fleetGet(f.webPort, "/")
		if err == nil {
			return false, fmt.Sprintf("answered %d %q", r.status, r.body)
		}
		return true, ""
	})
}

// setWebHeader changes the web virtual host's header, waits until the agent
// reports it applied and nginx passes it on, and checks that every answer
// from then on carries it.
func (f *fleet) setWebHeader(t *testing.T, header string) {
	t.Helper()
	f.m.api.call(t, http.MethodPatch, "/v1/virtual-hosts/"+f.web, map[string]any{"locations": f.webLocations(header)}, http.StatusOK, nil)
	f.m.api.awaitApplied(t, f.ws, f.agentID)
	// The agent reports success once nginx started its new workers; the old
	// ones may accept a last connection before they close their listening
	// sockets, hence a short wait before every answer must be new.
	fleetEventually(t, 5*time.Second, "nginx to pass on X-Fleet "+header, func() (bool, string) {
		r, err := fleetGet(f.webPort, "/")
		return err == nil && r.echo == header, fmt.Sprintf("%+v %v", r, err)
	})
	f.serves(t, header)
}

// TestFleet runs the master and an agent as real processes with the agent's
// nginx and PostgreSQL, and walks a fleet through its life: registration,
// configuration, relabelling, a failing apply, a test's own gRPC agent,
// refused registrations, a master restart, an agent restart without the
// master, and deletion.
func TestFleet(t *testing.T) {
	if _, err := os.Stat(fleetNginx); err != nil {
		t.Fatalf("nginx is required at %s: %v", fleetNginx, err)
	}
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	dbURL := apptest.NewDatabase(t)
	f := &fleet{agentData: filepath.Join(dir, "agent"), nginxPrefix: filepath.Join(dir, "nginx")}
	f.m = newFleetMaster(t, bins.master, dbURL, dir)
	// Registered before the agent's cleanup, so it runs after the agent
	// stopped and cannot restart nginx.
	t.Cleanup(func() { fleetKillNginx(t, f.nginxPrefix) })
	f.agent = newFleetProc(t, "agent", bins.agent, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master log (successful requests left out):\n%s", fleetTail(fleetWithoutOKRequests(f.m.proc.log()), 300))
			t.Logf("agent log:\n%s", fleetTail(f.agent.log(), 300))
			errLog, err := os.ReadFile(filepath.Join(f.nginxPrefix, "logs", "error.log"))
			if err != nil {
				errLog = []byte(err.Error())
			}
			t.Logf("nginx error log:\n%s", fleetTail(string(errLog), 100))
		}
	})

	f.m.start(t)
	f.m.login(t)
	f.ws = f.m.workspace(t)
	f.backendA = fleetBackend(t, "backend-a")
	f.backendB = fleetBackend(t, "backend-b")

	step := func(name string, fn func(t *testing.T)) {
		if !t.Run(name, fn) {
			t.FailNow()
		}
	}

	step("Registration", func(t *testing.T) {
		f.token = f.m.api.createToken(t, f.ws, "e2e", map[string]string{"env": "blue"})
		f.agentID = f.token.AgentID
		if ag := f.m.api.agent(t, f.agentID); ag.State != "pending" {
			t.Fatalf("agent before registration: %v, want pending", ag)
		}
		f.agent.args = append(f.agentArgs(f.m.grpcAddr), "--ca-fingerprint", f.token.fingerprint(t))
		// In the environment, as an operator would pass it (out of ps's sight).
		f.agent.env = fleetEnv("NXMESH_AGENT_TOKEN=" + f.token.Token)
		f.agent.start(t)
		ag := f.m.api.awaitAgent(t, f.agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })
		if ag.Labels["env"] != "blue" {
			t.Errorf("labels = %v, want the token's env=blue", ag.Labels)
		}
		// The master counts the agent online once it has answered the
		// registration; the agent stores its identity when the answer
		// arrives, a moment later.
		fleetEventually(t, 10*time.Second, "the agent's identity files", func() (bool, string) {
			for _, name := range []string{"agent.key", "agent.crt", "ca.crt"} {
				if _, err := os.Stat(filepath.Join(f.agentData, "identity", name)); err != nil {
					return false, err.Error()
				}
			}
			return true, ""
		})
	})

	step("ServesBothBackends", func(t *testing.T) {
		var up fleetID
		f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/upstreams", map[string]any{
			"name": "both", "servers": []map[string]any{{"address": f.backendA}, {"address": f.backendB}},
		}, http.StatusCreated, &up)
		f.upstream = up.ID
		f.webPort = fleetFreePort(t)
		var vh fleetID
		f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/virtual-hosts", map[string]any{
			"name": "web", "server_name": fleetHost, "listen_port": f.webPort, "locations": f.webLocations(""),
			"target_agents": map[string]any{"type": "selector", "label_selector": "env=blue"},
		}, http.StatusCreated, &vh)
		f.web = vh.ID
		f.m.api.awaitApplied(t, f.ws, f.agentID)
		f.serves(t, "")
	})

	step("UpdateIsApplied", func(t *testing.T) {
		f.setWebHeader(t, "v2")
		for range 3 {
			r, err := fleetGet(f.webPort, "/only-a/page")
			if err != nil || r.status != http.StatusOK || r.body != "backend-a" {
				t.Fatalf("GET /only-a/page = %+v, %v; want backend-a", r, err)
			}
		}
	})

	step("RelabelRetargets", func(t *testing.T) {
		f.m.api.call(t, http.MethodPatch, "/v1/agents/"+f.agentID, map[string]any{"labels": map[string]string{"env": "green"}}, http.StatusOK, nil)
		f.awaitRefused(t, "the web port to stop answering once the agent is env=green")
		f.m.api.awaitAgent(t, f.agentID, "the configuration without the web host applied", func(a fleetAgent) bool {
			return a.Labels["env"] == "green" && a.ApplyStatus == "success" && a.AppliedVersion == a.DesiredVersion
		})
		f.m.api.call(t, http.MethodPatch, "/v1/agents/"+f.agentID, map[string]any{"labels": map[string]string{"env": "blue"}}, http.StatusOK, nil)
		f.awaitServing(t, "the web port to answer again once the agent is env=blue")
		f.m.api.awaitApplied(t, f.ws, f.agentID)
		f.serves(t, "v2")
	})

	step("FailedApplyKeepsServing", func(t *testing.T) {
		// Another program holds the port: nginx cannot bind it on reload.
		held, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		heldPort := held.Addr().(*net.TCPAddr).Port

		load := startFleetLoad(f.webPort, "/", "backend-a", "backend-b")
		var bad fleetID
		f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/virtual-hosts", map[string]any{
			"name": "blocked", "server_name": fleetHost, "listen_port": heldPort,
			"locations":     []map[string]any{{"path": "/", "upstream_id": f.upstream}},
			"target_agents": map[string]any{"type": "agents", "agent_ids": []string{f.agentID}},
		}, http.StatusCreated, &bad)
		v := f.m.api.configVersion(t, f.ws)
		ag := f.m.api.awaitAgent(t, f.agentID, "the agent to report the failed apply", func(a fleetAgent) bool {
			return a.DesiredVersion >= v && (a.ApplyStatus == "failed" || a.ApplyStatus == "rolled_back")
		})
		if ag.AppliedVersion >= ag.DesiredVersion {
			t.Errorf("applied version %d after a failed apply of %d", ag.AppliedVersion, ag.DesiredVersion)
		}
		wantErr := fmt.Sprintf(":%d failed (98: Address already in use)", heldPort)
		if !strings.Contains(ag.LastError, "bind() to ") || !strings.Contains(ag.LastError, wantErr) {
			t.Errorf("last_error = %q, want nginx's bind() error containing %q", ag.LastError, wantErr)
		}

		// The admin's agent page shows nginx's error too.
		c := newClient(t, f.m.base)
		c.signIn()
		p := c.get("/agents/" + f.agentID)
		expectStatus(t, p, http.StatusOK)
		mustContain(t, "agent page", p.body, `id="apply-error"`, "bind() to ", wantErr)

		f.serves(t, "v2")
		f.m.api.call(t, http.MethodDelete, "/v1/virtual-hosts/"+bad.ID, nil, http.StatusNoContent, nil)
		ag = f.m.api.awaitApplied(t, f.ws, f.agentID)
		if ag.LastError != "" {
			t.Errorf("last_error after a successful apply = %q, want none", ag.LastError)
		}
		f.serves(t, "v2")
		ok, failures := load.finish()
		if ok == 0 || len(failures) > 0 {
			t.Errorf("during the failed apply nginx answered %d requests and failed %d: %v", ok, len(failures), failures)
		}
	})

	// plain is the test's own agent, registered in PlainAgentGetsItsConfig
	// and deleted in Refusals.
	var plain struct {
		id     string
		stream *fleetStream
		cert   tls.Certificate
	}
	t.Cleanup(func() {
		if plain.stream != nil {
			plain.stream.close()
		}
	})
	caPath := filepath.Join(f.m.dataDir, "agents-ca", "ca.crt")

	step("PlainAgentGetsItsConfig", func(t *testing.T) {
		tok := f.m.api.createToken(t, f.ws, "plain", map[string]string{"role": "plain"})
		pool := fleetCAPool(t, caPath, tok.fingerprint(t))
		key := fleetKey(t)
		// Open past this phase (Refusals deletes the agent and watches the
		// stream end); the top-level test closes it.
		s := openFleetStream(t, f.m.grpcAddr, pool, nil)
		plain.stream = s
		resp := s.handshake(t, fleetRegistration(t, tok.Token, "plain", key))
		if !resp.GetSuccess() || resp.GetAgentId() != tok.AgentID || resp.GetClientCertificatePem() == "" || resp.GetCaCertificatePem() == "" {
			t.Fatalf("registration answer = %v", resp)
		}
		cert, err := tls.X509KeyPair([]byte(resp.GetClientCertificatePem()), fleetKeyPEM(t, key))
		if err != nil {
			t.Fatalf("client certificate: %v", err)
		}
		plain.id, plain.cert = tok.AgentID, cert
		s.heartbeat()

		// Nothing targets it yet: env=blue does not select it.
		first := s.nextConfig(t)
		if len(first.GetVirtualHosts()) != 0 || len(first.GetUpstreams()) != 0 {
			t.Fatalf("first configuration of an untargeted agent = %v", first)
		}

		var up, vh fleetID
		f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/upstreams", map[string]any{
			"name": "plain-up", "servers": []map[string]any{{"address": f.backendB}},
		}, http.StatusCreated, &up)
		f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/virtual-hosts", map[string]any{
			"name": "plain-web", "server_name": "plain.test", "listen_port": fleetFreePort(t),
			"locations":     []map[string]any{{"path": "/", "upstream_id": up.ID}},
			"target_agents": map[string]any{"type": "agents", "agent_ids": []string{plain.id}},
		}, http.StatusCreated, &vh)
		v := f.m.api.configVersion(t, f.ws)
		u := s.nextConfig(t)
		for len(u.GetVirtualHosts()) == 0 {
			u = s.nextConfig(t)
		}
		if u.GetVersion() != v {
			t.Errorf("configuration version %d, want the workspace's %d", u.GetVersion(), v)
		}
		if vhs := u.GetVirtualHosts(); len(vhs) != 1 || vhs[0].GetId() != vh.ID || vhs[0].GetServerName() != "plain.test" ||
			len(vhs[0].GetLocations()) != 1 || vhs[0].GetLocations()[0].GetUpstreamId() != up.ID {
			t.Errorf("virtual hosts = %v, want exactly plain-web (%s) using %s", vhs, vh.ID, up.ID)
		}
		if ups := u.GetUpstreams(); len(ups) != 1 || ups[0].GetId() != up.ID ||
			len(ups[0].GetServers()) != 1 || ups[0].GetServers()[0].GetAddress() != f.backendB {
			t.Errorf("upstreams = %v, want exactly plain-up (%s)", ups, up.ID)
		}
		if u.GetChecksum() == "" || u.GetChecksum() == first.GetChecksum() {
			t.Errorf("checksum %q unchanged from the first configuration's", u.GetChecksum())
		}
	})

	step("SeedOnlyClientRegistersWithoutCSR", func(t *testing.T) {
		// A client written only from the contract: no csr_pem, no name.
		tok := f.m.api.createToken(t, f.ws, "seed-only", nil)
		pool := fleetCAPool(t, caPath, tok.fingerprint(t))
		seedHello := func(token string) *agentv1.RegistrationRequest {
			return &agentv1.RegistrationRequest{
				Token: token, Hostname: "seed-only.e2e.internal", IpAddress: "192.0.2.10", Version: "e2e",
				Capabilities: []string{"http2"}, DeploymentMode: agentv1.DeploymentMode_STANDALONE,
			}
		}
		s := openFleetStream(t, f.m.grpcAddr, pool, nil)
		resp := s.handshake(t, seedHello(tok.Token))
		if !resp.GetSuccess() || resp.GetAgentId() != tok.AgentID || resp.GetClientCertificatePem() == "" ||
			resp.GetClientPrivateKeyPem() == "" || resp.GetCaCertificatePem() == "" {
			s.close()
			t.Fatalf("registration answer = %v", resp)
		}
		s.nextConfig(t)
		s.close()
		cert, err := tls.X509KeyPair([]byte(resp.GetClientCertificatePem()), []byte(resp.GetClientPrivateKeyPem()))
		if err != nil {
			t.Fatalf("returned certificate and key: %v", err)
		}
		s2 := openFleetStream(t, f.m.grpcAddr, pool, &cert)
		t.Cleanup(s2.close)
		if resp := s2.handshake(t, seedHello("")); !resp.GetSuccess() || resp.GetAgentId() != tok.AgentID {
			t.Fatalf("mutual-TLS reconnect answered %v", resp)
		}
		s2.nextConfig(t)
		s3 := openFleetStream(t, f.m.grpcAddr, pool, nil)
		t.Cleanup(s3.close)
		if resp := s3.handshake(t, seedHello(tok.Token)); resp.GetSuccess() || resp.GetErrorMessage() != "token already used" {
			t.Errorf("reused token answered %v", resp)
		}
		f.m.api.call(t, http.MethodDelete, "/v1/agents/"+tok.AgentID, nil, http.StatusNoContent, nil)
	})

	step("Refusals", func(t *testing.T) {
		pool := fleetCAPool(t, caPath, f.token.fingerprint(t))
		refused := func(t *testing.T, s *fleetStream, req *agentv1.RegistrationRequest, reason string, code codes.Code) {
			t.Helper()
			resp := s.handshake(t, req)
			if resp.GetSuccess() || resp.GetErrorMessage() != reason {
				t.Errorf("registration answer = %v, want a refusal %q", resp, reason)
			}
			if st := s.ended(t); st.Code() != code {
				t.Errorf("stream ended with %v, want %v", st, code)
			}
		}

		t.Run("ReusedToken", func(t *testing.T) {
			s := openFleetStream(t, f.m.grpcAddr, pool, nil)
			t.Cleanup(s.close)
			refused(t, s, fleetRegistration(t, f.token.Token, "reuse", fleetKey(t)), "token already used", codes.Unauthenticated)
		})

		t.Run("ExpiredToken", func(t *testing.T) {
			tok := f.m.api.createToken(t, f.ws, "expired", nil)
			// The API only issues tokens valid for an hour or more; moving
			// the expiry into the past in the database is the way to test an
			// expired one without waiting an hour.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			tag, err := conn.Exec(ctx, "UPDATE agent_tokens SET expires_at = now() - interval '1 minute' WHERE agent_id = $1", tok.AgentID)
			if err != nil || tag.RowsAffected() != 1 {
				t.Fatalf("expire the token: %v (%d rows)", err, tag.RowsAffected())
			}
			s := openFleetStream(t, f.m.grpcAddr, pool, nil)
			t.Cleanup(s.close)
			refused(t, s, fleetRegistration(t, tok.Token, "expired", fleetKey(t)), "token expired", codes.Unauthenticated)
			if ag := f.m.api.agent(t, tok.AgentID); ag.State != "pending" {
				t.Errorf("agent after a refused registration: %v, want pending", ag)
			}
		})

		t.Run("DeletedAgent", func(t *testing.T) {
			f.m.api.call(t, http.MethodDelete, "/v1/agents/"+plain.id, nil, http.StatusNoContent, nil)
			if st := plain.stream.ended(t); st.Code() != codes.PermissionDenied {
				t.Errorf("the deleted agent's stream ended with %v, want %v", st, codes.PermissionDenied)
			}
			s := openFleetStream(t, f.m.grpcAddr, pool, &plain.cert)
			t.Cleanup(s.close)
			refused(t, s, &agentv1.RegistrationRequest{Hostname: "plain.e2e.internal", Version: "e2e"}, "unknown agent", codes.Unauthenticated)
			f.m.api.call(t, http.MethodGet, "/v1/agents/"+plain.id, nil, http.StatusNotFound, nil)
		})
	})

	step("MasterRestart", func(t *testing.T) {
		load := startFleetLoad(f.webPort, "/", "backend-a", "backend-b")
		stopped := time.Now()
		f.m.stop(t)
		before := load.ok.Load()
		fleetEventually(t, fleetWait, "requests through nginx while the master is down", func() (bool, string) {
			n := load.ok.Load()
			return n >= before+25, fmt.Sprintf("%d answers", n-before)
		})
		f.m.start(t)
		f.m.api.awaitAgent(t, f.agentID, "the agent back online after the master restarted", func(a fleetAgent) bool {
			return a.State == "online" && a.LastSeenAt != nil && a.LastSeenAt.After(stopped.Truncate(time.Second))
		})
		ok, failures := load.finish()
		if len(failures) > 0 {
			t.Errorf("nginx failed %d requests (answered %d) across the master restart: %v", len(failures), ok, failures)
		}
		f.setWebHeader(t, "v3")
	})

	step("AgentRestartWithoutMaster", func(t *testing.T) {
		if !f.agent.stop(t) {
			t.Error("the agent did not shut down cleanly on SIGTERM")
		}
		f.serves(t, "v3") // nginx outlives its agent
		fleetKillNginx(t, f.nginxPrefix)
		f.awaitRefused(t, "nginx to be gone")
		f.m.stop(t)
		stopped := time.Now()

		// Registered: neither the token nor the CA flag is needed any more.
		f.agent.args = f.agentArgs(f.m.grpcAddr)
		f.agent.env = fleetEnv()
		f.agent.start(t)
		f.awaitServing(t, "the agent to bring nginx back without the master")
		f.serves(t, "v3")
		if r, err := fleetGet(f.webPort, "/only-a/x"); err != nil || r.body != "backend-a" {
			t.Errorf("GET /only-a/x = %+v, %v", r, err)
		}
		if done, err := f.agent.exited(); done {
			t.Fatalf("the agent exited without its master: %v", err)
		}

		f.m.start(t)
		f.m.api.awaitAgent(t, f.agentID, "the agent to reconnect", func(a fleetAgent) bool {
			return a.State == "online" && a.LastSeenAt != nil && a.LastSeenAt.After(stopped.Truncate(time.Second))
		})
		f.m.api.awaitApplied(t, f.ws, f.agentID)
		f.serves(t, "v3")
	})

	step("DeletedAgentIsDropped", func(t *testing.T) {
		f.m.api.call(t, http.MethodDelete, "/v1/agents/"+f.agentID, nil, http.StatusNoContent, nil)
		fleetEventually(t, fleetWait, "the agent's stream to end and its reconnection to be refused", func() (bool, string) {
			return strings.Contains(f.agent.log(), "master refused the connection: unknown agent"), "not in the agent's log yet"
		})
		f.agent.stop(t)
		f.m.api.call(t, http.MethodGet, "/v1/agents/"+f.agentID, nil, http.StatusNotFound, nil)

		// The agent's stored identity, presented by a plain client.
		idDir := filepath.Join(f.agentData, "identity")
		cert, err := tls.LoadX509KeyPair(filepath.Join(idDir, "agent.crt"), filepath.Join(idDir, "agent.key"))
		if err != nil {
			t.Fatalf("stored identity: %v", err)
		}
		pool := fleetCAPool(t, filepath.Join(idDir, "ca.crt"), f.token.fingerprint(t))
		s := openFleetStream(t, f.m.grpcAddr, pool, &cert)
		t.Cleanup(s.close)
		resp := s.handshake(t, &agentv1.RegistrationRequest{Hostname: "e2e", Version: "e2e"})
		if resp.GetSuccess() || resp.GetErrorMessage() != "unknown agent" {
			t.Errorf("connection with the deleted agent's certificate answered %v, want a refusal", resp)
		}
		if st := s.ended(t); st.Code() != codes.Unauthenticated {
			t.Errorf("stream ended with %v, want %v", st, codes.Unauthenticated)
		}
	})
}

// workspace returns the first workspace of the administrator's first
// organization (the default ones the master creates with its first user).
func (m *fleetMaster) workspace(t *testing.T) string {
	t.Helper()
	var list struct {
		Data []fleetID `json:"data"`
	}
	m.api.call(t, http.MethodGet, "/v1/organizations?per_page=1", nil, http.StatusOK, &list)
	if len(list.Data) == 0 {
		t.Fatal("the administrator has no organization")
	}
	org := list.Data[0].ID
	list.Data = nil
	m.api.call(t, http.MethodGet, "/v1/organizations/"+org+"/workspaces?per_page=1", nil, http.StatusOK, &list)
	if len(list.Data) == 0 {
		t.Fatal("the default organization has no workspace")
	}
	return list.Data[0].ID
}

// fleetTail returns the last n lines of s.
func fleetTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// fleetWithoutOKRequests drops the master's access log lines of successful
// requests (the tests poll a lot), keeping everything else.
func fleetWithoutOKRequests(log string) string {
	var keep []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `msg="http request"`) && (strings.Contains(line, " status=2") || strings.Contains(line, " status=3")) {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}
