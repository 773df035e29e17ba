package agents

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/app"
)

// TestService_ListSearch narrows the agent list by a part of the name, the
// hostname or an address (ignoring case; '%', '_' and quotes match only
// themselves), alone and with the state filter.
func TestService_ListSearch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.setup(t)
	other := e.setup(t)
	for _, a := range []struct{ name, hostname, ip, peer, state string }{
		{"edge_1", "edge1.internal", "10.1.0.1", "192.0.2.1", StateOnline},
		{"edgex1", "EDGEX.internal", "10.1.0.2", "192.0.2.2", StateOffline},
		{"Edge%Lab", "lab.internal", "10.2.0.3", "198.51.100.3", StateOnline},
		{`o'brien "q"`, "", "", "", StatePending},
	} {
		tok := b.token(t, "agent", nil)
		if err := e.db.Model(&agentRow{}).Where("id = ?", tok.AgentID).Updates(map[string]any{
			"name": a.name, "hostname": a.hostname, "ip_address": a.ip, "peer_address": a.peer, "state": a.state,
		}).Error; err != nil {
			t.Fatalf("adjust %s: %v", a.name, err)
		}
	}
	other.token(t, "edge_1", nil)

	page := app.Page{Page: 1, PerPage: 50}
	for _, tc := range []struct {
		q, state string
		want     []string
	}{
		{"", "", []string{"Edge%Lab", "edge_1", "edgex1", `o'brien "q"`}},
		{"EDGE", "", []string{"Edge%Lab", "edge_1", "edgex1"}},
		{"e_1", "", []string{"edge_1"}},
		{"_", "", []string{"edge_1"}},
		{"%", "", []string{"Edge%Lab"}},
		{"edgex.INTERNAL", "", []string{"edgex1"}},
		{"10.2.", "", []string{"Edge%Lab"}},
		{"192.0.2.", "", []string{"edge_1", "edgex1"}},
		{"'", "", []string{`o'brien "q"`}},
		{`"q"`, "", []string{`o'brien "q"`}},
		{"'; DROP TABLE agents; --", "", nil},
		{"edge", StateOnline, []string{"Edge%Lab", "edge_1"}},
		{"", StateOffline, []string{"edgex1"}},
		{"lab", StateOffline, nil},
	} {
		t.Run(tc.q+"/"+tc.state, func(t *testing.T) {
			got, total, err := e.svc.List(b.ctx, b.ws, ListAgentsParams{Page: page, Q: tc.q, State: tc.state})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, a := range got {
				names = append(names, a.Name)
			}
			slices.SortFunc(names, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
			if !slices.Equal(names, tc.want) || total != int64(len(tc.want)) {
				t.Errorf("List(q %q, state %q) = %q (total %d), want %q", tc.q, tc.state, names, total, tc.want)
			}
		})
	}
	t.Run("TooLong", func(t *testing.T) {
		_, _, err := e.svc.List(b.ctx, b.ws, ListAgentsParams{Page: page, Q: strings.Repeat("x", app.MaxSearchLength+1)})
		var ve *app.ValidationError
		if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Field != "q" {
			t.Fatalf("List with a long q: %v, want a validation error naming q", err)
		}
	})
}
