package controlplane

import (
	"context"
	"testing"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// acmeHandler answers ACME challenges: ready unless the token is "bad".
type acmeHandler struct{ fakeHandler }

func (acmeHandler) HandleACMEChallenge(_ context.Context, ch *agentv1.AcmeChallenge) *agentv1.AcmeChallengeStatus {
	if ch.GetToken() == "bad" {
		return &agentv1.AcmeChallengeStatus{ErrorMessage: "refused"}
	}
	return &agentv1.AcmeChallengeStatus{Ready: true}
}

func TestClient_ACMEChallenge(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		handler Handler
		token   string
		ready   bool
		err     string
	}{
		{"Answered", acmeHandler{}, "tok", true, ""},
		{"Refused", acmeHandler{}, "bad", false, "refused"},
		{"HandlerWithoutACME", fakeHandler{}, "tok", false, "this agent does not answer ACME challenges"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.master.extra = []*agentv1.MasterMessage{{Payload: &agentv1.MasterMessage_AcmeChallenge{AcmeChallenge: &agentv1.AcmeChallenge{
				ChallengeId: "ch-1", Token: c.token, KeyAuthorization: c.token + ".x"}}}}
			opts := b.opts
			opts.Handler = c.handler
			cl := newClient(t, opts)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- cl.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			for {
				msg := next(t, b.master.received, "the ACME challenge status")
				st := msg.GetAcmeChallengeStatus()
				if st == nil {
					continue
				}
				if st.GetChallengeId() != "ch-1" || st.GetToken() != c.token || st.GetReady() != c.ready || st.GetErrorMessage() != c.err {
					t.Fatalf("status = %v, want ready=%v error %q", st, c.ready, c.err)
				}
				return
			}
		})
	}
}
