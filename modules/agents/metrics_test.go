package agents

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// TestGRPC_MetricsFuncReceivesStreamAndUnaryBatches serves a replica whose
// Options.MetricsFunc records what it gets: a batch on the stream and one
// through ReportMetrics reach it with the agent's identity, and its error
// answers ReportMetrics with Internal.
func TestGRPC_MetricsFuncReceivesStreamAndUnaryBatches(t *testing.T) {
	e := newEnv(t)
	got := make(chan MetricsBatch, 4)
	deps := e.app.Deps
	deps.Events = e.events
	mod, err := New(deps, Options{VHosts: e.vh, Certs: e.certs, ReplicaID: "metrics",
		MetricsFunc: func(_ context.Context, b MetricsBatch) error {
			if b.Batch.GetTimestamp() == 13 {
				return errors.New("storage is down")
			}
			got <- b
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(mod.GRPCServerOptions()...)
	mod.GRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = mod.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran; gs.Stop(); <-served })
	select {
	case <-mod.hub.Ready():
	case <-time.After(wait):
		t.Fatal("hub does not listen")
	}

	b := e.setup(t)
	tok := b.token(t, "web-01", nil)
	a := newAgentClient(t, lis.Addr().String(), mod.svc.CA())
	s, resp := a.register(t, tok.Token, "web-01.internal")
	if !resp.GetSuccess() {
		t.Fatalf("register: %s", resp.GetErrorMessage())
	}
	s.config(t)
	receive := func(ts int64) MetricsBatch {
		t.Helper()
		select {
		case m := <-got:
			if m.AgentID != a.id || m.WorkspaceID != b.ws || m.Batch.GetTimestamp() != ts || len(m.Batch.GetMetrics()) != 1 {
				t.Fatalf("batch %+v, want agent %s of workspace %s at %d", m, a.id, b.ws, ts)
			}
			return m
		case <-time.After(wait):
			t.Fatalf("no metrics batch at %d", ts)
		}
		return MetricsBatch{}
	}
	one := []*agentv1.Metric{{Name: "host.cpu.percent", Value: 3, Type: agentv1.MetricType_GAUGE}}
	s.send(t, &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_Metrics{Metrics: &agentv1.MetricsBatch{Timestamp: 5, Metrics: one}}})
	if m := receive(5); m.OrgID != b.orgID {
		t.Fatalf("stream batch of organization %s, want %s", m.OrgID, b.orgID)
	}

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: mod.svc.CA().Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{*a.cert}})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := agentv1.NewAgentServiceClient(cc)
	uctx, ucancel := context.WithTimeout(context.Background(), wait)
	defer ucancel()
	if ack, err := client.ReportMetrics(uctx, &agentv1.MetricsBatch{Timestamp: 9, Metrics: one}); err != nil || !ack.GetSuccess() {
		t.Fatalf("ReportMetrics: %v %v", ack, err)
	}
	receive(9)
	if _, err := client.ReportMetrics(uctx, &agentv1.MetricsBatch{Timestamp: 13, Metrics: one}); status.Code(err) != codes.Internal {
		t.Fatalf("ReportMetrics with a failing store: %v, want Internal", err)
	}
}
