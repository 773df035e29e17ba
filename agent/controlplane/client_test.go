package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/nxmesh/nxmesh/app/apptest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	ca   *apptest.CA
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	ca := apptest.NewCA(t, name)
	return &testCA{ca: ca, cert: ca.Cert, key: ca.Key, pem: ca.PEM}
}

// issue signs a certificate for pub, valid from an hour ago for an hour.
func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate, pub any) []byte {
	t.Helper()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	return ca.ca.Sign(t, tmpl, pub)
}

// serverCert is a server certificate for 127.0.0.1 and localhost whose
// chain includes the CA, as the master sends it.
func (ca *testCA) serverCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der := ca.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "nxmesh master"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &key.PublicKey)
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

// streamRecord is what the test master saw at the start of a stream.
type streamRecord struct {
	registration *agentv1.RegistrationRequest
	// clientCN is the verified client certificate's common name; empty
	// without mutual TLS.
	clientCN string
}

// testMaster implements the master's side of the protocol in the brief:
// a first registration (token + CSR) is answered with a signed certificate
// and the stream is ended; a hello over mutual TLS is answered, followed
// by a ConfigUpdate and a Command, and the agent's messages are recorded.
type testMaster struct {
	agentv1.UnimplementedAgentServiceServer
	t        *testing.T
	ca       *testCA
	token    string
	agentID  string
	streams  chan streamRecord
	received chan *agentv1.AgentMessage
	// extra are sent after the Command on mutual-TLS streams.
	extra []*agentv1.MasterMessage
}

func (m *testMaster) Stream(stream grpc.BidiStreamingServer[agentv1.AgentMessage, agentv1.MasterMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegistration()
	if reg == nil {
		return status.Error(codes.InvalidArgument, "first message must be a registration")
	}
	rec := streamRecord{registration: reg}
	if p, ok := peer.FromContext(stream.Context()); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			rec.clientCN = info.State.VerifiedChains[0][0].Subject.CommonName
		}
	}
	m.streams <- rec

	refuse := func(code codes.Code, reason string) error {
		_ = stream.Send(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_RegistrationResponse{
			RegistrationResponse: &agentv1.RegistrationResponse{Success: false, ErrorMessage: reason}}})
		return status.Error(code, reason)
	}
	if reg.GetToken() != "" {
		if reg.GetToken() != m.token {
			return refuse(codes.PermissionDenied, "unknown token")
		}
		block, _ := pem.Decode([]byte(reg.GetCsrPem()))
		if block == nil {
			return refuse(codes.InvalidArgument, "no CSR")
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil || csr.CheckSignature() != nil {
			return refuse(codes.InvalidArgument, "bad CSR")
		}
		der := m.ca.issue(m.t, &x509.Certificate{
			Subject:     pkix.Name{CommonName: m.agentID},
			URIs:        []*url.URL{{Scheme: "urn", Opaque: "nxmesh:agent:" + m.agentID}},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, csr.PublicKey)
		return stream.Send(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_RegistrationResponse{
			RegistrationResponse: &agentv1.RegistrationResponse{
				AgentId: m.agentID, Success: true, HeartbeatIntervalSeconds: 10,
				ClientCertificatePem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
				CaCertificatePem:     string(m.ca.pem),
			}}})
	}
	if rec.clientCN == "" {
		return refuse(codes.Unauthenticated, "client certificate required")
	}
	for _, msg := range append([]*agentv1.MasterMessage{
		{Payload: &agentv1.MasterMessage_RegistrationResponse{RegistrationResponse: &agentv1.RegistrationResponse{
			AgentId: rec.clientCN, Success: true, HeartbeatIntervalSeconds: 10}}},
		{Payload: &agentv1.MasterMessage_ConfigUpdate{ConfigUpdate: &agentv1.ConfigUpdate{ConfigId: "cfg", Version: 7}}},
		{Payload: &agentv1.MasterMessage_Command{Command: &agentv1.Command{
			CommandId: "cmd-1", Command: &agentv1.Command_GetStatus{GetStatus: &agentv1.GetStatusCommand{}}}}},
	}, m.extra...) {
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		// Log batches are acknowledged once "stored", as the master does.
		ackID := msg.GetLogs().GetBatchId() + msg.GetAccessLogs().GetBatchId()
		select {
		case m.received <- msg:
		case <-stream.Context().Done():
			return nil
		}
		if ackID != "" {
			if err := stream.Send(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_Ack{Ack: &agentv1.Ack{MessageId: ackID, Success: true}}}); err != nil {
				return err
			}
		}
	}
}

// fakeHandler answers like the agent would, without nginx.
type fakeHandler struct{}

func (fakeHandler) ApplyConfig(_ context.Context, u *agentv1.ConfigUpdate, report func(*agentv1.ConfigStatus)) {
	for _, st := range []agentv1.ConfigApplyStatus{agentv1.ConfigApplyStatus_VALIDATING, agentv1.ConfigApplyStatus_APPLYING, agentv1.ConfigApplyStatus_SUCCESS} {
		report(&agentv1.ConfigStatus{ConfigId: u.GetConfigId(), Version: u.GetVersion(), Status: st})
	}
}

func (fakeHandler) RunCommand(_ context.Context, cmd *agentv1.Command) *agentv1.CommandResult {
	return &agentv1.CommandResult{Success: true, Output: "{}"}
}

func (fakeHandler) Health(context.Context) *agentv1.HealthReport {
	return &agentv1.HealthReport{ConfigVersion: 7}
}

// bundle is what setup returns.
type bundle struct {
	master *testMaster
	srv    *grpc.Server
	addr   string
	ca     *testCA
	opts   Options
}

// setup starts a TLS gRPC server with a fresh CA and returns client
// options that trust it by fingerprint.
func setup(t *testing.T) *bundle {
	t.Helper()
	ca := newTestCA(t, "nxmesh agents CA")
	m := &testMaster{
		t: t, ca: ca, token: "nxmesh_agent_secret", agentID: "agent-1",
		streams: make(chan streamRecord, 16), received: make(chan *agentv1.AgentMessage, 64),
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{ca.serverCert(t)},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	})))
	agentv1.RegisterAgentServiceServer(srv, m)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return &bundle{
		master: m, srv: srv, addr: lis.Addr().String(), ca: ca,
		opts: Options{
			Master:        lis.Addr().String(),
			Token:         m.token,
			CAFingerprint: Fingerprint(ca.cert),
			DataDir:       t.TempDir(),
			Hostname:      "web-1",
			Version:       "test",
			Labels:        map[string]string{"env": "test"},
			Handler:       fakeHandler{},
			Backoff:       &Backoff{Initial: 10 * time.Millisecond, Factor: 1.6, Jitter: 0.2, Max: 100 * time.Millisecond},
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
	}
}

func newClient(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// next waits for the next value on ch.
func next[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestClient_Registration(t *testing.T) {
	t.Parallel()

	t.Run("RegistersThenReconnectsWithMutualTLS", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c := newClient(t, b.opts)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})

		first := next(t, b.master.streams, "registration stream")
		if first.clientCN != "" {
			t.Errorf("registration used a client certificate (CN %q)", first.clientCN)
		}
		reg := first.registration
		if reg.GetToken() != b.master.token || reg.GetCsrPem() == "" || reg.GetHostname() != "web-1" || reg.GetLabels()["env"] != "test" {
			t.Errorf("registration request = %v", reg)
		}

		second := next(t, b.master.streams, "reconnect stream")
		if second.clientCN != "agent-1" {
			t.Errorf("reconnect client CN = %q, want agent-1 (mutual TLS)", second.clientCN)
		}
		if second.registration.GetToken() != "" || second.registration.GetCsrPem() != "" {
			t.Errorf("hello carried a token or CSR: %v", second.registration)
		}

		dir := identityDir(b.opts.DataDir)
		fi, err := os.Stat(filepath.Join(dir, identityKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("key mode = %v, want 0600", fi.Mode().Perm())
		}
		if ca, _ := os.ReadFile(filepath.Join(dir, identityCAFile)); string(ca) != string(b.ca.pem) {
			t.Error("stored CA differs from the master's")
		}
		id, err := LoadIdentity(b.opts.DataDir)
		if err != nil || id == nil || id.AgentID != "agent-1" {
			t.Fatalf("LoadIdentity = %+v, %v", id, err)
		}
		if c.AgentID() != "agent-1" {
			t.Errorf("AgentID = %q", c.AgentID())
		}

		// The master's ConfigUpdate, Command and the heartbeat come back.
		var sawHealth, sawSuccess, sawResult bool
		for !sawHealth || !sawSuccess || !sawResult {
			msg := next(t, b.master.received, "agent messages")
			if msg.GetAgentId() != "agent-1" || msg.GetTimestamp() == 0 {
				t.Errorf("message without agent id or timestamp: %v", msg)
			}
			switch {
			case msg.GetHealth() != nil:
				sawHealth = true
			case msg.GetConfigStatus().GetStatus() == agentv1.ConfigApplyStatus_SUCCESS:
				sawSuccess = msg.GetConfigStatus().GetVersion() == 7
			case msg.GetCommandResult() != nil:
				r := msg.GetCommandResult()
				sawResult = r.GetCommandId() == "cmd-1" && r.GetSuccess() && r.GetFinishedAt() > 0
			}
		}
	})

	t.Run("TrustsCAFile", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		caFile := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(caFile, b.ca.pem, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := b.opts
		opts.CAFingerprint, opts.CAFile = "", caFile
		registered, err := newClient(t, opts).session(t.Context())
		if !registered {
			t.Fatalf("not registered: %v", err)
		}
	})

	t.Run("RejectsWrongFingerprint", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		opts := b.opts
		opts.CAFingerprint = Fingerprint(newTestCA(t, "someone else").cert)
		registered, err := newClient(t, opts).session(t.Context())
		if registered || err == nil || !strings.Contains(err.Error(), "fingerprint") {
			t.Fatalf("session = %v, %v; want a fingerprint error", registered, err)
		}
		select {
		case rec := <-b.master.streams:
			t.Errorf("master saw a stream from an agent that should not trust it: %v", rec.registration)
		default:
		}
		if id, _ := LoadIdentity(opts.DataDir); id != nil {
			t.Error("identity stored after a failed handshake")
		}
	})

	t.Run("RejectsServerCertificateForAnotherHost", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		opts := b.opts
		// The server certificate is for 127.0.0.1 and localhost only;
		// the same server also listens on 127.0.0.2.
		lis, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		go b.srv.Serve(lis)
		opts.Master = lis.Addr().String()
		_, err = newClient(t, opts).session(t.Context())
		if err == nil || !strings.Contains(err.Error(), "127.0.0.2") {
			t.Fatalf("session = %v, want a certificate name mismatch", err)
		}
		t.Log(err)
	})

	t.Run("ReportsRefusedToken", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		opts := b.opts
		opts.Token = "nxmesh_agent_wrong"
		_, err := newClient(t, opts).session(t.Context())
		if err == nil || !strings.Contains(err.Error(), "unknown token") {
			t.Fatalf("session error = %v, want the master's reason", err)
		}
		if id, _ := LoadIdentity(opts.DataDir); id != nil {
			t.Error("identity stored after a refused registration")
		}
	})

	t.Run("RunRefusesWithoutTokenOrIdentity", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		opts := b.opts
		opts.Token = ""
		if err := newClient(t, opts).Run(t.Context()); err == nil {
			t.Fatal("Run without token or identity succeeded")
		}
	})
}

// blockingHandler records applied versions and blocks the first apply
// until released.
type blockingHandler struct {
	fakeHandler
	started chan int64
	release chan struct{}
	mu      sync.Mutex
	applied []int64
	done    chan struct{}
	want    int
}

func (h *blockingHandler) ApplyConfig(_ context.Context, u *agentv1.ConfigUpdate, _ func(*agentv1.ConfigStatus)) {
	h.started <- u.GetVersion()
	if u.GetVersion() == 1 {
		<-h.release
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.applied = append(h.applied, u.GetVersion())
	if len(h.applied) == h.want {
		close(h.done)
	}
}

func TestClient_ApplyLatestWins(t *testing.T) {
	t.Parallel()
	h := &blockingHandler{started: make(chan int64, 8), release: make(chan struct{}), done: make(chan struct{}), want: 2}
	c := newClient(t, Options{Master: "127.0.0.1:1", DataDir: t.TempDir(), Handler: h, Hostname: "h",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(t.Context())
	loopDone := make(chan struct{})
	go func() { c.applyLoop(ctx); close(loopDone) }()
	t.Cleanup(func() { cancel(); <-loopDone })

	c.submit(&agentv1.ConfigUpdate{Version: 1})
	if v := next(t, h.started, "first apply"); v != 1 {
		t.Fatalf("first apply version %d", v)
	}
	// While version 1 applies, 2 and 3 arrive: only 3 is applied next.
	c.submit(&agentv1.ConfigUpdate{Version: 2})
	c.submit(&agentv1.ConfigUpdate{Version: 3})
	close(h.release)
	next(t, h.done, "applies")
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.applied) != 2 || h.applied[0] != 1 || h.applied[1] != 3 {
		t.Errorf("applied = %v, want [1 3]", h.applied)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()

	t.Run("StaysWithinJitterBoundsAndCap", func(t *testing.T) {
		t.Parallel()
		b := NewBackoff(mrand.New(mrand.NewPCG(1, 2)))
		base := float64(time.Second)
		distinct := map[time.Duration]bool{}
		for i := range 30 {
			d := b.Next()
			want := min(base, float64(DefaultBackoffMax))
			lo, hi := 0.8*want, min(1.2*want, float64(DefaultBackoffMax))
			if float64(d) < lo || float64(d) > hi {
				t.Errorf("attempt %d: delay %v outside [%v, %v]", i, d, time.Duration(lo), time.Duration(hi))
			}
			distinct[d] = true
			base *= 1.6
		}
		// Below the cap (the first 10 attempts) every delay is jittered.
		if len(distinct) < 11 {
			t.Errorf("only %d distinct delays in 30: jitter missing", len(distinct))
		}
	})

	t.Run("IsDeterministicForASeed", func(t *testing.T) {
		t.Parallel()
		a := NewBackoff(mrand.New(mrand.NewPCG(7, 7)))
		b := NewBackoff(mrand.New(mrand.NewPCG(7, 7)))
		for i := range 15 {
			if x, y := a.Next(), b.Next(); x != y {
				t.Fatalf("attempt %d: %v != %v", i, x, y)
			}
		}
	})

	t.Run("ResetStartsOver", func(t *testing.T) {
		t.Parallel()
		b := NewBackoff(mrand.New(mrand.NewPCG(3, 4)))
		for range 12 {
			b.Next()
		}
		b.Reset()
		if d := b.Next(); d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Errorf("first delay after reset = %v, want 1s ± 20%%", d)
		}
	})
}

func TestParseFingerprint(t *testing.T) {
	t.Parallel()
	hex64 := strings.Repeat("ab", 32)
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"sha256:" + hex64, true},
		{"SHA256:" + strings.ToUpper(hex64), true},
		{"sha256:" + strings.TrimSuffix(strings.Repeat("ab:", 32), ":"), true},
		{hex64, false},
		{"sha256:" + hex64[:62], false},
		{"sha1:" + hex64, false},
		{"sha256:" + strings.Repeat("zz", 32), false},
	} {
		if _, err := ParseFingerprint(c.in); (err == nil) != c.ok {
			t.Errorf("ParseFingerprint(%q) error = %v, want ok=%v", c.in, err, c.ok)
		}
	}
}

// TestClient_LogBatches sends an access-log and an error-log batch on the
// stream and receives the master's Acks through OnAck.
func TestClient_LogBatches(t *testing.T) {
	t.Parallel()
	b := setup(t)
	acks := make(chan *agentv1.Ack, 8)
	opts := b.opts
	opts.OnAck = func(a *agentv1.Ack) { acks <- a }
	c := newClient(t, opts)
	if c.SendAccessLogs(&agentv1.AccessLogBatch{BatchId: "early"}) {
		t.Error("a batch was handed to a stream before any connected")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// The mutual-TLS session's first health report: the stream is up.
	for {
		if next(t, b.master.received, "a health report").GetHealth() != nil {
			break
		}
	}
	if !c.SendAccessLogs(&agentv1.AccessLogBatch{BatchId: "acc-1", Entries: []*agentv1.AccessLogEntry{{Uri: "/x", Status: 200}}}) ||
		!c.SendLogs(&agentv1.LogBatch{BatchId: "err-1", Entries: []*agentv1.LogEntry{{Level: "error", Message: "m"}}}) {
		t.Fatal("batches not handed to the stream")
	}
	got := map[string]bool{}
	for len(got) < 2 {
		msg := next(t, b.master.received, "the log batches")
		if a := msg.GetAccessLogs(); a != nil {
			got[a.GetBatchId()] = a.GetEntries()[0].GetUri() == "/x" && msg.GetAgentId() == "agent-1"
		}
		if l := msg.GetLogs(); l != nil {
			got[l.GetBatchId()] = l.GetEntries()[0].GetMessage() == "m"
		}
	}
	if !got["acc-1"] || !got["err-1"] {
		t.Errorf("received %v", got)
	}
	acked := map[string]bool{}
	for range 2 {
		a := next(t, acks, "an ack")
		acked[a.GetMessageId()] = a.GetSuccess()
	}
	if !acked["acc-1"] || !acked["err-1"] {
		t.Errorf("acks %v", acked)
	}
}

// TestClient_SeveralMasters gives the client a dead address first and two
// replicas of the master: it registers through the first live one, and
// when that one stops it reconnects to the other.
func TestClient_SeveralMasters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pool := x509.NewCertPool()
	pool.AddCert(b.ca.cert)
	srv2 := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{b.ca.serverCert(t)},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	})))
	agentv1.RegisterAgentServiceServer(srv2, b.master)
	lis2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv2.Serve(lis2)
	t.Cleanup(srv2.Stop)
	deadLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := deadLis.Addr().String()
	deadLis.Close()

	opts := b.opts
	opts.Master = dead + ", " + b.addr + "," + lis2.Addr().String()
	c := newClient(t, opts)
	if c.Master() != dead {
		t.Fatalf("first master = %q, want %q", c.Master(), dead)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if first := next(t, b.master.streams, "registration stream"); first.registration.GetToken() == "" {
		t.Fatalf("first stream did not register: %v", first.registration)
	}
	b.srv.Stop() // the replica the agent registered with dies
	for {
		s := next(t, b.master.streams, "a stream to the surviving replica")
		if s.clientCN != "agent-1" {
			continue
		}
		if got := c.Master(); got != lis2.Addr().String() {
			t.Fatalf("connected through %q, want the surviving replica %s", got, lis2.Addr())
		}
		break
	}
}

func TestParseMasters(t *testing.T) {
	t.Parallel()
	got, err := ParseMasters(" a:1, b:2,,a:1 ")
	if err != nil || strings.Join(got, " ") != "a:1 b:2" {
		t.Errorf("ParseMasters = %v, %v", got, err)
	}
	for _, bad := range []string{"", " , ", "a:1,b"} {
		if _, err := ParseMasters(bad); err == nil {
			t.Errorf("ParseMasters(%q) accepted", bad)
		}
	}
}
