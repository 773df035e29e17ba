package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

const (
	// propagationRounds is how many writes are timed per fleet size up to
	// 1,000 agents: with 100, the p99 by nearest rank is the second
	// slowest, not the slowest. Larger fleets take propagationRoundsLarge.
	propagationRounds      = 100
	propagationRoundsLarge = 20
	// maxDrops is how many times the master may drop the events WebSocket
	// (1013, too slow) in one fleet size before the benchmark gives up.
	maxDrops = 10
	// roundTimeout bounds one write's propagation.
	roundTimeout = 2 * time.Minute
	// idleWindow is how long an idle fleet is sampled.
	idleWindow = 20 * time.Second
	// idleSettle follows the last connection before sampling: longer than one
	// heartbeat interval (10 s), so every agent is in its steady rhythm.
	idleSettle = 12 * time.Second
)

// fleetSizes are the fleet sizes BenchmarkFleetPropagation measures: 100,
// 1,000 and 10,000 (100 and 1,000 with -short), or NXMESH_BENCH_FLEET_SIZES
// (comma-separated, e.g. "10000").
func fleetSizes(b *testing.B) []int {
	v := os.Getenv("NXMESH_BENCH_FLEET_SIZES")
	if v == "" {
		if testing.Short() {
			return []int{100, 1000}
		}
		return []int{100, 1000, 10000}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("NXMESH_BENCH_FLEET_SIZES: %q is not a fleet size", f)
		}
		out = append(out, n)
	}
	return out
}

// propagation is what one fleet size measured.
type propagation struct {
	n            int
	payloadBytes int
	// Master: the REST write's own latency, write → its commit (seen by a
	// LISTEN on the configuration channel), commit → every agent's
	// config.applied event on the events WebSocket, commit → every agent's
	// handler holding the update, and write → every config.applied.
	write, committed, applied, received, appliedFromWrite []time.Duration
	// Floor: fan-out → every SUCCESS status at the server, → every handler
	// holding the update.
	floorApplied, floorReceived []time.Duration
	// cpu is the CPU time per write of the master, of PostgreSQL (the
	// whole server) and of this process (the agents and the events
	// reader), in ms of one core, and how busy the machine's cores were,
	// %; floorCPU is the floor's (this process: the agents and the bare
	// server).
	cpu, floorCPU roundCPU
	// drops counts writes whose events were lost because the master closed
	// the events WebSocket with 1013; they are written again and not timed.
	drops int
}

// BenchmarkFleetPropagation times a configuration change reaching a fleet of N
// agents (N = 100 and 1,000; NXMESH_BENCH_FLEET_SIZES for others, e.g. 10000), each the real agent control-plane client with a
// no-op applier, against the master running as a child process (`nxmesh
// serve`, default settings, PostgreSQL from testpg).
//
// One write is a PATCH of a virtual host that targets the fleet by label; it
// is complete when the events WebSocket (/v1/events, subscribed to
// config.applied in the workspace) has delivered the new version's
// config.applied of all N agents. It is timed from the write's commit: the
// moment PostgreSQL delivers the new version's notification, which it sends
// when the writing transaction commits, to a connection of the benchmark
// LISTENing on the channel the master's replicas listen on. The time each
// no-op handler got the update is recorded as well, and the whole path from
// the start of the PATCH. roundsFor(N) writes are made one after the other.
//
// The floor, measured in the same run after the master stopped, is the same N
// clients connected to a bare AgentService over TLS that fans the same
// ConfigUpdate (the last one the master sent, a new version each round) out
// over the streams and counts the N SUCCESS statuses: no database, no
// configuration build, no events. The ratio master/floor is what the master's
// work on the path costs.
func BenchmarkFleetPropagation(b *testing.B) {
	sizes := fleetSizes(b)
	// The floor holds both ends of N streams in this process: 2N files.
	// Where the hard limit does not allow that (and cannot be raised), a
	// size is measured without its floor, and the table says so.
	limit := fileLimit(b)
	needFiles(b, min(uint64(slices.Max(sizes))*2+4096, max(limit, uint64(slices.Max(sizes))+4096)))
	bin := buildMaster(b)
	var results []propagation
	for _, n := range sizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			p := propagate(b, bin, n, uint64(n)*2+4096 <= fileLimit(b))
			results = append(results, p)
			b.ReportMetric(ms(percentile(p.applied, 0.50)), "p50-ms")
			b.ReportMetric(ms(percentile(p.applied, 0.99)), "p99-ms")
			if p.floorApplied == nil {
				return
			}
			b.ReportMetric(ms(percentile(p.floorApplied, 0.50)), "floor-p50-ms")
			b.ReportMetric(ms(percentile(p.floorApplied, 0.99)), "floor-p99-ms")
			b.ReportMetric(ms(percentile(p.applied, 0.50))/ms(percentile(p.floorApplied, 0.50)), "ratio-p50")
			b.ReportMetric(ms(percentile(p.applied, 0.99))/ms(percentile(p.floorApplied, 0.99)), "ratio-p99")
			b.ReportMetric(float64(p.drops), "ws-drops")
		})
	}
	if len(results) == 0 {
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nagents\ttarget\tstep\tp50\tp99\tratio p50\tratio p99\n")
	for _, p := range results {
		row := func(target, step string, ds, floor []time.Duration) {
			ratio50, ratio99 := "", ""
			if len(ds) == 0 {
				fmt.Fprintf(w, "%d\t%s\t%s\tnot measured: the floor needs %d open files in one process, over the hard limit\t\t\t\n", p.n, target, step, 2*p.n+4096)
				return
			}
			if len(floor) > 0 {
				ratio50 = fmt.Sprintf("%.1f", ms(percentile(ds, 0.50))/ms(percentile(floor, 0.50)))
				ratio99 = fmt.Sprintf("%.1f", ms(percentile(ds, 0.99))/ms(percentile(floor, 0.99)))
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.n, target, step,
				percentile(ds, 0.50).Round(10*time.Microsecond), percentile(ds, 0.99).Round(10*time.Microsecond), ratio50, ratio99)
		}
		row("nxmesh", "commit → all N config.applied", p.applied, p.floorApplied)
		row("nxmesh", "commit → all N handlers got it", p.received, p.floorReceived)
		row("nxmesh", "write → commit", p.committed, nil)
		row("nxmesh", "PATCH response", p.write, nil)
		row("nxmesh", "write → all N config.applied", p.appliedFromWrite, p.floorApplied)
		row("floor", "fan-out → all N SUCCESS", p.floorApplied, nil)
		row("floor", "fan-out → all N handlers got it", p.floorReceived, nil)
	}
	fmt.Fprintf(w, "(%d sequential writes per size up to 1,000 agents and %d above, p99 by nearest rank (the second slowest of %d, the slowest of %d); ConfigUpdate of %d bytes; no-op applier reports SUCCESS at once; ratio = nxmesh / floor)\n",
		propagationRounds, propagationRoundsLarge, propagationRounds, propagationRoundsLarge, results[0].payloadBytes)
	for _, p := range results {
		if p.drops > 0 {
			fmt.Fprintf(w, "(N=%d: the master closed the events WebSocket with 1013, too slow, %d time(s); those writes were repeated, not timed)\n", p.n, p.drops)
		}
	}
	w.Flush()

	// Where the CPU goes: on a small machine both sides can be bound by it,
	// and the ratio then follows the work per write.
	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nagents\tCPU per write (ms of one core)\tmaster\tPostgreSQL\tthis process\ttotal\tcores busy\n")
	for _, p := range results {
		c := p.cpu
		fmt.Fprintf(w, "%d\tnxmesh\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f %%\n", p.n, c.master, c.pg, c.bench, c.master+c.pg+c.bench, c.busy)
		if p.floorApplied != nil {
			f := p.floorCPU
			fmt.Fprintf(w, "%d\tfloor\t\t\t%.1f\t%.1f\t%.0f %%\n", p.n, f.bench, f.bench, f.busy)
		}
	}
	fmt.Fprintf(w, "(over the timed writes, from /proc; this process runs the N agents and the events reader, and for the floor the bare server too; PostgreSQL is the whole shared server)\n")
	w.Flush()
}

// roundCPU is CPU time per write, in ms of one core, and the machine's
// busy share over the writes, %.
type roundCPU struct{ master, pg, bench, busy float64 }

// cpuMark is the CPU counters at the start of the timed writes.
type cpuMark struct {
	master, pg, bench uint64
	machine           cpuTicks
}

// markCPU reads the counters of the master (pid, 0 for none), of the
// PostgreSQL server (postmaster, 0 for none) and of this process.
func markCPU(b *testing.B, pid, postmaster int) cpuMark {
	m := cpuMark{bench: ownTicks(b, os.Getpid()), machine: machineTicks()}
	if pid > 0 {
		m.master = ownTicks(b, pid)
	}
	if postmaster > 0 {
		m.pg = treeTicks(postmaster)
	}
	return m
}

// since is the CPU per write of writes writes since m.
func (m cpuMark) since(b *testing.B, pid, postmaster, writes int) roundCPU {
	now := markCPU(b, pid, postmaster)
	per := func(ticks uint64) float64 { return float64(ticks) / clockTicks * 1000 / float64(writes) }
	c := roundCPU{bench: per(now.bench - m.bench)}
	if pid > 0 {
		c.master = per(now.master - m.master)
	}
	if postmaster > 0 {
		c.pg = per(now.pg - m.pg)
	}
	if d := now.machine.total - m.machine.total; d > 0 {
		c.busy = float64(now.machine.busy-m.machine.busy) / float64(d) * 100
	}
	return c
}

// roundsFor is how many writes are timed for a fleet of n agents.
func roundsFor(n int) int {
	if n > 1000 {
		return propagationRoundsLarge
	}
	return propagationRounds
}

// propagate measures one fleet size against the master, then (withFloor)
// the floor.
func propagate(b *testing.B, bin string, n int, withFloor bool) propagation {
	ctx := context.Background()
	p := propagation{n: n}

	m := startMaster(b, bin)
	api := newREST(b, m.httpURL)
	ws := api.defaultWorkspace(b)
	var vh struct {
		ID string `json:"id"`
	}
	err := api.do(ctx, http.MethodPost, "/v1/workspaces/"+ws+"/virtual-hosts", map[string]any{
		"name": "bench", "server_name": "bench.example.com", "listen_port": 8080,
		"locations":     []map[string]any{{"path": "/", "proxy_pass": "http://127.0.0.1:9000"}},
		"target_agents": map[string]string{"type": "selector", "label_selector": "env=bench"},
	}, &vh, http.StatusCreated)
	if err != nil {
		b.Fatal(err)
	}
	base := api.configVersion(b, ws)
	tokens, fingerprint := api.createTokens(b, ws, n, "prop")

	received := newRounds()
	initial := received.arm(base, n)
	agents := startFleet(b, m.grpcAddr, fingerprint, tokens, received)
	if _, err := received.wait(initial, roundTimeout); err != nil {
		b.Fatalf("initial configuration: %v", err)
	}
	api.waitOnline(b, ws, n, roundTimeout)
	applied, commits := newRounds(), newRounds()
	feed := subscribeApplied(b, m.httpURL, api.token, ws, applied)
	listenCommits(b, m.dbURL, commits)

	v := base
	rounds := roundsFor(n)
	pgPID := postmasterPID(b, m.dbURL)
	mark := markCPU(b, m.pid, pgPID)
	writes := 0
	for i := 1; len(p.applied) < rounds; i++ {
		writes++
		v = base + int64(i)
		appliedDone, receivedDone, committed := applied.arm(v, n), received.arm(v, n), commits.arm(v, 1)
		start := time.Now()
		err := api.do(ctx, http.MethodPatch, "/v1/virtual-hosts/"+vh.ID,
			map[string]any{"client_max_body_size": fmt.Sprintf("%dm", i)}, nil, http.StatusOK)
		if err != nil {
			b.Fatal(err)
		}
		wrote := time.Since(start)
		lastApplied, err := applied.wait(appliedDone, roundTimeout)
		if errors.Is(err, errDropped) {
			// This write's events went with the subscription: once the
			// master recorded every agent's apply, write again.
			p.drops++
			if p.drops > maxDrops {
				b.Fatalf("the events WebSocket was dropped %d times", p.drops)
			}
			if err := feed.reconnect(); err != nil {
				b.Fatal(err)
			}
			if _, err := received.wait(receivedDone, roundTimeout); err != nil {
				b.Fatalf("write %d: handlers: %v", i, err)
			}
			api.waitApplied(b, ws, v, n, roundTimeout)
			continue
		}
		if err != nil {
			b.Fatalf("write %d: config.applied: %v\nmaster log:\n%s", i, err, m.logTail())
		}
		lastReceived, err := received.wait(receivedDone, roundTimeout)
		if err != nil {
			b.Fatalf("write %d: handlers: %v", i, err)
		}
		commit, err := commits.wait(committed, roundTimeout)
		if err != nil {
			b.Fatalf("write %d: commit: %v", i, err)
		}
		p.write = append(p.write, wrote)
		p.committed = append(p.committed, commit.Sub(start))
		p.applied = append(p.applied, lastApplied.Sub(commit))
		p.received = append(p.received, lastReceived.Sub(commit))
		p.appliedFromWrite = append(p.appliedFromWrite, lastApplied.Sub(start))
	}
	p.cpu = mark.since(b, m.pid, pgPID, writes)
	payload := agents.agents[0].Last()
	if payload.GetVersion() != v || len(payload.GetVirtualHosts()) != 1 {
		b.Fatalf("last update: version %d with %d virtual hosts, want version %d with 1", payload.GetVersion(), len(payload.GetVirtualHosts()), v)
	}
	p.payloadBytes = proto.Size(payload)
	agents.stop()
	m.stop()
	if !withFloor {
		return p
	}

	floorApplied, floorReceived := newRounds(), newRounds()
	floor := startFloor(b, floorApplied)
	floorTokens := make([]string, n)
	for i := range floorTokens {
		floorTokens[i] = "floor-token"
	}
	floorAgents := startFleet(b, floor.addr, floor.fingerprint, floorTokens, floorReceived)
	msgs := make([]*agentv1.MasterMessage, rounds+1)
	for i := 1; i <= rounds; i++ {
		u := proto.CloneOf(payload)
		u.Version = payload.GetVersion() + int64(i)
		u.ConfigId = fmt.Sprintf("floor-v%d", u.Version)
		msgs[i] = &agentv1.MasterMessage{Timestamp: time.Now().Unix(), Payload: &agentv1.MasterMessage_ConfigUpdate{ConfigUpdate: u}}
	}
	floorMark := markCPU(b, 0, 0)
	for i := 1; i <= rounds; i++ {
		v := msgs[i].GetConfigUpdate().GetVersion()
		appliedDone, receivedDone := floorApplied.arm(v, n), floorReceived.arm(v, n)
		start := time.Now()
		if got := floor.fanout(msgs[i]); got != n {
			b.Fatalf("floor round %d: fanned out to %d of %d streams", i, got, n)
		}
		lastApplied, err := floorApplied.wait(appliedDone, roundTimeout)
		if err != nil {
			b.Fatalf("floor round %d: %v", i, err)
		}
		lastReceived, err := floorReceived.wait(receivedDone, roundTimeout)
		if err != nil {
			b.Fatalf("floor round %d: handlers: %v", i, err)
		}
		p.floorApplied = append(p.floorApplied, lastApplied.Sub(start))
		p.floorReceived = append(p.floorReceived, lastReceived.Sub(start))
	}
	p.floorCPU = floorMark.since(b, 0, 0, rounds)
	floorAgents.stop()
	return p
}

// idleStep is the master's usage with a number of idle agents connected.
type idleStep struct {
	agents  int
	connect time.Duration // registering and connecting this step's new agents
	usage
}

// BenchmarkFleetIdle measures the master (`nxmesh serve` as a child process,
// default settings) holding an idle fleet: 0 agents, then 1,000, 5,000 and 10,000
// (1,000 only with -short), each the real agent control-plane client sending
// a health report every 10 s (the master's default heartbeat interval) and
// doing nothing else. For each step it samples, over idleWindow after the fleet
// settled, the master's VmRSS every second and its CPU time, and the CPU time
// of the whole PostgreSQL server (where heartbeats land in batched
// transactions); the agents run in the bench process, outside both. The
// registration tokens of every agent are created before the 0-agent sample.
func BenchmarkFleetIdle(b *testing.B) {
	steps := []int{1000, 5000, 10000}
	if testing.Short() {
		steps = steps[:1]
	}
	total := steps[len(steps)-1]
	needFiles(b, uint64(total)+4096)
	bin := buildMaster(b)
	m := startMaster(b, bin)
	api := newREST(b, m.httpURL)
	ws := api.defaultWorkspace(b)
	tokens, fingerprint := api.createTokens(b, ws, total, "idle")
	api.hc.CloseIdleConnections()
	pg := postmasterPID(b, m.dbURL)

	// The token burst's garbage is collected before the baseline.
	time.Sleep(5 * time.Second)
	rows := []idleStep{{usage: sample(b, m.pid, pg, idleWindow)}}
	unused := newRounds()
	connected := 0
	for _, step := range steps {
		start := time.Now()
		startFleet(b, m.grpcAddr, fingerprint, tokens[connected:step], unused)
		api.waitOnline(b, ws, step, roundTimeout)
		took := time.Since(start)
		connected = step
		time.Sleep(idleSettle)
		u := sample(b, m.pid, pg, idleWindow)
		// The figures are those of a steady fleet only if no agent dropped
		// out meanwhile.
		if online, err := api.onlineAgents(context.Background(), ws); err != nil || online != step {
			b.Fatalf("after sampling %d agents: %d online (%v)", step, online, err)
		}
		rows = append(rows, idleStep{agents: step, connect: took, usage: u})
	}

	base := rows[0]
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nidle agents\tconnect\tmaster RSS mean\tRSS max\tRSS/agent\tmaster CPU\tCPU/1000 agents\tPostgreSQL CPU\n")
	for _, r := range rows {
		perAgent, per1000 := "", ""
		if r.agents > 0 {
			perAgent = fmt.Sprintf("%.1f KiB", (float64(r.rssMeanKiB)-float64(base.rssMeanKiB))/float64(r.agents))
			per1000 = fmt.Sprintf("%.2f %%", (r.cpuPct-base.cpuPct)/float64(r.agents)*1000)
			b.ReportMetric(float64(r.rssMeanKiB)/1024, fmt.Sprintf("rss-MiB@%d", r.agents))
			b.ReportMetric((float64(r.rssMeanKiB)-float64(base.rssMeanKiB))/float64(r.agents), fmt.Sprintf("KiB/agent@%d", r.agents))
			b.ReportMetric(r.cpuPct, fmt.Sprintf("cpu%%@%d", r.agents))
			b.ReportMetric(r.pgCPUPct, fmt.Sprintf("pg-cpu%%@%d", r.agents))
		} else {
			b.ReportMetric(float64(r.rssMeanKiB)/1024, "rss-MiB@0")
			b.ReportMetric(r.cpuPct, "cpu%@0")
		}
		connect := ""
		if r.connect > 0 {
			connect = r.connect.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(w, "%d\t%s\t%.1f MiB\t%.1f MiB\t%s\t%.2f %%\t%s\t%.2f %%\n", r.agents, connect,
			float64(r.rssMeanKiB)/1024, float64(r.rssMaxKiB)/1024, perAgent, r.cpuPct, per1000, r.pgCPUPct)
	}
	fmt.Fprintf(w, "(sampled over %s after a %s settle; CPU in %% of one core; per-agent figures against the 0-agent row; heartbeat 10 s)\n", idleWindow, idleSettle)
	w.Flush()
}
