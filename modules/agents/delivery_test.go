package agents

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/nxmesh/nxmesh/agent/controlplane"
	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	"github.com/nxmesh/nxmesh/proto/compress"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// headerText is a header value of n bytes of text that compresses the way
// configuration text does (words, numbers, punctuation), different for each
// seed.
func headerText(seed string, n int) string {
	words := []string{"max-age=31536000", "includeSubDomains", "preload", "default-src", "'self'", "https:", "img-src", "data:", "script-src", "nonce"}
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s-%s-%d; ", words[i%len(words)], seed, i*7919%100003)
	}
	return b.String()[:n]
}

// bigVHost creates a virtual host of about size bytes of configuration
// (locations of 50 custom headers of 4000 bytes) targeting every agent.
func (b *bundle) bigVHost(t *testing.T, name string, size int) vhosts.VirtualHost {
	t.Helper()
	const headers, valueLen = 50, 4000
	n := (size + headers*valueLen - 1) / (headers * valueLen)
	locs := make([]vhosts.Location, n)
	for i := range locs {
		hs := make([]vhosts.Header, headers)
		for j := range hs {
			hs[j] = vhosts.Header{Name: fmt.Sprintf("X-Pad-%d", j), Value: headerText(fmt.Sprintf("%s%d.%d", name, i, j), valueLen)}
		}
		locs[i] = vhosts.Location{Path: fmt.Sprintf("/p%d", i), ProxyPass: "http://10.0.0.1:8080", CustomHeaders: hs}
	}
	v, err := b.vh.CreateVirtualHost(b.ctx, b.ws, vhosts.VirtualHostInput{
		Name: name, ServerName: name + ".example.com", Locations: locs, TargetAgents: &vhosts.TargetAgents{Type: vhosts.TargetAll},
	})
	if err != nil {
		t.Fatalf("create virtual host %s: %v", name, err)
	}
	return v
}

// ackHandler is an agent's handler that applies every update successfully
// and hands it to the test.
type ackHandler struct{ applied chan *agentv1.ConfigUpdate }

func (h ackHandler) ApplyConfig(_ context.Context, u *agentv1.ConfigUpdate, report func(*agentv1.ConfigStatus)) {
	for _, st := range []agentv1.ConfigApplyStatus{agentv1.ConfigApplyStatus_VALIDATING, agentv1.ConfigApplyStatus_APPLYING, agentv1.ConfigApplyStatus_SUCCESS} {
		report(&agentv1.ConfigStatus{ConfigId: u.GetConfigId(), Version: u.GetVersion(), Status: st, AppliedAt: time.Now().Unix()})
	}
	select {
	case h.applied <- u:
	default:
	}
}

func (ackHandler) RunCommand(context.Context, *agentv1.Command) *agentv1.CommandResult {
	return &agentv1.CommandResult{Success: true}
}

func (ackHandler) Health(context.Context) *agentv1.HealthReport {
	return &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}}
}

// payloads is a client stats.Handler that records the compression of the
// responses and the sizes of the messages received.
type payloads struct {
	mu          sync.Mutex
	compression string
	in          []*stats.InPayload
}

func (p *payloads) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (p *payloads) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (p *payloads) HandleConn(context.Context, stats.ConnStats) {}
func (p *payloads) HandleRPC(_ context.Context, s stats.RPCStats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s := s.(type) {
	case *stats.InHeader:
		p.compression = s.Compression
	case *stats.InPayload:
		p.in = append(p.in, s)
	}
}

// openWith is agentClient.open for an agent that accepts messages of up to
// limit bytes (stated in its metadata unless state is false), observed by sh.
func (a *agentClient) openWith(t *testing.T, limit int, state bool, sh stats.Handler) *session {
	t.Helper()
	cfg := &tls.Config{RootCAs: a.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	cc, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limit)), grpc.WithStatsHandler(sh))
	if err != nil {
		t.Fatalf("dial %s: %v", a.addr, err)
	}
	var md metadata.MD
	if state {
		md = metadata.Pairs(MaxMessageBytesMetadata, strconv.Itoa(limit))
	}
	return startSession(t, cc, md)
}

// registerWith registers a through openWith.
func (a *agentClient) registerWith(t *testing.T, token string, limit int, state bool, sh stats.Handler) *session {
	t.Helper()
	req := a.hello("big.internal")
	req.Token, req.CsrPem = token, a.csr(t)
	s := a.openWith(t, limit, state, sh)
	resp := s.handshake(t, req)
	if !resp.GetSuccess() {
		t.Fatalf("register: %s", resp.GetErrorMessage())
	}
	a.id = uuid.MustParse(resp.GetAgentId())
	return s
}

// detail reads GET /v1/agents/{id} as the viewer.
func (b *bundle) detail(t *testing.T, id uuid.UUID) AgentDetail {
	t.Helper()
	var d AgentDetail
	b.as(t, "viewer", http.MethodGet, agentPath(id), nil, http.StatusOK, &d)
	return d
}

// awaitDetail polls GET /v1/agents/{id} until ok accepts it.
func (b *bundle) awaitDetail(t *testing.T, id uuid.UUID, what string, ok func(AgentDetail) bool) AgentDetail {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		d := b.detail(t, id)
		if ok(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never %s: apply_status %q, last_error %q", what, d.ApplyStatus, d.LastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noConfigUpdate fails if s received a ConfigUpdate.
func noConfigUpdate(t *testing.T, s *session) {
	t.Helper()
	for {
		select {
		case m := <-s.in:
			if m.GetConfigUpdate() != nil {
				t.Fatalf("the master sent an update of %d bytes it should have held back", proto.Size(m))
			}
		default:
			return
		}
	}
}

func TestGRPC_Delivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("RealAgentAppliesAnUpdateOverFourMiB", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.bigVHost(t, "big", 5<<20)
		tok := b.token(t, "big", nil)
		h := ackHandler{applied: make(chan *agentv1.ConfigUpdate, 4)}
		c, err := controlplane.New(controlplane.Options{
			Master: b.addr, Token: tok.Token, CAFingerprint: b.svc.CAFingerprint(), DataDir: t.TempDir(),
			Hostname: "big.internal", Handler: h, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })

		select {
		case u := <-h.applied:
			if n := proto.Size(u); n <= 4<<20 {
				t.Fatalf("the update is %d bytes, not over gRPC's default 4 MiB", n)
			}
		case <-time.After(wait):
			t.Fatal("the agent never received the large update")
		}
		version, err := b.vh.CurrentVersion(b.ctx, b.ws)
		if err != nil {
			t.Fatal(err)
		}
		d := b.awaitDetail(t, tok.AgentID, "applied the large update", func(d AgentDetail) bool {
			return d.ApplyStatus == ApplySuccess && d.AppliedVersion == version
		})
		if d.LastError != "" || d.State != StateOnline {
			t.Errorf("after the apply: state %q, last_error %q", d.State, d.LastError)
		}
	})

	t.Run("CompressesUpdatesForAgentsAcceptingGzip", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.bigVHost(t, "big", 5<<20)
		tok := b.token(t, "gz", nil)
		sh := &payloads{}
		s := newAgentClient(t, b.addr, b.svc.CA()).registerWith(t, tok.Token, 64<<20, true, sh)
		u := s.config(t)
		size := proto.Size(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_ConfigUpdate{ConfigUpdate: u}})
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if sh.compression != "gzip" {
			t.Errorf("the master answered with compression %q, want gzip", sh.compression)
		}
		var wire int
		for _, p := range sh.in {
			if p.Length >= size-16 {
				wire = p.CompressedLength
			}
		}
		t.Logf("update of %d bytes sent as %d bytes", size, wire)
		if wire == 0 || wire*5 > size {
			t.Errorf("the %d-byte update took %d bytes on the wire, want at most a fifth", size, wire)
		}
	})

	// Agents that send gzip and say so share one prepared message per
	// update: each still gets the whole update, compressed.
	t.Run("PreparedUpdatesReachGzipAgentsCompressed", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.bigVHost(t, "big", 5<<20)
		var updates []*agentv1.ConfigUpdate
		for i := range 2 {
			tok := b.token(t, fmt.Sprintf("gz%d", i), nil)
			a := newAgentClient(t, b.addr, b.svc.CA())
			sh := &payloads{}
			cfg := &tls.Config{RootCAs: a.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
			cc, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.UseCompressor(compress.Name)), grpc.WithStatsHandler(sh))
			if err != nil {
				t.Fatal(err)
			}
			s := startSession(t, cc, metadata.Pairs(MaxMessageBytesMetadata, strconv.Itoa(64<<20), MessageEncodingMetadata, compress.Name))
			req := a.hello(fmt.Sprintf("gz%d.internal", i))
			req.Token, req.CsrPem = tok.Token, a.csr(t)
			if resp := s.handshake(t, req); !resp.GetSuccess() {
				t.Fatalf("register: %s", resp.GetErrorMessage())
			}
			u := s.config(t)
			size := proto.Size(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_ConfigUpdate{ConfigUpdate: u}})
			sh.mu.Lock()
			var wire int
			for _, p := range sh.in {
				if p.Length >= size-16 {
					wire = p.CompressedLength
				}
			}
			sh.mu.Unlock()
			if wire == 0 || wire*5 > size {
				t.Errorf("agent %d: the %d-byte update took %d bytes on the wire, want at most a fifth", i, size, wire)
			}
			updates = append(updates, u)
		}
		if !proto.Equal(updates[0], updates[1]) || len(updates[0].GetVirtualHosts()) != 1 {
			t.Fatalf("the two agents got different updates, or not the one virtual host")
		}
	})

	t.Run("SendsUncompressedToAgentsWithoutGzip", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.vhost(t, "site", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		tok := b.token(t, "plain", nil)
		a := newAgentClient(t, b.addr, b.svc.CA())
		req := a.hello("plain.internal")
		req.Token, req.CsrPem = tok.Token, a.csr(t)
		header, msgs := rawStream(t, b, &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Registration{Registration: req}})
		if enc := header.Get("Grpc-Encoding"); enc != "" && enc != "identity" {
			t.Errorf("grpc-encoding %q for a client that accepts no compression", enc)
		}
		if r := msgs(t).GetRegistrationResponse(); !r.GetSuccess() {
			t.Fatalf("registration answer: %v", r)
		}
		if u := msgs(t).GetConfigUpdate(); len(u.GetVirtualHosts()) != 1 || u.GetVirtualHosts()[0].GetName() != "site" {
			t.Fatalf("second message is not the configuration: %v", u)
		}
	})

	t.Run("RecordsAnUpdateOverTheAgentsLimitAndRecovers", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		big := b.bigVHost(t, "big", 5<<20)
		tok := b.token(t, "old", nil)
		a := newAgentClient(t, b.addr, b.svc.CA())
		obs := b.obs.watch(t, tok.AgentID)
		// An agent that states no limit: gRPC's default, 4 MiB.
		s, resp := a.register(t, tok.Token, "old.internal")
		if !resp.GetSuccess() {
			t.Fatalf("register: %s", resp.GetErrorMessage())
		}
		awaitKind(t, obs, "undelivered")
		d := b.detail(t, tok.AgentID)
		if d.ApplyStatus != ApplyFailed || d.State != StateDegraded ||
			!strings.Contains(d.LastError, "over the 4.00 MiB the agent accepts") || !strings.Contains(d.LastError, "--max-message-bytes") {
			t.Errorf("after an undeliverable update: state %q, apply_status %q, last_error %q", d.State, d.ApplyStatus, d.LastError)
		}
		ev := b.events.await(t, EventConfigApplied, tok.AgentID, nil)
		if ev.Data["success"] != false || ev.Data["status"] != ApplyFailed {
			t.Errorf("config.applied = %v", ev.Data)
		}
		noConfigUpdate(t, s)
		// The stream stays up, and a configuration that fits is delivered.
		s.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}})
		awaitKind(t, obs, "message")
		if err := b.vh.DeleteVirtualHost(b.ctx, big.ID); err != nil {
			t.Fatal(err)
		}
		u := s.config(t)
		s.status(t, u, agentv1.ConfigApplyStatus_SUCCESS, "")
		d = b.awaitDetail(t, tok.AgentID, "applied the smaller update", func(d AgentDetail) bool { return d.ApplyStatus == ApplySuccess })
		if d.LastError != "" || d.AppliedVersion != u.GetVersion() {
			t.Errorf("after the smaller update: applied_version %d (want %d), last_error %q", d.AppliedVersion, u.GetVersion(), d.LastError)
		}
	})

	t.Run("RecordsAnUpdateOverTheMastersLimit", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		// This replica sends at most 1 MiB; the workspace's update is 2 MiB
		// (the vhosts module holds it to the env's 64 MiB).
		_, addr := b.replica(t, "small-"+uuid.NewString()[:8], func(cfg *app.Config) { cfg.GRPC.MaxMessageBytes = 1 << 20 })
		b.bigVHost(t, "big", 2<<20)
		tok := b.token(t, "new", nil)
		obs := b.obs.watch(t, tok.AgentID)
		s := newAgentClient(t, addr, b.svc.CA()).registerWith(t, tok.Token, 64<<20, true, &payloads{})
		awaitKind(t, obs, "undelivered")
		d := b.detail(t, tok.AgentID)
		if d.ApplyStatus != ApplyFailed || !strings.Contains(d.LastError, "over the master's limit of 1.00 MiB (grpc.max_message_bytes)") {
			t.Errorf("apply_status %q, last_error %q", d.ApplyStatus, d.LastError)
		}
		noConfigUpdate(t, s)
	})

	t.Run("AgentAndMasterNameTheLimitTheSame", func(t *testing.T) {
		t.Parallel()
		if MaxMessageBytesMetadata != controlplane.MaxMessageBytesMetadata {
			t.Errorf("master reads %q, agent sends %q", MaxMessageBytesMetadata, controlplane.MaxMessageBytesMetadata)
		}
		if controlplane.DefaultMaxMessageBytes != app.DefaultMaxMessageBytes {
			t.Errorf("agent default %d, master default %d", controlplane.DefaultMaxMessageBytes, app.DefaultMaxMessageBytes)
		}
	})
}

// rawStream opens the AgentService Stream with a bare HTTP/2 client, which
// accepts no compression (it sends no grpc-accept-encoding), sends first
// and returns the response headers and a function returning the next
// message, which fails the test unless it arrived uncompressed.
func rawStream(t *testing.T, b *bundle, first *agentv1.AgentMessage) (http.Header, func(*testing.T) *agentv1.MasterMessage) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: b.svc.CA().Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true, DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	pr, pw := io.Pipe()
	t.Cleanup(func() { cancel(); pw.Close() })
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+b.addr+"/"+agentv1.AgentService_ServiceDesc.ServiceName+"/Stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	payload, err := proto.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 5, 5+len(payload))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(payload)))
	go func() { _, _ = pw.Write(append(frame, payload...)) }()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("open the stream over plain HTTP/2: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("status %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}
	next := func(t *testing.T) *agentv1.MasterMessage {
		t.Helper()
		var hdr [5]byte
		if _, err := io.ReadFull(resp.Body, hdr[:]); err != nil {
			t.Fatalf("read message header: %v (grpc-status %q %q)", err, resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message"))
		}
		if hdr[0] != 0 {
			t.Fatalf("message flagged compressed (%d) for a client that accepts no compression", hdr[0])
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(resp.Body, body); err != nil {
			t.Fatalf("read message: %v", err)
		}
		var m agentv1.MasterMessage
		if err := proto.Unmarshal(body, &m); err != nil {
			t.Fatalf("decode message: %v", err)
		}
		return &m
	}
	return resp.Header, next
}
