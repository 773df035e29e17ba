package agents

// ACME HTTP-01 through the agents. PresentHTTP01 is the certs module's
// PresentFunc:
//
//  1. The targets are the workspace's online agents whose desired
//     configuration (the current version, filtered by target_agents as for
//     delivery) has a plain-HTTP virtual host covering the domain: a host
//     without ssl_enabled, or one with an http_port or redirect_https (its
//     plain port or redirect server), with a matching server name
//     (vhosts.ServerNameCovers).
//  2. Each target gets an AcmeChallenge (challenge_id, token, key
//     authorization, expires_at an hour ahead) on its stream. The stream may
//     be held by another master replica: an agent whose stream is not on
//     this replica is reached through NotifyChannel (AgentNotice op
//     acme_challenge, carrying the challenge), which the replica holding the
//     stream forwards, as for commands.
//  3. Each agent answers AcmeChallengeStatus on its stream. The replica that
//     receives it hands it to its own waiter for the challenge, if any,
//     else publishes it on NotifyChannel (op acme_status) for the replica
//     that waits.
//  4. PresentHTTP01 returns once every target confirmed (ready), or fails
//     after acmeTimeout (30 s) naming the agents that did not confirm and
//     why; on failure the token is removed from every target again. The
//     cleanup it returns sends the removal (remove true) and waits for the
//     confirmations the same way. Agents also forget a token at expires_at
//     by themselves.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Operations of AgentNotice for ACME challenges.
const (
	// OpACMEChallenge: send ACME (a challenge or its removal) to the agent.
	OpACMEChallenge = "acme_challenge"
	// OpACMEStatus: the agent answered ACME; wake whoever waits for it.
	OpACMEStatus = "acme_status"
)

// Timings of HTTP-01 challenges.
const (
	defaultACMETimeout = 30 * time.Second
	acmeTokenLifetime  = time.Hour
)

// ACMENotice is an ACME challenge, or an agent's answer to it, passed
// between replicas in AgentNotice.
type ACMENotice struct {
	ChallengeID      string `json:"challenge_id"`
	Token            string `json:"token"`
	KeyAuthorization string `json:"key_authorization,omitempty"`
	Remove           bool   `json:"remove,omitempty"`
	ExpiresAt        int64  `json:"expires_at,omitempty"`
	Ready            bool   `json:"ready,omitempty"`
	Error            string `json:"error,omitempty"`
}

func (n ACMENotice) message() *agentv1.MasterMessage {
	return &agentv1.MasterMessage{Payload: &agentv1.MasterMessage_AcmeChallenge{AcmeChallenge: &agentv1.AcmeChallenge{
		ChallengeId: n.ChallengeID, Token: n.Token, KeyAuthorization: n.KeyAuthorization, Remove: n.Remove, ExpiresAt: n.ExpiresAt,
	}}}
}

// acmeAnswer is one agent's AcmeChallengeStatus.
type acmeAnswer struct {
	agentID uuid.UUID
	ready   bool
	err     string
}

// acmeWaiters are the challenges this replica waits for, by challenge_id.
type acmeWaiters struct {
	mu sync.Mutex
	m  map[string]chan acmeAnswer
}

func (w *acmeWaiters) watch(id string) chan acmeAnswer {
	ch := make(chan acmeAnswer, 64)
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string]chan acmeAnswer{}
	}
	w.m[id] = ch
	w.mu.Unlock()
	return ch
}

func (w *acmeWaiters) unwatch(id string) {
	w.mu.Lock()
	delete(w.m, id)
	w.mu.Unlock()
}

// deliver hands an answer to the local waiter; false when there is none.
func (w *acmeWaiters) deliver(id string, a acmeAnswer) bool {
	w.mu.Lock()
	ch, ok := w.m[id]
	w.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case ch <- a:
	default:
	}
	return true
}

// acmeTarget is an agent that must answer a challenge.
type acmeTarget struct {
	id    uuid.UUID
	label string
}

// acmeTargets returns the workspace's online agents that serve domain over
// plain HTTP (see the top of this file).
func (s *Service) acmeTargets(ctx context.Context, workspaceID uuid.UUID, domain string) ([]acmeTarget, error) {
	var rows []agentRow
	err := s.db.WithContext(ctx).Select("id", "name", "hostname", "labels").
		Where("workspace_id = ? AND state IN ? AND stream_id IS NOT NULL", workspaceID, []string{StateOnline, StateDegraded}).
		Order("name, id").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("online agents of workspace %s: %w", workspaceID, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	version, err := s.vh.CurrentVersion(ctx, workspaceID)
	if err != nil {
		return nil, fmt.Errorf("configuration of workspace %s: %w", workspaceID, err)
	}
	var out []acmeTarget
	for _, ag := range rows {
		lbls := map[string]string(ag.Labels)
		u, err := s.vh.DesiredConfig(ctx, workspaceID, version, func(t vhosts.TargetAgents) bool { return t.Matches(ag.ID, lbls) })
		if err != nil {
			return nil, fmt.Errorf("configuration of agent %s: %w", ag.ID, err)
		}
		if slices.ContainsFunc(u.GetVirtualHosts(), func(vh *agentv1.VirtualHost) bool {
			return (!vh.GetSslEnabled() || vh.GetRedirectHttps() || vh.GetHttpPort() != 0) && vhosts.ServerNameCovers(vh.GetServerName(), domain)
		}) {
			label := ag.Name
			if label == "" {
				label = ag.Hostname
			}
			out = append(out, acmeTarget{id: ag.ID, label: fmt.Sprintf("%s (%s)", label, ag.ID)})
		}
	}
	return out, nil
}

// PresentHTTP01 makes the agents that serve domain over plain HTTP answer
// GET /.well-known/acme-challenge/<token> with keyAuth, and returns when all
// confirmed, with the cleanup that removes the token again (the certs
// module's PresentFunc; see the top of this file).
func (s *Service) PresentHTTP01(ctx context.Context, workspaceID uuid.UUID, domain, token, keyAuth string) (func(context.Context) error, error) {
	targets, err := s.acmeTargets(ctx, workspaceID, domain)
	if err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("no online agent serves %s over plain HTTP: a virtual host without TLS (or with redirect_https) must list it and target a connected agent", domain)
	}
	n := ACMENotice{ChallengeID: uuid.NewString(), Token: token, KeyAuthorization: keyAuth, ExpiresAt: s.now().Add(acmeTokenLifetime).Unix()}
	remove := func(ctx context.Context) error {
		r := ACMENotice{ChallengeID: n.ChallengeID, Token: token, Remove: true}
		if err := s.exchangeACME(ctx, targets, r); err != nil {
			return fmt.Errorf("remove the HTTP-01 token from the agents: %w", err)
		}
		return nil
	}
	if err := s.exchangeACME(ctx, targets, n); err != nil {
		if rerr := remove(context.WithoutCancel(ctx)); rerr != nil {
			s.logger.WarnContext(ctx, "agents: remove an unconfirmed HTTP-01 token", "domain", domain, "error", rerr)
		}
		return nil, err
	}
	s.logger.InfoContext(ctx, "agents: HTTP-01 token served", "domain", domain, "agents", len(targets))
	return remove, nil
}

// exchangeACME sends n to every target and waits for their answers: ready
// for a challenge, no error for a removal.
func (s *Service) exchangeACME(ctx context.Context, targets []acmeTarget, n ACMENotice) error {
	// A removal reuses the challenge's id; its answers wait on their own key.
	key := n.ChallengeID
	if n.Remove {
		key += "/remove"
	}
	answers := s.hub.acme.watch(key)
	defer s.hub.acme.unwatch(key)
	pending := map[uuid.UUID]string{}
	for _, t := range targets {
		pending[t.id] = "no answer"
		if err := s.hub.sendACME(ctx, t.id, n); err != nil {
			pending[t.id] = err.Error()
		}
	}
	timeout := s.acmeTimeout
	if timeout <= 0 {
		timeout = defaultACMETimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	confirmed := map[uuid.UUID]bool{}
	for len(confirmed) < len(targets) {
		select {
		case a := <-answers:
			if _, ok := pending[a.agentID]; !ok {
				continue
			}
			// A late "ready" of the challenge itself is no removal.
			if (n.Remove && !a.ready && a.err == "") || (!n.Remove && a.ready) {
				confirmed[a.agentID] = true
				continue
			}
			pending[a.agentID] = a.err
			if a.err == "" {
				pending[a.agentID] = "not ready"
			}
		case <-timer.C:
			return acmeError(targets, confirmed, pending, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// acmeError names the agents that did not confirm.
func acmeError(targets []acmeTarget, confirmed map[uuid.UUID]bool, why map[uuid.UUID]string, timeout time.Duration) error {
	var parts []string
	for _, t := range targets {
		if !confirmed[t.id] {
			parts = append(parts, t.label+": "+why[t.id])
		}
	}
	return fmt.Errorf("%d of %d agents did not confirm within %s: %s", len(parts), len(targets), timeout, strings.Join(parts, "; "))
}

// sendACME sends n to the agent: on its stream when this replica holds it,
// else through NotifyChannel for the replica that does.
func (h *Hub) sendACME(ctx context.Context, agentID uuid.UUID, n ACMENotice) error {
	if c := h.conn(agentID); c != nil {
		if !c.send(n.message()) {
			return errors.New("its stream closed")
		}
		return nil
	}
	return notify(h.svc.db.WithContext(ctx), AgentNotice{AgentID: agentID, Op: OpACMEChallenge, ACME: &n})
}

// acmeStatus takes an agent's AcmeChallengeStatus: to this replica's waiter,
// else to the other replicas through NotifyChannel.
func (h *Hub) acmeStatus(ctx context.Context, agentID uuid.UUID, st *agentv1.AcmeChallengeStatus) error {
	n := ACMENotice{ChallengeID: st.GetChallengeId(), Token: st.GetToken(), Ready: st.GetReady(), Error: st.GetErrorMessage()}
	if n.ChallengeID == "" {
		return nil
	}
	if h.deliverACME(agentID, n) {
		return nil
	}
	return notify(h.svc.db.WithContext(ctx), AgentNotice{AgentID: agentID, Op: OpACMEStatus, ACME: &n})
}

// deliverACME hands an answer to the challenge's or the removal's waiter.
func (h *Hub) deliverACME(agentID uuid.UUID, n ACMENotice) bool {
	a := acmeAnswer{agentID: agentID, ready: n.Ready, err: n.Error}
	return h.acme.deliver(n.ChallengeID, a) || h.acme.deliver(n.ChallengeID+"/remove", a)
}

// acmeNotice acts on an ACME AgentNotice from any replica.
func (h *Hub) acmeNotice(n AgentNotice) {
	if n.ACME == nil {
		return
	}
	switch n.Op {
	case OpACMEChallenge:
		if c := h.conn(n.AgentID); c != nil {
			c.send(n.ACME.message())
		}
	case OpACMEStatus:
		h.deliverACME(n.AgentID, *n.ACME)
	}
}
