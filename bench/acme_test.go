package bench

// ACME benchmarks.
//
// BenchmarkACMEIssueToServe: the time from POST /certificates (HTTP-01) to
// nginx serving the issued certificate through the master, a real agent and
// its nginx, against Pebble with PEBBLE_VA_NOSLEEP=1; beside a floor
// measured in the same run: lego alone obtaining the same certificate from
// the same Pebble with lego's bare in-process HTTP-01 server, plus one
// measured nginx apply (nginx -t, reload, until the handshake shows the
// serial) of a bare nginx.
//
// BenchmarkACMERenewScan10k: the renewal scan over 10,000 certificates
// (rows inserted directly), with none due and with 1,000 due (each gets its
// renewal job), beside the bare SELECT of the due rows.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/http01"
	"github.com/go-acme/lego/v4/lego"
	legolog "github.com/go-acme/lego/v4/log"
	"github.com/go-acme/lego/v4/registration"
	"github.com/jackc/pgx/v5"

	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/auth"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/orgs"
	"github.com/nxmesh/nxmesh/modules/orgs/orgstest"
)

const benchNginx = "/usr/sbin/nginx"

// benchPebble is a running Pebble (and pebble-challtestsrv as its DNS: every
// name is 127.0.0.1) validating HTTP-01 on httpPort.
type benchPebble struct {
	dirURL, caFile string
	httpPort       int
}

func goBuild(b *testing.B, pkg, out string) {
	b.Helper()
	root, _ := filepath.Abs("..")
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, o)
	}
}

// startProc runs bin with env and args until the benchmark ends.
func startProc(b *testing.B, name, bin string, env []string, args ...string) {
	b.Helper()
	logf, err := os.Create(filepath.Join(b.TempDir(), name+".log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	b.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
	})
}

func waitListen(b *testing.B, addr string) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s never listened", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(b *testing.B) int {
	b.Helper()
	_, p, _ := net.SplitHostPort(apptest.FreeAddr(b))
	n, _ := strconv.Atoi(p)
	return n
}

func startBenchPebble(b *testing.B) *benchPebble {
	b.Helper()
	dir := b.TempDir()
	pebbleBin, challBin := filepath.Join(dir, "pebble"), filepath.Join(dir, "pebble-challtestsrv")
	goBuild(b, "github.com/letsencrypt/pebble/v2/cmd/pebble", pebbleBin)
	goBuild(b, "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv", challBin)
	root, _ := filepath.Abs("..")
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("locate pebble: %v", err)
	}
	pdir := strings.TrimSpace(string(out))
	dnsAddr, mgmt := apptest.FreeAddr(b), apptest.FreeAddr(b)
	startProc(b, "pebble-challtestsrv", challBin, nil, "-dnsserver", dnsAddr, "-management", mgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv6", "")
	waitListen(b, dnsAddr)
	p := &benchPebble{caFile: filepath.Join(pdir, "test/certs/pebble.minica.pem"), httpPort: freePort(b)}
	listen, pmgmt := apptest.FreeAddr(b), apptest.FreeAddr(b)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": pmgmt,
		"certificate": filepath.Join(pdir, "test/certs/localhost/cert.pem"), "privateKey": filepath.Join(pdir, "test/certs/localhost/key.pem"),
		"httpPort": p.httpPort, "tlsPort": 1, "externalAccountBindingRequired": false,
		"profiles": map[string]any{"default": map[string]any{"description": "default", "validityPeriod": 7776000}},
	}}
	raw, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	startProc(b, "pebble", pebbleBin, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, "-config", cfgFile, "-dnsserver", dnsAddr)
	waitListen(b, listen)
	p.dirURL = "https://" + listen + "/dir"
	return p
}

type benchUser struct {
	reg *registration.Resource
	key crypto.PrivateKey
}

func (u *benchUser) GetEmail() string                        { return "" }
func (u *benchUser) GetRegistration() *registration.Resource { return u.reg }
func (u *benchUser) GetPrivateKey() crypto.PrivateKey        { return u.key }

// legoFloor obtains a certificate for names with lego alone: a new account,
// lego's own HTTP-01 server on Pebble's port. It returns the time and the
// certificate.
func legoFloor(b *testing.B, p *benchPebble, names []string) (time.Duration, *certificate.Resource) {
	b.Helper()
	ca, err := os.ReadFile(p.caFile)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	legolog.Logger = log.New(io.Discard, "", 0) // its progress lines are not the figures
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u := &benchUser{key: key}
	start := time.Now()
	cfg := lego.NewConfig(u)
	cfg.CADirURL = p.dirURL
	cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	cfg.Certificate.KeyType = certcrypto.EC256
	client, err := lego.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if u.reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
		b.Fatal(err)
	}
	if err := client.Challenge.SetHTTP01Provider(http01.NewProviderServer("127.0.0.1", strconv.Itoa(p.httpPort))); err != nil {
		b.Fatal(err)
	}
	res, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: names, Bundle: true, Profile: "default"})
	if err != nil {
		b.Fatalf("lego alone: %v", err)
	}
	return time.Since(start), res
}

// servedSerial is the serial (hex) of the leaf nginx presents on port for name.
func servedSerial(port int, name string) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
		&tls.Config{ServerName: name, InsecureSkipVerify: true}) //nolint:gosec // the serial is compared, the chain is not the subject
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
}

func waitServed(b *testing.B, port int, name, serial string, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := servedSerial(port, name)
		if err == nil && got == serial {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("nginx on %d serves %q (%v), want %s", port, got, err, serial)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nginxApplyFloor runs a bare nginx, then measures one apply of a TLS server
// with res: nginx -t, reload, until the handshake shows its serial.
func nginxApplyFloor(b *testing.B, res *certificate.Resource, name string) time.Duration {
	b.Helper()
	prefix := b.TempDir()
	for _, d := range []string{"logs", "conf"} {
		_ = os.MkdirAll(filepath.Join(prefix, d), 0o755)
	}
	certFile, keyFile := filepath.Join(prefix, "conf", "tls.crt"), filepath.Join(prefix, "conf", "tls.key")
	_ = os.WriteFile(certFile, res.Certificate, 0o600)
	_ = os.WriteFile(keyFile, res.PrivateKey, 0o600)
	port, idle := freePort(b), freePort(b)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	conf := filepath.Join(prefix, "conf", "nginx.conf")
	write := func(server string) {
		c := user + "worker_processes 1;\npid " + filepath.Join(prefix, "nginx.pid") + ";\nerror_log " + filepath.Join(prefix, "logs", "error.log") +
			";\nevents {}\nhttp {\naccess_log off;\nserver { listen 127.0.0.1:" + strconv.Itoa(idle) + "; return 204; }\n" + server + "}\n"
		if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	run := func(args ...string) {
		out, err := exec.Command(benchNginx, append([]string{"-p", prefix, "-c", conf}, args...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("nginx %v: %v\n%s", args, err, out)
		}
	}
	write("")
	run()
	b.Cleanup(func() { _ = exec.Command(benchNginx, "-p", prefix, "-c", conf, "-s", "stop").Run() })
	waitListen(b, fmt.Sprintf("127.0.0.1:%d", idle))
	leaf, err := certcrypto.ParsePEMCertificate(res.Certificate)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	write("server { listen 127.0.0.1:" + strconv.Itoa(port) + " ssl; server_name " + name + "; ssl_certificate " + certFile +
		"; ssl_certificate_key " + keyFile + "; return 301 https://elsewhere.test; }\n")
	run("-t", "-q")
	run("-s", "reload")
	waitServed(b, port, name, leaf.SerialNumber.Text(16), 30*time.Second)
	return time.Since(start)
}

func BenchmarkACMEIssueToServe(b *testing.B) {
	if _, err := os.Stat(benchNginx); err != nil {
		b.Fatalf("nginx is required at %s: %v", benchNginx, err)
	}
	const domain = "shop.bench.test"
	names := []string{domain, "www." + domain}
	pebble := startBenchPebble(b)
	masterBin := buildMaster(b)
	agentBin := filepath.Join(b.TempDir(), "nxmesh-agent")
	goBuild(b, "./agent", agentBin)

	// The floor first: lego's HTTP-01 server needs Pebble's port, which
	// nginx takes afterwards.
	floorObtain, res := legoFloor(b, pebble, names)
	floorApply := nginxApplyFloor(b, res, domain)

	m := startMaster(b, masterBin, "NXMESH_ACME_LETSENCRYPT_URL="+pebble.dirURL, "NXMESH_ACME_CA_FILE="+pebble.caFile)
	r := newREST(b, m.httpURL)
	ws := r.defaultWorkspace(b)
	tokens, fp := r.createTokens(b, ws, 1, "acme")
	dir := b.TempDir()
	args := []string{"--master", m.grpcAddr, "--data-dir", filepath.Join(dir, "agent"), "--nginx-prefix", filepath.Join(dir, "nginx"),
		"--nginx-binary", benchNginx, "--name", "bench", "--ca-fingerprint", fp}
	if os.Geteuid() == 0 {
		args = append(args, "--nginx-user", "root")
	}
	startProc(b, "agent", agentBin, []string{"NXMESH_AGENT_TOKEN=" + tokens[0]}, args...)
	b.Cleanup(func() {
		_ = exec.Command(benchNginx, "-p", filepath.Join(dir, "nginx"), "-s", "stop").Run()
	})
	r.waitOnline(b, ws, 1, 60*time.Second)
	ctx := context.Background()
	if err := r.do(ctx, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "shop", "server_name": strings.Join(names, " "), "listen_port": pebble.httpPort,
		"redirect_to": "https://elsewhere.test", "target_agents": map[string]any{"type": "all"},
	}, nil, http.StatusCreated); err != nil {
		b.Fatal(err)
	}
	r.waitApplied(b, ws, r.configVersion(b, ws), 1, 60*time.Second)

	b.ResetTimer()
	start := time.Now()
	var created struct {
		ID string `json:"id"`
	}
	if err := r.do(ctx, http.MethodPost, "/v1/workspaces/"+ws+"/certificates", map[string]any{
		"domain": domain, "san": names[1:], "provider": "letsencrypt", "auto_renew": true, "profile": "default",
	}, &created, http.StatusAccepted); err != nil {
		b.Fatal(err)
	}
	var cert struct{ Status, Serial, Error string }
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := r.do(ctx, http.MethodGet, "/v1/certificates/"+created.ID, nil, &cert, http.StatusOK); err != nil {
			b.Fatal(err)
		}
		if cert.Status == "failed" {
			b.Fatalf("issuance failed: %s\n%s", cert.Error, m.logTail())
		}
		if cert.Status == "active" {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("not issued after 2 minutes:\n%s", m.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	toActive := time.Since(start)
	port := freePort(b)
	if err := r.do(ctx, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "shop-tls", "server_name": strings.Join(names, " "), "listen_port": port, "ssl_enabled": true, "ssl_certificate_id": created.ID,
		"redirect_to": "https://elsewhere.test", "target_agents": map[string]any{"type": "all"},
	}, nil, http.StatusCreated); err != nil {
		b.Fatal(err)
	}
	waitServed(b, port, domain, cert.Serial, 60*time.Second)
	total := time.Since(start)
	b.StopTimer()

	// Where the time to active went: the job's pickup, the order (the
	// attempt row), the rest (storing, polling the API).
	var pickup, order time.Duration
	conn, err := pgx.Connect(ctx, m.dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var pickupS, orderS float64
	if err := conn.QueryRow(ctx, `SELECT extract(epoch FROM j.attempted_at - j.created_at), extract(epoch FROM a.finished_at - a.started_at)
		FROM river_job j, certificate_attempts a WHERE j.kind = 'certs.issue' AND j.args->>'certificate_id' = $1 AND a.certificate_id = $1::uuid`,
		created.ID).Scan(&pickupS, &orderS); err != nil {
		b.Fatal(err)
	}
	pickup, order = time.Duration(pickupS*float64(time.Second)), time.Duration(orderS*float64(time.Second))
	floor := floorObtain + floorApply
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nACME HTTP-01, POST to nginx serving (Pebble, VA without sleep)\tms\n")
	fmt.Fprintf(w, "floor: lego alone obtaining (account, order, in-process HTTP-01)\t%.1f\n", ms(floorObtain))
	fmt.Fprintf(w, "floor: one nginx apply (nginx -t, reload, handshake)\t%.1f\n", ms(floorApply))
	fmt.Fprintf(w, "floor total\t%.1f\n", ms(floor))
	fmt.Fprintf(w, "NxMesh: POST to active (job, account, order, tokens through the agent)\t%.1f\n", ms(toActive))
	fmt.Fprintf(w, "  of which the job's pickup\t%.1f\n", ms(pickup))
	fmt.Fprintf(w, "  of which the ACME order (account, order, tokens through the agent)\t%.1f\n", ms(order))
	fmt.Fprintf(w, "NxMesh: active to nginx serving (virtual host, config push, apply)\t%.1f\n", ms(total-toActive))
	fmt.Fprintf(w, "NxMesh total\t%.1f\n", ms(total))
	fmt.Fprintf(w, "ratio NxMesh / floor\t%.2f\n", float64(total)/float64(floor))
	w.Flush()
	b.ReportMetric(ms(total), "ms/issue-to-serve")
	b.ReportMetric(float64(total)/float64(floor), "x-floor")
}

func BenchmarkACMERenewScan10k(b *testing.B) {
	const n, due = 10000, 1000
	ctx := context.Background()
	a := apptest.NewApp(b, nil)
	base := orgstest.New(b, a)
	authMod, orgsMod := base.Auth, base.Orgs
	certsMod, err := certs.New(a.Deps, certs.Options{})
	if err != nil {
		b.Fatal(err)
	}
	base.Mount(b, certsMod)
	user, err := authMod.Service().CreateUser(ctx, auth.CreateUserParams{Email: "bench@example.com", Password: "bench-password-1"})
	if err != nil {
		b.Fatal(err)
	}
	org, err := orgsMod.Service().CreateOrganization(ctx, orgs.CreateOrganizationParams{Name: "Bench", Slug: "bench", OwnerID: user.ID})
	if err != nil {
		b.Fatal(err)
	}
	wsp, err := orgsMod.Service().CreateWorkspace(ctx, orgs.CreateWorkspaceParams{OrgID: org.ID, Name: "Certs", Slug: "certs"})
	if err != nil {
		b.Fatal(err)
	}
	db := a.Deps.DB
	// 10,000 auto-renewing ACME certificates, 90-day, renewal a month away.
	if err := db.Exec(`INSERT INTO certificates (workspace_id, name, domain, san, provider, status, auto_renew, certificate_pem,
		private_key_sealed, issuer, serial, issued_at, expires_at, renew_at, challenge, key_type, issued_by)
		SELECT ?, 'c' || i, 'c' || i || '.bench.test', jsonb_build_array('c' || i || '.bench.test'), 'letsencrypt', 'active', true, 'x',
		'\x00'::bytea, 'Pebble', to_hex(i), now() - interval '30 days', now() + interval '60 days', now() + interval '30 days', 'http-01', 'ec256', 'letsencrypt'
		FROM generate_series(1, ?) AS i`, wsp.ID, n).Error; err != nil {
		b.Fatal(err)
	}
	svc := certsMod.Service()
	timeScan := func() (time.Duration, int) {
		start := time.Now()
		k, err := svc.RenewScan(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start), k
	}
	bare := func() time.Duration {
		start := time.Now()
		var ids []string
		if err := db.Raw(`SELECT id FROM certificates WHERE auto_renew AND provider <> 'upload' AND status IN ('active', 'expiring', 'expired')
			AND renew_at <= now() AND order_started_at IS NULL`).Scan(&ids).Error; err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	idle, k0 := timeScan()
	bareIdle := bare()
	if err := db.Exec(`UPDATE certificates SET renew_at = now() - interval '1 minute' WHERE id IN (SELECT id FROM certificates ORDER BY id LIMIT ?)`, due).Error; err != nil {
		b.Fatal(err)
	}
	bareDue := bare()
	busy, k1 := timeScan()
	b.StopTimer()
	if k0 != 0 || k1 != due {
		b.Fatalf("scans enqueued %d and %d renewals, want 0 and %d", k0, k1, due)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nrenewal scan over %d certificates\tms\tbare SELECT ms\tratio\n", n)
	fmt.Fprintf(w, "none due\t%.1f\t%.1f\t%.1f\n", ms(idle), ms(bareIdle), float64(idle)/float64(bareIdle))
	fmt.Fprintf(w, "%d due (one job each)\t%.1f\t%.1f\t%.1f\n", due, ms(busy), ms(bareDue), float64(busy)/float64(bareDue))
	w.Flush()
	b.ReportMetric(ms(idle), "ms/scan-idle")
	b.ReportMetric(ms(busy), "ms/scan-1000-due")
}
