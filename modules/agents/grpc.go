package agents

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Timings of the gRPC service.
const (
	// registrationTimeout is how long a new stream may take to send its first
	// message.
	registrationTimeout = 30 * time.Second
	// senderGrace bounds how long a closing stream waits for its sender.
	senderGrace = 5 * time.Second
	// disconnectTimeout bounds recording a disconnection after the stream
	// ended.
	disconnectTimeout = 10 * time.Second
)

// serverOptions are the gRPC server options for agents: TLS with the CA's
// server certificate (client certificates verified when given) and keepalive
// that survives idle load balancers.
func serverOptions(ca *CA) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(ca.ServerTLSConfig())),
		// An agent's heartbeats keep its connection busy, and the hub
		// closes a stream silent for three heartbeat intervals; the PING
		// after keepaliveTime without a read is for a connection that
		// never sent anything. The timer behind it wakes once per
		// keepaliveTime on every connection, which at 30 s was a tenth
		// of an idle master's work.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// An idle agent's connection should cost little: reads go through
		// 4 KiB instead of 32 KiB (what agents send is mostly small; a large
		// log batch is read past the buffer); write buffers are pooled by
		// gRPC already.
		grpc.ReadBufferSize(4 * 1024),
		// Fixed flow-control windows: gRPC otherwise estimates each
		// connection's bandwidth with a PING (and a WINDOW_UPDATE) after
		// every message it receives, which for a heartbeat triples the
		// packets and wake-ups. 1 MiB lets a log batch through at once.
		grpc.StaticStreamWindowSize(flowWindow),
		grpc.StaticConnWindowSize(flowWindow),
	}
}

// keepaliveTime is how long a connection may go without a read before the
// master pings the agent.
const keepaliveTime = 5 * time.Minute

// flowWindow is the HTTP/2 flow-control window of the agents' streams and
// connections, both ways.
const flowWindow = 1 << 20

// grpcServer is the AgentService.
type grpcServer struct {
	agentv1.UnimplementedAgentServiceServer
	svc *Service
	hub *Hub
}

var _ agentv1.AgentServiceServer = (*grpcServer)(nil)

// peerCertificate returns the verified client certificate of the caller, nil
// when it presented none.
func peerCertificate(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// peerIP returns the caller's IP address.
func peerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return ""
	}
	return host
}

// Stream is an agent's control channel:
//
//  1. The first message must be a RegistrationRequest, within 30 seconds.
//     With a token it registers the agent (the answer carries its client
//     certificate and the CA, and, when the request had no csr_pem, the
//     private key generated for it); without one, the agent is identified by
//     its client certificate. A refusal is answered with success=false and
//     the reason, then the stream ends (PermissionDenied for the registration
//     ACL, Unauthenticated otherwise).
//  2. The agent is marked connected on this replica; the answer carries its
//     id and the heartbeat interval; its current configuration follows at
//     once, then any pending command.
//  3. Health reports, configuration statuses and command results are recorded
//     as they come; access-log and error-log batches are handed to
//     Options.LogsFunc and acknowledged once stored; metrics batches are
//     stored through Options.MetricsFunc (events are accepted and ignored
//     for now). The hub pushes configurations and commands.
//  4. The stream ends when the agent closes it, or the hub drops it: agent
//     deleted (PermissionDenied), superseded by a newer stream of the agent
//     (Aborted), silent for three heartbeats or master shutting down
//     (Unavailable). The agent is then marked offline unless it already
//     reconnected.
func (g *grpcServer) Stream(stream agentv1.AgentService_StreamServer) error {
	ctx := stream.Context()
	first, err := recvFirst(stream)
	if err != nil {
		return err
	}
	reg := first.GetRegistration()
	if reg == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a registration")
	}
	streamID := uuid.New()
	cd, err := g.svc.connect(ctx, connectParams{
		Req: reg, Leaf: peerCertificate(ctx), PeerIP: peerIP(ctx), Replica: g.hub.replica, StreamID: streamID,
	})
	var ref *refusal
	if errors.As(err, &ref) {
		_ = stream.Send(&agentv1.MasterMessage{
			Timestamp: g.svc.now().Unix(),
			Payload: &agentv1.MasterMessage_RegistrationResponse{RegistrationResponse: &agentv1.RegistrationResponse{
				Success: false, ErrorMessage: ref.reason,
			}},
		})
		code := codes.Unauthenticated
		if ref.permission {
			code = codes.PermissionDenied
		}
		return status.Error(code, ref.reason)
	}
	if err != nil {
		g.hub.logger.ErrorContext(ctx, "agents: accept stream", "error", err)
		return status.Error(codes.Internal, "registration failed")
	}
	c := g.hub.newConn(stream, cd, streamID)
	finish := func(reason string) {
		g.hub.remove(c)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), disconnectTimeout)
		defer cancel()
		if err := g.svc.disconnect(dctx, c.agentID, c.workspaceID, c.orgID, streamID, reason); err != nil {
			g.hub.logger.ErrorContext(dctx, "agents: record disconnection", "agent_id", c.agentID, "error", err)
		}
	}
	if !g.hub.add(c) {
		finish(ReasonClosed)
		return status.Error(codes.Unavailable, "master shutting down")
	}
	resp := &agentv1.RegistrationResponse{
		AgentId: cd.Agent.ID.String(), Success: true,
		HeartbeatIntervalSeconds: int64(g.svc.heartbeat / time.Second),
	}
	if cd.CertificatePEM != "" {
		resp.ClientCertificatePem, resp.CaCertificatePem = cd.CertificatePEM, g.svc.ca.CertificatePEM()
		// Set only when the agent sent no CSR: the key generated for it,
		// which exists nowhere else once this message is sent.
		resp.ClientPrivateKeyPem = cd.PrivateKeyPEM
	}
	err = stream.Send(&agentv1.MasterMessage{
		Timestamp: g.svc.now().Unix(),
		Payload:   &agentv1.MasterMessage_RegistrationResponse{RegistrationResponse: resp},
	})
	if err != nil {
		c.close(ReasonClosed)
		finish(ReasonClosed)
		return err
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.ctx = wctx
	c.force.Store(true)
	c.sender.start()
	c.want(wantConfig | wantCommands)
	c.worker.start()
	received := make(chan error, 1)
	go func() { received <- g.recvLoop(wctx, c) }()

	var recvErr error
	select {
	case recvErr = <-received:
		c.close(ReasonClosed)
	case <-c.done:
	}
	reason := c.reason
	cancel()
	c.worker.stop(-1)
	c.sender.stop(senderGrace)
	eventReason := reason
	if reason == reasonShutdown {
		eventReason = ReasonClosed
	}
	finish(eventReason)
	g.hub.observed("closed", c.agentID)
	switch reason {
	case ReasonDeleted:
		return status.Error(codes.PermissionDenied, "agent deleted")
	case ReasonReplaced:
		return status.Error(codes.Aborted, "stream superseded: the agent reconnected, was re-registered or marked offline")
	case ReasonTimeout:
		return status.Error(codes.Unavailable, "no health report for three heartbeat intervals")
	case reasonShutdown:
		return status.Error(codes.Unavailable, "master shutting down")
	}
	if recvErr != nil && !errors.Is(recvErr, io.EOF) && status.Code(recvErr) != codes.Canceled {
		return recvErr
	}
	return nil
}

// recvFirst receives the first message within registrationTimeout.
func recvFirst(stream agentv1.AgentService_StreamServer) (*agentv1.AgentMessage, error) {
	type result struct {
		m   *agentv1.AgentMessage
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		ch <- result{m, err}
	}()
	t := time.NewTimer(registrationTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-t.C:
		return nil, status.Error(codes.DeadlineExceeded, "no registration message within 30 seconds")
	}
}

// recvLoop records what the agent sends until the stream ends.
func (g *grpcServer) recvLoop(ctx context.Context, c *conn) error {
	for {
		m, err := c.stream.Recv()
		if err != nil {
			return err
		}
		c.seen()
		switch p := m.GetPayload().(type) {
		case *agentv1.AgentMessage_Health:
			// Stored in a batch, which reports it observed.
			g.hub.health.add(streamHealth{conn: c, rep: p.Health})
			continue
		case *agentv1.AgentMessage_ConfigStatus:
			c.onStatus(p.ConfigStatus)
			continue
		case *agentv1.AgentMessage_CommandResult:
			if err = g.svc.recordCommandResult(ctx, c.agentID, p.CommandResult); err == nil {
				if id, perr := uuid.Parse(p.CommandResult.GetCommandId()); perr == nil {
					g.hub.commandFinished(id)
				}
			}
		case *agentv1.AgentMessage_AcmeChallengeStatus:
			err = g.hub.acmeStatus(ctx, c.agentID, p.AcmeChallengeStatus)
		case *agentv1.AgentMessage_Registration:
			g.hub.logger.WarnContext(ctx, "agents: registration on an established stream ignored", "agent_id", c.agentID)
		case *agentv1.AgentMessage_AccessLogs:
			g.handLogs(ctx, c, LogBatch{Access: p.AccessLogs})
		case *agentv1.AgentMessage_Logs:
			g.handLogs(ctx, c, LogBatch{Errors: p.Logs})
		case *agentv1.AgentMessage_Metrics:
			if g.svc.metricsFunc != nil {
				err = g.svc.metricsFunc(ctx, MetricsBatch{AgentID: c.agentID, WorkspaceID: c.workspaceID, OrgID: c.orgID, Batch: p.Metrics})
			}
		default:
			// Events are accepted and not stored yet.
		}
		if errors.Is(err, errGone) {
			c.close(ReasonReplaced)
			return err
		}
		if err != nil && ctx.Err() == nil {
			g.hub.logger.ErrorContext(ctx, "agents: record agent message", "agent_id", c.agentID, "error", err)
		}
		g.hub.observed("message", c.agentID)
	}
}

// handLogs passes a log batch to Options.LogsFunc, which queues it and
// returns at once: the receive loop never waits for logs to be stored. The
// acknowledgement goes back on the stream when the batch is stored (or
// refused); without a LogsFunc the batch is refused so the agent keeps it.
func (g *grpcServer) handLogs(ctx context.Context, c *conn, b LogBatch) {
	b.AgentID, b.WorkspaceID, b.OrgID = c.agentID, c.workspaceID, c.orgID
	b.Ack = func(a *agentv1.Ack) bool {
		return c.send(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_Ack{Ack: a}})
	}
	if g.svc.logsFunc == nil {
		if id := b.BatchID(); id != "" {
			b.Ack(&agentv1.Ack{MessageId: id, Success: false, ErrorMessage: "this master does not store logs"})
		}
		return
	}
	g.svc.logsFunc(ctx, b)
}

// identifyUnary identifies the caller of a unary RPC by its client
// certificate.
func (g *grpcServer) identifyUnary(ctx context.Context) (agentRow, error) {
	ag, err := g.svc.identify(ctx, peerCertificate(ctx))
	var ref *refusal
	if errors.As(err, &ref) {
		return agentRow{}, status.Error(codes.Unauthenticated, ref.reason)
	}
	if err != nil {
		g.hub.logger.ErrorContext(ctx, "agents: identify agent", "error", err)
		return agentRow{}, status.Error(codes.Internal, "identify agent")
	}
	return ag, nil
}

// ReportHealth records a health report from an agent identified by its
// client certificate.
func (g *grpcServer) ReportHealth(ctx context.Context, rep *agentv1.HealthReport) (*agentv1.Ack, error) {
	ag, err := g.identifyUnary(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.svc.recordHealth(ctx, ag.ID, nil, rep); err != nil {
		if errors.Is(err, errGone) {
			return nil, status.Error(codes.Unauthenticated, RefusedUnknownAgent)
		}
		g.hub.logger.ErrorContext(ctx, "agents: record health", "agent_id", ag.ID, "error", err)
		return nil, status.Error(codes.Internal, "record health")
	}
	return &agentv1.Ack{Success: true}, nil
}

// ReportMetrics stores a metric batch from an agent identified by its client
// certificate through Options.MetricsFunc (without one it is accepted and
// dropped).
func (g *grpcServer) ReportMetrics(ctx context.Context, b *agentv1.MetricsBatch) (*agentv1.Ack, error) {
	ag, err := g.identifyUnary(ctx)
	if err != nil {
		return nil, err
	}
	if g.svc.metricsFunc != nil {
		if err := g.svc.metricsFunc(ctx, MetricsBatch{AgentID: ag.ID, WorkspaceID: ag.WorkspaceID, Batch: b}); err != nil {
			g.hub.logger.ErrorContext(ctx, "agents: store metrics", "agent_id", ag.ID, "error", err)
			return nil, status.Error(codes.Internal, "store metrics")
		}
	}
	return &agentv1.Ack{Success: true}, nil
}
