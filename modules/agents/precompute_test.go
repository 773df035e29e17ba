package agents

import (
	"slices"
	"testing"
	"time"

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

// TestGRPC_ABurstOfChangesIsComputedAFewTimes sends fifty configuration
// notifications of a workspace with more streams than precomputeMin at once:
// its streams' configurations are computed together a few times, not fifty,
// and a change after the burst still reaches every stream.
func TestGRPC_ABurstOfChangesIsComputedAFewTimes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	var sessions []*session
	for i := range precomputeMin + 2 {
		_, s, _ := b.online(t, "edge-"+string(rune('a'+i)), nil)
		sessions = append(sessions, s)
	}
	all := vhosts.TargetAgents{Type: vhosts.TargetAll}
	b.vhost(t, "before", uuid.Nil, all)
	for _, s := range sessions {
		if got := names(s.config(t)); !slices.Equal(got, []string{"before"}) {
			t.Fatalf("got %v", got)
		}
	}
	runs := e.obs.watch(t, b.ws)
	const burst = 50
	for range burst {
		e.mod.hub.configChanged(b.ctx, b.ws)
	}
	n := 0
	quiet := time.NewTimer(time.Second)
	defer quiet.Stop()
count:
	for {
		select {
		case kind := <-runs:
			if kind == "precompute" {
				n++
				quiet.Reset(time.Second)
			}
		case <-quiet.C:
			break count
		}
	}
	if n < 1 || n > 5 {
		t.Fatalf("%d notifications computed the streams' configurations %d times, want 1 to 5", burst, n)
	}
	b.vhost(t, "after", uuid.Nil, all)
	for _, s := range sessions {
		if got := names(s.config(t)); !slices.Equal(got, []string{"after", "before"}) {
			t.Fatalf("after the burst: got %v", got)
		}
	}
}
