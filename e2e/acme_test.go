package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// acmePebble is a real Pebble ACME server whose validation authority asks
// pebble-challtestsrv for DNS (every name is 127.0.0.1) and fetches HTTP-01
// tokens from httpPort.
type acmePebble struct {
	dirURL, caFile string
	httpPort       int
	// mgmt is Pebble's management interface (roots at /roots/0).
	mgmt string
}

// startPebble builds and runs Pebble and pebble-challtestsrv with the
// profiles named (validity in seconds); orders must name theirs when there
// are several (Pebble picks a random one for orders that name none).
func startPebble(t *testing.T, dir string, profiles map[string]int) *acmePebble {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bins := map[string]string{}
	for _, name := range []string{"pebble", "pebble-challtestsrv"} {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, "github.com/letsencrypt/pebble/v2/cmd/"+name)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, b)
		}
		bins[name] = out
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("locate pebble: %v", err)
	}
	pdir := strings.TrimSpace(string(out))

	dnsAddr, mgmt := apptest.FreeAddr(t), apptest.FreeAddr(t)
	chall := newFleetProc(t, "pebble-challtestsrv", bins["pebble-challtestsrv"], dir)
	chall.args = []string{"-dnsserver", dnsAddr, "-management", mgmt, "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv6", ""}
	chall.env = fleetEnv()
	chall.start(t)
	acmeWaitDial(t, dnsAddr)

	p := &acmePebble{caFile: filepath.Join(pdir, "test/certs/pebble.minica.pem"), httpPort: fleetFreePort(t)}
	listen, pmgmt := apptest.FreeAddr(t), apptest.FreeAddr(t)
	p.mgmt = "https://" + pmgmt
	profs := map[string]any{}
	for name, secs := range profiles {
		profs[name] = map[string]any{"description": name, "validityPeriod": secs}
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": pmgmt,
		"certificate": filepath.Join(pdir, "test/certs/localhost/cert.pem"), "privateKey": filepath.Join(pdir, "test/certs/localhost/key.pem"),
		"httpPort": p.httpPort, "tlsPort": 1, "externalAccountBindingRequired": false,
		"profiles": profs,
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	peb := newFleetProc(t, "pebble", bins["pebble"], dir)
	peb.args = []string{"-config", cfgFile, "-dnsserver", dnsAddr}
	peb.env = fleetEnv("PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	peb.start(t)
	acmeWaitDial(t, listen)
	p.dirURL = "https://" + listen + "/dir"
	return p
}

func acmeWaitDial(t *testing.T, addr string) {
	t.Helper()
	fleetEventually(t, fleetWait, addr+" to listen", func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}

// TestFleetACMEHTTP01 issues a certificate through HTTP-01 end to end: the
// master (as a real process) orders it from a real Pebble, sends the token
// to a real agent, whose supervised nginx answers Pebble's validation on the
// plain-HTTP virtual host; the certificate becomes active with the requested
// names and the token file is gone afterwards.
func TestFleetACMEHTTP01(t *testing.T) {
	if _, err := os.Stat(fleetNginx); err != nil {
		t.Fatalf("nginx is required at %s: %v", fleetNginx, err)
	}
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	// default (90 days) for the first certificate, short (90 seconds) for
	// the renewal: the scan renews it within a minute.
	pebble := startPebble(t, dir, map[string]int{"default": 7776000, "short": 90})
	dbURL := apptest.NewDatabase(t)
	f := &fleet{agentData: filepath.Join(dir, "agent"), nginxPrefix: filepath.Join(dir, "nginx")}
	f.m = newFleetMaster(t, bins.master, dbURL, dir)
	f.m.proc.env = append(f.m.proc.env, "NXMESH_ACME_LETSENCRYPT_URL="+pebble.dirURL, "NXMESH_ACME_CA_FILE="+pebble.caFile,
		"NXMESH_ACME_RENEW_CHECK_INTERVAL=2s")
	t.Cleanup(func() { fleetKillNginx(t, f.nginxPrefix) })
	f.agent = newFleetProc(t, "agent", bins.agent, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("master log (successful requests left out):\n%s", fleetTail(fleetWithoutOKRequests(f.m.proc.log()), 300))
			t.Logf("agent log:\n%s", fleetTail(f.agent.log(), 200))
			errLog, _ := os.ReadFile(filepath.Join(f.nginxPrefix, "logs", "error.log"))
			t.Logf("nginx error log:\n%s", fleetTail(string(errLog), 50))
		}
	})
	f.m.start(t)
	f.m.login(t)
	f.ws = f.m.workspace(t)

	tok := f.m.api.createToken(t, f.ws, "e2e", map[string]string{"env": "blue"})
	f.agentID = tok.AgentID
	f.agent.args = append(f.agentArgs(f.m.grpcAddr), "--ca-fingerprint", tok.fingerprint(t))
	f.agent.env = fleetEnv("NXMESH_AGENT_TOKEN=" + tok.Token)
	f.agent.start(t)
	f.m.api.awaitAgent(t, f.agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })

	// A plain-HTTP host on Pebble's HTTP-01 port, with a redirect for
	// every other path, to show that the challenge location comes first.
	const domain, san = "shop.acme.test", "www.shop.acme.test"
	f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/virtual-hosts", map[string]any{
		"name": "shop", "server_name": domain + " " + san, "listen_port": pebble.httpPort,
		"redirect_to": "https://elsewhere.test", "target_agents": map[string]any{"type": "all"},
	}, http.StatusCreated, nil)
	f.m.api.awaitApplied(t, f.ws, f.agentID)

	certsPath := "/v1/workspaces/" + f.ws + "/certificates"
	var issuedID string
	t.Run("RefusesANameNoPlainHostServes", func(t *testing.T) {
		code, raw, err := f.m.api.try(http.MethodPost, certsPath, map[string]any{"domain": "other.acme.test", "provider": "letsencrypt"})
		if err != nil || code != http.StatusUnprocessableEntity || !strings.Contains(string(raw), `"field":"domain"`) {
			t.Fatalf("request for an unserved name: %d %v %s, want 422 naming domain", code, err, raw)
		}
	})

	t.Run("IssuesThroughTheAgentsNginx", func(t *testing.T) {
		var created struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
		f.m.api.call(t, http.MethodPost, certsPath, map[string]any{
			"domain": domain, "san": []string{san}, "provider": "letsencrypt", "challenge": "http-01", "auto_renew": true, "profile": "default",
		}, http.StatusAccepted, &created)
		issuedID = created.ID
		type cert struct {
			Status string   `json:"status"`
			Domain string   `json:"domain"`
			SAN    []string `json:"san"`
			Issuer string   `json:"issuer"`
			Error  string   `json:"error"`
		}
		var got cert
		fleetEventually(t, 90*time.Second, "the certificate to be issued", func() (bool, string) {
			got = cert{}
			code, raw, err := f.m.api.try(http.MethodGet, "/v1/certificates/"+created.ID, nil)
			if err != nil || code != http.StatusOK {
				return false, fmt.Sprintf("%d %v %s", code, err, raw)
			}
			if err := json.Unmarshal(raw, &got); err != nil {
				return false, err.Error()
			}
			if got.Status == "failed" {
				t.Fatalf("issuance failed: %s", got.Error)
			}
			return got.Status == "active", string(raw)
		})
		names := slices.Clone(got.SAN)
		slices.Sort(names)
		if got.Domain != domain || !slices.Equal(names, []string{domain, san}) || !strings.Contains(got.Issuer, "Pebble") {
			t.Errorf("issued certificate = %+v, want %s and %s from Pebble", got, domain, san)
		}
		var attempts struct {
			Data []struct {
				Result    string `json:"result"`
				Challenge string `json:"challenge"`
			} `json:"data"`
		}
		f.m.api.call(t, http.MethodGet, "/v1/certificates/"+created.ID+"/attempts", nil, http.StatusOK, &attempts)
		if len(attempts.Data) != 1 || attempts.Data[0].Result != "success" || attempts.Data[0].Challenge != "http-01" {
			t.Errorf("attempts = %+v, want one http-01 success", attempts.Data)
		}
		// The agent logged serving both tokens, and removes them after.
		if n := strings.Count(f.agent.log(), "ACME challenge served"); n != 2 {
			t.Errorf("the agent served %d tokens, want 2 (one per name)", n)
		}
		challenges := filepath.Join(f.agentData, "acme-challenge")
		fleetEventually(t, 10*time.Second, "the token files to be removed", func() (bool, string) {
			entries, err := os.ReadDir(challenges)
			if err != nil {
				return false, err.Error()
			}
			var left []string
			for _, e := range entries {
				left = append(left, e.Name())
			}
			return len(left) == 0, strings.Join(left, ", ")
		})
		// The host's redirect still answers everything else.
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/page", pebble.httpPort), nil)
		req.Host = domain
		c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "https://elsewhere.test/page" {
			t.Errorf("GET /page on the host = %d %s, want its 301", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	roots := pebble.roots(t)

	t.Run("ServesTheIssuedCertificate", func(t *testing.T) {
		if issuedID == "" {
			t.Fatal("no certificate was issued")
		}
		var cert acmeCert
		f.m.api.call(t, http.MethodGet, "/v1/certificates/"+issuedID, nil, http.StatusOK, &cert)
		port := fleetFreePort(t)
		f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/virtual-hosts", map[string]any{
			"name": "shop-tls", "server_name": domain + " " + san, "listen_port": port, "ssl_enabled": true, "ssl_certificate_id": issuedID,
			"redirect_to": "https://elsewhere.test", "target_agents": map[string]any{"type": "all"},
		}, http.StatusCreated, nil)
		f.m.api.awaitApplied(t, f.ws, f.agentID)
		for _, name := range []string{domain, san} {
			leaf, err := tlsLeaf(port, name, roots)
			if err != nil {
				t.Fatalf("TLS handshake with %s: %v", name, err)
			}
			if got := leaf.SerialNumber.Text(16); got != cert.Serial {
				t.Errorf("nginx serves serial %s for %s, want the issued %s", got, name, cert.Serial)
			}
		}
	})

	t.Run("RenewedByTheScanWhileServing", func(t *testing.T) {
		evs := f.m.api.streamEvents(t, "certificate.*")
		var created acmeCert
		f.m.api.call(t, http.MethodPost, certsPath, map[string]any{
			"domain": domain, "provider": "letsencrypt", "auto_renew": true, "profile": "short", "name": "short-lived",
		}, http.StatusAccepted, &created)
		first := awaitACMECert(t, f.m.api, created.ID, "issuance", func(c acmeCert) bool { return c.Status != "pending" })
		if first.Status == "failed" {
			t.Fatalf("issuance failed: %s", first.Error)
		}
		port := fleetFreePort(t)
		f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/virtual-hosts", map[string]any{
			"name": "shop-short", "server_name": domain, "listen_port": port, "ssl_enabled": true, "ssl_certificate_id": created.ID,
			"redirect_to": "https://elsewhere.test", "target_agents": map[string]any{"type": "all"},
		}, http.StatusCreated, nil)
		f.m.api.awaitApplied(t, f.ws, f.agentID)
		version := f.m.api.configVersion(t, f.ws)
		leaf, err := tlsLeaf(port, domain, roots)
		if err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		served := leaf.SerialNumber.Text(16)

		// Requests over TLS all through the renewal and nginx's reload.
		stop := make(chan struct{})
		var requests, failures atomic.Int64
		var failMu sync.Mutex
		var failed []string
		loopDone := make(chan struct{})
		go func() {
			defer close(loopDone)
			for {
				select {
				case <-stop:
					return
				default:
				}
				requests.Add(1)
				if err := tlsRequest(port, domain, roots); err != nil {
					failures.Add(1)
					failMu.Lock()
					failed = append(failed, err.Error())
					failMu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		var renewed string
		fleetEventually(t, 120*time.Second, "nginx to serve the renewed certificate", func() (bool, string) {
			leaf, err := tlsLeaf(port, domain, roots)
			if err != nil {
				return false, err.Error()
			}
			renewed = leaf.SerialNumber.Text(16)
			return renewed != served, "serial " + renewed
		})
		time.Sleep(500 * time.Millisecond)
		close(stop)
		<-loopDone
		if n := failures.Load(); n > 0 || requests.Load() < 10 {
			failMu.Lock()
			t.Errorf("%d of %d TLS requests failed during the renewal: %v", n, requests.Load(), failed[:min(len(failed), 5)])
			failMu.Unlock()
		}
		got := awaitACMECert(t, f.m.api, created.ID, "the API to show the served serial", func(c acmeCert) bool { return c.Serial == renewed })
		if v := f.m.api.configVersion(t, f.ws); v <= version {
			t.Errorf("config version %d after the renewal, was %d: the renewal made no version", v, version)
		}
		if !got.ExpiresAt.After(*first.ExpiresAt) {
			t.Errorf("renewed certificate expires %s, the first %s", got.ExpiresAt, first.ExpiresAt)
		}
		var attempts struct {
			Data []struct {
				Kind   string `json:"kind"`
				Result string `json:"result"`
			} `json:"data"`
		}
		f.m.api.call(t, http.MethodGet, "/v1/certificates/"+created.ID+"/attempts", nil, http.StatusOK, &attempts)
		if len(attempts.Data) < 2 || attempts.Data[0].Kind != "renew" || attempts.Data[0].Result != "success" {
			t.Errorf("attempts = %+v, want a successful renewal first", attempts.Data)
		}
		for _, typ := range []string{"certificate.issued", "certificate.renewed"} {
			ev := evs.await(t, typ, created.ID)
			if ev.Data["domain"] != domain {
				t.Errorf("%s data = %v", typ, ev.Data)
			}
		}
	})
}

// acmeCert is a certificate as the API returns it.
type acmeCert struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	Serial    string     `json:"serial"`
	Error     string     `json:"error"`
	ExpiresAt *time.Time `json:"expires_at"`
}

func awaitACMECert(t *testing.T, api *fleetAPI, id, what string, done func(acmeCert) bool) acmeCert {
	t.Helper()
	var got acmeCert
	fleetEventually(t, 120*time.Second, what, func() (bool, string) {
		got = acmeCert{}
		code, raw, err := api.try(http.MethodGet, "/v1/certificates/"+id, nil)
		if err != nil || code != http.StatusOK {
			return false, fmt.Sprintf("%d %v %s", code, err, raw)
		}
		if err := json.Unmarshal(raw, &got); err != nil {
			return false, err.Error()
		}
		return done(got), string(raw)
	})
	return got
}

// roots returns Pebble's root certificates (its management interface, whose
// TLS certificate the test CA file signs).
func (p *acmePebble) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	ca, err := os.ReadFile(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	trust := x509.NewCertPool()
	trust.AppendCertsFromPEM(ca)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trust, MinVersion: tls.VersionTLS12}}}
	resp, err := c.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("Pebble roots: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if resp.StatusCode != http.StatusOK || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("Pebble roots: %d %s", resp.StatusCode, b)
	}
	return pool
}

// tlsLeaf connects to nginx on port with SNI name and returns the leaf it
// presents, after verifying the chain to roots and the name.
func tlsLeaf(port int, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// tlsRequest makes one verified HTTPS request on a new connection and wants
// the host's redirect.
func tlsRequest(port int, name string, roots *x509.CertPool) error {
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/", port), nil)
	req.Host = name
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// sseEvents collects the events of a /v1/events/stream subscription.
type sseEvents struct {
	mu  sync.Mutex
	evs []sseEvent
}

type sseEvent struct {
	Type string         `json:"type"`
	Data map[string]any `json:"data"`
}

// streamEvents subscribes to the live events matching pattern over SSE.
func (a *fleetAPI) streamEvents(t *testing.T, pattern string) *sseEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/v1/events/stream?events="+pattern, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		cancel()
		t.Fatalf("events stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		t.Fatalf("events stream: %d", resp.StatusCode)
	}
	s := &sseEvents{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data:")
			if !ok {
				continue
			}
			var ev sseEvent
			if json.Unmarshal([]byte(strings.TrimSpace(data)), &ev) == nil && ev.Type != "" {
				s.mu.Lock()
				s.evs = append(s.evs, ev)
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	return s
}

// await returns the first event of type typ about certificate id.
func (s *sseEvents) await(t *testing.T, typ, id string) sseEvent {
	t.Helper()
	var found sseEvent
	fleetEventually(t, 15*time.Second, typ+" for "+id, func() (bool, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, ev := range s.evs {
			if ev.Type == typ && ev.Data["certificate_id"] == id {
				found = ev
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(s.evs))
	})
	return found
}

// TestFleetACMETwoReplicas runs two master processes on one database with
// the agent connected to the first: whichever replica's worker takes a
// certificate's job, the tokens reach the agent (through the other replica
// when needed) and each certificate gets one order; renewals found due get
// one order each.
func TestFleetACMETwoReplicas(t *testing.T) {
	if _, err := os.Stat(fleetNginx); err != nil {
		t.Fatalf("nginx is required at %s: %v", fleetNginx, err)
	}
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	pebble := startPebble(t, dir, map[string]int{"default": 7776000})
	dbURL := apptest.NewDatabase(t)
	acmeEnv := []string{"NXMESH_ACME_LETSENCRYPT_URL=" + pebble.dirURL, "NXMESH_ACME_CA_FILE=" + pebble.caFile, "NXMESH_ACME_RENEW_CHECK_INTERVAL=2s"}
	f := &fleet{agentData: filepath.Join(dir, "agent"), nginxPrefix: filepath.Join(dir, "nginx")}
	f.m = newFleetMaster(t, bins.master, dbURL, dir)
	f.m.proc.env = append(f.m.proc.env, acmeEnv...)
	dirB := filepath.Join(dir, "b")
	if err := os.MkdirAll(dirB, 0o700); err != nil {
		t.Fatal(err)
	}
	second := newFleetMaster(t, bins.master, dbURL, dirB)
	// The same configuration as the first: its data directory holds the
	// keys replicas share (encryption, sessions, the agents' CA).
	second.proc.env = append(second.proc.env, append(acmeEnv, "NXMESH_DATA_DIR="+f.m.dataDir)...)
	t.Cleanup(func() { fleetKillNginx(t, f.nginxPrefix) })
	f.agent = newFleetProc(t, "agent", bins.agent, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("first master log:\n%s", fleetTail(fleetWithoutOKRequests(f.m.proc.log()), 200))
			t.Logf("second master log:\n%s", fleetTail(fleetWithoutOKRequests(second.proc.log()), 200))
			t.Logf("agent log:\n%s", fleetTail(f.agent.log(), 100))
		}
	})
	f.m.start(t)
	f.m.login(t)
	second.start(t)
	second.api.token = f.m.api.token
	f.ws = f.m.workspace(t)
	tok := f.m.api.createToken(t, f.ws, "e2e", map[string]string{"env": "blue"})
	f.agentID = tok.AgentID
	f.agent.args = append(f.agentArgs(f.m.grpcAddr), "--ca-fingerprint", tok.fingerprint(t))
	f.agent.env = fleetEnv("NXMESH_AGENT_TOKEN=" + tok.Token)
	f.agent.start(t)
	f.m.api.awaitAgent(t, f.agentID, "the agent online", func(a fleetAgent) bool { return a.State == "online" })
	f.m.api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/virtual-hosts", map[string]any{
		"name": "multi", "server_name": "*.multi.acme.test", "listen_port": pebble.httpPort,
		"redirect_to": "https://elsewhere.test", "target_agents": map[string]any{"type": "all"},
	}, http.StatusCreated, nil)
	f.m.api.awaitApplied(t, f.ws, f.agentID)

	const n = 6
	var ids []string
	for i := range n {
		api := f.m.api
		if i%2 == 1 {
			api = second.api
		}
		var c acmeCert
		api.call(t, http.MethodPost, "/v1/workspaces/"+f.ws+"/certificates", map[string]any{
			"domain": fmt.Sprintf("r%d.multi.acme.test", i), "provider": "letsencrypt", "auto_renew": true,
		}, http.StatusAccepted, &c)
		ids = append(ids, c.ID)
	}
	attempts := func(id string) []struct{ Kind, Result string } {
		var out struct {
			Data []struct{ Kind, Result string } `json:"data"`
		}
		f.m.api.call(t, http.MethodGet, "/v1/certificates/"+id+"/attempts", nil, http.StatusOK, &out)
		return out.Data
	}
	for _, id := range ids {
		got := awaitACMECert(t, f.m.api, id, "issuance", func(c acmeCert) bool { return c.Status != "pending" })
		if got.Status != "active" {
			t.Fatalf("certificate %s: %+v, want active", id, got)
		}
	}
	issuedBy := func(m *fleetMaster, kind string) int {
		return strings.Count(m.proc.log(), "certificate "+kind+" succeeded")
	}
	t.Logf("issuances: %d by the first replica, %d by the second", issuedBy(f.m, "issue"), issuedBy(second, "issue"))
	if a, b := issuedBy(f.m, "issue"), issuedBy(second, "issue"); a+b != n {
		t.Errorf("%d + %d issuances logged by the replicas, want %d", a, b, n)
	}

	// Make them all due; the scan (on whichever replica leads) renews each once.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "UPDATE certificates SET renew_at = now() - interval '1 minute'"); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		fleetEventually(t, 90*time.Second, "the renewal of "+id, func() (bool, string) {
			at := attempts(id)
			return len(at) >= 2, fmt.Sprintf("%+v", at)
		})
	}
	time.Sleep(5 * time.Second) // two more scans: nothing else may run
	for _, id := range ids {
		at := attempts(id)
		if len(at) != 2 || at[0].Kind != "renew" || at[0].Result != "success" || at[1].Kind != "issue" || at[1].Result != "success" {
			t.Errorf("certificate %s attempts = %+v, want one issue and one renewal, both successful", id, at)
		}
	}
	var accounts int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM acme_accounts").Scan(&accounts); err != nil || accounts != 1 {
		t.Errorf("%d ACME accounts (%v), want 1 for the organization", accounts, err)
	}
	t.Logf("renewals: %d by the first replica, %d by the second", issuedBy(f.m, "renew"), issuedBy(second, "renew"))
}
