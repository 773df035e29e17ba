package agents

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestStream_Registration(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("RegistersWithTokenAndGetsIdentity", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web-01", map[string]string{"env": "production"})
		a := newAgentClient(t, b.addr, b.svc.CA())
		s, resp := a.register(t, tok.Token, "web-01.internal")
		if !resp.GetSuccess() || resp.GetAgentId() != tok.AgentID.String() || resp.GetHeartbeatIntervalSeconds() != 10 {
			t.Fatalf("registration response = %v", resp)
		}
		if resp.GetCaCertificatePem() != b.svc.CA().CertificatePEM() {
			t.Fatalf("the response does not carry the CA certificate")
		}
		block, _ := pem.Decode([]byte(resp.GetClientCertificatePem()))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("parse client certificate: %v", err)
		}
		if cert.Subject.CommonName != tok.AgentID.String() || len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:nxmesh:agent:"+tok.AgentID.String() {
			t.Fatalf("client certificate names %q %v", cert.Subject.CommonName, cert.URIs)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: b.svc.CA().Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("client certificate does not verify against the CA: %v", err)
		}
		if life := time.Until(cert.NotAfter); life < 364*24*time.Hour || life > 366*24*time.Hour {
			t.Fatalf("client certificate lives %v, want a year", life)
		}
		u := s.config(t)
		if u.GetVersion() != 0 || len(u.GetVirtualHosts()) != 0 || u.GetChecksum() == "" || !u.GetAgentPolicy().GetAutoRestart() {
			t.Fatalf("first configuration = %v", u)
		}

		row := b.row(t, tok.AgentID)
		if row.State != StateOnline || row.Hostname != "web-01.internal" || row.IPAddress != "10.0.1.10" || row.Version != "0.1.0" ||
			row.DeploymentMode != "docker_sidecar" || row.CertSerial == nil || *row.CertSerial != serialHex(cert.SerialNumber) ||
			row.ConnectedReplica != "replica-a" || row.RegisteredAt == nil {
			t.Fatalf("agent row after registration = %+v", row)
		}
		if row.Labels["env"] != "production" || row.Labels["ignored"] != "" {
			t.Fatalf("labels = %v; the admin's labels stay, the agent's are ignored", row.Labels)
		}
		var used tokenRow
		if err := b.db.Take(&used, "agent_id = ?", tok.AgentID).Error; err != nil || used.UsedAt == nil {
			t.Fatalf("token not used up: %+v %v", used, err)
		}
		ev := b.events.await(t, EventAgentConnected, tok.AgentID, nil)
		if ev.Data["hostname"] != "web-01.internal" || ev.Data["ip_address"] != "10.0.1.10" || ev.WorkspaceID != b.ws || ev.OrgID != b.orgID {
			t.Fatalf("agent.connected = %+v", ev)
		}
	})

	refused := func(t *testing.T, b *bundle, token, hostname string, code codes.Code, reason string) {
		t.Helper()
		a := newAgentClient(t, b.addr, b.svc.CA())
		s, resp := a.register(t, token, hostname)
		if resp.GetSuccess() || resp.GetErrorMessage() != reason {
			t.Fatalf("registration answer = %v, want refusal %q", resp, reason)
		}
		if st := s.ended(t); st.Code() != code || st.Message() != reason {
			t.Fatalf("stream ended with %v, want %v %q", st, code, reason)
		}
	}

	t.Run("RefusesUsedToken", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web-01", nil)
		a := newAgentClient(t, b.addr, b.svc.CA())
		if _, resp := a.register(t, tok.Token, "web-01"); !resp.GetSuccess() {
			t.Fatalf("first registration refused: %s", resp.GetErrorMessage())
		}
		refused(t, b, tok.Token, "web-02", codes.Unauthenticated, RefusedTokenUsed)
	})

	t.Run("RefusesExpiredToken", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web-01", nil)
		if err := b.db.Model(&tokenRow{}).Where("agent_id = ?", tok.AgentID).Update("expires_at", time.Now().Add(-time.Minute)).Error; err != nil {
			t.Fatal(err)
		}
		refused(t, b, tok.Token, "web-01", codes.Unauthenticated, RefusedTokenExpired)
		if r := b.row(t, tok.AgentID); r.State != StatePending || r.CertSerial != nil {
			t.Fatalf("a refused registration changed the agent: %+v", r)
		}
	})

	t.Run("RefusesRevokedToken", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web-01", nil)
		b.as(t, "admin", http.MethodDelete, agentPath(tok.AgentID)+"/tokens", nil, http.StatusNoContent, nil)
		refused(t, b, tok.Token, "web-01", codes.Unauthenticated, RefusedTokenRevoked)
	})

	t.Run("RefusesUnknownToken", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		refused(t, b, TokenPrefix+"not-a-token", "web-01", codes.Unauthenticated, RefusedUnknownToken)
	})

	t.Run("RefusesHostnameDeniedByPolicy", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.as(t, "admin", http.MethodPut, b.agentsPath()+"/registration-policy",
			map[string]any{"allow": []string{"web-*.internal"}, "deny": []string{"web-bad*"}}, http.StatusOK, nil)
		tok := b.token(t, "web", nil)
		refused(t, b, tok.Token, "web-bad-1.internal", codes.PermissionDenied, RefusedHostnameDeny)
		refused(t, b, tok.Token, "db-1.internal", codes.PermissionDenied, RefusedHostnameDeny)
		// The token survives refusals by policy.
		a := newAgentClient(t, b.addr, b.svc.CA())
		if _, resp := a.register(t, tok.Token, "WEB-1.internal"); !resp.GetSuccess() {
			t.Fatalf("allowed hostname refused: %s", resp.GetErrorMessage())
		}
	})

	t.Run("RefusesInvalidCSR", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "web", nil)
		a := newAgentClient(t, b.addr, b.svc.CA())
		s := a.open(t, false)
		req := a.hello("web")
		req.Token, req.CsrPem = tok.Token, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
		if resp := s.handshake(t, req); resp.GetSuccess() || resp.GetErrorMessage() != RefusedBadCSR {
			t.Fatalf("answer = %v", resp)
		}
		s.ended(t)
		var used tokenRow
		if err := b.db.Take(&used, "agent_id = ?", tok.AgentID).Error; err != nil || used.UsedAt != nil {
			t.Fatalf("a refused registration used the token: %+v %v", used, err)
		}
	})

	t.Run("RefusesFirstMessageOtherThanRegistration", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		s := newAgentClient(t, b.addr, b.svc.CA()).open(t, false)
		s.health(t, &agentv1.HealthReport{})
		if st := s.ended(t); st.Code() != codes.InvalidArgument {
			t.Fatalf("stream ended with %v", st)
		}
	})

	t.Run("ReconnectsWithCertificateAndGetsCurrentConfigAtOnce", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web-01", nil)
		closed := b.obs.watch(t, a.id)
		s.cancel()
		awaitKind(t, closed, "closed")
		if r := b.row(t, a.id); r.State != StateOffline || r.StreamID != nil {
			t.Fatalf("after the stream closed the agent is %s (%v)", r.State, r.StreamID)
		}
		b.events.await(t, EventAgentDisconnected, a.id, func(ev Event) bool { return ev.Data["reason"] == ReasonClosed })
		b.vhost(t, "shop", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})

		s2, resp := a.connect(t)
		if !resp.GetSuccess() || resp.GetAgentId() != a.id.String() || resp.GetClientCertificatePem() != "" {
			t.Fatalf("reconnect answer = %v", resp)
		}
		u := s2.config(t)
		if got := names(u); len(got) != 1 || got[0] != "shop" || u.GetVersion() != 1 {
			t.Fatalf("reconnect got %v at version %d", got, u.GetVersion())
		}
		if r := b.row(t, a.id); r.State != StateOnline || r.Hostname != "reconnected.internal" {
			t.Fatalf("after reconnecting the agent is %+v", r)
		}
	})

	t.Run("RenewsCertificateFromCSRInHello", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web-01", nil)
		s.cancel()
		old := b.row(t, a.id).CertSerial
		s2 := a.open(t, true)
		req := a.hello("web-01")
		req.CsrPem = a.csr(t)
		resp := s2.handshake(t, req)
		if !resp.GetSuccess() || resp.GetClientCertificatePem() == "" || resp.GetCaCertificatePem() == "" {
			t.Fatalf("renewal answer = %v", resp)
		}
		if r := b.row(t, a.id); r.CertSerial == nil || *r.CertSerial == *old {
			t.Fatalf("serial not renewed")
		}
	})

	t.Run("RefusesReconnectWithoutCertificate", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a := newAgentClient(t, b.addr, b.svc.CA())
		s := a.open(t, false)
		if resp := s.handshake(t, a.hello("web")); resp.GetSuccess() || resp.GetErrorMessage() != RefusedNoCertificate {
			t.Fatalf("answer = %v", resp)
		}
		if st := s.ended(t); st.Code() != codes.Unauthenticated {
			t.Fatalf("stream ended with %v", st)
		}
	})

	t.Run("DeletedAgentIsDroppedAndRefused", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web-01", nil)
		b.as(t, "admin", http.MethodDelete, agentPath(a.id), nil, http.StatusNoContent, nil)
		if st := s.ended(t); st.Code() != codes.PermissionDenied {
			t.Fatalf("stream of the deleted agent ended with %v", st)
		}
		b.events.await(t, EventAgentDisconnected, a.id, func(ev Event) bool { return ev.Data["reason"] == ReasonDeleted })
		s2, resp := a.connect(t)
		if resp.GetSuccess() || resp.GetErrorMessage() != RefusedUnknownAgent {
			t.Fatalf("reconnect of a deleted agent answered %v", resp)
		}
		if st := s2.ended(t); st.Code() != codes.Unauthenticated {
			t.Fatalf("stream ended with %v", st)
		}
	})

	t.Run("ReRegistrationRevokesTheOldCertificate", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web-01", nil)
		var tok struct {
			Token   string    `json:"token"`
			AgentID uuid.UUID `json:"agent_id"`
		}
		b.as(t, "admin", http.MethodPost, agentPath(a.id)+"/tokens", map[string]any{"expires_in_hours": 2}, http.StatusCreated, &tok)
		if tok.AgentID != a.id {
			t.Fatalf("new token for agent %s", tok.AgentID)
		}
		fresh := newAgentClient(t, b.addr, b.svc.CA())
		_, resp := fresh.register(t, tok.Token, "web-01")
		if !resp.GetSuccess() || fresh.id != a.id {
			t.Fatalf("re-registration = %v", resp)
		}
		if st := s.ended(t); st.Code() != codes.Aborted {
			t.Fatalf("the old stream ended with %v, want Aborted", st)
		}
		s2, resp := a.connect(t)
		if resp.GetSuccess() || resp.GetErrorMessage() != RefusedCertRevoked {
			t.Fatalf("old certificate answered %v", resp)
		}
		s2.ended(t)
	})

	t.Run("RefusesCertificateFromAnotherCA", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		certPEM, keyPEM := selfSigned(t, "impostor")
		pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: b.svc.CA().Pool(), ServerName: "127.0.0.1",
			// Sent even though the server asks for certificates of its CA.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil },
		})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err = agentv1.NewAgentServiceClient(cc).ReportHealth(ctx, &agentv1.HealthReport{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("handshake with a foreign certificate: %v", err)
		}
	})

	t.Run("UnaryHealthNeedsIdentity", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web-01", nil)
		s.cancel()
		for _, withCert := range []bool{false, true} {
			cfg := &tls.Config{RootCAs: b.svc.CA().Pool(), ServerName: "127.0.0.1"}
			if withCert {
				cfg.Certificates = []tls.Certificate{*a.cert}
			}
			cc, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			client := agentv1.NewAgentServiceClient(cc)
			ack, err := client.ReportHealth(ctx, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true, ActiveConnections: 7}})
			_, merr := client.ReportMetrics(ctx, &agentv1.MetricsBatch{})
			cancel()
			cc.Close()
			if !withCert {
				if status.Code(err) != codes.Unauthenticated || status.Code(merr) != codes.Unauthenticated {
					t.Fatalf("anonymous unary calls: %v, %v", err, merr)
				}
				continue
			}
			if err != nil || !ack.GetSuccess() || merr != nil {
				t.Fatalf("identified unary calls: %v %v %v", ack, err, merr)
			}
		}
		if r := b.row(t, a.id); r.Health == nil || r.Health.ActiveConnections != 7 {
			t.Fatalf("unary health not stored: %+v", r.Health)
		}
	})
}
