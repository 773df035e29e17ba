package agents

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// acme returns the next AcmeChallenge sent to the agent, skipping
// configuration updates.
func (s *session) acme(t *testing.T) *agentv1.AcmeChallenge {
	t.Helper()
	for {
		m := s.next(t)
		if m.GetConfigUpdate() != nil {
			continue
		}
		ch := m.GetAcmeChallenge()
		if ch == nil {
			t.Fatalf("got %T, want an ACME challenge", m.GetPayload())
		}
		return ch
	}
}

// answer sends the agent's AcmeChallengeStatus.
func (s *session) answer(t *testing.T, ch *agentv1.AcmeChallenge, ready bool, msg string) {
	t.Helper()
	s.send(t, &agentv1.AgentMessage{Payload: &agentv1.AgentMessage_AcmeChallengeStatus{AcmeChallengeStatus: &agentv1.AcmeChallengeStatus{
		ChallengeId: ch.GetChallengeId(), Token: ch.GetToken(), Ready: ready, ErrorMessage: msg,
	}}})
}

// silent checks that the agent gets no ACME challenge for a while.
func (s *session) silent(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-s.in:
			if m.GetAcmeChallenge() != nil {
				t.Fatalf("agent got an ACME challenge it does not serve: %v", m.GetAcmeChallenge())
			}
		case <-deadline:
			return
		}
	}
}

type presented struct {
	cleanup func(context.Context) error
	err     error
}

func TestService_PresentHTTP01(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.svc.acmeTimeout = 3 * time.Second
	web := vhosts.TargetAgents{Type: vhosts.TargetSelector, LabelSelector: "role=web"}

	t.Run("ReachesTheServingAgentsOnEveryReplica", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, addrB := e.replica(t, "replica-b-"+uuid.NewString()[:6])
		_, sa, _ := b.online(t, "web-a", map[string]string{"role": "web"})
		_, sdb, _ := b.online(t, "db", map[string]string{"role": "db"})
		tok := b.token(t, "web-b", map[string]string{"role": "web"})
		ab := newAgentClient(t, addrB, b.svc.CA())
		sb, resp := ab.register(t, tok.Token, "web-b.internal")
		if !resp.GetSuccess() {
			t.Fatalf("register on replica B: %s", resp.GetErrorMessage())
		}
		sb.config(t)
		b.vhost(t, "shop", uuid.Nil, web)

		done := make(chan presented, 1)
		go func() {
			c, err := e.svc.PresentHTTP01(b.ctx, b.ws, "shop.example.com", "tok_1", "tok_1.thumb")
			done <- presented{c, err}
		}()
		var id string
		for _, s := range []*session{sa, sb} {
			ch := s.acme(t)
			if ch.GetToken() != "tok_1" || ch.GetKeyAuthorization() != "tok_1.thumb" || ch.GetRemove() ||
				ch.GetExpiresAt() < time.Now().Add(30*time.Minute).Unix() || ch.GetChallengeId() == "" {
				t.Fatalf("challenge = %v", ch)
			}
			if id != "" && ch.GetChallengeId() != id {
				t.Errorf("challenge ids differ: %s, %s", id, ch.GetChallengeId())
			}
			id = ch.GetChallengeId()
			s.answer(t, ch, true, "")
		}
		var p presented
		select {
		case p = <-done:
		case <-time.After(wait):
			t.Fatal("PresentHTTP01 did not return")
		}
		if p.err != nil {
			t.Fatalf("PresentHTTP01: %v", p.err)
		}
		sdb.silent(t, 200*time.Millisecond)

		cleaned := make(chan error, 1)
		go func() { cleaned <- p.cleanup(b.ctx) }()
		for _, s := range []*session{sa, sb} {
			ch := s.acme(t)
			if !ch.GetRemove() || ch.GetToken() != "tok_1" || ch.GetChallengeId() != id {
				t.Fatalf("removal = %v", ch)
			}
			s.answer(t, ch, false, "")
		}
		select {
		case err := <-cleaned:
			if err != nil {
				t.Fatalf("cleanup: %v", err)
			}
		case <-time.After(wait):
			t.Fatal("cleanup did not return")
		}
	})

	t.Run("NamesTheAgentsThatDidNotConfirm", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, sa, _ := b.online(t, "web-ok", map[string]string{"role": "web"})
		_, sb, _ := b.online(t, "web-broken", map[string]string{"role": "web"})
		_, sc, _ := b.online(t, "web-silent", map[string]string{"role": "web"})
		b.vhost(t, "blog", uuid.Nil, web)
		done := make(chan presented, 1)
		go func() {
			c, err := e.svc.PresentHTTP01(b.ctx, b.ws, "blog.example.com", "tok_2", "tok_2.thumb")
			done <- presented{c, err}
		}()
		sa.answer(t, sa.acme(t), true, "")
		sb.answer(t, sb.acme(t), false, "nginx is not running")
		sc.acme(t)
		var p presented
		select {
		case p = <-done:
		case <-time.After(wait):
			t.Fatal("PresentHTTP01 did not return")
		}
		if p.err == nil || p.cleanup != nil {
			t.Fatal("PresentHTTP01 succeeded without every agent's confirmation")
		}
		msg := p.err.Error()
		for _, want := range []string{"2 of 3 agents", "web-broken", "nginx is not running", "web-silent", "no answer"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not mention %q", msg, want)
			}
		}
		if strings.Contains(msg, "web-ok") {
			t.Errorf("error %q names the agent that confirmed", msg)
		}
		// The token is taken back from all of them.
		for _, s := range []*session{sa, sb, sc} {
			if ch := s.acme(t); !ch.GetRemove() {
				t.Errorf("after the failure: %v, want a removal", ch)
			}
		}
	})

	t.Run("NoAgentServesTheDomain", func(t *testing.T) {
		t.Parallel()
		b := e.setup(t)
		_, s, _ := b.online(t, "web", map[string]string{"role": "web"})
		_, err := b.vh.CreateVirtualHost(b.ctx, b.ws, vhosts.VirtualHostInput{
			Name: "other", ServerName: "other.example.com", Locations: []vhosts.Location{{Path: "/", ProxyPass: "http://10.0.0.1:8080"}}, TargetAgents: &web,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.PresentHTTP01(b.ctx, b.ws, "shop.example.com", "tok_3", "tok_3.thumb")
		if err == nil || !strings.Contains(err.Error(), "no online agent serves shop.example.com") {
			t.Fatalf("PresentHTTP01 = %v, want no online agent", err)
		}
		s.silent(t, 200*time.Millisecond)
	})
}
