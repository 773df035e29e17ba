package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/app/apptest"
)

// acmePebble is a real Pebble ACME server whose validation authority asks
// pebble-challtestsrv for DNS (every name is 127.0.0.1) and fetches HTTP-01
// tokens from httpPort.
type acmePebble struct {
	dirURL, caFile string
	httpPort       int
}

// startPebble builds and runs Pebble and pebble-challtestsrv.
func startPebble(t *testing.T, dir string) *acmePebble {
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
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": pmgmt,
		"certificate": filepath.Join(pdir, "test/certs/localhost/cert.pem"), "privateKey": filepath.Join(pdir, "test/certs/localhost/key.pem"),
		"httpPort": p.httpPort, "tlsPort": 1, "externalAccountBindingRequired": false,
		// One profile: Pebble picks a random profile for orders that name none.
		"profiles": map[string]any{"default": map[string]any{"description": "default", "validityPeriod": 7776000}},
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
	pebble := startPebble(t, dir)
	dbURL := apptest.NewDatabase(t)
	f := &fleet{agentData: filepath.Join(dir, "agent"), nginxPrefix: filepath.Join(dir, "nginx")}
	f.m = newFleetMaster(t, bins.master, dbURL, dir)
	f.m.proc.env = append(f.m.proc.env, "NXMESH_ACME_LETSENCRYPT_URL="+pebble.dirURL, "NXMESH_ACME_CA_FILE="+pebble.caFile)
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
			"domain": domain, "san": []string{san}, "provider": "letsencrypt", "challenge": "http-01", "auto_renew": true,
		}, http.StatusAccepted, &created)
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
}
