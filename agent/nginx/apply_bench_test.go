package nginx

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent/nginx/render"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Size of the configuration both sides of BenchmarkApplyVsManual apply.
const (
	benchVirtualHosts = 100
	// benchRounds is how many timed, paced applies each side makes per b.N.
	benchRounds = 20
	// benchBurst is how many back-to-back applies each side makes per b.N.
	benchBurst = 10
	// benchSettle is the least time between two paced applies to the same
	// nginx. After a reload the master sleeps 100 ms before it tells the
	// old workers to quit (ngx_msleep(100) in ngx_master_process_cycle),
	// with signals blocked: a SIGHUP sent sooner waits for that sleep, and
	// the paced figures would depend on how fast the rounds follow one
	// another. The burst figures show applies that follow one another at
	// once.
	benchSettle = 250 * time.Millisecond
	// benchWorkerPoll is how often the manual side looks for the new
	// workers. It is finer than the agent's pollInterval on purpose: the
	// baseline is measured as tightly as a script could.
	benchWorkerPoll = time.Millisecond
	// benchReloadTimeout bounds the wait for new workers on the manual side.
	benchReloadTimeout = 15 * time.Second
)

// BenchmarkApplyVsManual compares, on the same machine in the same run and
// with the same configuration (benchVirtualHosts virtual hosts, as many
// upstreams), one config change applied to a real nginx
//
//   - by the agent: Manager.Apply in supervise mode (render into a new
//     version directory, nginx -t, swap, SIGHUP, wait for a new worker and
//     no [emerg], then for the old workers to close their sockets);
//   - by hand: the same update rendered with render.Render beforehand and
//     written over the files of a second nginx prefix, then
//     `nginx -t -p PREFIX -c nginx.conf && nginx -s reload -p PREFIX -c
//     nginx.conf`. `nginx -s reload` returns once it has signalled the
//     master, before any worker runs the new configuration, so the manual
//     side is reported three times: until reload returns, until the master
//     has started a new worker, and until the old workers have closed
//     their listening sockets (the last two are what the agent waits for).
//
// Every apply alternates the upstreams between two backends so that each
// one is a real change. The main figures are paced (benchSettle between
// two applies to the same nginx) and the sides take turns going first; a
// burst of back-to-back applies per side follows. Each apply checks its
// outcome; at the end both nginx must proxy to the backend of the last
// version.
func BenchmarkApplyVsManual(b *testing.B) {
	bin := nginxBinary(b)
	ctx := b.Context()
	backends := [2]string{benchBackend(b, "backend-even"), benchBackend(b, "backend-odd")}
	agentPort, manualPort := benchFreePort(b), benchFreePort(b)

	m := benchManager(b, bin)
	man := benchStartManual(b, bin, m, benchUpdate(1, manualPort, backends))
	if res := m.Apply(ctx, benchUpdate(1, agentPort, backends), nil); res.Status != agentv1.ConfigApplyStatus_SUCCESS {
		b.Fatalf("agent warm-up apply: %s: %s", res.Status, res.Message)
	}

	var (
		agentMS, agentUpMS, agentClosedMS, renderMS             []float64
		writeMS, testMS, signalMS, manualMS, fullMS, closedMS   []float64
		burstAgentMS, burstManualMS, burstFullMS, burstClosedMS []float64
		// Pieces of the agent's pipeline, timed apart from the comparison
		// to explain where its time goes.
		agentWriteMS, agentTestMS, scanMS []float64
	)
	scratch := b.TempDir()
	version := int64(1)
	agentDone, manualDone := time.Now(), time.Now()
	settle := func(since time.Time) { time.Sleep(time.Until(since.Add(benchSettle))) }

	// runAgent applies version v through the Manager and returns how long
	// Apply took. With observe, a goroutine watches the master as the
	// manual side is watched (1 ms polls), and runAgent also returns when
	// the first new worker appeared and when the old workers had closed
	// their sockets (0 when not seen by the time Apply returned): that
	// splits the agent's time into reaching nginx, nginx's own reload, and
	// noticing it.
	runAgent := func(v int64, observe bool) (total, up, closed float64) {
		u := benchUpdate(v, agentPort, backends)
		stop := make(chan struct{})
		var seenc <-chan benchSeen
		if observe {
			master := m.masterPID()
			seenc = benchObserve(master, children(master), stop)
		}
		start := time.Now()
		res := m.Apply(ctx, u, nil)
		end := time.Now()
		agentDone = end
		close(stop)
		var seen benchSeen
		if observe {
			seen = <-seenc
		}
		if res.Status != agentv1.ConfigApplyStatus_SUCCESS || !res.Reloaded {
			b.Fatalf("agent apply of version %d: %s (reloaded %v): %s", v, res.Status, res.Reloaded, res.Message)
		}
		if observe && seen.up.IsZero() {
			b.Fatalf("agent apply of version %d succeeded but no new worker was seen", v)
		}
		// What the observer noticed only after Apply returned counts as
		// seen at the return.
		since := func(t time.Time) float64 {
			if t.IsZero() {
				return 0
			}
			if t.After(end) {
				t = end
			}
			return benchMS(t.Sub(start))
		}
		return benchMS(end.Sub(start)), since(seen.up), since(seen.closed)
	}
	runManual := func(v int64) benchManualTimes {
		// Rendering is the operator's work, done before the clock starts;
		// its cost is reported on its own.
		start := time.Now()
		files, err := render.Render(benchUpdate(v, manualPort, backends), render.Options{ConfDir: man.confDir, StatusPort: man.statusPort})
		if err != nil {
			b.Fatalf("render version %d: %v", v, err)
		}
		renderMS = append(renderMS, benchMS(time.Since(start)))
		t := man.apply(ctx, b, files)
		manualDone = time.Now()
		return t
	}
	recordAgent := func(total, up, closed float64) {
		agentMS, agentUpMS = append(agentMS, total), append(agentUpMS, up)
		if closed > 0 {
			agentClosedMS = append(agentClosedMS, closed)
		}
	}
	recordManual := func(t benchManualTimes) {
		writeMS = append(writeMS, benchMS(t.write))
		testMS = append(testMS, benchMS(t.test))
		signalMS = append(signalMS, benchMS(t.signal))
		manualMS = append(manualMS, benchMS(t.write+t.test+t.signal))
		fullMS = append(fullMS, benchMS(t.write+t.test+t.signal+t.workers))
		closedMS = append(closedMS, benchMS(t.write+t.test+t.signal+t.closed))
	}

	b.ResetTimer()
	for range b.N {
		for round := range benchRounds {
			version++
			if round%2 == 0 {
				settle(agentDone)
				recordAgent(runAgent(version, true))
				settle(manualDone)
				recordManual(runManual(version))
			} else {
				settle(manualDone)
				recordManual(runManual(version))
				settle(agentDone)
				recordAgent(runAgent(version, true))
			}
			p := benchAgentPieces(ctx, b, m, benchUpdate(version, agentPort, backends), filepath.Join(scratch, strconv.FormatInt(version, 10)))
			agentWriteMS = append(agentWriteMS, benchMS(p.write))
			agentTestMS = append(agentTestMS, benchMS(p.test))
			scanMS = append(scanMS, benchMS(p.scan))
		}
		// Bursts: each side applies benchBurst versions back to back.
		settle(agentDone)
		for i := range benchBurst {
			total, _, _ := runAgent(version+1+int64(i), false)
			burstAgentMS = append(burstAgentMS, total)
		}
		settle(manualDone)
		for i := range benchBurst {
			t := runManual(version + 1 + int64(i))
			burstManualMS = append(burstManualMS, benchMS(t.write+t.test+t.signal))
			burstFullMS = append(burstFullMS, benchMS(t.write+t.test+t.signal+t.workers))
			burstClosedMS = append(burstClosedMS, benchMS(t.write+t.test+t.signal+t.closed))
		}
		version += benchBurst
	}
	b.StopTimer()

	// Both must now serve the last version. The check allows a grace: a
	// manual reload is over here once old workers have closed their
	// sockets, but a connection they accepted just before is still theirs.
	want := benchBackendName(version)
	converge := map[string]float64{}
	for _, c := range []struct {
		side string
		port uint32
	}{{"agent", agentPort}, {"manual", manualPort}} {
		start := time.Now()
		for {
			got, err := benchFetch(c.port, benchHost(benchVirtualHosts-1))
			if err == nil && got == want {
				break
			}
			if time.Since(start) > 5*time.Second {
				b.Fatalf("%s nginx after version %d: got %q (%v), want %q", c.side, version, got, err, want)
			}
			time.Sleep(benchWorkerPoll)
		}
		converge[c.side] = benchMS(time.Since(start))
	}

	agent50, agent99 := benchPercentile(agentMS, 50), benchPercentile(agentMS, 99)
	man50, man99 := benchPercentile(manualMS, 50), benchPercentile(manualMS, 99)
	full50, full99 := benchPercentile(fullMS, 50), benchPercentile(fullMS, 99)
	closed50, closed99 := benchPercentile(closedMS, 50), benchPercentile(closedMS, 99)
	// One block on stdout: benchmark logs are cut to their first lines.
	var out strings.Builder
	fmt.Fprintf(&out, "\nApplyVsManual: %d virtual hosts + %d upstreams; %d paced applies per side (>= %s apart), then %d back to back; p99 of so few samples is their maximum\n",
		benchVirtualHosts, benchVirtualHosts, len(agentMS), benchSettle, len(burstAgentMS))
	fmt.Fprintf(&out, "  %-52s %9s %9s %9s\n", "ms per apply", "p50", "p99", "mean")
	for _, row := range []struct {
		name string
		v    []float64
	}{
		{"agent: Manager.Apply (render .. verify)", agentMS},
		{"agent: first new worker up (1 ms observer)", agentUpMS},
		{"agent: old workers closed sockets (1 ms observer)", agentClosedMS},
		{"manual: write files", writeMS},
		{"manual: nginx -t", testMS},
		{"manual: nginx -s reload (until it returns)", signalMS},
		{"manual: write + -t + -s reload", manualMS},
		{"manual: ... + first new worker up", fullMS},
		{"manual: ... + old workers closed sockets", closedMS},
		{"not counted: render.Render (manual side's input)", renderMS},
		{"agent piece: render + write version (fsync)", agentWriteMS},
		{"agent piece: nginx -t (testVersion)", agentTestMS},
		{"agent piece: one /proc scan for workers (children)", scanMS},
		{"burst, back to back: agent Manager.Apply", burstAgentMS},
		{"burst, back to back: manual until reload returns", burstManualMS},
		{"burst, back to back: manual until new workers up", burstFullMS},
		{"burst, back to back: manual until old workers closed", burstClosedMS},
	} {
		fmt.Fprintf(&out, "  %-52s %9.2f %9.2f %9.2f\n", row.name, benchPercentile(row.v, 50), benchPercentile(row.v, 99), benchMean(row.v))
	}
	fmt.Fprintf(&out, "  ratio agent / manual until reload returns:  p50 %.2fx  p99 %.2fx\n", agent50/man50, agent99/man99)
	fmt.Fprintf(&out, "  ratio agent / manual until first new worker:  p50 %.2fx  p99 %.2fx\n", agent50/full50, agent99/full99)
	fmt.Fprintf(&out, "  ratio agent / manual until old workers closed:  p50 %.2fx  p99 %.2fx\n", agent50/closed50, agent99/closed99)
	fmt.Fprintf(&out, "  ratio first new worker, agent / manual:  p50 %.2fx\n", benchPercentile(agentUpMS, 50)/full50)
	fmt.Fprintf(&out, "  first response with the last version (request included): agent %.1f ms, manual %.1f ms\n", converge["agent"], converge["manual"])
	fmt.Print(out.String())

	// The per-op time covers the whole round trip of both sides; the
	// percentiles below are what matters.
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(agent50, "agent-p50-ms")
	b.ReportMetric(benchPercentile(agentUpMS, 50), "agent-worker-up-p50-ms")
	b.ReportMetric(agent99, "agent-p99-ms")
	b.ReportMetric(man50, "manual-reload-p50-ms")
	b.ReportMetric(man99, "manual-reload-p99-ms")
	b.ReportMetric(full50, "manual-workers-p50-ms")
	b.ReportMetric(full99, "manual-workers-p99-ms")
	b.ReportMetric(closed50, "manual-closed-p50-ms")
	b.ReportMetric(closed99, "manual-closed-p99-ms")
	b.ReportMetric(agent50/man50, "ratio-vs-reload-p50")
	b.ReportMetric(agent50/full50, "ratio-vs-workers-p50")
	b.ReportMetric(agent50/closed50, "ratio-vs-closed-p50")
	b.ReportMetric(benchPercentile(burstAgentMS, 50), "burst-agent-p50-ms")
	b.ReportMetric(benchPercentile(burstFullMS, 50), "burst-manual-workers-p50-ms")
	b.ReportMetric(benchPercentile(burstClosedMS, 50), "burst-manual-closed-p50-ms")
}

// benchUpdate is the benchmark configuration at version: benchVirtualHosts
// name-based virtual hosts on port, each with its own upstream; even
// versions proxy to backends[0], odd ones to backends[1].
func benchUpdate(version int64, port uint32, backends [2]string) *agentv1.ConfigUpdate {
	u := &agentv1.ConfigUpdate{ConfigId: "bench", Version: version}
	backend := backends[version%2]
	for i := range benchVirtualHosts {
		upID := fmt.Sprintf("up-%04d", i)
		u.Upstreams = append(u.Upstreams, &agentv1.Upstream{
			Id:                   upID,
			Name:                 upID,
			KeepaliveConnections: 8,
			Servers: []*agentv1.UpstreamServer{
				{Address: backend, MaxFails: 3, FailTimeoutSeconds: 10},
			},
		})
		u.VirtualHosts = append(u.VirtualHosts, &agentv1.VirtualHost{
			Id:                      fmt.Sprintf("vh-%04d", i),
			Name:                    fmt.Sprintf("site %d", i),
			ServerName:              benchHost(i),
			ListenPort:              port,
			ClientMaxBodySize:       "10m",
			ProxyReadTimeoutSeconds: 60,
			Locations: []*agentv1.Location{
				{
					Path:          "/",
					UpstreamId:    upID,
					CustomHeaders: []*agentv1.Header{{Name: "X-Config-Version", Value: strconv.FormatInt(version, 10)}},
				},
				{Path: "^~ /static/", Root: fmt.Sprintf("/srv/www/site-%04d", i)},
			},
		})
	}
	return u
}

func benchHost(i int) string { return fmt.Sprintf("site-%04d.bench.test", i) }

// benchPieces are parts of the agent's pipeline timed on their own.
type benchPieces struct {
	write, test, scan time.Duration
}

// benchAgentPieces times, outside the comparison, what Manager.Apply does
// before the reload: render and write a version directory with fsync (into
// dir, a scratch directory) and nginx -t on it; and one /proc scan of the
// kind the reload verification repeats every pollInterval. dir is removed
// afterwards.
func benchAgentPieces(ctx context.Context, b *testing.B, m *Manager, u *agentv1.ConfigUpdate, dir string) benchPieces {
	b.Helper()
	defer os.RemoveAll(dir)
	var p benchPieces
	start := time.Now()
	files, err := render.Render(u, render.Options{ConfDir: dir, StatusPort: m.statusPort})
	if err != nil {
		b.Fatalf("render: %v", err)
	}
	if err := writeVersion(dir, files, Version{Version: u.GetVersion()}, u); err != nil {
		b.Fatal(err)
	}
	p.write = time.Since(start)

	start = time.Now()
	if out, err := m.testVersion(ctx, dir); err != nil {
		b.Fatalf("nginx -t on %s: %v: %s", dir, err, out)
	}
	p.test = time.Since(start)

	pid := m.masterPID()
	start = time.Now()
	if len(children(pid)) == 0 {
		b.Fatalf("agent nginx master %d has no workers", pid)
	}
	p.scan = time.Since(start)
	return p
}

// benchBackendName is the body the backend of version answers.
func benchBackendName(version int64) string {
	if version%2 == 0 {
		return "backend-even"
	}
	return "backend-odd"
}

// benchManager starts a supervise-mode Manager in a fresh prefix; its
// nginx is stopped when the benchmark ends.
func benchManager(b *testing.B, bin string) *Manager {
	b.Helper()
	m, err := New(Options{
		Binary:             bin,
		Prefix:             b.TempDir(),
		User:               testUser(),
		StopOnClose:        true,
		DisableAutoRestart: true,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			b.Errorf("close manager: %v", err)
		}
		benchKill(b, readPIDFile(m.pidFile))
	})
	return m
}

// benchManualNginx is an nginx run the way an operator runs one by hand:
// fixed files under prefix/conf, edited in place.
type benchManualNginx struct {
	bin        string
	prefix     string
	conf       string // prefix/nginx.conf
	confDir    string // prefix/conf: http.conf, stream.conf
	pidFile    string
	statusPort uint32
	// nWorkers is how many workers the master runs (worker_processes
	// auto: one per online CPU), counted once after the start.
	nWorkers int
}

// benchManualTimes are the parts of one manual apply; workers and closed
// count from the return of nginx -s reload.
type benchManualTimes struct {
	write, test, signal, workers, closed time.Duration
}

// benchStartManual starts the baseline nginx in its own prefix with the
// same main configuration as the agent's nginx (mime types, stream module,
// user) and first as its configuration; it is killed when the benchmark
// ends.
func benchStartManual(b *testing.B, bin string, m *Manager, first *agentv1.ConfigUpdate) *benchManualNginx {
	b.Helper()
	prefix := b.TempDir()
	n := &benchManualNginx{
		bin:        bin,
		prefix:     prefix,
		conf:       filepath.Join(prefix, "nginx.conf"),
		confDir:    filepath.Join(prefix, "conf"),
		pidFile:    filepath.Join(prefix, "run", "nginx.pid"),
		statusPort: benchFreePort(b),
	}
	for _, d := range []string{n.confDir, filepath.Join(prefix, "run"), filepath.Join(prefix, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	opts := m.mainOptions(n.confDir)
	opts.RuntimeDir = filepath.Join(prefix, "run")
	opts.ErrorLog = filepath.Join(prefix, "logs", "error.log")
	mainConf, err := render.MainConfig(opts)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(n.conf, mainConf, 0o644); err != nil {
		b.Fatal(err)
	}
	files, err := render.Render(first, render.Options{ConfDir: n.confDir, StatusPort: n.statusPort})
	if err != nil {
		b.Fatal(err)
	}
	if err := n.write(files); err != nil {
		b.Fatal(err)
	}

	cmd := exec.Command(bin, "-p", prefix+"/", "-c", n.conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The master daemonises and keeps a pipe open: collect its output in a
	// file instead.
	out, err := runOutput(cmd)
	b.Cleanup(func() { benchKill(b, readPIDFile(n.pidFile)) })
	if err != nil {
		b.Fatalf("start manual nginx: %v: %s", err, out)
	}
	deadline := time.Now().Add(benchReloadTimeout)
	for {
		if pid := readPIDFile(n.pidFile); alive(pid, "nginx", n.conf) && len(benchWorkers(pid)) > 0 {
			// The master forks its workers one after the other; count them
			// once the last one has had time to come up.
			time.Sleep(200 * time.Millisecond)
			n.nWorkers = len(children(pid))
			return n
		}
		if time.Now().After(deadline) {
			b.Fatalf("manual nginx: no master with workers after %s", benchReloadTimeout)
		}
		time.Sleep(benchWorkerPoll)
	}
}

// write replaces the rendered files in confDir, as cp or an editor would:
// no fsync, no new directory.
func (n *benchManualNginx) write(files render.Files) error {
	for name, data := range files {
		p := filepath.Join(n.confDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("create directory for %s: %w", name, err)
		}
		if err := os.WriteFile(p, data, render.FileMode(name)); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// apply installs files and reloads: write, nginx -t, nginx -s reload, then
// waits until the master has a worker it did not have before, and until
// the old workers have closed their listening sockets.
func (n *benchManualNginx) apply(ctx context.Context, b *testing.B, files render.Files) benchManualTimes {
	b.Helper()
	master := readPIDFile(n.pidFile)
	// The snapshot scans /proc: the children file can skip entries while
	// old workers exit, and a worker missing here would pass for a new one
	// later.
	before := children(master)
	if len(before) == 0 {
		b.Fatalf("manual nginx master %d has no workers", master)
	}
	var t benchManualTimes

	start := time.Now()
	if err := n.write(files); err != nil {
		b.Fatal(err)
	}
	t.write = time.Since(start)

	start = time.Now()
	if out, err := exec.CommandContext(ctx, n.bin, "-t", "-p", n.prefix+"/", "-c", n.conf).CombinedOutput(); err != nil {
		b.Fatalf("nginx -t: %v: %s", err, out)
	}
	t.test = time.Since(start)

	start = time.Now()
	if out, err := exec.CommandContext(ctx, n.bin, "-s", "reload", "-p", n.prefix+"/", "-c", n.conf).CombinedOutput(); err != nil {
		b.Fatalf("nginx -s reload: %v: %s", err, out)
	}
	t.signal = time.Since(start)

	start = time.Now()
	deadline := start.Add(benchReloadTimeout)
	for !newWorker(before, benchWorkers(master)) {
		if time.Now().After(deadline) {
			b.Fatalf("manual nginx started no new workers within %s of the reload", benchReloadTimeout)
		}
		time.Sleep(benchWorkerPoll)
	}
	t.workers = time.Since(start)
	for !benchOldClosed(before) {
		if time.Now().After(deadline) {
			b.Fatalf("manual nginx: old workers still accept connections %s after the reload", benchReloadTimeout)
		}
		time.Sleep(benchWorkerPoll)
	}
	t.closed = time.Since(start)

	// Before
	// the next apply, the rest of the generation must be up too: a worker
	// forked after the next snapshot would pass for that apply's new worker
	// while its SIGHUP still waits for the master.
	for !benchNewWorkers(before, benchWorkers(master), n.nWorkers) {
		if time.Now().After(deadline) {
			b.Fatalf("manual nginx started fewer than %d new workers within %s of the reload", n.nWorkers, benchReloadTimeout)
		}
		time.Sleep(benchWorkerPoll)
	}
	return t
}

// benchWorkers returns the live children of an nginx master from
// /proc/<pid>/task/<pid>/children (one small read, the master being single
// threaded), or by scanning /proc when the kernel lacks that file. The
// file also lists zombies, which are dropped: an old worker that exited
// while the master sleeps after a reload (signals blocked, so not reaped
// yet) would otherwise pass for a new worker. The kernel documents the
// file as exact only when no child is created or exits meanwhile: it may
// miss a process, which is fine for polling for a new worker but not for
// the snapshot to compare with.
func benchWorkers(master int) []int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
	if err != nil {
		return children(master)
	}
	var out []int
	for f := range strings.FieldsSeq(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err == nil && st.state != 'Z' && st.state != 'X' {
			out = append(out, pid)
		}
	}
	return out
}

// benchOldClosed reports whether none of the workers in before can accept
// a connection any more: each has exited or retitled itself "worker
// process is shutting down", which nginx does once it has closed its
// listening sockets. It is the Manager's own test.
func benchOldClosed(before []int) bool {
	for _, p := range before {
		if alive(p, "worker process") && !alive(p, "shutting down") {
			return false
		}
	}
	return true
}

// benchSeen is what benchObserve noticed, zero when it did not.
type benchSeen struct {
	up, closed time.Time
}

// benchObserve watches an nginx master every benchWorkerPoll from another
// goroutine: when the first worker not in before appears, then when the
// workers in before have closed their sockets. It reports on the channel
// once it has seen both, or when stop is closed.
func benchObserve(master int, before []int, stop <-chan struct{}) <-chan benchSeen {
	c := make(chan benchSeen, 1)
	go func() {
		var s benchSeen
		look := func() bool {
			now := time.Now()
			if s.up.IsZero() && newWorker(before, benchWorkers(master)) {
				s.up = now
			}
			if !s.up.IsZero() && s.closed.IsZero() && benchOldClosed(before) {
				s.closed = now
			}
			return !s.closed.IsZero()
		}
		for !look() {
			select {
			case <-stop:
				// A last look: the Manager may have seen what happened
				// between two polls.
				look()
				c <- s
				return
			case <-time.After(benchWorkerPoll):
			}
		}
		c <- s
	}()
	return c
}

// benchNewWorkers reports whether after holds at least n processes not in
// before.
func benchNewWorkers(before, after []int, n int) bool {
	count := 0
	for _, p := range after {
		if !slices.Contains(before, p) {
			count++
		}
	}
	return count >= n
}

// benchKill kills an nginx master, its process group and its workers, and
// waits for the master to be gone. The daemonised master leads its own
// process group, which its workers share: killing the group also takes a
// worker forked after the children were listed.
func benchKill(b *testing.B, pid int) {
	if pid <= 0 || !alive(pid, "nginx") {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for _, p := range append([]int{pid}, children(pid)...) {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	if !waitGone(context.Background(), pid, 10*time.Second) {
		b.Errorf("nginx master %d still alive after SIGKILL", pid)
	}
}

// benchBackend starts a loopback HTTP server answering body.
func benchBackend(b *testing.B, body string) string {
	b.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, body)
	}))
	b.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// benchFreePort asks the kernel for a free loopback TCP port.
func benchFreePort(b *testing.B) uint32 {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return uint32(l.Addr().(*net.TCPAddr).Port)
}

// benchFetch fetches / from 127.0.0.1:port with the given Host header.
func benchFetch(port uint32, host string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(int(port))+"/", nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s on :%d: %s: %s", host, port, resp.Status, body)
	}
	return string(body), nil
}

// benchMS converts d to milliseconds.
func benchMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchPercentile returns the nearest-rank p-th percentile of v.
func benchPercentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// benchMean returns the arithmetic mean of v.
func benchMean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	return sum / float64(len(v))
}
