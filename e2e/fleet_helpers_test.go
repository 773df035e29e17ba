package e2e

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
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/nxmesh/nxmesh/app/apptest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// The fleet tests run the real programs: the master (`nxmesh serve`) and the
// agent (`nxmesh-agent`) as subprocesses built from this checkout, the agent's
// supervised nginx (/usr/sbin/nginx), a PostgreSQL database from apptest, and
// plain gRPC clients built on the generated proto package where a test needs
// to act as an agent itself.

const (
	// fleetWait bounds every wait for the fleet to converge.
	fleetWait = 30 * time.Second
	// fleetPoll is the polling interval of fleetEventually.
	fleetPoll = 100 * time.Millisecond
	// fleetHost is the server_name of the test virtual hosts.
	fleetHost = "fleet.test"
)

// fleetBinaries builds the master and the agent once per test run.
type fleetBinaries struct {
	master string
	agent  string
}

func buildFleetBinaries(t *testing.T) fleetBinaries {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bins := fleetBinaries{master: filepath.Join(dir, "nxmesh"), agent: filepath.Join(dir, "nxmesh-agent")}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, target := range []struct{ out, pkg string }{{bins.master, "."}, {bins.agent, "./agent"}} {
		wg.Go(func() {
			cmd := exec.Command("go", "build", "-o", target.out, target.pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %w\n%s", target.pkg, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return bins
}

func fleetFreePort(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(apptest.FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// fleetEnv is the test process's environment without NXMESH_ variables, so
// that only what a test sets reaches the programs.
func fleetEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NXMESH_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// fleetEventually polls check until it reports true, failing the test after
// timeout with what and the last detail check returned.
func fleetEventually(t *testing.T, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s still waiting for %s; last: %s", timeout, what, detail)
		}
		time.Sleep(fleetPoll)
	}
}

// ---- Processes ----

// fleetProc is a program run as a subprocess, possibly several times in a
// row; each run appends its output to the same log file.
type fleetProc struct {
	name    string
	bin     string
	args    []string
	env     []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func newFleetProc(t *testing.T, name, bin, logDir string) *fleetProc {
	t.Helper()
	p := &fleetProc{name: name, bin: bin, logPath: filepath.Join(logDir, name+".log")}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// start runs the program with its current args and env.
func (p *fleetProc) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		t.Fatalf("%s is already running", p.name)
	}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logFile, "==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), p.name, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The program must not outlive a test binary that dies without cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	logFile.Close()
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

// exited reports whether the current run ended, and how.
func (p *fleetProc) exited() (bool, error) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true, nil
	}
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM and waits for the program to exit (SIGKILL after 30 s).
// It reports whether the program exited on its own with status 0.
func (p *fleetProc) stop(t *testing.T) bool {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	clean := true
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not exit within 30 s of SIGTERM; killing it", p.name)
		_ = cmd.Process.Kill()
		<-done
		clean = false
	}
	p.mu.Lock()
	err := p.err
	p.cmd, p.done, p.err = nil, nil, nil
	p.mu.Unlock()
	if err != nil {
		t.Logf("%s exited: %v", p.name, err)
		clean = false
	}
	return clean
}

// log returns the program's output so far.
func (p *fleetProc) log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// fleetKillNginx kills the supervised nginx under prefix (master and workers
// share the master's process group) and waits for its master to go.
func fleetKillNginx(t *testing.T, prefix string) {
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
	fleetEventually(t, 10*time.Second, fmt.Sprintf("nginx %d to exit", pid), func() (bool, string) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(stat), ") Z "), string(stat)
	})
}

// ---- Master ----

// fleetMaster is a master subprocess with its configuration, and a REST
// client signed in as its first administrator.
type fleetMaster struct {
	proc     *fleetProc
	httpAddr string
	grpcAddr string
	dataDir  string
	base     string
	api      *fleetAPI
}

func newFleetMaster(t *testing.T, bin, dbURL, dir string) *fleetMaster {
	t.Helper()
	m := &fleetMaster{
		httpAddr: apptest.FreeAddr(t),
		grpcAddr: apptest.FreeAddr(t),
		dataDir:  filepath.Join(dir, "master"),
		proc:     newFleetProc(t, "master", bin, dir),
	}
	m.base = "http://" + m.httpAddr
	m.proc.args = []string{"serve", "--config", filepath.Join(dir, "absent-config.yaml")}
	m.proc.env = fleetEnv(
		"NXMESH_DATABASE_URL="+dbURL,
		"NXMESH_DATA_DIR="+m.dataDir,
		"NXMESH_HTTP_ADDR="+m.httpAddr,
		"NXMESH_GRPC_ADDR="+m.grpcAddr,
		"NXMESH_HTTP_PUBLIC_URL="+m.base,
		"NXMESH_ADMIN_EMAIL="+adminEmail,
		"NXMESH_ADMIN_PASSWORD="+adminPassword,
		"NXMESH_GRPC_HEARTBEAT_INTERVAL=1s",
		// The tests poll the API far more often than a person would.
		"NXMESH_AUTH_RATE_LIMIT_PER_MINUTE=1000000",
		"NXMESH_HTTP_SHUTDOWN_TIMEOUT=10s",
	)
	m.api = &fleetAPI{base: m.base, http: &http.Client{Timeout: 15 * time.Second}}
	return m
}

// start runs the master and waits for GET /readyz to answer 200.
func (m *fleetMaster) start(t *testing.T) {
	t.Helper()
	m.proc.start(t)
	c := &http.Client{Timeout: 2 * time.Second}
	fleetEventually(t, 90*time.Second, "the master's /readyz", func() (bool, string) {
		if done, err := m.proc.exited(); done {
			t.Fatalf("the master exited during start-up: %v", err)
		}
		resp, err := c.Get(m.base + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, body)
	})
}

// stop ends the master with SIGTERM and checks it exited cleanly.
func (m *fleetMaster) stop(t *testing.T) {
	t.Helper()
	if !m.proc.stop(t) {
		t.Errorf("the master did not shut down cleanly on SIGTERM")
	}
}

// login signs the REST client in as the first administrator.
func (m *fleetMaster) login(t *testing.T) {
	t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	m.api.call(t, http.MethodPost, "/v1/auth/login", map[string]string{"email": adminEmail, "password": adminPassword}, http.StatusOK, &tok)
	if tok.AccessToken == "" {
		t.Fatal("login answered without an access token")
	}
	m.api.token = tok.AccessToken
}

// ---- REST ----

// fleetAPI is a JSON client of the master's REST API.
type fleetAPI struct {
	base  string
	token string
	http  *http.Client
}

// try sends a request and returns the status and body.
func (a *fleetAPI) try(method, path string, body any) (int, []byte, error) {
	c := apptest.NewHTTPClient(a.base).As(a.token)
	c.HTTP = a.http
	r, err := c.Try(context.Background(), method, path, body)
	return r.Status, r.Body, err
}

// call sends a request, fails unless the answer has status want, and decodes
// the body into out (when not nil).
func (a *fleetAPI) call(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	code, raw, err := a.try(method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if code != want {
		t.Fatalf("%s %s: status %d, want %d\n%s", method, path, code, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
}

// fleetAgent is what GET /v1/agents/{id} says of an agent.
type fleetAgent struct {
	ID             string            `json:"id"`
	State          string            `json:"state"`
	Labels         map[string]string `json:"labels"`
	DesiredVersion int64             `json:"desired_version"`
	AppliedVersion int64             `json:"applied_version"`
	ApplyStatus    string            `json:"apply_status"`
	LastError      string            `json:"last_error"`
	LastSeenAt     *time.Time        `json:"last_seen_at"`
}

func (a fleetAgent) String() string {
	seen := "never"
	if a.LastSeenAt != nil {
		seen = a.LastSeenAt.Format(time.RFC3339)
	}
	return fmt.Sprintf("state=%s labels=%v desired=%d applied=%d apply_status=%q last_seen=%s last_error=%q",
		a.State, a.Labels, a.DesiredVersion, a.AppliedVersion, a.ApplyStatus, seen, a.LastError)
}

func (a *fleetAPI) agent(t *testing.T, id string) fleetAgent {
	t.Helper()
	var ag fleetAgent
	a.call(t, http.MethodGet, "/v1/agents/"+id, nil, http.StatusOK, &ag)
	return ag
}

// awaitAgent polls the agent until ok accepts it.
func (a *fleetAPI) awaitAgent(t *testing.T, id, what string, ok func(fleetAgent) bool) fleetAgent {
	t.Helper()
	var last fleetAgent
	fleetEventually(t, fleetWait, what, func() (bool, string) {
		code, raw, err := a.try(http.MethodGet, "/v1/agents/"+id, nil)
		if err != nil || code != http.StatusOK {
			return false, fmt.Sprintf("GET agent: %d %v %s", code, err, raw)
		}
		last = fleetAgent{}
		if err := json.Unmarshal(raw, &last); err != nil {
			return false, err.Error()
		}
		return ok(last), last.String()
	})
	return last
}

// configVersion is the workspace's current configuration version.
func (a *fleetAPI) configVersion(t *testing.T, ws string) int64 {
	t.Helper()
	var list struct {
		Data []struct {
			Version int64 `json:"version"`
		} `json:"data"`
	}
	a.call(t, http.MethodGet, "/v1/workspaces/"+ws+"/config/versions?per_page=1", nil, http.StatusOK, &list)
	if len(list.Data) == 0 {
		return 0
	}
	return list.Data[0].Version
}

// awaitApplied waits until the agent reports the workspace's current
// configuration version applied successfully.
func (a *fleetAPI) awaitApplied(t *testing.T, ws, id string) fleetAgent {
	t.Helper()
	v := a.configVersion(t, ws)
	return a.awaitAgent(t, id, fmt.Sprintf("the agent to apply version %d", v), func(ag fleetAgent) bool {
		return ag.State == "online" && ag.ApplyStatus == "success" && ag.DesiredVersion >= v && ag.AppliedVersion == ag.DesiredVersion
	})
}

// fleetID is the id of a created object.
type fleetID struct {
	ID string `json:"id"`
}

// fleetToken is a registration token as created.
type fleetToken struct {
	Token          string `json:"token"`
	AgentID        string `json:"agent_id"`
	InstallCommand string `json:"install_command"`
}

var fleetFingerprint = regexp.MustCompile(`--ca-fingerprint (sha256:[0-9a-f]{64})`)

// fingerprint is the CA fingerprint in the token's install command.
func (tok fleetToken) fingerprint(t *testing.T) string {
	t.Helper()
	m := fleetFingerprint.FindStringSubmatch(tok.InstallCommand)
	if m == nil {
		t.Fatalf("no CA fingerprint in the install command %q", tok.InstallCommand)
	}
	return m[1]
}

func (a *fleetAPI) createToken(t *testing.T, ws, name string, labels map[string]string) fleetToken {
	t.Helper()
	var tok fleetToken
	a.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/agents/tokens",
		map[string]any{"name": name, "labels": labels, "expires_in_hours": 1}, http.StatusCreated, &tok)
	if tok.Token == "" || tok.AgentID == "" {
		t.Fatalf("token answer without token or agent id: %+v", tok)
	}
	return tok
}

// ---- Traffic through nginx ----

// fleetReply is an answer through nginx.
type fleetReply struct {
	status int
	body   string
	// echo is the X-Fleet request header the backend received.
	echo string
}

var fleetHTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// fleetGet requests path from the nginx virtual host on port.
func fleetGet(port int, path string) (fleetReply, error) {
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+path, nil)
	if err != nil {
		return fleetReply{}, err
	}
	req.Host = fleetHost
	resp, err := fleetHTTP.Do(req)
	if err != nil {
		return fleetReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return fleetReply{status: resp.StatusCode, body: string(b), echo: resp.Header.Get("X-Echo-Fleet")}, err
}

// fleetBackend is an HTTP server answering its name, and echoing the X-Fleet
// request header nginx sets as the X-Echo-Fleet response header.
func fleetBackend(t *testing.T, name string) (addr string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("X-Fleet"); v != "" {
			w.Header().Set("X-Echo-Fleet", v)
		}
		io.WriteString(w, name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// fleetLoad requests a path through nginx continuously and counts the
// answers, so that a phase can show nginx never stopped serving.
type fleetLoad struct {
	stop chan struct{}
	done chan struct{}
	ok   atomic.Int64
	mu   sync.Mutex
	errs []string
}

// startFleetLoad requests path on port every 20 ms; an answer counts as good
// when it is a 200 from one of the wanted bodies.
func startFleetLoad(port int, path string, bodies ...string) *fleetLoad {
	l := &fleetLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			r, err := fleetGet(port, path)
			switch {
			case err != nil:
				l.fail(err.Error())
			case r.status != http.StatusOK || !slices.Contains(bodies, r.body):
				l.fail(fmt.Sprintf("status %d body %q", r.status, r.body))
			default:
				l.ok.Add(1)
			}
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return l
}

func (l *fleetLoad) fail(msg string) {
	l.mu.Lock()
	l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+msg)
	l.mu.Unlock()
}

// finish stops the load and returns the good answers and the failures.
func (l *fleetLoad) finish() (int64, []string) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok.Load(), l.errs
}

// ---- Plain gRPC agent ----

// fleetCAPool reads the master's agent CA from its data directory and pins it:
// its SHA-256 must be the fingerprint the master printed with a token.
func fleetCAPool(t *testing.T, caPath, fingerprint string) *x509.CertPool {
	t.Helper()
	raw, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatalf("read the master's CA: %v", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s holds no PEM block", caPath)
	}
	sum := sha256.Sum256(block.Bytes)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != fingerprint {
		t.Fatalf("CA %s has fingerprint %s, the master announced %s", caPath, got, fingerprint)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// fleetStream is one AgentService Stream opened by the test itself.
type fleetStream struct {
	stream agentv1.AgentService_StreamClient
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	sendMu sync.Mutex
	in     chan *agentv1.MasterMessage
	done   chan struct{}
	err    error // set before done is closed
}

// openFleetStream dials the master over TLS (trusting pool, presenting cert
// when not nil) and opens a Stream. The caller closes it (close may be called
// more than once).
func openFleetStream(t *testing.T, addr string, pool *x509.CertPool, cert *tls.Certificate) *fleetStream {
	t.Helper()
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := agentv1.NewAgentServiceClient(cc).Stream(ctx)
	if err != nil {
		cancel()
		cc.Close()
		t.Fatalf("open stream: %v", err)
	}
	s := &fleetStream{stream: stream, conn: cc, cancel: cancel, in: make(chan *agentv1.MasterMessage, 64), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			m, err := stream.Recv()
			if err != nil {
				s.err = err
				return
			}
			select {
			case s.in <- m:
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			}
		}
	}()
	return s
}

func (s *fleetStream) close() {
	s.cancel()
	<-s.done
	s.conn.Close()
}

func (s *fleetStream) send(t *testing.T, m *agentv1.AgentMessage) {
	t.Helper()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	m.Timestamp = time.Now().Unix()
	if err := s.stream.Send(m); err != nil {
		t.Fatalf("send to the master: %v", err)
	}
}

// next returns the next message from the master.
func (s *fleetStream) next(t *testing.T) *agentv1.MasterMessage {
	t.Helper()
	select {
	case m := <-s.in:
		return m
	case <-s.done:
		t.Fatalf("the stream ended: %v", s.err)
	case <-time.After(fleetWait):
		t.Fatal("no message from the master")
	}
	return nil
}

// nextConfig returns the next ConfigUpdate, skipping other messages.
func (s *fleetStream) nextConfig(t *testing.T) *agentv1.ConfigUpdate {
	t.Helper()
	for {
		if u := s.next(t).GetConfigUpdate(); u != nil {
			return u
		}
	}
}

// ended waits for the master to end the stream and returns its status.
func (s *fleetStream) ended(t *testing.T) *status.Status {
	t.Helper()
	for {
		select {
		case <-s.in:
		case <-s.done:
			return status.Convert(s.err)
		case <-time.After(fleetWait):
			t.Fatal("the master did not end the stream")
			return nil
		}
	}
}

// handshake sends the registration request and returns the master's answer.
func (s *fleetStream) handshake(t *testing.T, req *agentv1.RegistrationRequest) *agentv1.RegistrationResponse {
	t.Helper()
	s.send(t, &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Registration{Registration: req}})
	resp := s.next(t).GetRegistrationResponse()
	if resp == nil {
		t.Fatal("the master's first answer is not a registration response")
	}
	return resp
}

// heartbeat sends an empty HealthReport every 500 ms until the stream ends,
// so the master keeps a stream that does nothing else.
func (s *fleetStream) heartbeat() {
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
			s.sendMu.Lock()
			err := s.stream.Send(&agentv1.AgentMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.AgentMessage_Health{Health: &agentv1.HealthReport{}}})
			s.sendMu.Unlock()
			if err != nil {
				return
			}
		}
	}()
}

// fleetRegistration is a first registration request with token and a CSR for
// key.
func fleetRegistration(t *testing.T, token, name string, key *ecdsa.PrivateKey) *agentv1.RegistrationRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return &agentv1.RegistrationRequest{
		Token: token, Hostname: name + ".e2e.internal", IpAddress: "127.0.0.1", Version: "e2e", Name: name,
		CsrPem:         string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		DeploymentMode: agentv1.DeploymentMode_STANDALONE,
	}
}

func fleetKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// fleetKeyPEM is key in PEM form, to pair with the certificate the master
// signed for it.
func fleetKeyPEM(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
