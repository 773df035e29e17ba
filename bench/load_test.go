package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

const (
	// loadRateLimit is the product default of auth.rate_limit_per_minute,
	// the per-credential budget the load run is held to.
	loadRateLimit = 1000
	// loadHotShare is the share of requests sent with one credential, the
	// hot key, so that it spends its budget and gets the limiter's 429s:
	// at 1,000 requests/s it sends 50/s, 3,000 a minute, and since the
	// larger part of a 60 s run in one wall-clock minute is at least 30 s,
	// at least 1,500 in one window.
	loadHotShare = 5
	// loadWriteShare is the share of writes (PATCH of a virtual host or an
	// upstream, each a new configuration version for the whole fleet).
	loadWriteShare = 5
	// loadObjects is how many virtual hosts and upstreams the workspace
	// holds: the lists read are pages of 20.
	loadObjects = 20
	// loadCycle is how many targets the targets file holds; vegeta sends
	// them in order and starts over.
	loadCycle = 2000
	// tokensPerKey is how many registration tokens one setup key creates.
	tokensPerKey = 100
	// loadConverge bounds the wait for the fleet to apply the last version
	// once the load ended.
	loadConverge = 3 * time.Minute
	// loadInFlight is how many seconds of requests vegeta may have in
	// flight (-max-workers = rate × loadInFlight): a master that falls
	// behind lowers the rate reached rather than piling up connections
	// until it runs out of open files.
	loadInFlight = 1
	// loadWarmup is how long the same mix runs before the start figures
	// are taken (a quarter of the run at most, for quick runs).
	loadWarmup = 15 * time.Second
	// loadGoroutineWait bounds the wait for the master's goroutines to come
	// back within loadGoroutineSlack of their number before any load.
	loadGoroutineWait  = 30 * time.Second
	loadGoroutineSlack = 50
	// rssWindow is how long the master's RSS is averaged at start and end.
	rssWindow = 5 * time.Second
	// maxRSSGrowth is the goal for the master's RSS growth over the run, %.
	maxRSSGrowth = 10.0
)

// loadSettings are the figures of one load run: the number of agents
// connected, the request rate and the duration.
type loadSettings struct {
	agents   int
	rate     int
	duration time.Duration
}

// loadSettingsFromEnv returns 1,000 agents, 1,000 requests/s and 60 s, or
// NXMESH_BENCH_LOAD_AGENTS, NXMESH_BENCH_LOAD_RATE (requests per second) and
// NXMESH_BENCH_LOAD_DURATION (a Go duration such as 10s).
func loadSettingsFromEnv(b *testing.B) loadSettings {
	b.Helper()
	s := loadSettings{agents: 1000, rate: 1000, duration: time.Minute}
	num := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				b.Fatalf("%s: %q is not a positive number", name, v)
			}
			*dst = n
		}
	}
	num("NXMESH_BENCH_LOAD_AGENTS", &s.agents)
	num("NXMESH_BENCH_LOAD_RATE", &s.rate)
	if v := os.Getenv("NXMESH_BENCH_LOAD_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("NXMESH_BENCH_LOAD_DURATION: %q is not a positive duration", v)
		}
		s.duration = d
	}
	return s
}

// vegetaTarget is one line of vegeta's JSON targets format (attack
// -format=json); encoding/json writes Body in base64, as vegeta reads it.
type vegetaTarget struct {
	Method string      `json:"method"`
	URL    string      `json:"url"`
	Body   []byte      `json:"body,omitempty"`
	Header http.Header `json:"header,omitempty"`
}

// vegetaResult is the part of a result of `vegeta encode -to=json` the
// benchmark reads.
type vegetaResult struct {
	Code    int           `json:"code"`
	Latency time.Duration `json:"latency"`
	Error   string        `json:"error"`
	Body    []byte        `json:"body"`
	Method  string        `json:"method"`
	URL     string        `json:"url"`
}

// vegetaReport is the part of `vegeta report -type=json` the benchmark
// prints.
type vegetaReport struct {
	Latencies struct {
		P50 time.Duration `json:"50th"`
		P95 time.Duration `json:"95th"`
		P99 time.Duration `json:"99th"`
		Max time.Duration `json:"max"`
	} `json:"latencies"`
	Duration    time.Duration  `json:"duration"`
	Wait        time.Duration  `json:"wait"`
	Requests    uint64         `json:"requests"`
	Rate        float64        `json:"rate"`
	Throughput  float64        `json:"throughput"`
	Success     float64        `json:"success"`
	StatusCodes map[string]int `json:"status_codes"`
	Errors      []string       `json:"errors"`
}

// loadClass is one kind of request of the mix, with what it got.
type loadClass struct {
	name  string
	share int // of 100
	hot   bool
	write bool

	ok, limited, other int
	latencies          []time.Duration
}

// loadWorkspace is what the requests address.
type loadWorkspace struct {
	org, ws   string
	vhosts    []string
	upstreams []string
}

// BenchmarkLoad is issue 13's load run: with 1,000 simulated agents connected
// (the real agent control-plane client with a no-op applier, in this
// process) to the master running as a child process with the product's
// per-credential rate limit (1,000 requests a minute), vegeta, a separate
// process (`go tool vegeta attack`), sends 1,000 requests/s for 60 s of
// authenticated API requests: reads of the workspace, of pages of 20 virtual
// hosts, upstreams and agents and of one virtual host, and 5 % writes that
// each make a configuration version the whole fleet receives. The requests
// are spread over enough API keys that each stays under its limit, except
// the hot key, which sends 5 % of them to read its organization and is
// refused with 429 once its budget is spent: the designed 429s. vegeta keeps
// at most one second of requests in flight (-max-workers): a master that
// falls behind then reaches a lower rate, which the table shows, instead of
// being sent connections until it runs out of open files (an accept that
// fails with EMFILE ends `nxmesh serve`).
//
// A warm-up of 15 s with the same mix comes first, so that the start
// figures are those of a master that has grown its working memory for this
// load: the RSS growth then measures what the run adds (a leak would show),
// not the first use of pools and caches. The RSS before any load is
// printed as well.
//
// It prints vegeta's figures (success rate, status codes, latency
// percentiles), the same per kind of request, the master's RSS before and
// after the run and how many agents ended on the last version. It fails
// on responses other than 2xx and 429 and on RSS growth of 10 % or more.
// NXMESH_BENCH_LOAD_AGENTS, NXMESH_BENCH_LOAD_RATE and
// NXMESH_BENCH_LOAD_DURATION change the fleet size, the rate (per second)
// and the duration, for quick runs.
func BenchmarkLoad(b *testing.B) {
	s := loadSettingsFromEnv(b)
	ctx := context.Background()
	needFiles(b, uint64(s.agents)+uint64(s.rate)+4096)
	bin := buildMaster(b)
	// Built once here, so that the attack does not start with a build.
	if _, err := runVegeta("-version"); err != nil {
		b.Fatal(err)
	}
	m := startMaster(b, bin, fmt.Sprintf("NXMESH_AUTH_RATE_LIMIT_PER_MINUTE=%d", loadRateLimit))
	admin := newREST(b, m.httpURL)

	classes := []*loadClass{
		{name: "GET workspace", share: 20},
		{name: "GET virtual hosts (20)", share: 20},
		{name: "GET upstreams (20)", share: 20},
		{name: "GET agents (20)", share: 15},
		{name: "GET virtual host", share: 15},
		{name: "PATCH virtual host", share: (loadWriteShare + 1) / 2, write: true},
		{name: "PATCH upstream", share: loadWriteShare / 2, write: true},
		{name: "GET organization (hot key)", share: loadHotShare, hot: true},
	}
	total := 0
	for _, c := range classes {
		total += c.share
	}
	if total != 100 {
		b.Fatalf("the mix adds up to %d %%", total)
	}

	// The workspace objects, and the credentials: enough load keys that
	// each sends at most two thirds of its budget in a minute.
	lw := createLoadWorkspace(b, admin)
	coldPerMinute := float64(s.rate) * float64(100-loadHotShare) / 100 * 60
	nKeys := max(100, int(math.Ceil(coldPerMinute*1.5/loadRateLimit)))
	keys := createAPIKeys(b, admin, lw.org, "load", nKeys)
	hot := createAPIKeys(b, admin, lw.org, "hot", 1)[0]
	observer := &rest{base: m.httpURL, token: createAPIKeys(b, admin, lw.org, "observer", 1)[0], hc: admin.hc}
	setupKeys := createAPIKeys(b, admin, lw.org, "setup", (s.agents+tokensPerKey-1)/tokensPerKey)

	base := observer.configVersion(b, lw.ws)
	var tokens []string
	var fingerprint string
	for i, k := range setupKeys {
		n := min(tokensPerKey, s.agents-i*tokensPerKey)
		r := &rest{base: m.httpURL, token: k, hc: admin.hc}
		t, fp := r.createTokens(b, lw.ws, n, fmt.Sprintf("load%03d", i))
		tokens, fingerprint = append(tokens, t...), fp
	}
	received := newRounds()
	initial := received.arm(base, s.agents)
	connectStart := time.Now()
	startFleet(b, m.grpcAddr, fingerprint, tokens, received)
	if _, err := received.wait(initial, loadConverge); err != nil {
		b.Fatalf("initial configuration: %v", err)
	}
	observer.waitOnline(b, lw.ws, s.agents, loadConverge)
	connected := time.Since(connectStart)

	// Before any load: every agent in its heartbeat rhythm.
	time.Sleep(idleSettle)
	pgPID := postmasterPID(b, m.dbURL)
	idle := sample(b, m.pid, pgPID, rssWindow)
	idleGoroutines := readGoStats(m.httpURL).goroutines

	dir := b.TempDir()
	targetsPath := filepath.Join(dir, "targets.json")
	byTarget, err := writeTargets(targetsPath, m.httpURL, lw, classes, keys, hot)
	if err != nil {
		b.Fatal(err)
	}
	maxWorkers := s.rate * loadInFlight
	attack := func(d time.Duration, output string) (time.Duration, error) {
		return runVegeta("attack",
			"-rate="+strconv.Itoa(s.rate)+"/s", "-duration="+d.String(), "-max-workers="+strconv.Itoa(maxWorkers),
			"-targets="+targetsPath, "-format=json", "-max-body=512", "-output="+output)
	}

	// The warm-up: the same mix at the same rate, then the same wait as
	// after the run. The start figures are then those of a master that has
	// grown its working memory for this load (connections, pools, caches,
	// the heap's spans), so the growth measured is what the run adds.
	warmup := min(loadWarmup, s.duration/4)
	warmupPath := filepath.Join(dir, "warmup.bin")
	if _, err := attack(warmup, warmupPath); err != nil {
		b.Fatalf("vegeta attack (warm-up): %v\nmaster log:\n%s", err, m.logTail())
	}
	warmupReport, err := vegetaSummary(warmupPath)
	if err != nil {
		b.Fatal(err)
	}
	versionBefore := observer.configVersion(b, lw.ws)
	if _, err := waitConverged(ctx, observer, lw.ws, versionBefore, s.agents, loadConverge); err != nil {
		b.Fatalf("after the warm-up: %v", err)
	}
	time.Sleep(idleSettle)
	// The HTTP server keeps idle workers for a while after a burst: both
	// samples wait until they are gone, so that they compare alike.
	waitGoroutines(m.httpURL, idleGoroutines, loadGoroutineWait)
	before := sample(b, m.pid, pgPID, rssWindow)
	goBefore := readGoStats(m.httpURL)

	// During the load: the master's peak RSS and its CPU.
	stopWatch := make(chan struct{})
	watched := make(chan usage, 1)
	go func() { watched <- watchMaster(m.pid, pgPID, stopWatch) }()
	resultsPath := filepath.Join(dir, "results.bin")
	attackStart := time.Now()
	machine0, benchTicks0 := machineTicks(), ownTicks(b, os.Getpid())
	vegetaCPU, attackErr := attack(s.duration, resultsPath)
	attackTook := time.Since(attackStart)
	machine1, benchTicks1 := machineTicks(), ownTicks(b, os.Getpid())
	close(stopWatch)
	during := <-watched
	if attackErr != nil {
		b.Fatalf("vegeta attack: %v\nmaster log:\n%s", attackErr, m.logTail())
	}

	report, err := vegetaSummary(resultsPath)
	if err != nil {
		b.Fatal(err)
	}
	samples, err := classify(resultsPath, byTarget)
	if err != nil {
		b.Fatal(err)
	}

	// After the load: the fleet converges on the last version, unless the
	// master is gone.
	var (
		versionAfter int64
		applied      int
		convergeErr  error
		converged    time.Duration
		after        usage
		goAfter      goStats
		masterLog    string
	)
	select {
	case <-m.exited:
		masterLog = m.logTail()
		convergeErr = errors.New("the master exited during the load")
	default:
		versionAfter = observer.configVersion(b, lw.ws)
		convergeStart := time.Now()
		applied, convergeErr = waitConverged(ctx, observer, lw.ws, versionAfter, s.agents, loadConverge)
		converged = time.Since(convergeStart)
		time.Sleep(idleSettle)
		waitGoroutines(m.httpURL, idleGoroutines, loadGoroutineWait)
		after = sample(b, m.pid, pgPID, rssWindow)
		goAfter = readGoStats(m.httpURL)
	}

	var ok, limited, other, hotLimited, coldLimited, writesOK int
	for _, c := range classes {
		ok += c.ok
		limited += c.limited
		other += c.other
		if c.hot {
			hotLimited += c.limited
		} else {
			coldLimited += c.limited
		}
		if c.write {
			writesOK += c.ok
		}
	}
	growth := growthSince(before, after)

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nload run: %d agents connected (in %s), %d requests/s for %s with at most %d in flight (vegeta attack took %s), %d credentials (%d load API keys, 1 hot key), limit %d requests/minute each\n",
		s.agents, connected.Round(time.Second), s.rate, s.duration, maxWorkers, attackTook.Round(100*time.Millisecond), nKeys+1, nKeys, loadRateLimit)
	fmt.Fprintf(w, "figure\tvalue\n")
	fmt.Fprintf(w, "requests\t%d (rate %.1f/s, throughput %.1f/s over %s)\n", report.Requests, report.Rate, report.Throughput, report.Duration.Round(time.Millisecond))
	fmt.Fprintf(w, "success rate (2xx)\t%.2f %%\n", report.Success*100)
	fmt.Fprintf(w, "status codes\t2xx %d, 429 %d (hot key %d, other keys %d), other %d%s\n", ok, limited, hotLimited, coldLimited, other, statusList(report.StatusCodes))
	fmt.Fprintf(w, "latency p50 / p95 / p99 / max\t%s / %s / %s / %s\n",
		report.Latencies.P50.Round(10*time.Microsecond), report.Latencies.P95.Round(10*time.Microsecond),
		report.Latencies.P99.Round(10*time.Microsecond), report.Latencies.Max.Round(10*time.Microsecond))
	if versionAfter == 0 {
		versionAfter = versionBefore
	}
	fmt.Fprintf(w, "configuration versions\t%d written during the load (%d successful writes), %d → %d\n", versionAfter-versionBefore, writesOK, versionBefore, versionAfter)
	fmt.Fprintf(w, "agents on the last version\t%d of %d applied version %d (as the master recorded it, %s after the load)\n", applied, s.agents, versionAfter, converged.Round(100*time.Millisecond))
	fmt.Fprintf(w, "warm-up\t%d requests in %s (success %.2f %%), before the start figures\n", warmupReport.Requests, warmup, warmupReport.Success*100)
	fmt.Fprintf(w, "master RSS start / end\t%.1f / %.1f MiB (mean of %s each, %s after the fleet converged after the warm-up and after the run, and once the goroutines were back to their number before any load; peak during the run %.1f MiB)\n",
		mib(before.rssMeanKiB), mib(after.rssMeanKiB), rssWindow, idleSettle, mib(during.rssMaxKiB))
	fmt.Fprintf(w, "master RSS growth\t%+.1f %% over the run (%+.1f %% since before any load, %.1f MiB %s after the agents connected)\n",
		growth, growthSince(idle, after), mib(idle.rssMeanKiB), idleSettle)
	fmt.Fprintf(w, "master Go heap in use start / end\t%.1f / %.1f MiB (goroutines %.0f / %.0f, %.0f before any load; from its /metrics)\n",
		goBefore.heapInuse/(1<<20), goAfter.heapInuse/(1<<20), goBefore.goroutines, goAfter.goroutines, idleGoroutines)
	secs := attackTook.Seconds()
	machineBusy := 0.0
	if d := machine1.total - machine0.total; d > 0 {
		machineBusy = float64(machine1.busy-machine0.busy) / float64(d) * 100
	}
	fmt.Fprintf(w, "CPU during the load\tmaster %.0f %%, PostgreSQL %.0f %% (the shared server, every database), vegeta %.0f %%, agents (this process) %.0f %%, of one core; the machine's %d cores %.0f %% busy (before the load: master %.0f %%, PostgreSQL %.0f %%)\n",
		during.cpuPct, during.pgCPUPct, vegetaCPU.Seconds()/secs*100, float64(benchTicks1-benchTicks0)/clockTicks/secs*100,
		runtime.NumCPU(), machineBusy, before.cpuPct, before.pgCPUPct)
	keptUp := report.Rate >= 0.98*float64(s.rate) && report.Latencies.P99 < time.Second && report.Wait < time.Second
	fmt.Fprintf(w, "rate sustained\t%s (rate reached %.0f/s of %d/s, p99 %s, last answer %s after the last request; yes needs ≥ 98 %%, < 1 s, < 1 s)\n",
		map[bool]string{true: "yes", false: "NO"}[keptUp], report.Rate, s.rate, report.Latencies.P99.Round(time.Millisecond), report.Wait.Round(time.Millisecond))
	fmt.Fprintf(w, "goal: 0 errors other than 429\t%s\n", verdict(other == 0, fmt.Sprintf("%d", other)))
	fmt.Fprintf(w, "goal: RSS growth < %.0f %%\t%s\n", maxRSSGrowth, verdict(growth < maxRSSGrowth, fmt.Sprintf("%+.1f %%", growth)))
	w.Flush()

	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nrequest\tshare\trequests\t2xx\t429\tother\tp50\tp99\n")
	for _, c := range classes {
		fmt.Fprintf(w, "%s\t%d %%\t%d\t%d\t%d\t%d\t%s\t%s\n", c.name, c.share, len(c.latencies), c.ok, c.limited, c.other,
			percentile(c.latencies, 0.50).Round(10*time.Microsecond), percentile(c.latencies, 0.99).Round(10*time.Microsecond))
	}
	fmt.Fprintf(w, "(the hot key sends %.0f requests a minute against its %d; every other key at most %.0f)\n",
		float64(s.rate)*loadHotShare/100*60, loadRateLimit, coldPerMinute/float64(nKeys))
	if coldLimited > 0 {
		fmt.Fprintf(w, "(%d 429s went to keys under their budget: not designed)\n", coldLimited)
	}
	for _, e := range samples {
		fmt.Fprintf(w, "(unexpected: %s)\n", e)
	}
	if len(report.Errors) > 0 {
		fmt.Fprintf(w, "(vegeta: %d distinct errors, among them those above)\n", len(report.Errors))
	}
	if convergeErr != nil {
		fmt.Fprintf(w, "(convergence: %v)\n", convergeErr)
		if masterLog == "" {
			for _, a := range agentsBehind(ctx, observer, lw.ws, versionAfter, 10) {
				fmt.Fprintf(w, "(behind: %s)\n", a)
			}
		}
	}
	w.Flush()

	b.ReportMetric(report.Success*100, "success-%")
	b.ReportMetric(ms(report.Latencies.P50), "p50-ms")
	b.ReportMetric(ms(report.Latencies.P99), "p99-ms")
	b.ReportMetric(float64(other), "errors")
	b.ReportMetric(float64(limited), "429s")
	b.ReportMetric(growth, "rss-growth-%")
	if other > 0 {
		b.Errorf("%d responses other than 2xx and 429 (see the table)", other)
	}
	if masterLog != "" {
		fmt.Printf("\nthe master's log (end):\n%s\n", masterLog)
	}
	if after.rssMeanKiB > 0 && growth >= maxRSSGrowth {
		b.Errorf("the master's RSS grew %.1f %% (%.1f → %.1f MiB), goal < %.0f %%", growth, mib(before.rssMeanKiB), mib(after.rssMeanKiB), maxRSSGrowth)
	}
	if convergeErr != nil {
		b.Errorf("after the load: %v", convergeErr)
	}
}

// waitGoroutines waits, at most timeout, until the master runs no more
// than loadGoroutineSlack goroutines above n.
func waitGoroutines(base string, n float64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && readGoStats(base).goroutines > n+loadGoroutineSlack {
		time.Sleep(500 * time.Millisecond)
	}
}

// growthSince is the growth of the master's mean RSS from a to b in %, NaN
// when b was not measured.
func growthSince(a, b usage) float64 {
	if b.rssMeanKiB == 0 || a.rssMeanKiB == 0 {
		return math.NaN()
	}
	return (float64(b.rssMeanKiB) - float64(a.rssMeanKiB)) / float64(a.rssMeanKiB) * 100
}

// createLoadWorkspace fills the administrator's default workspace with
// loadObjects upstreams and as many virtual hosts (one upstream each) that
// target the fleet (env=bench).
func createLoadWorkspace(b *testing.B, admin *rest) loadWorkspace {
	b.Helper()
	ctx := context.Background()
	var orgs idList
	if err := admin.do(ctx, http.MethodGet, "/v1/organizations?per_page=1", nil, &orgs, http.StatusOK); err != nil || len(orgs.Data) == 0 {
		b.Fatalf("organizations: %v (%d)", err, len(orgs.Data))
	}
	lw := loadWorkspace{org: orgs.Data[0].ID, ws: admin.defaultWorkspace(b)}
	for i := range loadObjects {
		var up, vh struct {
			ID string `json:"id"`
		}
		err := admin.do(ctx, http.MethodPost, "/v1/workspaces/"+lw.ws+"/upstreams", map[string]any{
			"name":    fmt.Sprintf("load-%02d", i),
			"servers": []map[string]any{{"address": fmt.Sprintf("127.0.0.1:%d", 9000+i)}, {"address": fmt.Sprintf("127.0.0.1:%d", 9100+i)}},
		}, &up, http.StatusCreated)
		if err != nil {
			b.Fatal(err)
		}
		err = admin.do(ctx, http.MethodPost, "/v1/workspaces/"+lw.ws+"/virtual-hosts", map[string]any{
			"name": fmt.Sprintf("load-%02d", i), "server_name": fmt.Sprintf("load-%02d.example.com", i), "listen_port": 8080,
			"locations":     []map[string]any{{"path": "/", "upstream_id": up.ID}},
			"target_agents": map[string]string{"type": "selector", "label_selector": "env=bench"},
		}, &vh, http.StatusCreated)
		if err != nil {
			b.Fatal(err)
		}
		lw.upstreams, lw.vhosts = append(lw.upstreams, up.ID), append(lw.vhosts, vh.ID)
	}
	return lw
}

// createAPIKeys creates n organization API keys with the admin role and
// returns their secrets.
func createAPIKeys(b *testing.B, admin *rest, org, prefix string, n int) []string {
	b.Helper()
	keys := make([]string, n)
	for i := range keys {
		var out struct {
			Key string `json:"key"`
		}
		body := map[string]any{"name": fmt.Sprintf("%s-%03d", prefix, i), "role": "admin"}
		if err := admin.do(context.Background(), http.MethodPost, "/v1/organizations/"+org+"/api-keys", body, &out, http.StatusCreated); err != nil {
			b.Fatalf("create API key: %v", err)
		}
		keys[i] = out.Key
	}
	return keys
}

// writeTargets writes loadCycle targets to path in vegeta's JSON format: the
// classes by share, interleaved in a fixed pseudo-random order; the hot
// class with the hot key, every other request with the next of keys in
// turn. Each write sets a value its object did not have before it, so that
// it is a change. It returns the class of each method and URL.
func writeTargets(path, base string, lw loadWorkspace, classes []*loadClass, keys []string, hot string) (map[string]*loadClass, error) {
	slots := make([]*loadClass, 0, 100)
	for _, c := range classes {
		for range c.share {
			slots = append(slots, c)
		}
	}
	rng := rand.New(rand.NewPCG(13, 13))
	byTarget := map[string]*loadClass{}
	// turns counts each class's requests, to go round the objects; counts
	// each object's writes, the value the next one sets.
	turns, counts := map[string]int{}, map[string]int{}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	bw := bufio.NewWriter(f)
	enc := json.NewEncoder(bw)
	next := 0
	for range loadCycle / len(slots) {
		rng.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
		for _, c := range slots {
			t := vegetaTarget{Method: http.MethodGet, Header: http.Header{}}
			key := hot
			if !c.hot {
				key = keys[next%len(keys)]
				next++
			}
			t.Header.Set("Authorization", "Bearer "+key)
			obj := turns[c.name] % loadObjects
			turns[c.name]++
			var body any
			switch c.name {
			case "GET workspace":
				t.URL = "/v1/workspaces/" + lw.ws
			case "GET virtual hosts (20)":
				t.URL = "/v1/workspaces/" + lw.ws + "/virtual-hosts?per_page=20"
			case "GET upstreams (20)":
				t.URL = "/v1/workspaces/" + lw.ws + "/upstreams?per_page=20"
			case "GET agents (20)":
				t.URL = "/v1/workspaces/" + lw.ws + "/agents?per_page=20"
			case "GET virtual host":
				t.URL = "/v1/virtual-hosts/" + lw.vhosts[obj]
			case "PATCH virtual host":
				t.Method, t.URL = http.MethodPatch, "/v1/virtual-hosts/"+lw.vhosts[obj]
				counts[t.URL]++
				body = map[string]any{"client_max_body_size": fmt.Sprintf("%dm", counts[t.URL])}
			case "PATCH upstream":
				t.Method, t.URL = http.MethodPatch, "/v1/upstreams/"+lw.upstreams[obj]
				counts[t.URL]++
				body = map[string]any{"keepalive_connections": counts[t.URL]}
			case "GET organization (hot key)":
				t.URL = "/v1/organizations/" + lw.org
			default:
				f.Close()
				return nil, fmt.Errorf("targets: no request for %q", c.name)
			}
			t.URL = base + t.URL
			if body != nil {
				t.Body, _ = json.Marshal(body)
				t.Header.Set("Content-Type", "application/json")
			}
			byTarget[t.Method+" "+t.URL] = c
			if err := enc.Encode(t); err != nil {
				f.Close()
				return nil, fmt.Errorf("targets: %w", err)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return nil, fmt.Errorf("targets: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	return byTarget, nil
}

// vegetaCmd is `go tool vegeta args...`, vegeta being a tool dependency of
// the module (run from the bench directory, inside it).
func vegetaCmd(args ...string) *exec.Cmd {
	return exec.Command("go", append([]string{"tool", "vegeta"}, args...)...)
}

// runVegeta runs a vegeta subcommand to its end and returns the CPU time
// it used (go tool and vegeta, its child).
func runVegeta(args ...string) (time.Duration, error) {
	cmd := vegetaCmd(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("vegeta %s: %w: %s", args[0], err, stderr.String())
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// cpuTicks is the machine's CPU time from /proc/stat, busy and in all, in
// clock ticks over every core.
type cpuTicks struct{ busy, total uint64 }

// machineTicks reads the first line of /proc/stat (zero if it cannot).
func machineTicks() cpuTicks {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return cpuTicks{}
	}
	var t cpuTicks
	for i, f := range fields[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		// guest and guest_nice (fields 9 and 10) are counted in user and
		// nice already.
		if i >= 8 {
			break
		}
		t.total += v
		// idle and iowait.
		if i != 3 && i != 4 {
			t.busy += v
		}
	}
	return t
}

// vegetaSummary is `vegeta report -type=json` of the results file.
func vegetaSummary(results string) (vegetaReport, error) {
	cmd := vegetaCmd("report", "-type=json", results)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return vegetaReport{}, fmt.Errorf("vegeta report: %w: %s", err, stderr.String())
	}
	var r vegetaReport
	if err := json.Unmarshal(out, &r); err != nil {
		return vegetaReport{}, fmt.Errorf("vegeta report: %w", err)
	}
	return r, nil
}

// classify reads every result (`vegeta encode -to=json`) into its class and
// returns up to 10 distinct descriptions of the unexpected ones.
func classify(results string, byTarget map[string]*loadClass) ([]string, error) {
	cmd := vegetaCmd("encode", "-to=json", results)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("vegeta encode: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vegeta encode: %w", err)
	}
	seen := map[string]int{}
	var samples []string
	dec := json.NewDecoder(out)
	var decodeErr error
	for {
		var r vegetaResult
		if err := dec.Decode(&r); err != nil {
			if !errors.Is(err, io.EOF) {
				decodeErr = fmt.Errorf("vegeta encode: %w", err)
				_, _ = io.Copy(io.Discard, out)
			}
			break
		}
		c := byTarget[r.Method+" "+r.URL]
		if c == nil {
			decodeErr = fmt.Errorf("vegeta encode: a result of %s %s, not a target", r.Method, r.URL)
			continue
		}
		c.latencies = append(c.latencies, r.Latency)
		switch {
		case r.Code >= 200 && r.Code < 300:
			c.ok++
		case r.Code == http.StatusTooManyRequests:
			c.limited++
		default:
			c.other++
			// One line per kind of failure, not per object.
			what := strings.ReplaceAll(r.Error, r.URL, "…")
			if what == "" {
				what = strings.TrimSpace(string(r.Body))
				if len(what) > 200 {
					what = what[:200] + "…"
				}
			}
			desc := fmt.Sprintf("%s: %d %s", c.name, r.Code, what)
			if seen[desc]++; seen[desc] == 1 && len(samples) < 10 {
				samples = append(samples, desc)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("vegeta encode: %w: %s", err, stderr.String())
	}
	for i, s := range samples {
		if n := seen[s]; n > 1 {
			samples[i] = fmt.Sprintf("%s (×%d)", s, n)
		}
	}
	return samples, decodeErr
}

// watchMaster samples the master's RSS every second until stop, and returns
// its peak, and the CPU of the master and of PostgreSQL over the window.
func watchMaster(pid, pgPID int, stop <-chan struct{}) usage {
	start := time.Now()
	cpu0, _, _, _ := procTimes(pid)
	pg0 := treeTicks(pgPID)
	var u usage
	var sum, n uint64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
watch:
	for {
		select {
		case <-tick.C:
			if rss, err := rssKiB(pid); err == nil {
				u.rssMaxKiB = max(u.rssMaxKiB, rss)
				sum += rss
				n++
			}
		case <-stop:
			break watch
		}
	}
	cpu1, _, _, _ := procTimes(pid)
	pg1 := treeTicks(pgPID)
	secs := time.Since(start).Seconds()
	if n > 0 {
		u.rssMeanKiB = sum / n
	}
	u.cpuPct = float64(cpu1-cpu0) / clockTicks / secs * 100
	u.pgCPUPct = float64(pg1-pg0) / clockTicks / secs * 100
	return u
}

// waitConverged waits until want agents of the workspace applied version v,
// polling every 2 s (a poll is a request per 100 agents, within the
// observer's budget), and returns how many had when it stopped.
func waitConverged(ctx context.Context, r *rest, ws string, v int64, want int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	n, last := 0, error(nil)
	for {
		got, err := r.appliedAtLeast(ctx, ws, v)
		if err == nil {
			n, last = got, nil
			if n >= want {
				return n, nil
			}
		} else {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return n, fmt.Errorf("%d of %d agents applied version %d after %s: %w", n, want, v, timeout, last)
			}
			return n, fmt.Errorf("%d of %d agents applied version %d after %s", n, want, v, timeout)
		}
		time.Sleep(2 * time.Second)
	}
}

// goStats are Go runtime figures of the master from its /metrics.
type goStats struct {
	heapInuse  float64 // bytes
	goroutines float64
}

// readGoStats reads go_memstats_heap_inuse_bytes and go_goroutines from
// base/metrics (zeros if it cannot).
func readGoStats(base string) goStats {
	var g goStats
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return g
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			g.heapInuse = v
		case "go_goroutines":
			g.goroutines = v
		}
	}
	return g
}

// agentsBehind describes up to limit agents of the workspace whose
// applied_version is below v.
func agentsBehind(ctx context.Context, r *rest, ws string, v int64, limit int) []string {
	var out []string
	for page := 1; ; page++ {
		var list struct {
			Data []struct {
				Name           string `json:"name"`
				State          string `json:"state"`
				DesiredVersion int64  `json:"desired_version"`
				AppliedVersion int64  `json:"applied_version"`
				ApplyStatus    string `json:"apply_status"`
				LastSeenAt     string `json:"last_seen_at"`
			} `json:"data"`
		}
		if err := r.do(ctx, http.MethodGet, fmt.Sprintf("/v1/workspaces/%s/agents?per_page=100&page=%d", ws, page), nil, &list, http.StatusOK); err != nil {
			return append(out, err.Error())
		}
		for _, a := range list.Data {
			if a.AppliedVersion < v && len(out) < limit {
				out = append(out, fmt.Sprintf("%s %s, desired %d, applied %d, apply status %q, last seen %s",
					a.Name, a.State, a.DesiredVersion, a.AppliedVersion, a.ApplyStatus, a.LastSeenAt))
			}
		}
		if len(list.Data) < 100 || len(out) >= limit {
			return out
		}
	}
}

// statusList is the status codes of report other than 200, as ", (code n,
// ...)".
func statusList(codes map[string]int) string {
	var parts []string
	for code, n := range codes {
		if code != "200" {
			parts = append(parts, fmt.Sprintf("%s: %d", code, n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	sort.Strings(parts)
	return " (" + strings.Join(parts, ", ") + ")"
}

func verdict(ok bool, figure string) string {
	if ok {
		return "met (" + figure + ")"
	}
	return "NOT met (" + figure + ")"
}

func mib(kib uint64) float64 { return float64(kib) / 1024 }
