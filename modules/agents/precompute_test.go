package agents

import (
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/nxmesh/nxmesh/modules/vhosts"
)

// TestGRPC_LateOfferDoesNotTakeTheAgentBack offers a stream a configuration
// computed for an older version after a newer one was pushed, as two
// precomputes of a workspace finishing out of order do: it is not sent, and
// the agent's next update is the next version.
func TestGRPC_LateOfferDoesNotTakeTheAgentBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	c, s, _ := b.online(t, "edge", nil)
	all := vhosts.TargetAgents{Type: vhosts.TargetAll}

	b.vhost(t, "first", uuid.Nil, all)
	first := s.config(t)
	late, err := b.svc.DesiredConfig(b.ctx, c.id)
	if err != nil {
		t.Fatal(err)
	}
	if late.GetVersion() != first.GetVersion() {
		t.Fatalf("computed version %d, pushed %d", late.GetVersion(), first.GetVersion())
	}
	b.vhost(t, "second", uuid.Nil, all)
	if u := s.config(t); u.GetVersion() <= first.GetVersion() {
		t.Fatalf("second push has version %d after %d", u.GetVersion(), first.GetVersion())
	}

	hc := e.mod.hub.conn(c.id)
	if hc == nil {
		t.Fatal("the agent's stream is not on the hub")
	}
	hc.offer(late, hc.gen.Load())
	hc.want(wantConfig)

	b.vhost(t, "third", uuid.Nil, all)
	u := s.config(t)
	if got := names(u); !slices.Equal(got, []string{"first", "second", "third"}) {
		t.Fatalf("next update: version %d with %v, want the third version (the late offer of version %d must not be sent)", u.GetVersion(), got, late.GetVersion())
	}
}
