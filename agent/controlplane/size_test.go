package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nxmesh/nxmesh/app/apptest"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// largeMaster answers every stream (registering the agent when it sends a
// token) and then sends update; it records what the agent sends and how.
type largeMaster struct {
	agentv1.UnimplementedAgentServiceServer
	t        *testing.T
	ca       *testCA
	update   *agentv1.ConfigUpdate
	received chan *agentv1.AgentMessage
	// headers are the request headers of the agent's streams (their
	// compression and metadata).
	headers chan *stats.InHeader
}

func (m *largeMaster) Stream(stream grpc.BidiStreamingServer[agentv1.AgentMessage, agentv1.MasterMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	resp := &agentv1.RegistrationResponse{AgentId: "agent-1", Success: true, HeartbeatIntervalSeconds: 10}
	if reg := first.GetRegistration(); reg.GetToken() != "" {
		block, _ := pem.Decode([]byte(reg.GetCsrPem()))
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			return status.Error(codes.InvalidArgument, "bad CSR")
		}
		der := m.ca.issue(m.t, &x509.Certificate{
			Subject: pkix.Name{CommonName: "agent-1"}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, csr.PublicKey)
		resp.ClientCertificatePem = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		resp.CaCertificatePem = string(m.ca.pem)
	}
	for _, msg := range []*agentv1.MasterMessage{
		{Payload: &agentv1.MasterMessage_RegistrationResponse{RegistrationResponse: resp}},
		{Payload: &agentv1.MasterMessage_ConfigUpdate{ConfigUpdate: m.update}},
	} {
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
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

// TagRPC, HandleRPC, TagConn and HandleConn make the master a stats.Handler
// that records the request headers of streams.
func (m *largeMaster) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (m *largeMaster) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok {
		select {
		case m.headers <- h:
		default:
		}
	}
}

func (m *largeMaster) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (m *largeMaster) HandleConn(context.Context, stats.ConnStats) {}

// largeUpdate is a ConfigUpdate of about size bytes.
func largeUpdate(size int) *agentv1.ConfigUpdate {
	var b strings.Builder
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "server-%d.example.com ", i)
	}
	return &agentv1.ConfigUpdate{ConfigId: "big", Version: 9, VirtualHosts: []*agentv1.VirtualHost{{Id: "v", Name: "big", ServerName: b.String()}}}
}

// lockedBuffer is a buffer safe for concurrent logging.
type lockedBuffer = apptest.SyncBuffer

// startLarge serves a largeMaster sending update and returns client options
// for it.
func startLarge(t *testing.T, update *agentv1.ConfigUpdate) (*largeMaster, Options) {
	t.Helper()
	b := setup(t) // for its CA and client options; its own server is unused
	m := &largeMaster{
		t: t, ca: b.ca, update: update,
		received: make(chan *agentv1.AgentMessage, 64), headers: make(chan *stats.InHeader, 16),
	}
	pool := x509.NewCertPool()
	pool.AddCert(b.ca.cert)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{b.ca.serverCert(t)}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool,
		MinVersion: tls.VersionTLS12,
	})), grpc.StatsHandler(m), grpc.MaxSendMsgSize(64<<20))
	agentv1.RegisterAgentServiceServer(srv, m)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	opts := b.opts
	opts.Master = lis.Addr().String()
	return m, opts
}

// run runs c until the test ends.
func run(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestClient_MessageSize(t *testing.T) {
	t.Parallel()

	t.Run("AppliesUpdatesLargerThanGRPCsDefaultLimit", func(t *testing.T) {
		t.Parallel()
		u := largeUpdate(5 << 20)
		if proto.Size(u) <= 4<<20 {
			t.Fatalf("update of %d bytes is not over gRPC's default 4 MiB", proto.Size(u))
		}
		m, opts := startLarge(t, u)
		run(t, newClient(t, opts))
		h := next(t, m.headers, "stream headers")
		if h.Compression != "gzip" {
			t.Errorf("the agent sends with compression %q, want gzip", h.Compression)
		}
		if got := h.Header.Get(MaxMessageBytesMetadata); len(got) != 1 || got[0] != "67108864" {
			t.Errorf("%s = %v, want the 64 MiB default", MaxMessageBytesMetadata, got)
		}
		deadline := time.After(20 * time.Second)
		for {
			select {
			case msg := <-m.received:
				if st := msg.GetConfigStatus(); st.GetStatus() == agentv1.ConfigApplyStatus_SUCCESS && st.GetConfigId() == "big" {
					return
				}
			case <-deadline:
				t.Fatal("the agent never acknowledged the large update")
			}
		}
	})

	t.Run("ReportsAndLogsAnUpdateOverItsLimit", func(t *testing.T) {
		t.Parallel()
		m, opts := startLarge(t, largeUpdate(2<<20))
		opts.MaxMessageBytes = 1 << 20
		var logs lockedBuffer
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		run(t, newClient(t, opts))
		h := next(t, m.headers, "stream headers")
		if got := h.Header.Get(MaxMessageBytesMetadata); len(got) != 1 || got[0] != "1048576" {
			t.Errorf("%s = %v, want 1048576", MaxMessageBytesMetadata, got)
		}
		// The update breaks the first stream; the next one's health reports
		// carry the alert.
		deadline := time.After(20 * time.Second)
		for {
			var msg *agentv1.AgentMessage
			select {
			case msg = <-m.received:
			case <-deadline:
				t.Fatal("no health report with the alert")
			}
			if msg.GetConfigStatus() != nil {
				t.Fatalf("the agent answered an update it cannot receive: %v", msg.GetConfigStatus())
			}
			var alert *agentv1.Alert
			for _, a := range msg.GetHealth().GetAlerts() {
				if a.GetId() == AlertConfigReceiveFailed {
					alert = a
				}
			}
			if alert == nil {
				continue
			}
			for _, want := range []string{"larger than max", "1048576", "--max-message-bytes"} {
				if !strings.Contains(alert.GetMessage(), want) {
					t.Errorf("alert message %q lacks %q", alert.GetMessage(), want)
				}
			}
			break
		}
		if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "could not be received") || !strings.Contains(l, "NXMESH_AGENT_MAX_MESSAGE_BYTES") {
			t.Errorf("no clear error in the agent's log:\n%.2000s", l)
		}
	})

	t.Run("RecognizesAMasterWithoutGzip", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			err  error
			want bool
		}{
			// grpc-go's answer when the server has no gzip codec.
			{status.Error(codes.Unimplemented, `grpc: Decompressor is not installed for grpc-encoding "gzip"`), true},
			{status.Error(codes.Unimplemented, "unknown method"), false},
			{status.Error(codes.Internal, `grpc: Decompressor is not installed for grpc-encoding "gzip"`), false},
		} {
			if got := gzipRefused(c.err); got != c.want {
				t.Errorf("gzipRefused(%v) = %v, want %v", c.err, got, c.want)
			}
		}
	})
}

var _ stats.Handler = (*largeMaster)(nil)
