package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/modules/certs"
	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

func TestGRPC_Config(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("PushesExactlyTheTargetedObjects", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		prod, ps, _ := b.online(t, "prod", map[string]string{"env": "production", "region": "eu"})
		staging, ss, _ := b.online(t, "staging", map[string]string{"env": "staging"})
		api := b.upstream(t, "api")
		b.upstream(t, "unused")

		// Creating an upstream changes neither agent's content: no push.
		b.vhost(t, "everyone", api.ID, vhosts.TargetAgents{Type: vhosts.TargetAll})
		for name, s := range map[string]*session{"prod": ps, "staging": ss} {
			u := s.config(t)
			if got := names(u); !slices.Equal(got, []string{"everyone"}) {
				t.Fatalf("%s got %v", name, got)
			}
			if len(u.GetUpstreams()) != 1 || u.GetUpstreams()[0].GetId() != api.ID.String() {
				t.Fatalf("%s got upstreams %v, want only the referenced one", name, u.GetUpstreams())
			}
			if u.GetVersion() != 3 || u.GetChecksum() != Checksum(u) || u.GetConfigId() == "" {
				t.Fatalf("%s got version %d checksum %s config %s", name, u.GetVersion(), u.GetChecksum(), u.GetConfigId())
			}
		}

		b.vhost(t, "prod-only", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetSelector, LabelSelector: "env=production,region!=us"})
		if got := names(ps.config(t)); !slices.Equal(got, []string{"everyone", "prod-only"}) {
			t.Fatalf("prod got %v", got)
		}
		b.vhost(t, "staging-by-id", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAgentList, AgentIDs: []string{staging.id.String()}})
		if got := names(ss.config(t)); !slices.Equal(got, []string{"everyone", "staging-by-id"}) {
			t.Fatalf("staging got %v (the selector host must not reach it)", got)
		}
		// Neither targeted change reached the other agent: the next message of
		// each is the next change that targets it.
		b.vhost(t, "last", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		if got := names(ps.config(t)); !slices.Equal(got, []string{"everyone", "last", "prod-only"}) {
			t.Fatalf("prod got %v", got)
		}
		if got := names(ss.config(t)); !slices.Equal(got, []string{"everyone", "last", "staging-by-id"}) {
			t.Fatalf("staging got %v", got)
		}
		// The push is recorded as the agent receives it.
		b.awaitDetail(t, prod.id, "desired version 6, pending", func(d AgentDetail) bool {
			return d.DesiredVersion == 6 && d.ApplyStatus == ApplyPending
		})
	})

	t.Run("ManyStreamsOfAWorkspaceAreComputedTogether", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		// More streams than precomputeMin: the hub computes their
		// configurations in one go, each with its own targets.
		var prod, staging []*session
		for i := range precomputeMin + 2 {
			env := map[bool]string{true: "production", false: "staging"}[i%2 == 0]
			_, s, _ := b.online(t, fmt.Sprintf("edge-%d", i), map[string]string{"env": env})
			if env == "production" {
				prod = append(prod, s)
			} else {
				staging = append(staging, s)
			}
		}
		b.vhost(t, "everyone", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		for _, s := range append(append([]*session{}, prod...), staging...) {
			if u := s.config(t); !slices.Equal(names(u), []string{"everyone"}) || u.GetChecksum() != Checksum(u) {
				t.Fatalf("got %v (checksum %s)", names(u), u.GetChecksum())
			}
		}
		b.vhost(t, "prod-only", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetSelector, LabelSelector: "env=production"})
		for _, s := range prod {
			if got := names(s.config(t)); !slices.Equal(got, []string{"everyone", "prod-only"}) {
				t.Fatalf("production agent got %v", got)
			}
		}
		b.vhost(t, "last", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		for _, s := range staging {
			// The production-only host never reached them.
			if got := names(s.config(t)); !slices.Equal(got, []string{"everyone", "last"}) {
				t.Fatalf("staging agent got %v", got)
			}
		}
	})

	t.Run("AgentsTargetedAlikeShareOneComputedConfig", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		ids := map[string]uuid.UUID{}
		for _, a := range []struct{ name, env string }{
			{"prod-1", "production"}, {"prod-2", "production"}, {"prod-listed", "production"},
			{"prod-manual", "production"}, {"stage-1", "staging"}, {"stage-2", "staging"},
		} {
			c, _, _ := b.online(t, a.name, map[string]string{"env": a.env})
			ids[a.name] = c.id
		}
		if err := b.db.Exec("UPDATE agents SET auto_restart = false WHERE id = ?", ids["prod-manual"]).Error; err != nil {
			t.Fatal(err)
		}
		b.vhost(t, "everyone", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		b.vhost(t, "prod", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetSelector, LabelSelector: "env=production"})
		b.vhost(t, "listed", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAgentList, AgentIDs: []string{ids["prod-listed"].String()}})
		all := make([]uuid.UUID, 0, len(ids))
		for _, id := range ids {
			all = append(all, id)
		}
		got, err := b.svc.DesiredConfigs(b.ctx, b.ws, all)
		if err != nil {
			t.Fatal(err)
		}
		// Each agent's update is exactly what it gets computed alone.
		for name, id := range ids {
			own, err := b.svc.DesiredConfig(b.ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got[id], own) {
				t.Errorf("%s: computed together %v, alone %v", name, got[id], own)
			}
		}
		for _, tc := range []struct {
			a, b   string
			shared bool
		}{
			{"prod-1", "prod-2", true},
			{"stage-1", "stage-2", true},
			{"prod-1", "stage-1", false},     // a selector tells them apart
			{"prod-1", "prod-listed", false}, // a list of agents
			{"prod-1", "prod-manual", false}, // the policy
		} {
			if shared := got[ids[tc.a]] == got[ids[tc.b]]; shared != tc.shared {
				t.Errorf("%s and %s share one update: %v, want %v", tc.a, tc.b, shared, tc.shared)
			}
		}
	})

	t.Run("CertificatesCarryTheirMaterial", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, s, _ := b.online(t, "web", nil)
		certPEM, keyPEM := apptest.SelfSignedCert(t, "shop.example.com")
		c, err := b.certs.Create(b.ctx, certs.CreateParams{WorkspaceID: b.ws, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.vh.CreateVirtualHost(b.ctx, b.ws, vhosts.VirtualHostInput{
			Name: "shop", ServerName: "shop.example.com", SSLEnabled: true, SSLCertificateID: c.ID.String(),
			Locations: []vhosts.Location{{Path: "/", ProxyPass: "http://10.0.0.1:8080"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		u := s.config(t)
		got := u.GetCertificates()[c.ID.String()]
		if len(u.GetCertificates()) != 1 || got.GetCertificatePem() != certPEM || got.GetPrivateKeyPem() != keyPEM || got.GetDomain() != "shop.example.com" {
			t.Fatalf("certificates = %v", u.GetCertificates())
		}
	})

	t.Run("PatchRetargetsTheAgentAtOnce", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web", map[string]string{"env": "staging"})
		b.vhost(t, "prod-only", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetSelector, LabelSelector: "env=production"})
		b.vhost(t, "everyone", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		if got := names(s.config(t)); !slices.Equal(got, []string{"everyone"}) {
			t.Fatalf("before relabelling: %v", got)
		}
		b.as(t, "admin", http.MethodPatch, agentPath(a.id), map[string]any{"labels": map[string]string{"env": "production"}}, http.StatusOK, nil)
		u := s.config(t)
		if got := names(u); !slices.Equal(got, []string{"everyone", "prod-only"}) {
			t.Fatalf("after relabelling: %v", got)
		}
		b.as(t, "admin", http.MethodPatch, agentPath(a.id), map[string]any{"auto_restart": false}, http.StatusOK, nil)
		u2 := s.config(t)
		if u2.GetAgentPolicy().GetAutoRestart() || u2.GetChecksum() == u.GetChecksum() || u2.GetVersion() != u.GetVersion() {
			t.Fatalf("after disabling auto-restart: policy %v checksum changed %v", u2.GetAgentPolicy(), u2.GetChecksum() != u.GetChecksum())
		}
	})

	t.Run("ReachesAnAgentOnAnotherReplica", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, addrB := e.replica(t, "replica-b-"+uuid.NewString()[:6])
		tok := b.token(t, "web", nil)
		a := newAgentClient(t, addrB, b.svc.CA())
		s, resp := a.register(t, tok.Token, "web")
		if !resp.GetSuccess() {
			t.Fatalf("register on replica B: %s", resp.GetErrorMessage())
		}
		s.config(t)
		if e.mod.Hub().Connected(a.id) {
			t.Fatalf("replica A holds a stream it never accepted")
		}
		// A change through the services, which know nothing of replica B.
		b.vhost(t, "shop", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		if got := names(s.config(t)); !slices.Equal(got, []string{"shop"}) {
			t.Fatalf("agent on replica B got %v", got)
		}
		// A relabel through replica A's API.
		b.as(t, "admin", http.MethodPatch, agentPath(a.id), map[string]any{"auto_restart": false}, http.StatusOK, nil)
		if u := s.config(t); u.GetAgentPolicy().GetAutoRestart() {
			t.Fatalf("policy change did not reach replica B")
		}
		// A reload through replica A's API is sent by replica B, and its
		// result wakes the request waiting on replica A.
		replied := make(chan int, 1)
		go func() {
			st, _ := b.do(t, b.tokens["operator"], http.MethodPost, agentPath(a.id)+"/reload", nil)
			replied <- st
		}()
		cmd := s.command(t)
		s.send(t, &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandResult{CommandResult: &agentv1.CommandResult{
			CommandId: cmd.GetCommandId(), Success: true, Message: "reloaded",
		}}})
		select {
		case st := <-replied:
			if st != http.StatusOK {
				t.Fatalf("reload through replica A: %d", st)
			}
		case <-time.After(wait):
			t.Fatalf("reload through replica A did not answer")
		}
		// A deletion through replica A's API drops the stream on replica B.
		b.as(t, "admin", http.MethodDelete, agentPath(a.id), nil, http.StatusNoContent, nil)
		if st := s.ended(t); st.Code() != codes.PermissionDenied {
			t.Fatalf("stream on replica B ended with %v", st)
		}
	})

	t.Run("ANewerStreamSupersedesTheOldOne", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, addrB := e.replica(t, "replica-b-"+uuid.NewString()[:6])
		a, s, _ := b.online(t, "web", nil)
		onB := &agentClient{t: t, addr: addrB, pool: a.pool, key: a.key, cert: a.cert, id: a.id}
		s2, resp := onB.connect(t)
		if !resp.GetSuccess() {
			t.Fatalf("reconnect on replica B: %s", resp.GetErrorMessage())
		}
		s2.config(t)
		if st := s.ended(t); st.Code() != codes.Aborted {
			t.Fatalf("old stream on replica A ended with %v", st)
		}
		if r := b.row(t, a.id); r.State != StateOnline || r.ConnectedReplica == "replica-a" {
			t.Fatalf("after moving replicas the agent is %s on %s", r.State, r.ConnectedReplica)
		}
	})

	t.Run("RecordsConfigStatusAndPublishesConfigApplied", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web", nil)
		seen := b.obs.watch(t, a.id)
		b.vhost(t, "shop", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		u := s.config(t)
		for _, st := range []agentv1.ConfigApplyStatus{agentv1.ConfigApplyStatus_VALIDATING, agentv1.ConfigApplyStatus_APPLYING, agentv1.ConfigApplyStatus_SUCCESS} {
			s.status(t, u, st, "")
			awaitKind(t, seen, "message")
		}
		r := b.row(t, a.id)
		if r.AppliedVersion != u.GetVersion() || r.ApplyStatus != ApplySuccess || r.AppliedChecksum != u.GetChecksum() || r.ApplyError != "" || r.State != StateOnline {
			t.Fatalf("after SUCCESS: %+v", r)
		}
		ev := b.events.await(t, EventConfigApplied, a.id, nil)
		if ev.Data["config_id"] != u.GetConfigId() || ev.Data["version"] != u.GetVersion() || ev.Data["success"] != true {
			t.Fatalf("config.applied = %v", ev.Data)
		}
		if _, ok := ev.Data["duration_ms"].(int64); !ok {
			t.Fatalf("duration_ms = %#v", ev.Data["duration_ms"])
		}

		b.vhost(t, "blog", uuid.Nil, vhosts.TargetAgents{Type: vhosts.TargetAll})
		u2 := s.config(t)
		s.status(t, u2, agentv1.ConfigApplyStatus_ROLLED_BACK, `nginx: [emerg] unknown directive "bogus"`)
		awaitKind(t, seen, "message")
		r = b.row(t, a.id)
		if r.AppliedVersion != u.GetVersion() || r.DesiredVersion != u2.GetVersion() || r.ApplyStatus != ApplyRolledBack ||
			r.ApplyError != `nginx: [emerg] unknown directive "bogus"` || r.State != StateDegraded {
			t.Fatalf("after ROLLED_BACK: %+v", r)
		}
		b.events.await(t, EventConfigApplied, a.id, func(ev app.Event) bool {
			return ev.Data["success"] == false && ev.Data["config_id"] == u2.GetConfigId() && ev.Data["status"] == ApplyRolledBack
		})
		var got map[string]any
		b.as(t, "viewer", http.MethodGet, agentPath(a.id), nil, http.StatusOK, &got)
		if got["last_error"] != r.ApplyError || got["apply_status"] != "rolled_back" || got["state"] != "degraded" {
			t.Fatalf("GET after a failed apply = %v", got)
		}
	})

	t.Run("RetriesAnUnansweredPush", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, first := b.online(t, "web", nil)
		c := e.mod.Hub().conn(a.id)
		if c == nil {
			t.Fatalf("no stream on replica A")
		}
		// Not due yet: nothing is sent.
		c.retry(context.Background())
		c.mu.Lock()
		if c.push.attempts != 1 || c.push.retryAt.Sub(c.push.sentAt) != ackTimeout {
			t.Fatalf("push state = %+v", c.push)
		}
		c.push.retryAt = time.Now().Add(-time.Second)
		c.mu.Unlock()
		e.mod.Hub().reconcile()
		again := s.config(t)
		if again.GetConfigId() != first.GetConfigId() || again.GetChecksum() != first.GetChecksum() {
			t.Fatalf("retry sent %s, want %s again", again.GetConfigId(), first.GetConfigId())
		}
		c.mu.Lock()
		p := c.push
		c.mu.Unlock()
		if p.attempts != 2 || p.retryAt.Sub(p.sentAt) != 2*ackTimeout {
			t.Fatalf("after the retry: %+v, want attempt 2 with doubled backoff", p)
		}
		// An answered push is not retried.
		s.status(t, again, agentv1.ConfigApplyStatus_SUCCESS, "")
		seen := b.obs.watch(t, a.id)
		s.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}})
		awaitKind(t, seen, "message")
		c.mu.Lock()
		settled := c.push.settled
		c.mu.Unlock()
		if !settled {
			t.Fatalf("SUCCESS did not settle the push")
		}
	})

	t.Run("DriftIsTheReportedChecksumDifferingFromThePushedOne", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, u := b.online(t, "web", nil)
		seen := b.obs.watch(t, a.id)
		s.status(t, u, agentv1.ConfigApplyStatus_SUCCESS, "")
		awaitKind(t, seen, "message")
		s.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}, ConfigChecksum: u.GetChecksum()})
		awaitKind(t, seen, "message")
		if r := b.row(t, a.id); r.Drift || r.ReportedChecksum != u.GetChecksum() {
			t.Fatalf("in sync: drift %v reported %q", r.Drift, r.ReportedChecksum)
		}
		s.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}, ConfigChecksum: "edited-by-hand"})
		awaitKind(t, seen, "message")
		var got map[string]any
		b.as(t, "viewer", http.MethodGet, agentPath(a.id), nil, http.StatusOK, &got)
		if got["drift"] != true {
			t.Fatalf("drift not shown: %v", got)
		}
	})
}

func TestGRPC_Health(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("HeartbeatsStoreHealthAndState", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web", nil)
		seen := b.obs.watch(t, a.id)
		s.health(t, &agentv1.HealthReport{
			Nginx:         &agentv1.NginxStatus{IsRunning: true, Pid: 42, UptimeSeconds: 86400, ActiveConnections: 42, RequestsPerSecond: 150.5},
			System:        &agentv1.SystemMetrics{CpuPercent: 25, MemoryUsedBytes: 512 << 20, MemoryTotalBytes: 2048 << 20},
			ConfigVersion: 3,
			AgentInfo:     &agentv1.AgentInfo{Version: "0.2.0", Commit: "abc123", BuildDate: "2026-03-01", UptimeSeconds: 60, Features: []string{"http2"}, Hostname: "web"},
		})
		awaitKind(t, seen, "message")
		var got map[string]any
		b.as(t, "viewer", http.MethodGet, agentPath(a.id), nil, http.StatusOK, &got)
		h := got["health"].(map[string]any)
		want := map[string]any{"nginx_status": "running", "nginx_uptime_seconds": 86400.0, "active_connections": 42.0,
			"requests_per_second": 150.5, "cpu_percent": 25.0, "memory_used_mb": 512.0, "config_version": 3.0}
		for k, v := range want {
			if h[k] != v {
				t.Fatalf("health.%s = %v, want %v (%v)", k, h[k], v, h)
			}
		}
		info := got["agent_info"].(map[string]any)
		if got["state"] != "online" || got["version"] != "0.2.0" || info["commit"] != "abc123" {
			t.Fatalf("agent = %v", got)
		}

		s.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: false}})
		awaitKind(t, seen, "message")
		if r := b.row(t, a.id); r.State != StateDegraded {
			t.Fatalf("nginx down: state %s", r.State)
		}
		alert := &agentv1.Alert{Id: "alert-456", Severity: "warning", Message: "High CPU usage: 85%"}
		for range 2 {
			s.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}, Alerts: []*agentv1.Alert{alert}})
			awaitKind(t, seen, "message")
		}
		if r := b.row(t, a.id); r.State != StateDegraded {
			t.Fatalf("alert active: state %s", r.State)
		}
		ev := b.events.await(t, EventHealthAlert, a.id, nil)
		expectKeys(t, "health.alert data", ev.Data, "agent_id", "alert_id", "severity", "message", "metric", "value")
		if ev.Data["alert_id"] != "alert-456" || ev.Data["severity"] != "warning" || ev.Data["message"] != "High CPU usage: 85%" {
			t.Fatalf("health.alert = %v", ev.Data)
		}
		b.events.mu.Lock()
		n := 0
		for _, ev := range b.events.events {
			if ev.Type == EventHealthAlert && ev.Data["agent_id"] == a.id.String() {
				n++
			}
		}
		b.events.mu.Unlock()
		if n != 1 {
			t.Fatalf("an alert still active was published %d times", n)
		}
		s.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}})
		awaitKind(t, seen, "message")
		if r := b.row(t, a.id); r.State != StateOnline {
			t.Fatalf("healthy again: state %s", r.State)
		}
	})

	t.Run("ReportsAreStoredInBatchesInOrder", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a1, _, _ := b.online(t, "web-1", nil)
		a2, _, _ := b.online(t, "web-2", nil)
		r1 := b.row(t, a1.id)
		stale := uuid.New()
		alert := func(id string) *agentv1.HealthReport {
			return &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true},
				Alerts: []*agentv1.Alert{{Id: id, Severity: "warning", Message: id}}}
		}
		// Two reports of one agent in one batch: both alerts are published
		// and the row ends as the second left it; a report from a stream
		// that is no longer the agent's is refused alone.
		errs, err := e.svc.recordHealthBatch(context.Background(), []healthItem{
			{agentID: a1.id, streamID: r1.StreamID, rep: alert("first")},
			{agentID: a2.id, streamID: &stale, rep: alert("stale")},
			{agentID: a1.id, streamID: r1.StreamID, rep: alert("second")},
			{agentID: a2.id, rep: &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: false}}},
			{agentID: uuid.New(), rep: alert("unknown")},
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []error{nil, errGone, nil, nil, errGone}
		for i := range want {
			if errs[i] != want[i] {
				t.Fatalf("item %d: %v, want %v", i, errs[i], want[i])
			}
		}
		for _, id := range []string{"first", "second"} {
			b.events.await(t, EventHealthAlert, a1.id, func(ev app.Event) bool { return ev.Data["alert_id"] == id })
		}
		if r := b.row(t, a1.id); r.Health == nil || len(r.Health.Alerts) != 1 || r.Health.Alerts[0].ID != "second" || r.State != StateDegraded {
			t.Fatalf("agent 1 after the batch: %+v %+v", r.State, r.Health)
		}
		if r := b.row(t, a2.id); r.State != StateDegraded || r.Health == nil || r.Health.NginxRunning {
			t.Fatalf("agent 2 after the batch: %s %+v", r.State, r.Health)
		}
		b.events.mu.Lock()
		for _, ev := range b.events.events {
			if ev.Type == EventHealthAlert && ev.Data["alert_id"] == "stale" {
				t.Errorf("the stale stream's alert was published: %v", ev.Data)
			}
		}
		b.events.mu.Unlock()
	})

	t.Run("HubClosesSilentStreams", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web", nil)
		c := e.mod.Hub().conn(a.id)
		c.lastSeen.Store(time.Now().Add(-3*e.svc.heartbeat - time.Second).UnixNano())
		e.mod.Hub().reconcile()
		if st := s.ended(t); st.Code() != codes.Unavailable {
			t.Fatalf("silent stream ended with %v", st)
		}
		b.events.await(t, EventAgentDisconnected, a.id, func(ev app.Event) bool { return ev.Data["reason"] == ReasonTimeout })
		if r := b.row(t, a.id); r.State != StateOffline {
			t.Fatalf("silent agent is %s", r.State)
		}
	})

	t.Run("CommandsReachTheAgentAndRecordResults", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		a, s, _ := b.online(t, "web", nil)

		type reply struct {
			status int
			body   map[string]any
		}
		done := make(chan reply, 1)
		go func() {
			st, raw := b.do(t, b.tokens["operator"], http.MethodPost, agentPath(a.id)+"/reload", nil)
			var m map[string]any
			_ = json.Unmarshal(raw, &m)
			done <- reply{st, m}
		}()
		cmd := s.command(t)
		if cmd.GetReload() == nil || !cmd.GetReload().GetGraceful() {
			t.Fatalf("reload sent as %v", cmd)
		}
		s.send(t, &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandResult{CommandResult: &agentv1.CommandResult{
			CommandId: cmd.GetCommandId(), Success: true, Message: "Nginx reloaded successfully", FinishedAt: time.Now().Unix(),
		}}})
		var r reply
		select {
		case r = <-done:
		case <-time.After(wait):
			t.Fatalf("reload did not answer")
		}
		if r.status != http.StatusOK || r.body["success"] != true || r.body["message"] != "Nginx reloaded successfully" {
			t.Fatalf("reload = %d %v", r.status, r.body)
		}
		expectKeys(t, "reload response", r.body, "success", "message", "timestamp")

		var queued Command
		b.as(t, "operator", http.MethodPost, agentPath(a.id)+"/commands", map[string]any{"command": "restart", "force": true}, http.StatusAccepted, &queued)
		if queued.Command != CommandRestart || queued.Status != CommandPending {
			t.Fatalf("queued = %+v", queued)
		}
		cmd = s.command(t)
		if cmd.GetCommandId() != queued.ID.String() || !cmd.GetRestart().GetForce() {
			t.Fatalf("restart sent as %v", cmd)
		}
		seen := b.obs.watch(t, a.id)
		s.send(t, &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_CommandResult{CommandResult: &agentv1.CommandResult{
			CommandId: cmd.GetCommandId(), Success: false, Message: "restart failed", Output: "nginx: [emerg] bind() failed",
		}}})
		awaitKind(t, seen, "message")
		var got map[string]any
		b.as(t, "viewer", http.MethodGet, agentPath(a.id)+"/commands/"+queued.ID.String(), nil, http.StatusOK, &got)
		expectKeys(t, "command", got, "id", "agent_id", "command", "params", "status", "message", "output", "created_at", "sent_at", "finished_at")
		if got["status"] != "failed" || got["output"] != "nginx: [emerg] bind() failed" || got["finished_at"] == nil {
			t.Fatalf("command = %v", got)
		}

		// A command still open when the stream closes fails.
		b.as(t, "operator", http.MethodPost, agentPath(a.id)+"/commands", map[string]any{"command": "get_status"}, http.StatusAccepted, &queued)
		s.command(t)
		s.cancel()
		awaitKind(t, seen, "closed")
		b.as(t, "viewer", http.MethodGet, agentPath(a.id)+"/commands/"+queued.ID.String(), nil, http.StatusOK, &got)
		if got["status"] != "failed" {
			t.Fatalf("open command after disconnect = %v", got)
		}
		// Offline agents take no commands.
		raw := b.as(t, "operator", http.MethodPost, agentPath(a.id)+"/reload", nil, http.StatusConflict, nil)
		if code, msg, _ := errorOf(t, raw); code != "CONFLICT" || msg != "Agent is offline" {
			t.Fatalf("reload of an offline agent: %s %s", code, msg)
		}
		b.as(t, "operator", http.MethodPost, agentPath(a.id)+"/commands", map[string]any{"command": "stop"}, http.StatusConflict, nil)
	})
}

// TestService_MarkOffline has its own master: MarkOffline considers every agent
// of the database.
func TestService_MarkOffline(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	a, s, _ := b.online(t, "web", nil)
	idle, _, _ := b.online(t, "idle", nil)
	pending := b.token(t, "never-registered", nil)

	// A unary heartbeat moments later keeps "web" fresh; "idle" stays silent.
	now := time.Now().Add(3*e.svc.heartbeat + time.Second)
	if err := e.db.Model(&agentRow{}).Where("id = ?", a.id).Update("last_seen_at", now).Error; err != nil {
		t.Fatal(err)
	}
	n, err := e.svc.MarkOffline(context.Background(), now)
	if err != nil || n != 1 {
		t.Fatalf("MarkOffline = %d, %v; want 1", n, err)
	}
	if r := b.row(t, idle.id); r.State != StateOffline || r.StreamID != nil || r.ConnectedReplica != "" {
		t.Fatalf("silent agent = %s %v %q", r.State, r.StreamID, r.ConnectedReplica)
	}
	if r := b.row(t, a.id); r.State != StateOnline {
		t.Fatalf("fresh agent = %s", r.State)
	}
	if r := b.row(t, pending.AgentID); r.State != StatePending {
		t.Fatalf("pending agent = %s", r.State)
	}
	b.events.await(t, EventAgentDisconnected, idle.id, func(ev app.Event) bool { return ev.Data["reason"] == ReasonTimeout })

	// Much later "web" is silent too; its still-open stream is superseded at
	// its next message and it reconnects.
	if n, err := e.svc.MarkOffline(context.Background(), now.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("second MarkOffline = %d, %v", n, err)
	}
	s.health(t, &agentv1.HealthReport{Nginx: &agentv1.NginxStatus{IsRunning: true}})
	if st := s.ended(t); st.Code() != codes.Aborted {
		t.Fatalf("stream of an agent marked offline ended with %v", st)
	}
	s2, resp := a.connect(t)
	if !resp.GetSuccess() {
		t.Fatalf("reconnect: %s", resp.GetErrorMessage())
	}
	s2.config(t)
	if r := b.row(t, a.id); r.State != StateOnline {
		t.Fatalf("reconnected agent = %s", r.State)
	}
}

// TestService_MarkOfflineLeavesALiveReplicasAgents: an agent gone quiet in
// the database while the replica holding its stream is alive (its
// heartbeats could not be written, as in a database outage) is left to
// that replica; once the replica reads as down, or stopped, it is marked.
func TestService_MarkOfflineLeavesALiveReplicasAgents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	a, _, _ := b.online(t, "web", nil)
	replica := b.row(t, a.id).ConnectedReplica
	if replica == "" {
		t.Fatal("the agent names no replica")
	}
	now := time.Now().Add(3*e.svc.heartbeat + time.Second)
	for _, tc := range []struct {
		name     string
		seen     time.Time
		stopped  bool
		want     int
		wantedAs string
	}{
		{"replica alive", now, false, 0, StateOnline},
		{"replica stopped", now, true, 1, StateOffline},
	} {
		if err := e.db.Exec(`INSERT INTO replicas (id, hostname, last_seen_at, stopped_at) VALUES (?, 'h', ?, CASE WHEN ? THEN now() END)
			ON CONFLICT (id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at, stopped_at = EXCLUDED.stopped_at`,
			replica, tc.seen, tc.stopped).Error; err != nil {
			t.Fatal(err)
		}
		n, err := e.svc.MarkOffline(context.Background(), now)
		if err != nil || n != tc.want {
			t.Fatalf("%s: MarkOffline = %d, %v; want %d", tc.name, n, err, tc.want)
		}
		if r := b.row(t, a.id); r.State != tc.wantedAs {
			t.Fatalf("%s: agent %s, want %s", tc.name, r.State, tc.wantedAs)
		}
	}
}
