package agents

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestGRPC_Registration(t *testing.T) {
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
		if resp.GetClientPrivateKeyPem() != "" {
			t.Fatalf("an agent that sent a CSR got a private key")
		}
		if row.State != StateOnline || row.Hostname != "web-01.internal" || row.IPAddress != "10.0.1.10" || row.PeerAddress != "127.0.0.1" || row.Version != "0.1.0" ||
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

	t.Run("PolicyDenialBurnsTheToken", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.as(t, "admin", http.MethodPut, b.agentsPath()+"/registration-policy",
			map[string]any{"allow": []string{"web-*.internal"}, "deny": []string{"web-bad*"}}, http.StatusOK, nil)
		tok := b.token(t, "web", nil)
		refused(t, b, tok.Token, "db-1.internal", codes.PermissionDenied, RefusedHostnameDeny)
		// The same token with an allowed hostname does not slip through.
		refused(t, b, tok.Token, "WEB-1.internal", codes.PermissionDenied, RefusedTokenBurned)
		if r := b.row(t, tok.AgentID); r.State != StatePending || r.CertSerial != nil || r.Hostname != "" {
			t.Fatalf("a denied registration registered the agent: %+v", r)
		}
		// The operator sees why, in the API and the audit log.
		var got map[string]any
		b.as(t, "viewer", http.MethodGet, agentPath(tok.AgentID), nil, http.StatusOK, &got)
		for _, want := range []string{`hostname "db-1.internal" matches no allow pattern`, "peer address 127.0.0.1", "token is burned"} {
			if msg, _ := got["registration_error"].(string); !strings.Contains(msg, want) {
				t.Fatalf("registration_error = %q, want it to say %q", msg, want)
			}
		}
		e.browser(t, "viewer").do(t, http.MethodGet, "/agents/"+tok.AgentID.String(), nil).
			expect(t, http.StatusOK, `id="registration-error"`, "matches no allow pattern")
		var audits int64
		b.db.Model(&app.AuditEntry{}).Where("object_id = ? AND action = ?", tok.AgentID.String(), "agent.register_refused").Count(&audits)
		if audits != 1 {
			t.Fatalf("%d agent.register_refused audit entries, want 1 (the burned token's retry is not a policy decision)", audits)
		}
		// A new token with an allowed hostname registers, and clears the error.
		var fresh RegistrationToken
		b.as(t, "admin", http.MethodPost, agentPath(tok.AgentID)+"/tokens", map[string]any{}, http.StatusCreated, &fresh)
		a := newAgentClient(t, b.addr, b.svc.CA())
		if _, resp := a.register(t, fresh.Token, "WEB-1.internal"); !resp.GetSuccess() {
			t.Fatalf("allowed hostname with a new token refused: %s", resp.GetErrorMessage())
		}
		if r := b.row(t, tok.AgentID); r.RegistrationError != "" || r.State != StateOnline {
			t.Fatalf("after a successful registration the agent is %+v", r)
		}
	})

	t.Run("PolicyChecksThePeerAddressNotTheReportedOne", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		// The test agents connect from 127.0.0.1 and report 10.0.1.10.
		for _, c := range []struct {
			name   string
			policy map[string]any
			reason string
		}{
			{"DenyPeerCIDR", map[string]any{"deny": []string{"127.0.0.0/8"}}, RefusedAddressDeny},
			{"AllowReportedAddressOnly", map[string]any{"allow": []string{"10.0.1.0/24"}}, RefusedAddressDeny},
			{"AllowPeerButDenyHostname", map[string]any{"allow": []string{"127.0.0.1"}, "deny": []string{"evil*"}}, RefusedHostnameDeny},
			{"AllowPeer", map[string]any{"allow": []string{"127.0.0.1/32", "*.internal"}}, ""},
		} {
			b.as(t, "admin", http.MethodPut, b.agentsPath()+"/registration-policy", c.policy, http.StatusOK, nil)
			tok := b.token(t, c.name, nil)
			host := "web.internal"
			if c.reason == RefusedHostnameDeny {
				host = "evil.internal"
			}
			if c.reason != "" {
				refused(t, b, tok.Token, host, codes.PermissionDenied, c.reason)
				if r := b.row(t, tok.AgentID); !strings.Contains(r.RegistrationError, "peer address 127.0.0.1") {
					t.Fatalf("%s: registration_error = %q", c.name, r.RegistrationError)
				}
				continue
			}
			if _, resp := newAgentClient(t, b.addr, b.svc.CA()).register(t, tok.Token, host); !resp.GetSuccess() {
				t.Fatalf("%s: refused: %s", c.name, resp.GetErrorMessage())
			}
		}
	})

	t.Run("PolicyChecksTheTokensLabels", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		b.as(t, "admin", http.MethodPut, b.agentsPath()+"/registration-policy",
			map[string]any{"allow": []string{"env=prod*"}, "deny": []string{"tier=db"}}, http.StatusOK, nil)
		// Labels the agent claims are not what the policy sees.
		refused(t, b, b.token(t, "staging", map[string]string{"env": "staging"}).Token, "web.internal", codes.PermissionDenied, RefusedLabelsDeny)
		refused(t, b, b.token(t, "db", map[string]string{"env": "production", "tier": "db"}).Token, "web.internal", codes.PermissionDenied, RefusedLabelsDeny)
		if _, resp := newAgentClient(t, b.addr, b.svc.CA()).register(t, b.token(t, "web", map[string]string{"env": "production"}).Token, "web.internal"); !resp.GetSuccess() {
			t.Fatalf("labels allowed, refused: %s", resp.GetErrorMessage())
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

	t.Run("SeedOnlyClientRegistersWithoutCSR", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		tok := b.token(t, "seed", map[string]string{"env": "production"})
		// A client built only from the generated proto, sending the
		// contract's fields and nothing else.
		dial := func(t *testing.T, cfg *tls.Config) agentv1.AgentService_StreamClient {
			t.Helper()
			cc, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			t.Cleanup(cancel)
			stream, err := agentv1.NewAgentServiceClient(cc).Stream(ctx)
			if err != nil {
				t.Fatalf("open stream: %v", err)
			}
			return stream
		}
		hello := func(t *testing.T, stream agentv1.AgentService_StreamClient, token string) *agentv1.RegistrationResponse {
			t.Helper()
			err := stream.Send(&agentv1.AgentMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.AgentMessage_Registration{Registration: &agentv1.RegistrationRequest{
				Token: token, Hostname: "seed.internal", IpAddress: "192.0.2.7", Version: "0.1.0",
				Capabilities: []string{"http2"}, Labels: map[string]string{"k": "v"}, DeploymentMode: agentv1.DeploymentMode_STANDALONE,
			}}})
			if err != nil {
				t.Fatalf("send registration: %v", err)
			}
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("receive registration response: %v", err)
			}
			return m.GetRegistrationResponse()
		}
		nextConfig := func(t *testing.T, stream agentv1.AgentService_StreamClient) *agentv1.ConfigUpdate {
			t.Helper()
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("receive after registration: %v", err)
			}
			if m.GetConfigUpdate() == nil {
				t.Fatalf("after registration got %T, want a configuration update", m.GetPayload())
			}
			return m.GetConfigUpdate()
		}
		serverOnly := &tls.Config{RootCAs: b.svc.CA().Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}

		stream := dial(t, serverOnly)
		resp := hello(t, stream, tok.Token)
		if !resp.GetSuccess() || resp.GetAgentId() != tok.AgentID.String() || resp.GetClientCertificatePem() == "" ||
			resp.GetClientPrivateKeyPem() == "" || resp.GetCaCertificatePem() != b.svc.CA().CertificatePEM() {
			t.Fatalf("registration answer = %v", resp)
		}
		if u := nextConfig(t, stream); u.GetChecksum() == "" {
			t.Fatalf("first configuration = %v", u)
		}
		pair, err := tls.X509KeyPair([]byte(resp.GetClientCertificatePem()), []byte(resp.GetClientPrivateKeyPem()))
		if err != nil {
			t.Fatalf("the returned certificate and key are not a pair: %v", err)
		}
		if k, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
			t.Fatalf("generated key is %T, want ECDSA P-256", pair.PrivateKey)
		}
		row := b.row(t, tok.AgentID)
		if leaf, _ := x509.ParseCertificate(pair.Certificate[0]); row.CertSerial == nil || *row.CertSerial != serialHex(leaf.SerialNumber) ||
			leaf.Subject.CommonName != tok.AgentID.String() {
			t.Fatalf("recorded serial %v does not name the returned certificate", row.CertSerial)
		}
		// The key is not kept on the master: no table holds it.
		keyBody := strings.Split(resp.GetClientPrivateKeyPem(), "\n")[1]
		for _, table := range []string{"agents", "agent_tokens", "audit_log"} {
			var n int64
			if err := b.db.Table(table+" AS t").Where("t::text LIKE ?", "%"+keyBody+"%").Count(&n).Error; err != nil || n != 0 {
				t.Fatalf("%s holds the private key (%d rows, %v)", table, n, err)
			}
		}
		stream.CloseSend()
		b.events.await(t, EventAgentDisconnected, tok.AgentID, nil)

		// The pair is the credential for a mutual-TLS reconnect, trusting the
		// CA the answer carried.
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(resp.GetCaCertificatePem())) {
			t.Fatal("CA certificate in the answer does not parse")
		}
		stream2 := dial(t, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}})
		resp2 := hello(t, stream2, "")
		if !resp2.GetSuccess() || resp2.GetAgentId() != tok.AgentID.String() || resp2.GetClientPrivateKeyPem() != "" {
			t.Fatalf("mutual-TLS reconnect answer = %v", resp2)
		}
		nextConfig(t, stream2)

		// The token stays single-use.
		stream3 := dial(t, serverOnly)
		if resp3 := hello(t, stream3, tok.Token); resp3.GetSuccess() || resp3.GetErrorMessage() != RefusedTokenUsed {
			t.Fatalf("reused token answered %v", resp3)
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
		b.events.await(t, EventAgentDisconnected, a.id, func(ev app.Event) bool { return ev.Data["reason"] == ReasonClosed })
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
		b.events.await(t, EventAgentDisconnected, a.id, func(ev app.Event) bool { return ev.Data["reason"] == ReasonDeleted })
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
		certPEM, keyPEM := apptest.SelfSignedCert(t, "impostor")
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
