package bench

// The parts of the fleet benchmarks: the master as a child process, its REST
// API and live events, a fleet of real agent clients with a no-op applier, the
// bare gRPC fan-out that serves as the floor, and /proc sampling.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"

	"github.com/nxmesh/nxmesh/agent/controlplane"
	"github.com/nxmesh/nxmesh/agent/controlplane/cptest"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

const (
	fleetAdminEmail    = "bench@example.com"
	fleetAdminPassword = "bench-password-1"
	// connectConcurrency bounds agents registering at the same time, and
	// parallel REST calls when creating their tokens.
	connectConcurrency = 32
	// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
	// (100 on every Linux architecture Go supports).
	clockTicks = 100
)

// ---- The master as a child process ----

// masterProc is `nxmesh serve` running as a child process on a fresh
// database, so that its RSS and CPU time can be read from /proc.
type masterProc struct {
	pid      int
	httpURL  string
	grpcAddr string
	dbURL    string
	logPath  string

	exited   chan struct{}
	stopOnce sync.Once
}

// buildMaster builds the master binary from the repository root into a
// temporary directory.
func buildMaster(b *testing.B) string {
	b.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		b.Fatalf("repository root not found from %s: %v", root, err)
	}
	bin := filepath.Join(b.TempDir(), "nxmesh")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startMaster runs bin serve on a fresh database with loopback listeners,
// warn-level logs and the first administrator fleetAdminEmail, and waits for
// /readyz. The per-credential rate limit is raised: creating thousands of
// registration tokens from one session is the bench's setup, not its subject.
// The master is stopped when the benchmark ends (or earlier with stop);
// extra are more environment variables (NAME=value).
func startMaster(b *testing.B, bin string, extra ...string) *masterProc {
	b.Helper()
	m := &masterProc{
		dbURL:    apptest.NewDatabase(b),
		grpcAddr: apptest.FreeAddr(b),
		exited:   make(chan struct{}),
	}
	httpAddr := apptest.FreeAddr(b)
	m.httpURL = "http://" + httpAddr
	dir := b.TempDir()
	m.logPath = filepath.Join(dir, "master.log")
	logFile, err := os.Create(m.logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()

	env := make([]string, 0, 64)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NXMESH_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"NXMESH_DATABASE_URL="+m.dbURL,
		"NXMESH_DATA_DIR="+filepath.Join(dir, "data"),
		"NXMESH_HTTP_ADDR="+httpAddr,
		"NXMESH_HTTP_PUBLIC_URL="+m.httpURL,
		"NXMESH_GRPC_ADDR="+m.grpcAddr,
		"NXMESH_ADMIN_EMAIL="+fleetAdminEmail,
		"NXMESH_ADMIN_PASSWORD="+fleetAdminPassword,
		"NXMESH_LOG_LEVEL=warn",
		"NXMESH_AUTH_RATE_LIMIT_PER_MINUTE=10000000",
	)
	env = append(env, extra...)
	cmd := exec.Command(bin, "serve")
	// No config.yaml in dir: defaults and the environment only.
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, and killed with the bench process should that
	// die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start master: %v", err)
	}
	m.pid = cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		close(m.exited)
	}()
	b.Cleanup(m.stop)

	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(m.httpURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		select {
		case <-m.exited:
			b.Fatalf("the master exited before it was ready:\n%s", m.logTail())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("the master is not ready after 2 minutes:\n%s", m.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop terminates the master (SIGTERM, then SIGKILL to its process group
// after 30 s) and waits for it.
func (m *masterProc) stop() {
	m.stopOnce.Do(func() {
		_ = syscall.Kill(m.pid, syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-m.pid, syscall.SIGKILL)
			<-m.exited
		}
	})
}

// logTail returns the end of the master's log.
func (m *masterProc) logTail() string {
	b, _ := os.ReadFile(m.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// ---- REST ----

// rest calls the master's API as one signed-in user.
type rest struct {
	base  string
	token string
	hc    *http.Client
}

func newREST(b *testing.B, base string) *rest {
	b.Helper()
	r := &rest{
		base:  base,
		token: login(b, base, fleetAdminEmail, fleetAdminPassword),
		hc:    &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: connectConcurrency * 2}, Timeout: 30 * time.Second},
	}
	b.Cleanup(r.hc.CloseIdleConnections)
	return r
}

// do sends a JSON request and decodes the answer into out (may be nil); any
// status other than want is an error.
func (r *rest) do(ctx context.Context, method, path string, body, out any, want int) error {
	c := apptest.NewHTTPClient(r.base).As(r.token)
	c.HTTP = r.hc
	resp, err := c.Try(ctx, method, path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.Status != want {
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.Status, resp.Body)
	}
	if out != nil {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// idList is the part of a list answer the bench reads.
type idList struct {
	Data []struct {
		ID string `json:"id"`
	} `json:"data"`
	Meta struct {
		Total int `json:"total"`
	} `json:"meta"`
}

// defaultWorkspace returns the first workspace of the administrator's first
// organization (the default ones created with the first administrator).
func (r *rest) defaultWorkspace(b *testing.B) string {
	b.Helper()
	ctx := context.Background()
	var orgs, wss idList
	if err := r.do(ctx, http.MethodGet, "/v1/organizations?per_page=1", nil, &orgs, http.StatusOK); err != nil || len(orgs.Data) == 0 {
		b.Fatalf("organizations: %v (%d)", err, len(orgs.Data))
	}
	if err := r.do(ctx, http.MethodGet, "/v1/organizations/"+orgs.Data[0].ID+"/workspaces?per_page=1", nil, &wss, http.StatusOK); err != nil || len(wss.Data) == 0 {
		b.Fatalf("workspaces: %v (%d)", err, len(wss.Data))
	}
	return wss.Data[0].ID
}

// configVersion returns the workspace's current configuration version.
func (r *rest) configVersion(b *testing.B, ws string) int64 {
	b.Helper()
	var out struct {
		Data []struct {
			Version int64 `json:"version"`
		} `json:"data"`
	}
	if err := r.do(context.Background(), http.MethodGet, "/v1/workspaces/"+ws+"/config/versions?per_page=1", nil, &out, http.StatusOK); err != nil {
		b.Fatal(err)
	}
	if len(out.Data) == 0 {
		return 0
	}
	return out.Data[0].Version
}

// onlineAgents counts the workspace's agents in state online.
func (r *rest) onlineAgents(ctx context.Context, ws string) (int, error) {
	var out idList
	err := r.do(ctx, http.MethodGet, "/v1/workspaces/"+ws+"/agents?state=online&per_page=1", nil, &out, http.StatusOK)
	return out.Meta.Total, err
}

// waitOnline waits until want agents of the workspace are online.
func (r *rest) waitOnline(b *testing.B, ws string, want int, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := r.onlineAgents(context.Background(), ws)
		if err != nil {
			b.Fatal(err)
		}
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d agents online after %s", n, want, timeout)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// appliedAtLeast counts the workspace's agents whose applied_version is at
// least v.
func (r *rest) appliedAtLeast(ctx context.Context, ws string, v int64) (int, error) {
	n := 0
	for page := 1; ; page++ {
		var out struct {
			Data []struct {
				AppliedVersion int64 `json:"applied_version"`
			} `json:"data"`
		}
		if err := r.do(ctx, http.MethodGet, fmt.Sprintf("/v1/workspaces/%s/agents?per_page=100&page=%d", ws, page), nil, &out, http.StatusOK); err != nil {
			return 0, err
		}
		for _, a := range out.Data {
			if a.AppliedVersion >= v {
				n++
			}
		}
		if len(out.Data) < 100 {
			return n, nil
		}
	}
}

// waitApplied waits until want agents of the workspace applied version v.
func (r *rest) waitApplied(b *testing.B, ws string, v int64, want int, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := r.appliedAtLeast(context.Background(), ws, v)
		if err != nil {
			b.Fatal(err)
		}
		if n >= want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d agents applied version %d after %s", n, want, v, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

var fingerprintRE = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

// createTokens creates n agents labelled env=bench with their registration
// tokens, connectConcurrency at a time, and returns the tokens and the CA
// fingerprint from the install command.
func (r *rest) createTokens(b *testing.B, ws string, n int, prefix string) ([]string, string) {
	b.Helper()
	tokens := make([]string, n)
	fps := make([]string, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, connectConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var out struct {
				Token          string `json:"token"`
				InstallCommand string `json:"install_command"`
			}
			body := map[string]any{"name": fmt.Sprintf("%s-%05d", prefix, i), "labels": map[string]string{"env": "bench"}}
			if err := r.do(context.Background(), http.MethodPost, "/v1/workspaces/"+ws+"/agents/tokens", body, &out, http.StatusCreated); err != nil {
				errs <- err
				return
			}
			tokens[i], fps[i] = out.Token, fingerprintRE.FindString(out.InstallCommand)
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("create registration tokens: %v", err)
	}
	if fps[0] == "" {
		b.Fatal("no CA fingerprint in the install command")
	}
	return tokens, fps[0]
}

// ---- Rounds ----

// rounds records, for one configuration version at a time, which parties (by
// key) reported it and when the last of them did. Reports of other versions
// and repeated reports are ignored.
type rounds struct {
	mu      sync.Mutex
	version int64
	want    int
	seen    map[string]struct{}
	last    time.Time
	done    chan struct{}
	err     error
}

func newRounds() *rounds { return &rounds{done: make(chan struct{})} }

// arm starts a round for version, complete when want parties reported it.
func (r *rounds) arm(version int64, want int) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.version, r.want, r.seen, r.last = version, want, make(map[string]struct{}, want), time.Time{}
	r.done = make(chan struct{})
	return r.done
}

// mark records that key reported version at at.
func (r *rounds) mark(version int64, key string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if version != r.version || r.seen == nil || len(r.seen) >= r.want {
		return
	}
	if _, ok := r.seen[key]; ok {
		return
	}
	r.seen[key] = struct{}{}
	if at.After(r.last) {
		r.last = at
	}
	if len(r.seen) == r.want {
		close(r.done)
	}
}

// fail records a failure that no round will recover from.
func (r *rounds) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

// clearErr forgets a failure once its cause is gone.
func (r *rounds) clearErr() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = nil
}

// wait waits for the round armed as done, and returns when its last report
// came.
func (r *rounds) wait(done <-chan struct{}, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.last, nil
		case <-tick.C:
			r.mu.Lock()
			err := r.err
			r.mu.Unlock()
			if err != nil {
				return time.Time{}, err
			}
		case <-t.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			return time.Time{}, fmt.Errorf("version %d: %d of %d after %s", r.version, len(r.seen), r.want, timeout)
		}
	}
}

// ---- Live events ----

// errDropped: the master closed the events WebSocket with 1013, its verdict
// that this subscriber fell more than its buffer of events behind.
var errDropped = errors.New("the master closed the events WebSocket with 1013 (subscriber too slow)")

// appliedFeed is a subscription to config.applied events on the master's
// /v1/events WebSocket. Every successful event is marked in applied (keyed by
// agent id) as it arrives; a failed apply, a broken connection (errDropped
// for 1013) or a shutdown fails applied.
type appliedFeed struct {
	url     string
	ws      string
	applied *rounds

	mu      sync.Mutex
	conn    *websocket.Conn
	done    chan struct{}
	closing atomic.Bool
}

// eventMessage is the part of an events message the bench reads.
type eventMessage struct {
	Type string `json:"type"`
	Data struct {
		AgentID string `json:"agent_id"`
		Version int64  `json:"version"`
		Success bool   `json:"success"`
	} `json:"data"`
}

// subscribeApplied connects an appliedFeed for workspace ws; it closes when
// the benchmark ends.
func subscribeApplied(b *testing.B, base, token, ws string, applied *rounds) *appliedFeed {
	b.Helper()
	f := &appliedFeed{
		url: "ws" + strings.TrimPrefix(base, "http") + "/v1/events?token=" + url.QueryEscape(token),
		ws:  ws, applied: applied,
	}
	if err := f.connect(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.close)
	return f
}

// connect opens the WebSocket, subscribes with the API's subscribe message
// and starts reading.
func (f *appliedFeed) connect() error {
	conn, _, err := websocket.DefaultDialer.Dial(f.url, nil)
	if err != nil {
		return fmt.Errorf("events WebSocket: %w", err)
	}
	read := func() (eventMessage, error) {
		var m eventMessage
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		err := conn.ReadJSON(&m)
		return m, err
	}
	fail := func(err error) error {
		conn.Close()
		return fmt.Errorf("events WebSocket: %w", err)
	}
	if m, err := read(); err != nil || m.Type != "subscribed" {
		return fail(fmt.Errorf("first message %q (%v), want subscribed", m.Type, err))
	}
	sub := map[string]any{"action": "subscribe", "events": []string{"config.applied"}, "filter": map[string]string{"workspace_id": f.ws}}
	if err := conn.WriteJSON(sub); err != nil {
		return fail(err)
	}
	for {
		m, err := read()
		if err != nil {
			return fail(err)
		}
		if m.Type == "error" {
			return fail(errors.New("subscribe refused"))
		}
		if m.Type == "subscribed" {
			break
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	f.mu.Lock()
	f.conn, f.done = conn, done
	f.mu.Unlock()
	go f.read(conn, done)
	return nil
}

func (f *appliedFeed) read(conn *websocket.Conn, done chan struct{}) {
	defer close(done)
	for {
		var m eventMessage
		if err := conn.ReadJSON(&m); err != nil {
			switch {
			case f.closing.Load():
			case websocket.IsCloseError(err, websocket.CloseTryAgainLater):
				f.applied.fail(errDropped)
			default:
				f.applied.fail(fmt.Errorf("events WebSocket: %w", err))
			}
			return
		}
		now := time.Now()
		switch m.Type {
		case "config.applied":
			if !m.Data.Success {
				f.applied.fail(fmt.Errorf("agent %s failed to apply version %d", m.Data.AgentID, m.Data.Version))
				continue
			}
			f.applied.mark(m.Data.Version, m.Data.AgentID, now)
		case "shutdown":
			if !f.closing.Load() {
				f.applied.fail(errors.New("events WebSocket: the master shut down"))
			}
			return
		}
	}
}

// reconnect replaces a broken connection and clears the failure it caused.
func (f *appliedFeed) reconnect() error {
	f.close()
	f.closing.Store(false)
	f.applied.clearErr()
	return f.connect()
}

func (f *appliedFeed) close() {
	f.closing.Store(true)
	f.mu.Lock()
	conn, done := f.conn, f.done
	f.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
		<-done
	}
}

// ---- Agents ----

// fleet is a set of real agent control-plane clients in this process, each
// with a no-op applier.
type fleet struct {
	agents []*cptest.NoopAgent
	cancel context.CancelFunc
	runs   sync.WaitGroup
}

// startFleet registers one agent per token with master (trusted by its CA
// fingerprint), connectConcurrency at a time, each waiting until its stream
// is up, and keeps them connected until stop. Every agent's ApplyConfig is
// marked in received under its index.
func startFleet(b *testing.B, master, fingerprint string, tokens []string, received *rounds) *fleet {
	b.Helper()
	root := b.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{agents: make([]*cptest.NoopAgent, len(tokens)), cancel: cancel}
	b.Cleanup(f.stop)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	errs := make(chan error, len(tokens))
	sem := make(chan struct{}, connectConcurrency)
	var wg sync.WaitGroup
	for i, tok := range tokens {
		sem <- struct{}{}
		key := strconv.Itoa(i)
		a := cptest.NewNoopAgent(func(u *agentv1.ConfigUpdate, at time.Time) { received.mark(u.GetVersion(), key, at) })
		f.agents[i] = a
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := controlplane.New(controlplane.Options{
				Master:        master,
				Token:         tok,
				CAFingerprint: fingerprint,
				DataDir:       filepath.Join(root, fmt.Sprintf("agent-%05d", i)),
				Hostname:      fmt.Sprintf("bench-%05d", i),
				Name:          fmt.Sprintf("bench-%05d", i),
				Labels:        map[string]string{"env": "bench"},
				Version:       "bench",
				Handler:       a,
				Logger:        logger,
			})
			if err != nil {
				errs <- err
				return
			}
			exited := make(chan error, 1)
			f.runs.Go(func() { exited <- c.Run(ctx) })
			select {
			case <-a.Up():
			case err := <-exited:
				errs <- fmt.Errorf("agent %d stopped: %v", i, err)
			case <-time.After(2 * time.Minute):
				errs <- fmt.Errorf("agent %d not connected after 2 minutes", i)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("connect agents: %v", err)
	}
	return f
}

// stop disconnects every agent and waits for their clients to end.
func (f *fleet) stop() {
	f.cancel()
	f.runs.Wait()
}

// ---- Floor: the same fan-out without the master ----

// floorMaster is the least a master must do to push a configuration: an
// AgentService over TLS (a throwaway CA) that answers registrations with a
// signed client certificate and keeps the streams; fanout sends one
// pre-built message to every stream through a per-stream sender, as the
// master's hub does, and SUCCESS statuses are marked in applied by stream.
// No database, no rendering, no checksums.
type floorMaster struct {
	agentv1.UnimplementedAgentServiceServer
	addr        string
	fingerprint string
	applied     *rounds

	ca    *apptest.CA
	caPEM string

	mu      sync.Mutex
	streams map[string]chan *agentv1.MasterMessage
}

// startFloor starts the floor server on a free loopback port; it stops with
// the benchmark.
func startFloor(b *testing.B, applied *rounds) *floorMaster {
	b.Helper()
	f := &floorMaster{applied: applied, streams: map[string]chan *agentv1.MasterMessage{}}
	f.ca = apptest.NewCA(b, "floor agents CA")
	f.caPEM = string(f.ca.PEM)
	f.fingerprint = controlplane.Fingerprint(f.ca.Cert)

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	srvDER, err := f.sign(&x509.Certificate{
		Subject: pkix.Name{CommonName: "floor master"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &srvKey.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(f.ca.Cert)
	// The master's transport settings (modules/agents/grpc.go): the agents'
	// keepalive pings are allowed.
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER, f.ca.DER}, PrivateKey: srvKey}},
			ClientAuth:   tls.VerifyClientCertIfGiven, ClientCAs: pool, MinVersion: tls.VersionTLS12,
		})),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 5 * time.Minute, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	agentv1.RegisterAgentServiceServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	f.addr = lis.Addr().String()
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return f
}

func (f *floorMaster) sign(tmpl *x509.Certificate, pub any) ([]byte, error) {
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	return f.ca.TrySign(tmpl, pub)
}

// Stream registers the agent (signing its CSR; any token is accepted) or
// identifies it by its client certificate, then records its statuses.
func (f *floorMaster) Stream(stream agentv1.AgentService_StreamServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegistration()
	if reg == nil {
		return errors.New("the first message must be a registration")
	}
	resp := &agentv1.RegistrationResponse{Success: true, HeartbeatIntervalSeconds: 10}
	if reg.GetToken() != "" {
		block, _ := pem.Decode([]byte(reg.GetCsrPem()))
		if block == nil {
			return errors.New("no CSR")
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			return err
		}
		resp.AgentId = uuid.NewString()
		der, err := f.sign(&x509.Certificate{
			Subject: pkix.Name{CommonName: resp.AgentId}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, csr.PublicKey)
		if err != nil {
			return err
		}
		resp.ClientCertificatePem = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		resp.CaCertificatePem = f.caPEM
	} else {
		p, _ := peer.FromContext(stream.Context())
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.VerifiedChains) == 0 {
			return errors.New("client certificate required")
		}
		resp.AgentId = info.State.VerifiedChains[0][0].Subject.CommonName
	}
	out := make(chan *agentv1.MasterMessage, 64)
	f.mu.Lock()
	f.streams[resp.AgentId] = out
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.streams, resp.AgentId)
		f.mu.Unlock()
	}()
	if err := stream.Send(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_RegistrationResponse{RegistrationResponse: resp}}); err != nil {
		return err
	}
	ctx := stream.Context()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-out:
				if stream.Send(m) != nil {
					return
				}
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		if st := m.GetConfigStatus(); st != nil && st.GetStatus() == agentv1.ConfigApplyStatus_SUCCESS {
			f.applied.mark(st.GetVersion(), resp.AgentId, time.Now())
		}
	}
}

// fanout queues m on every stream; it returns how many streams got it.
func (f *floorMaster) fanout(m *agentv1.MasterMessage) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, out := range f.streams {
		select {
		case out <- m:
			n++
		default:
		}
	}
	return n
}

// ---- Figures ----

// percentile returns the nearest-rank p-th percentile (0 < p <= 1) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// procTimes reads a process's CPU time in clock ticks from /proc/<pid>/stat:
// its own (utime+stime) and that of its reaped children (cutime+cstime),
// and its parent's pid.
func procTimes(pid int) (own, children uint64, ppid int, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// The command name may hold spaces; the fields after it start with the
	// state (field 3).
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 15 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	num := func(i int) uint64 { v, _ := strconv.ParseUint(fields[i], 10, 64); return v }
	ppid, _ = strconv.Atoi(fields[1])
	return num(11) + num(12), num(13) + num(14), ppid, nil
}

// rssKiB reads VmRSS from /proc/<pid>/status.
func rssKiB(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// treeTicks is the CPU time of a process and all its children, living and
// reaped (PostgreSQL: the postmaster and its backends).
func treeTicks(root int) uint64 {
	own, reaped, _, err := procTimes(root)
	if err != nil {
		return 0
	}
	total := own + reaped
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		if t, _, ppid, err := procTimes(pid); err == nil && ppid == root {
			total += t
		}
	}
	return total
}

// postmasterPID finds the PostgreSQL server process behind dbURL: the parent
// of a backend.
func postmasterPID(b *testing.B, dbURL string) int {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		b.Fatal(err)
	}
	_, _, ppid, err := procTimes(backend)
	if err != nil {
		b.Fatalf("PostgreSQL backend %d is not on this machine: %v", backend, err)
	}
	return ppid
}

// usage is what the master's process did over a window.
type usage struct {
	rssMeanKiB, rssMaxKiB uint64
	cpuPct                float64 // of one core
	pgCPUPct              float64 // PostgreSQL, all processes
}

// sample measures the master's RSS (sampled every second) and CPU, and the
// PostgreSQL server's CPU, over window.
func sample(b *testing.B, pid, pgPID int, window time.Duration) usage {
	b.Helper()
	start := time.Now()
	cpu0, _, _, err := procTimes(pid)
	if err != nil {
		b.Fatal(err)
	}
	pg0 := treeTicks(pgPID)
	var u usage
	var sum, n uint64
	for time.Since(start) < window {
		time.Sleep(time.Second)
		rss, err := rssKiB(pid)
		if err != nil {
			b.Fatal(err)
		}
		sum += rss
		n++
		u.rssMaxKiB = max(u.rssMaxKiB, rss)
	}
	cpu1, _, _, err := procTimes(pid)
	if err != nil {
		b.Fatal(err)
	}
	pg1 := treeTicks(pgPID)
	secs := time.Since(start).Seconds()
	u.rssMeanKiB = sum / n
	u.cpuPct = float64(cpu1-cpu0) / clockTicks / secs * 100
	u.pgCPUPct = float64(pg1-pg0) / clockTicks / secs * 100
	return u
}

// fileLimit is the hard limit of open files of this process.
func fileLimit(b *testing.B) uint64 {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	return lim.Max
}

// needFiles makes sure the process may open n files.
func needFiles(b *testing.B, n uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		// Only a privileged process may raise its hard limit.
		raised := syscall.Rlimit{Cur: n, Max: n}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			b.Fatalf("RLIMIT_NOFILE hard limit %d is below the %d files this benchmark needs, and raising it failed: %v", lim.Max, n, err)
		}
		return
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
}

// listenCommits marks in r, as each configuration version's commit becomes
// visible, the version (key "commit"): a connection to the master's
// database LISTENs on the channel the master's replicas learn of new
// versions on (vhosts.NotifyChannel), which PostgreSQL delivers when the
// writing transaction commits. The connection ends with the benchmark.
func listenCommits(b *testing.B, dbURL string, r *rounds) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+vhosts.NotifyChannel); err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.fail(fmt.Errorf("listen for commits: %w", err))
				}
				return
			}
			at := time.Now()
			var p vhosts.Notification
			if err := json.Unmarshal([]byte(n.Payload), &p); err == nil {
				r.mark(p.Version, "commit", at)
			}
		}
	}()
	b.Cleanup(func() {
		cancel()
		<-done
		_ = conn.Close(context.Background())
	})
}
