package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent/controlplane"
	"github.com/nxmesh/nxmesh/agent/controlplane/cptest"
	"github.com/nxmesh/nxmesh/app/apptest"
	"github.com/nxmesh/nxmesh/app/embedpg"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// The failover tests run rollouts (a stream of configuration writes while a
// fleet applies them) through failures of the control plane: a master
// replica killed with SIGKILL, and PostgreSQL restarted. The masters are real
// processes; the agents are real controlplane.Clients in the test process
// with a no-op applier (cptest.NoopAgent).

const (
	// failoverAgents is the size of the simulated fleet.
	failoverAgents = 50
	// failoverWrites is the number of configuration writes of a rollout; the
	// failure comes after half of them.
	failoverWrites = 30
	// failoverWait bounds the fleet's convergence after a failure.
	failoverWait = 60 * time.Second
	// failoverOutage is how long PostgreSQL stays down at least: long enough
	// for every connection of the master to notice, and for a reconnection
	// loop to back off more than once.
	failoverOutage = 5 * time.Second
)

// kill ends the running program with SIGKILL, as a crash would, and waits
// for it to be gone.
func (p *fleetProc) kill(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10 s after SIGKILL", p.name)
	}
	p.mu.Lock()
	p.cmd, p.done, p.err = nil, nil, nil
	p.mu.Unlock()
}

// ---- REST with a record of failures ----

// failoverAPI is a REST client of one master that records every call that
// did not get the status it wanted.
type failoverAPI struct {
	api *fleetAPI

	calls    atomic.Int64
	mu       sync.Mutex
	failures []string
}

// do sends a request and decodes the answer into out (when not nil); an
// error or a status other than want is recorded and returned as an error.
func (a *failoverAPI) do(method, path string, body any, want int, out any) error {
	a.calls.Add(1)
	code, raw, err := a.api.try(method, path, body)
	if err == nil && code != want {
		err = fmt.Errorf("status %d, want %d: %s", code, want, fleetClip(raw))
	}
	if err == nil && out != nil {
		if derr := json.Unmarshal(raw, out); derr != nil {
			err = fmt.Errorf("decode %s: %w", fleetClip(raw), derr)
		}
	}
	if err != nil {
		err = fmt.Errorf("%s %s: %w", method, path, err)
		a.mu.Lock()
		a.failures = append(a.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
		a.mu.Unlock()
	}
	return err
}

// failed returns the calls that failed so far.
func (a *failoverAPI) failed() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.failures)
}

// fleetClip shortens an answer's body for a message.
func fleetClip(b []byte) string {
	const n = 300
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// poll calls the read endpoints an operator's dashboard would, every
// fleetPoll, until the returned function is called (which waits for the last
// call to end).
func (a *failoverAPI) poll(ws string) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			_ = a.do(http.MethodGet, "/v1/workspaces/"+ws+"/config/versions?per_page=1", nil, http.StatusOK, nil)
			_ = a.do(http.MethodGet, "/v1/workspaces/"+ws+"/agents?per_page=100", nil, http.StatusOK, nil)
			_ = a.do(http.MethodGet, "/v1/replicas", nil, http.StatusOK, nil)
			select {
			case <-quit:
				return
			case <-time.After(fleetPoll):
			}
		}
	}()
	return func() { close(quit); <-done }
}

// ---- The rollout's writes ----

// errCommitted: a retried create was refused because its name exists, so an
// attempt that seemed to fail was committed.
var errCommitted = errors.New("created by an earlier attempt")

// failoverSend makes one write and decodes its answer into out; it returns
// nil once the write was acknowledged with want.
type failoverSend func(method, path string, body any, want int, out any) error

// failoverWriter makes a rollout's writes, in cycles of three, each write a
// new configuration version: create an upstream, create a virtual host (for
// every agent) proxying to it, then change that host's client_max_body_size.
// It remembers what the acknowledged writes made.
type failoverWriter struct {
	ws string
	// upstreams and vhosts are the ids of the created upstreams and virtual
	// hosts, by cycle.
	upstreams []string
	vhosts    []string
	// bodySize is the client_max_body_size each virtual host was last given.
	bodySize map[string]string
	// acked counts the acknowledged writes.
	acked int
}

func newFailoverWriter(ws string) *failoverWriter {
	return &failoverWriter{ws: ws, bodySize: map[string]string{}}
}

func failoverName(kind string, k int) string { return fmt.Sprintf("fo-%s-%02d", kind, k) }

// write makes write i with send.
func (w *failoverWriter) write(i int, send failoverSend, lookup func(kind, name string) (string, error)) error {
	k := i / 3
	var created fleetID
	switch i % 3 {
	case 0:
		name := failoverName("up", k)
		err := send(http.MethodPost, "/v1/workspaces/"+w.ws+"/upstreams", map[string]any{
			"name": name, "servers": []map[string]any{{"address": fmt.Sprintf("127.0.0.1:%d", 20000+k)}},
		}, http.StatusCreated, &created)
		if errors.Is(err, errCommitted) {
			created.ID, err = lookup("upstreams", name)
		}
		if err != nil {
			return err
		}
		w.upstreams = append(w.upstreams, created.ID)
	case 1:
		name := failoverName("vh", k)
		err := send(http.MethodPost, "/v1/workspaces/"+w.ws+"/virtual-hosts", map[string]any{
			"name": name, "server_name": name + ".failover.test", "listen_port": 8080,
			"locations":     []map[string]any{{"path": "/", "upstream_id": w.upstreams[k]}},
			"target_agents": map[string]any{"type": "all"},
		}, http.StatusCreated, &created)
		if errors.Is(err, errCommitted) {
			created.ID, err = lookup("virtual-hosts", name)
		}
		if err != nil {
			return err
		}
		w.vhosts = append(w.vhosts, created.ID)
		w.bodySize[created.ID] = ""
	case 2:
		size := fmt.Sprintf("%dm", k+1)
		if err := send(http.MethodPatch, "/v1/virtual-hosts/"+w.vhosts[k], map[string]any{"client_max_body_size": size}, http.StatusOK, nil); err != nil {
			return err
		}
		w.bodySize[w.vhosts[k]] = size
	}
	w.acked++
	return nil
}

// checkConfig compares an agent's configuration with what the acknowledged
// writes made, besides the virtual host the fleet started with (base).
func (w *failoverWriter) checkConfig(u *agentv1.ConfigUpdate, base string) error {
	var problems []string
	hosts := map[string]*agentv1.VirtualHost{}
	for _, vh := range u.GetVirtualHosts() {
		hosts[vh.GetId()] = vh
	}
	if hosts[base] == nil {
		problems = append(problems, "the base virtual host is missing")
	}
	for k, id := range w.vhosts {
		vh := hosts[id]
		switch {
		case vh == nil:
			problems = append(problems, fmt.Sprintf("virtual host %s (%s) is missing", failoverName("vh", k), id))
		case vh.GetName() != failoverName("vh", k):
			problems = append(problems, fmt.Sprintf("virtual host %s is named %q, want %q", id, vh.GetName(), failoverName("vh", k)))
		case len(vh.GetLocations()) != 1 || vh.GetLocations()[0].GetUpstreamId() != w.upstreams[k]:
			problems = append(problems, fmt.Sprintf("virtual host %s has locations %v, want / on upstream %s", vh.GetName(), vh.GetLocations(), w.upstreams[k]))
		case vh.GetClientMaxBodySize() != w.bodySize[id]:
			problems = append(problems, fmt.Sprintf("virtual host %s has client_max_body_size %q, want %q", vh.GetName(), vh.GetClientMaxBodySize(), w.bodySize[id]))
		}
	}
	if got, want := len(hosts), 1+len(w.vhosts); got != want {
		problems = append(problems, fmt.Sprintf("%d virtual hosts, want %d", got, want))
	}
	ups := map[string]bool{}
	for _, up := range u.GetUpstreams() {
		ups[up.GetId()] = true
	}
	// Only the upstreams a virtual host uses are sent: those of the hosts
	// created.
	for k := range w.vhosts {
		if !ups[w.upstreams[k]] {
			problems = append(problems, fmt.Sprintf("upstream %s (%s) is missing", failoverName("up", k), w.upstreams[k]))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// ---- The simulated fleet ----

// failoverFleet is a fleet of real agent clients in the test process, each
// with a no-op applier.
type failoverFleet struct {
	ids     []string
	agents  []*cptest.NoopAgent
	clients []*controlplane.Client
	logPath string
	cancel  context.CancelFunc
	runs    sync.WaitGroup
}

// startFailoverFleet creates n agents in workspace ws with their registration
// tokens (through m), registers them, agent i with the master addresses
// masters(i), and waits until every stream is up. The clients' logs go to
// dir/agents.log.
func startFailoverFleet(t *testing.T, m *fleetMaster, ws, dir string, n int, masters func(i int) string) *failoverFleet {
	t.Helper()
	f := &failoverFleet{
		ids: make([]string, n), agents: make([]*cptest.NoopAgent, n), clients: make([]*controlplane.Client, n),
		logPath: filepath.Join(dir, "agents.log"),
	}
	logFile, err := os.Create(f.logPath)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(logFile, nil))
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	t.Cleanup(func() {
		f.cancel()
		f.runs.Wait()
		logFile.Close()
	})
	var fingerprint string
	exited := make(chan error, n)
	for i := range n {
		name := fmt.Sprintf("fo-agent-%02d", i)
		tok := m.api.createToken(t, ws, name, map[string]string{"fleet": "failover"})
		if fingerprint == "" {
			fingerprint = tok.fingerprint(t)
		}
		f.ids[i] = tok.AgentID
		f.agents[i] = cptest.NewNoopAgent(nil)
		c, err := controlplane.New(controlplane.Options{
			Master: masters(i), Token: tok.Token, CAFingerprint: fingerprint,
			DataDir:  filepath.Join(dir, "agents", name),
			Hostname: name + ".e2e.internal", Name: name, Version: "e2e",
			Handler: f.agents[i], Logger: logger.With("agent", name),
		})
		if err != nil {
			t.Fatalf("agent %s: %v", name, err)
		}
		f.clients[i] = c
		f.runs.Go(func() {
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				exited <- fmt.Errorf("agent %s stopped: %w", name, err)
			}
		})
	}
	for i, a := range f.agents {
		select {
		case <-a.Up():
		case err := <-exited:
			t.Fatal(err)
		case <-time.After(fleetWait):
			t.Fatalf("agent %d not connected after %s", i, fleetWait)
		}
	}
	return f
}

// rolloutAgent is one agent of a version's rollout, as the API shows it.
type rolloutAgent struct {
	AgentID string `json:"agent_id"`
	Name    string `json:"name"`
	State   string `json:"state"`
	Status  string `json:"status"`
}

// rolloutOf reads version v's rollout.
func rolloutOf(send failoverSend, ws string, v int64) ([]rolloutAgent, error) {
	var out struct {
		Version int64          `json:"version"`
		Agents  []rolloutAgent `json:"agents"`
	}
	if err := send(http.MethodGet, fmt.Sprintf("/v1/workspaces/%s/config/versions/%d", ws, v), nil, http.StatusOK, &out); err != nil {
		return nil, err
	}
	return out.Agents, nil
}

// versionsOf lists every configuration version of the workspace, oldest
// first.
func versionsOf(send failoverSend, ws string) ([]int64, error) {
	var all []int64
	for page := 1; ; page++ {
		var out struct {
			Data []struct {
				Version int64 `json:"version"`
			} `json:"data"`
		}
		if err := send(http.MethodGet, fmt.Sprintf("/v1/workspaces/%s/config/versions?per_page=100&page=%d", ws, page), nil, http.StatusOK, &out); err != nil {
			return nil, err
		}
		for _, v := range out.Data {
			all = append(all, v.Version)
		}
		if len(out.Data) < 100 {
			break
		}
	}
	slices.Sort(all)
	return all, nil
}

// latestVersion is the workspace's current configuration version.
func latestVersion(send failoverSend, ws string) (int64, error) {
	var out struct {
		Data []struct {
			Version int64 `json:"version"`
		} `json:"data"`
	}
	if err := send(http.MethodGet, "/v1/workspaces/"+ws+"/config/versions?per_page=1", nil, http.StatusOK, &out); err != nil {
		return 0, err
	}
	if len(out.Data) == 0 {
		return 0, nil
	}
	return out.Data[0].Version, nil
}

// awaitVersion waits until every agent received version v and the API shows
// all of them online with v applied.
func (f *failoverFleet) awaitVersion(t *testing.T, send failoverSend, ws string, v int64, timeout time.Duration) {
	t.Helper()
	fleetEventually(t, timeout, fmt.Sprintf("every agent to apply version %d", v), func() (bool, string) {
		var behind []string
		for i, a := range f.agents {
			if got := a.Last().GetVersion(); got != v {
				behind = append(behind, fmt.Sprintf("%d:%d", i, got))
			}
		}
		if len(behind) > 0 {
			return false, fmt.Sprintf("%d agents last received another version (index:version): %s", len(behind), strings.Join(behind, " "))
		}
		agents, err := rolloutOf(send, ws, v)
		if err != nil {
			return false, err.Error()
		}
		var notApplied []string
		for _, a := range agents {
			if a.Status != "applied" || a.State != "online" {
				notApplied = append(notApplied, fmt.Sprintf("%s %s/%s", a.Name, a.State, a.Status))
			}
		}
		if len(agents) != len(f.agents) || len(notApplied) > 0 {
			return false, fmt.Sprintf("the API lists %d agents for version %d, %d not online and applied: %s", len(agents), v, len(notApplied), strings.Join(notApplied, ", "))
		}
		return true, ""
	})
}

// checkRollout checks the end of a rollout that started at version base
// with the virtual host baseHost: every agent received the latest version,
// never went back to an older one (a version sent again, as a new stream's
// first push may be, is counted and logged), and runs what every
// acknowledged write made; the workspace's history has no gap, one version
// per write (more only for writes whose answer was lost: uncertain); the API
// shows every agent applied the latest version, and every version of the
// rollout applied or superseded on every agent.
func checkRollout(t *testing.T, send failoverSend, ws string, base int64, baseHost string, w *failoverWriter, uncertain int, f *failoverFleet) {
	t.Helper()
	latest, err := latestVersion(send, ws)
	if err != nil {
		t.Fatal(err)
	}
	if lo, hi := base+int64(w.acked), base+int64(w.acked+uncertain); latest < lo || latest > hi {
		t.Errorf("latest version %d after %d acknowledged writes (%d uncertain) from version %d, want %d to %d", latest, w.acked, uncertain, base, lo, hi)
	}
	started := time.Now()
	f.awaitVersion(t, send, ws, latest, failoverWait)
	t.Logf("every agent applied version %d %s after the last write", latest, time.Since(started).Round(time.Millisecond))

	versions, err := versionsOf(send, ws)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range versions {
		if v != int64(i+1) {
			t.Errorf("the workspace's versions are %v, want 1 to %d without a gap", versions, latest)
			break
		}
	}
	if n := len(versions); n == 0 || versions[n-1] != latest {
		t.Errorf("the version list %v does not end with the latest version %d", versions, latest)
	}

	// Every version of the rollout settled on every agent: applied, or
	// superseded by a later one; none left pending.
	for v := base + 1; v <= latest; v++ {
		agents, err := rolloutOf(send, ws, v)
		if err != nil {
			t.Fatal(err)
		}
		var unsettled []string
		for _, a := range agents {
			if a.Status != "applied" && a.Status != "superseded" {
				unsettled = append(unsettled, a.Name+" "+a.Status)
			}
		}
		if len(agents) != len(f.agents) || len(unsettled) > 0 {
			t.Errorf("version %d: the API lists %d agents, %d neither applied nor superseded: %s", v, len(agents), len(unsettled), strings.Join(unsettled, ", "))
		}
	}

	repeats := 0
	for i, a := range f.agents {
		got := a.Versions()
		for j := 1; j < len(got); j++ {
			if got[j] < got[j-1] {
				t.Errorf("agent %d received version %d after %d: %v", i, got[j], got[j-1], got)
				break
			}
			if got[j] == got[j-1] {
				repeats++
			}
		}
		if err := w.checkConfig(a.Last(), baseHost); err != nil {
			t.Errorf("agent %d's configuration of version %d: %v", i, a.Last().GetVersion(), err)
		}
	}
	t.Logf("rollout from version %d to %d: %d writes acknowledged, %d uncertain; %d agents, %d updates received in all (%d sent again unchanged)",
		base, latest, w.acked, uncertain, len(f.agents), f.received(), repeats)
}

// received counts the updates the fleet's agents received.
func (f *failoverFleet) received() int {
	n := 0
	for _, a := range f.agents {
		n += len(a.Versions())
	}
	return n
}

// failoverLogs logs, when t failed, the end of the given logs.
func failoverLogs(t *testing.T, logs map[string]func() string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		names := make([]string, 0, len(logs))
		for name := range logs {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			t.Logf("%s:\n%s", name, fleetTail(fleetWithoutOKRequests(logs[name]()), 150))
		}
	})
}

func fileLog(path string) func() string {
	return func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			return err.Error()
		}
		return string(b)
	}
}

// replicaList is GET /v1/replicas.
type replicaList struct {
	Data []struct {
		ID         string    `json:"id"`
		GRPCAddr   string    `json:"grpc_addr"`
		LastSeenAt time.Time `json:"last_seen_at"`
		State      string    `json:"state"`
		Leader     bool      `json:"leader"`
	} `json:"data"`
}

// leader returns the gRPC address of River's leader, "" when none is listed.
func (l replicaList) leader() string {
	for _, r := range l.Data {
		if r.Leader {
			return r.GRPCAddr
		}
	}
	return ""
}

// failoverDir makes and returns the directory dir/name.
func failoverDir(t *testing.T, dir, name string) string {
	t.Helper()
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// addFleetHost creates the virtual host every agent starts with.
func addFleetHost(t *testing.T, m *fleetMaster, ws string) string {
	t.Helper()
	var vh fleetID
	m.api.call(t, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "fo-base", "server_name": "base.failover.test", "listen_port": 8080,
		"redirect_to": "https://elsewhere.test", "target_agents": map[string]any{"type": "all"},
	}, http.StatusCreated, &vh)
	return vh.ID
}

// ---- Tests ----

// TestFailover_KillReplicaMidRollout runs two master replicas on one
// database and a fleet given both replicas' addresses, most of it on River's
// leader first. Halfway through a rollout the leader is killed with
// SIGKILL: its agents move to the survivor, every agent ends on the latest
// version without going back, runs every acknowledged write, the history
// has every version, and every call to the survivor's API (the writes, and a
// dashboard's reads throughout) succeeds.
func TestFailover_KillReplicaMidRollout(t *testing.T) {
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	dbURL := apptest.NewDatabase(t)
	victim := newFleetMaster(t, bins.master, dbURL, failoverDir(t, dir, "a"))
	survivor := newFleetMaster(t, bins.master, dbURL, failoverDir(t, dir, "b"))
	// Replicas share the keys in the data directory (encryption, sessions,
	// the agents' CA).
	survivor.proc.env = append(survivor.proc.env, "NXMESH_DATA_DIR="+victim.dataDir)
	failoverLogs(t, map[string]func() string{"killed replica log": victim.proc.log, "surviving replica log": survivor.proc.log})

	victim.start(t)
	victim.login(t)
	// The first replica up is River's leader.
	fleetEventually(t, failoverWait, "the first replica to lead", func() (bool, string) {
		var l replicaList
		code, raw, err := victim.api.try(http.MethodGet, "/v1/replicas", nil)
		if err != nil || code != http.StatusOK || json.Unmarshal(raw, &l) != nil {
			return false, fmt.Sprintf("%d %v %s", code, err, raw)
		}
		return l.leader() == victim.grpcAddr, string(raw)
	})
	survivor.start(t)
	survivor.api.token = victim.api.token
	api := &failoverAPI{api: survivor.api}
	ws := victim.workspace(t)
	baseHost := addFleetHost(t, victim, ws)

	// Two agents in three try the leader first, the others the survivor.
	fleet := startFailoverFleet(t, victim, ws, dir, failoverAgents, func(i int) string {
		if i%3 == 2 {
			return survivor.grpcAddr + "," + victim.grpcAddr
		}
		return victim.grpcAddr + "," + survivor.grpcAddr
	})
	failoverLogs(t, map[string]func() string{"agents log": fileLog(fleet.logPath)})
	base, err := latestVersion(api.do, ws)
	if err != nil {
		t.Fatal(err)
	}
	fleet.awaitVersion(t, api.do, ws, base, fleetWait)
	onVictim := 0
	for _, c := range fleet.clients {
		if c.Master() == victim.grpcAddr {
			onVictim++
		}
	}
	if want := failoverAgents - failoverAgents/3; onVictim != want {
		t.Fatalf("%d agents connected to the leader before the kill, want %d", onVictim, want)
	}

	stopPolling := api.poll(ws)
	w := newFailoverWriter(ws)
	noLookup := func(kind, name string) (string, error) {
		return "", fmt.Errorf("a %s named %s exists before it was created", kind, name)
	}
	var killed time.Time
	for i := range failoverWrites {
		if i == failoverWrites/2 {
			victim.proc.kill(t)
			killed = time.Now()
			t.Logf("killed the leader after %d writes", i)
		}
		if err := w.write(i, api.do, noLookup); err != nil {
			t.Fatalf("write %d to the survivor: %v", i, err)
		}
	}

	checkRollout(t, api.do, ws, base, baseHost, w, 0, fleet)
	for i, c := range fleet.clients {
		if c.Master() != survivor.grpcAddr {
			t.Errorf("agent %d is connected to %s, want the survivor %s", i, c.Master(), survivor.grpcAddr)
		}
	}
	// River elects the survivor once the killed leader's term runs out.
	fleetEventually(t, failoverWait, "the survivor to lead", func() (bool, string) {
		var l replicaList
		if err := api.do(http.MethodGet, "/v1/replicas", nil, http.StatusOK, &l); err != nil {
			return false, err.Error()
		}
		return l.leader() == survivor.grpcAddr, fmt.Sprintf("%+v", l.Data)
	})
	t.Logf("the survivor leads %s after the kill", time.Since(killed).Round(time.Millisecond))
	stopPolling()
	if failures := api.failed(); len(failures) > 0 {
		t.Errorf("%d of %d calls to the survivor's API failed:\n%s", len(failures), api.calls.Load(), strings.Join(failures, "\n"))
	}
	if done, err := survivor.proc.exited(); done {
		t.Errorf("the survivor exited: %v", err)
	}
}

// TestFailover_PostgresRestartMidRollout runs a master and a fleet on a
// PostgreSQL cluster of its own, and restarts PostgreSQL halfway through a
// rollout. Writes refused while it is down are retried until acknowledged.
// The master stays up, its /readyz comes back to 200 by itself, and the
// rollout completes without restarting it: every agent ends on the latest
// version, runs every acknowledged write, the history has every version,
// and the live events (LISTEN/NOTIFY) flow again.
func TestFailover_PostgresRestartMidRollout(t *testing.T) {
	bins := buildFleetBinaries(t)
	dir := t.TempDir()
	pgDir := filepath.Join(dir, "pg")
	ctx := context.Background()
	pg, err := embedpg.StartWith(ctx, pgDir, nil, apptest.TestServerOptions)
	if err != nil {
		t.Fatal(err)
	}
	var pgMu sync.Mutex
	t.Cleanup(func() {
		pgMu.Lock()
		defer pgMu.Unlock()
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.Stop(stopCtx); err != nil {
			t.Logf("stop PostgreSQL: %v", err)
		}
	})
	dbURL := pg.URL()
	m := newFleetMaster(t, bins.master, dbURL, failoverDir(t, dir, "m"))
	failoverLogs(t, map[string]func() string{"master log": m.proc.log, "PostgreSQL log": fileLog(filepath.Join(pgDir, "postgres.log"))})
	m.start(t)
	m.login(t)
	api := &failoverAPI{api: m.api}
	ws := m.workspace(t)
	baseHost := addFleetHost(t, m, ws)
	fleet := startFailoverFleet(t, m, ws, dir, failoverAgents, func(int) string { return m.grpcAddr })
	failoverLogs(t, map[string]func() string{"agents log": fileLog(fleet.logPath)})
	base, err := latestVersion(api.do, ws)
	if err != nil {
		t.Fatal(err)
	}
	fleet.awaitVersion(t, api.do, ws, base, fleetWait)
	events := m.api.streamEvents(t, "config.applied")

	// A write refused while PostgreSQL is down is retried until it is
	// acknowledged, as an operator would; a refused create whose name then
	// exists was committed by the attempt whose answer was lost.
	var failedAttempts atomic.Int64
	var refusals []string
	retry := func(method, path string, body any, want int, out any) error {
		deadline := time.Now().Add(failoverWait)
		for attempt := 0; ; attempt++ {
			code, raw, err := m.api.try(method, path, body)
			switch {
			case err == nil && code == want:
				if out != nil {
					return json.Unmarshal(raw, out)
				}
				return nil
			case err == nil && code == http.StatusConflict && attempt > 0 && method == http.MethodPost:
				return errCommitted
			case err == nil && code < 500 && code != http.StatusTooManyRequests:
				return fmt.Errorf("%s %s: status %d: %s", method, path, code, fleetClip(raw))
			}
			failedAttempts.Add(1)
			if len(refusals) < 5 {
				refusals = append(refusals, fmt.Sprintf("%s %s: %d %v %s", method, path, code, err, fleetClip(raw)))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s %s still refused after %s: %d %v %s", method, path, failoverWait, code, err, fleetClip(raw))
			}
			time.Sleep(fleetPoll)
		}
	}
	lookup := func(kind, name string) (string, error) {
		var out struct {
			Data []struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"data"`
		}
		if err := retry(http.MethodGet, "/v1/workspaces/"+ws+"/"+kind+"?per_page=100", nil, http.StatusOK, &out); err != nil {
			return "", err
		}
		for _, o := range out.Data {
			if o.Name == name {
				return o.ID, nil
			}
		}
		return "", fmt.Errorf("the %s %s was refused as existing and is not listed", kind, name)
	}

	w := newFailoverWriter(ws)
	for i := range failoverWrites / 2 {
		if err := w.write(i, retry, lookup); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	pgMu.Lock()
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = pg.Stop(stopCtx)
	cancel()
	pgMu.Unlock()
	if err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	stopped := time.Now()
	t.Logf("stopped PostgreSQL after %d writes", failoverWrites/2)

	writes := make(chan error, 1)
	go func() {
		for i := failoverWrites / 2; i < failoverWrites; i++ {
			if err := w.write(i, retry, lookup); err != nil {
				writes <- fmt.Errorf("write %d: %w", i, err)
				return
			}
		}
		writes <- nil
	}()
	readyz := func() (int, string) {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(m.base + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// Down for failoverOutage at least, and until the master noticed: a
	// write refused and /readyz unavailable.
	fleetEventually(t, fleetWait, "a write refused and /readyz unavailable while PostgreSQL is down", func() (bool, string) {
		code, body := readyz()
		return failedAttempts.Load() > 0 && code == http.StatusServiceUnavailable && time.Since(stopped) >= failoverOutage,
			fmt.Sprintf("%d refused attempts; /readyz %d %s", failedAttempts.Load(), code, body)
	})
	pgMu.Lock()
	pg, err = embedpg.StartWith(ctx, pgDir, nil, apptest.TestServerOptions)
	pgMu.Unlock()
	if err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
	restarted := time.Now()
	if pg.URL() != dbURL {
		t.Fatalf("PostgreSQL restarted at %s, was %s", pg.URL(), dbURL)
	}
	t.Logf("PostgreSQL was down %s", restarted.Sub(stopped).Round(time.Millisecond))
	fleetEventually(t, failoverWait, "the master's /readyz back to 200", func() (bool, string) {
		if done, err := m.proc.exited(); done {
			t.Fatalf("the master exited: %v", err)
		}
		code, body := readyz()
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	t.Logf("/readyz answered 200 %s after the restart", time.Since(restarted).Round(time.Millisecond))
	select {
	case err := <-writes:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(failoverWait):
		t.Fatalf("the writes did not finish %s after PostgreSQL restarted", failoverWait)
	}
	t.Logf("%d write attempts refused while PostgreSQL was down, e.g. %q", failedAttempts.Load(), refusals)

	// A refused attempt may have been committed with its answer lost.
	checkRollout(t, retry, ws, base, baseHost, w, int(failedAttempts.Load()), fleet)
	latest, err := latestVersion(retry, ws)
	if err != nil {
		t.Fatal(err)
	}
	// The events of the last version come through the LISTEN connection the
	// master re-established.
	fleetEventually(t, fleetWait, fmt.Sprintf("config.applied events of version %d from every agent", latest), func() (bool, string) {
		events.mu.Lock()
		defer events.mu.Unlock()
		from := map[any]bool{}
		for _, ev := range events.evs {
			if v, _ := ev.Data["version"].(float64); int64(v) == latest && ev.Data["success"] == true {
				from[ev.Data["agent_id"]] = true
			}
		}
		return len(from) == failoverAgents, fmt.Sprintf("%d of %d agents", len(from), failoverAgents)
	})
	// The replica's own heartbeat and River's leadership resume.
	fleetEventually(t, failoverWait, "the replica seen and leading again after the restart", func() (bool, string) {
		var l replicaList
		if err := retry(http.MethodGet, "/v1/replicas", nil, http.StatusOK, &l); err != nil {
			return false, err.Error()
		}
		for _, r := range l.Data {
			if r.GRPCAddr == m.grpcAddr {
				return r.State == "up" && r.Leader && r.LastSeenAt.After(restarted.Truncate(time.Second)), fmt.Sprintf("%+v", r)
			}
		}
		return false, fmt.Sprintf("not listed: %+v", l.Data)
	})
	if done, err := m.proc.exited(); done {
		t.Errorf("the master exited: %v", err)
	}
}
