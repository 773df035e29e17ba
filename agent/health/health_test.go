package health

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// script is a controllable probe and clock: each round, every address
// answers with its next scripted result ('+' passes, '-' fails) and the
// clock moves one second.
type script struct {
	mu      sync.Mutex
	now     time.Time
	results map[string]string
	round   int
}

func (s *script) probe(_ context.Context, t Target) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.results[t.Address]
	if s.round >= len(r) || r[s.round] == '+' {
		return nil
	}
	return errors.New("GET " + t.Path + ": 503")
}

func (s *script) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// rounds runs n probe rounds, one second apart.
func (s *script) rounds(t *testing.T, c *Checker, n int) {
	t.Helper()
	for range n {
		c.CheckNow(t.Context())
		s.mu.Lock()
		s.round++
		s.now = s.now.Add(time.Second)
		s.mu.Unlock()
	}
}

func upstream(id string, healthy, unhealthy uint32, servers ...*agentv1.UpstreamServer) *agentv1.Upstream {
	return &agentv1.Upstream{Id: id, Servers: servers, HealthCheck: &agentv1.HealthCheckConfig{
		Enabled: true, Path: "/healthz", IntervalSeconds: 1, TimeoutSeconds: 1,
		HealthyThreshold: healthy, UnhealthyThreshold: unhealthy,
	}}
}

var quiet = slog.New(slog.DiscardHandler)

func srv(addr string) *agentv1.UpstreamServer { return &agentv1.UpstreamServer{Address: addr} }

func TestChecker_Thresholds(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name               string
		healthy, unhealthy uint32
		results            string
		wantHealthy        bool
		wantChanges        int
		// wantChangedRound is the round (0-based) of the last change, -1
		// for none.
		wantChangedRound int
		wantError        bool
	}{
		{name: "StartsHealthy", healthy: 2, unhealthy: 3, results: "", wantHealthy: true, wantChangedRound: -1},
		{name: "StaysHealthyBelowUnhealthyThreshold", healthy: 2, unhealthy: 3, results: "--", wantHealthy: true, wantChangedRound: -1, wantError: true},
		{name: "TurnsUnhealthyAtUnhealthyThreshold", healthy: 2, unhealthy: 3, results: "---", wantHealthy: false, wantChanges: 1, wantChangedRound: 2, wantError: true},
		{name: "PassResetsFailureCount", healthy: 2, unhealthy: 3, results: "--+--", wantHealthy: true, wantChangedRound: -1, wantError: true},
		{name: "StaysUnhealthyBelowHealthyThreshold", healthy: 2, unhealthy: 3, results: "---+", wantHealthy: false, wantChanges: 1, wantChangedRound: 2},
		{name: "RecoversAtHealthyThreshold", healthy: 2, unhealthy: 3, results: "---++", wantHealthy: true, wantChanges: 2, wantChangedRound: 4},
		{name: "FailureResetsPassCount", healthy: 2, unhealthy: 3, results: "---+-+", wantHealthy: false, wantChanges: 1, wantChangedRound: 2},
		{name: "ZeroThresholdsTakeDefaults", healthy: 0, unhealthy: 0, results: "---+", wantHealthy: false, wantChanges: 1, wantChangedRound: 2},
		{name: "ZeroThresholdsRecoverAfterTwoPasses", healthy: 0, unhealthy: 0, results: "---++", wantHealthy: true, wantChanges: 2, wantChangedRound: 4},
		{name: "ThresholdsOfOneFlipAtOnce", healthy: 1, unhealthy: 1, results: "-+-", wantHealthy: false, wantChanges: 3, wantChangedRound: 2, wantError: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &script{now: start, results: map[string]string{"10.0.0.1:80": tc.results}}
			var changes atomic.Int32
			c := New(Options{Probe: s.probe, Now: s.clock, OnChange: func() { changes.Add(1) }, Logger: quiet})
			c.Configure([]*agentv1.Upstream{upstream("up", tc.healthy, tc.unhealthy, srv("10.0.0.1:80"))})
			s.rounds(t, c, len(tc.results))
			states := c.States()
			if len(states) != 1 {
				t.Fatalf("states = %v", states)
			}
			st := states[0]
			if st.Healthy != tc.wantHealthy {
				t.Errorf("healthy = %v, want %v", st.Healthy, tc.wantHealthy)
			}
			if int(changes.Load()) != tc.wantChanges {
				t.Errorf("OnChange called %d times, want %d", changes.Load(), tc.wantChanges)
			}
			wantChanged := time.Time{}
			if tc.wantChangedRound >= 0 {
				wantChanged = start.Add(time.Duration(tc.wantChangedRound) * time.Second)
			}
			if !st.ChangedAt.Equal(wantChanged) {
				t.Errorf("changed_at = %v, want %v", st.ChangedAt, wantChanged)
			}
			if n := len(tc.results); n > 0 && !st.CheckedAt.Equal(start.Add(time.Duration(n-1)*time.Second)) {
				t.Errorf("checked_at = %v after %d rounds", st.CheckedAt, n)
			}
			if (st.LastError != "") != tc.wantError {
				t.Errorf("last_error = %q, want an error: %v", st.LastError, tc.wantError)
			}
		})
	}
}

func TestChecker_Overrides(t *testing.T) {
	t.Parallel()
	backup := func(addr string) *agentv1.UpstreamServer { return &agentv1.UpstreamServer{Address: addr, Backup: true} }
	down := func(addr string) *agentv1.UpstreamServer { return &agentv1.UpstreamServer{Address: addr, Down: true} }
	tests := []struct {
		name    string
		servers []*agentv1.UpstreamServer
		// results per address; thresholds are 1 healthy, 2 unhealthy.
		results  map[string]string
		wantDown []string
	}{
		{name: "NoneWhileAllPass", servers: []*agentv1.UpstreamServer{srv("a:1"), srv("b:1")},
			results: map[string]string{"a:1": "++", "b:1": "++"}},
		{name: "FailingServerMarkedDown", servers: []*agentv1.UpstreamServer{srv("a:1"), srv("b:1")},
			results: map[string]string{"a:1": "--", "b:1": "++"}, wantDown: []string{"a:1"}},
		{name: "LastHealthyStaysUpWhenAllFail", servers: []*agentv1.UpstreamServer{srv("a:1"), srv("b:1"), srv("c:1")},
			results: map[string]string{"a:1": "-----", "b:1": "++---", "c:1": "-----"}, wantDown: []string{"a:1", "c:1"}},
		{name: "FirstStaysUpWhenAllFailTogether", servers: []*agentv1.UpstreamServer{srv("a:1"), srv("b:1")},
			results: map[string]string{"a:1": "--", "b:1": "--"}, wantDown: []string{"b:1"}},
		{name: "SoleServerNeverMarkedDown", servers: []*agentv1.UpstreamServer{srv("a:1")},
			results: map[string]string{"a:1": "---"}},
		{name: "PrimaryKeptUpEvenWithHealthyBackup", servers: []*agentv1.UpstreamServer{srv("a:1"), backup("b:1")},
			results: map[string]string{"a:1": "--", "b:1": "++"}},
		{name: "FailingBackupsMarkedDown", servers: []*agentv1.UpstreamServer{srv("a:1"), backup("b:1"), backup("c:1")},
			results: map[string]string{"a:1": "++", "b:1": "--", "c:1": "--"}, wantDown: []string{"b:1", "c:1"}},
		{name: "ServersDownInConfigNotProbedNorCounted", servers: []*agentv1.UpstreamServer{srv("a:1"), down("b:1"), srv("c:1")},
			results: map[string]string{"a:1": "--", "b:1": "--", "c:1": "++"}, wantDown: []string{"a:1"}},
		{name: "RestoredWhenPassingAgain", servers: []*agentv1.UpstreamServer{srv("a:1"), srv("b:1")},
			results: map[string]string{"a:1": "--+", "b:1": "+++"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := &script{now: time.Unix(1_700_000_000, 0), results: tc.results}
			var probed sync.Map
			probe := func(ctx context.Context, tg Target) error {
				probed.Store(tg.Address, true)
				return s.probe(ctx, tg)
			}
			c := New(Options{Probe: probe, Now: s.clock, Logger: quiet})
			u := &agentv1.ConfigUpdate{Upstreams: []*agentv1.Upstream{
				upstream("up", 1, 2, tc.servers...),
				// An upstream without health checks is never touched.
				{Id: "plain", Servers: []*agentv1.UpstreamServer{srv("a:1")}},
			}}
			c.Configure(u.GetUpstreams())
			n := 0
			for _, r := range tc.results {
				n = max(n, len(r))
			}
			s.rounds(t, c, n)
			var got []string
			for _, k := range c.Overrides(u) {
				if k.UpstreamID != "up" {
					t.Errorf("override of upstream %q", k.UpstreamID)
				}
				got = append(got, k.Address)
			}
			if !slices.Equal(got, tc.wantDown) {
				t.Errorf("marked down = %v, want %v", got, tc.wantDown)
			}
			for _, sv := range tc.servers {
				if _, ok := probed.Load(sv.GetAddress()); ok == sv.GetDown() {
					t.Errorf("server %s (down %v) probed: %v", sv.GetAddress(), sv.GetDown(), ok)
				}
			}
		})
	}
}

func TestOverlay(t *testing.T) {
	t.Parallel()
	u := &agentv1.ConfigUpdate{Version: 4, Checksum: "abc123", Upstreams: []*agentv1.Upstream{
		upstream("up", 1, 1, srv("a:1"), srv("b:1")),
	}}
	t.Run("NoKeysIsTheUpdateItself", func(t *testing.T) {
		t.Parallel()
		if got := Overlay(u, "abc123", nil); got != u {
			t.Error("Overlay without keys copied the update")
		}
	})
	t.Run("MarksServersAndKeepsTheMastersChecksumRecoverable", func(t *testing.T) {
		t.Parallel()
		got := Overlay(u, "abc123", []Key{{"up", "b:1"}})
		if got.GetUpstreams()[0].GetServers()[0].GetDown() || !got.GetUpstreams()[0].GetServers()[1].GetDown() {
			t.Errorf("servers = %v", got.GetUpstreams()[0].GetServers())
		}
		if u.GetUpstreams()[0].GetServers()[1].GetDown() {
			t.Error("the original update was changed")
		}
		if got.GetVersion() != 4 || got.GetChecksum() == "abc123" || MasterChecksum(got.GetChecksum()) != "abc123" {
			t.Errorf("version %d checksum %q (master %q)", got.GetVersion(), got.GetChecksum(), MasterChecksum(got.GetChecksum()))
		}
		other := Overlay(u, "abc123", []Key{{"up", "a:1"}})
		if other.GetChecksum()[:8] == got.GetChecksum()[:8] || got.GetChecksum()[:8] == "abc123"[:6] {
			t.Errorf("checksums do not start differently: %q %q", got.GetChecksum(), other.GetChecksum())
		}
	})
	t.Run("MasterChecksumOfAPlainChecksumIsItself", func(t *testing.T) {
		t.Parallel()
		if MasterChecksum("abc123") != "abc123" {
			t.Error(MasterChecksum("abc123"))
		}
	})
}

func TestHTTPProbe(t *testing.T) {
	t.Parallel()
	var gotHost atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			gotHost.Store(r.Host)
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	tests := []struct {
		name, addr, path, wantErr string
	}{
		{name: "2xxPasses", addr: addr, path: "/ok"},
		{name: "3xxPassesWithoutFollowing", addr: addr, path: "/redirect"},
		{name: "5xxFails", addr: addr, path: "/bad", wantErr: "GET /bad: 503"},
		{name: "TimeoutFails", addr: addr, path: "/slow", wantErr: "GET /slow: no answer within 200ms"},
		{name: "RefusedConnectionFails", addr: closed, path: "/ok", wantErr: "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := Target{Key: Key{"up", tc.addr}, Path: tc.path, Timeout: 200 * time.Millisecond}
			ctx, cancel := context.WithTimeout(t.Context(), tg.Timeout)
			defer cancel()
			err := HTTPProbe(ctx, tg)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("HTTPProbe = %v, want %q", err, tc.wantErr)
			}
			if tc.path == "/ok" && tc.addr == addr {
				if h, _ := gotHost.Load().(string); h != addr {
					t.Errorf("Host header = %q, want %q", h, addr)
				}
			}
		})
	}
}
