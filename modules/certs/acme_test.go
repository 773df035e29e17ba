package certs_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/certs"
)

// acmeLab is a real Pebble ACME server, with pebble-challtestsrv as the DNS
// server it queries (every name resolves to 127.0.0.1), and a fake fleet: an
// in-process HTTP server on Pebble's HTTP-01 port standing in for the agents'
// nginx (the path through a real agent and its nginx is e2e.TestFleetACMEHTTP01).
type acmeLab struct {
	dirURL, caFile string
	// dnsAddr is pebble-challtestsrv's DNS server, challMgmt its management
	// API (set-txt, clear-txt), pebbleMgmt Pebble's (roots, intermediates).
	dnsAddr, challMgmt, pebbleMgmt string
	mu                             sync.Mutex
	tokens                         map[string]string
	presented                      int
}

func goTool(t *testing.T, pkg, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func startProcess(t *testing.T, bin string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if os.Getenv("NXMESH_TEST_LOG") != "" {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

func waitDial(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never listened", addr)
}

func newACMELab(t *testing.T) *acmeLab {
	t.Helper()
	// One profile: Pebble picks a random profile for orders that name none.
	return newACMELabWith(t, map[string]int{"default": 7776000})
}

// newACMELabWith is newACMELab with Pebble's profiles: name → validity in
// seconds. With more than one, requests must name theirs.
func newACMELabWith(t *testing.T, profiles map[string]int) *acmeLab {
	t.Helper()
	pebble := goTool(t, "github.com/letsencrypt/pebble/v2/cmd/pebble", "pebble")
	chall := goTool(t, "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv", "pebble-challtestsrv")
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
	if err != nil {
		t.Fatalf("locate pebble: %v", err)
	}
	pdir := strings.TrimSpace(string(out))
	dnsAddr, mgmt := apptest.FreeAddr(t), apptest.FreeAddr(t)
	startProcess(t, chall, nil, "-dnsserver", dnsAddr, "-management", mgmt, "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv6", "")
	httpAddr := apptest.FreeAddr(t)
	_, httpPort, _ := net.SplitHostPort(httpAddr)
	listen, pmgmt := apptest.FreeAddr(t), apptest.FreeAddr(t)
	port, _ := strconv.Atoi(httpPort)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": pmgmt,
		"certificate": filepath.Join(pdir, "test/certs/localhost/cert.pem"), "privateKey": filepath.Join(pdir, "test/certs/localhost/key.pem"),
		"httpPort": port, "tlsPort": 1, "externalAccountBindingRequired": false,
		"profiles": pebbleProfiles(profiles),
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	lab := &acmeLab{dirURL: "https://" + listen + "/dir", caFile: filepath.Join(pdir, "test/certs/pebble.minica.pem"), tokens: map[string]string{},
		dnsAddr: dnsAddr, challMgmt: "http://" + mgmt, pebbleMgmt: pmgmt}
	// The fake fleet.
	l, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lab.mu.Lock()
		ka, ok := lab.tokens[strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")]
		lab.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(ka))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	waitDial(t, dnsAddr)
	waitDial(t, mgmt)
	startProcess(t, pebble, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, "-config", cfgFile, "-dnsserver", dnsAddr)
	waitDial(t, listen)
	return lab
}

func pebbleProfiles(p map[string]int) map[string]any {
	out := map[string]any{}
	for name, secs := range p {
		out[name] = map[string]any{"description": name, "validityPeriod": secs}
	}
	return out
}

// presentedCount is how many HTTP-01 tokens the fake fleet was given.
func (l *acmeLab) presentedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.presented
}

// present is the fake fleet's PresentFunc.
func (l *acmeLab) present(_ context.Context, _ uuid.UUID, _, token, keyAuth string) (func(context.Context) error, error) {
	l.mu.Lock()
	l.tokens[token] = keyAuth
	l.presented++
	l.mu.Unlock()
	return func(context.Context) error {
		l.mu.Lock()
		delete(l.tokens, token)
		l.mu.Unlock()
		return nil
	}, nil
}

func startWorkers(t *testing.T, b *bundle) {
	t.Helper()
	w := river.NewWorkers()
	b.mod.Jobs(w)
	c, err := river.NewClient(riverpgxv5.New(b.app.Deps.Pool), &river.Config{Queues: map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 4}}, Workers: w})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
}

func TestAPI_ACMEHTTP01(t *testing.T) {
	lab := newACMELab(t)
	b := setupWith(t, func(c *app.Config) {
		c.ACME.LetsEncryptURL = lab.dirURL
		c.ACME.CAFile = lab.caFile
	}, func(o *certs.Options) {
		o.PresentFunc = lab.present
		o.ServedFunc = func(context.Context, uuid.UUID, string) (bool, error) { return true, nil }
	})
	startWorkers(t, b)

	t.Run("IssuesAndDelivers", func(t *testing.T) {
		status, resp := b.as(t, "operator", http.MethodPost, "/v1/workspaces/"+b.ws.String()+"/certificates",
			map[string]any{"domain": "api.example.com", "provider": "letsencrypt", "auto_renew": true})
		var c certJSON
		mustDecode(t, resp, &c)
		if status != http.StatusAccepted || c.Status != "pending" {
			t.Fatalf("request: %d %s", status, resp)
		}
		id := uuid.MustParse(c.ID)
		deadline := time.Now().Add(60 * time.Second)
		var got certs.Certificate
		for time.Now().Before(deadline) {
			var err error
			if got, err = b.svc.Get(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			if got.Status != "pending" {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got.Status != "active" || got.ExpiresAt == nil || !strings.Contains(got.Issuer, "Pebble") {
			var jobs []map[string]any
			b.app.Deps.DB.Raw("SELECT kind, state, attempt, errors::text FROM river_job").Scan(&jobs)
			t.Fatalf("certificate after issuance: %+v\njobs: %v\nlogs:\n%s", got, jobs, b.logs.String())
		}
		m, err := b.svc.Material(context.Background(), nil, []uuid.UUID{id})
		if err != nil || m[id.String()] == nil || !strings.Contains(m[id.String()].PrivateKeyPem, "PRIVATE KEY") {
			t.Fatalf("material: %v %v", m, err)
		}
		if ch := b.hooks.changesOf(b.ws); len(ch) == 0 || !strings.Contains(ch[len(ch)-1].summary, "issued") {
			t.Errorf("ChangeFunc not called for the issued certificate: %+v", ch)
		}
		_, resp = b.as(t, "viewer", http.MethodGet, "/v1/certificates/"+id.String()+"/attempts", nil)
		var at struct{ Data []certs.Attempt }
		mustDecode(t, resp, &at)
		if len(at.Data) != 1 || at.Data[0].Result != "success" || at.Data[0].Kind != "issue" || at.Data[0].Issuer != "letsencrypt" {
			t.Errorf("attempts: %s", resp)
		}
	})
}
