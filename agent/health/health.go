// Package health runs the agent's active health checks of upstream servers
// (open-source nginx has none) and decides which servers the agent renders
// `down`.
//
// The life of a check:
//
//  1. Configure takes the upstreams of the configuration the agent applied.
//     Every server of an upstream whose health_check is enabled becomes a
//     target, except servers already `down` in the configuration. A target
//     is identified by (upstream id, address); one that stays across
//     configurations keeps its state and counters. A new target starts
//     healthy: nginx's own passive checks (max_fails) cover it until the
//     probes decide otherwise.
//  2. Run probes each target every interval_seconds: an HTTP GET of path
//     to http://<address> with the Host header set to the address, no
//     redirects followed, bounded by timeout_seconds. A 2xx or 3xx answer
//     passes; any other status, a connection error or a timeout fails.
//  3. healthy_threshold consecutive passes make an unhealthy server healthy
//     again, unhealthy_threshold consecutive failures make a healthy one
//     unhealthy. A change calls Options.OnChange.
//  4. Overrides lists the servers of a configuration to render `down`: the
//     unhealthy ones, except that an upstream never loses all its non-backup
//     servers — when every non-backup server is unhealthy, the last one that
//     was healthy (the latest to turn unhealthy; the first in the list on a
//     tie) stays up. Backup servers may all be marked down.
//  5. Overlay copies the configuration with those servers `down` and a
//     checksum (MarkedChecksum) that names both the master's checksum and
//     the overrides, so that the nginx manager installs it as a new version
//     directory of the same version number; MasterChecksum recovers the
//     master's checksum from it for the health report, so a health-driven
//     re-apply is never reported as drift.
//
// Zero settings take the defaults below; the master validates them (path
// starting with "/", interval 1–3600 s, timeout at most the interval,
// thresholds 1–100).
package health

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Defaults of a HealthCheckConfig's zero fields.
const (
	DefaultPath               = "/"
	DefaultInterval           = 10 * time.Second
	DefaultTimeout            = 5 * time.Second
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
)

// maxErrorLen bounds a reported probe error.
const maxErrorLen = 512

// Key identifies a probed server: an upstream's id and the server's address
// as configured.
type Key struct {
	UpstreamID string
	Address    string
}

// Target is one server to probe and the settings of its upstream's check.
type Target struct {
	Key
	Path               string
	Interval           time.Duration
	Timeout            time.Duration
	HealthyThreshold   int
	UnhealthyThreshold int
}

// ProbeFunc probes a target once; nil means it passed. It must return
// within t.Timeout.
type ProbeFunc func(ctx context.Context, t Target) error

// State is what the checker knows about a target.
type State struct {
	Key
	Healthy bool
	// MarkedDown is set while the applied configuration renders the server
	// down because of its probes (SetMarked).
	MarkedDown bool
	// LastError is the last probe's failure, empty when it passed.
	LastError string
	// ChangedAt is when Healthy last changed (zero: never since the server
	// became a target).
	ChangedAt time.Time
	// CheckedAt is when the server was last probed (zero: not yet).
	CheckedAt time.Time
}

// Options configure a Checker.
type Options struct {
	// Probe probes a target; nil means HTTPProbe.
	Probe ProbeFunc
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnChange, if set, is called after a server turned healthy or
	// unhealthy. It is called from a probe goroutine and must not block.
	OnChange func()
	// Logger receives the checker's logs; nil means slog.Default().
	Logger *slog.Logger
}

// entry is a target, its state and the counters of consecutive results.
type entry struct {
	target    Target
	state     State
	successes int
	failures  int
	// stop ends the target's probe loop (nil while Run is not running).
	stop context.CancelFunc
}

// Checker probes the servers of the configured upstreams.
type Checker struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	entries map[Key]*entry
	// runCtx is Run's context while it runs; loops started by Configure
	// use it.
	runCtx context.Context
	loops  sync.WaitGroup
}

// New returns a Checker with no targets.
func New(opts Options) *Checker {
	if opts.Probe == nil {
		opts.Probe = HTTPProbe
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Checker{opts: opts, log: opts.Logger.With("component", "health"), entries: map[Key]*entry{}}
}

// Targets returns the targets of upstreams (step 1), defaults applied.
func Targets(upstreams []*agentv1.Upstream) []Target {
	var out []Target
	for _, up := range upstreams {
		hc := up.GetHealthCheck()
		if !hc.GetEnabled() {
			continue
		}
		t := Target{
			Path:               hc.GetPath(),
			Interval:           time.Duration(hc.GetIntervalSeconds()) * time.Second,
			Timeout:            time.Duration(hc.GetTimeoutSeconds()) * time.Second,
			HealthyThreshold:   int(hc.GetHealthyThreshold()),
			UnhealthyThreshold: int(hc.GetUnhealthyThreshold()),
		}
		if t.Path == "" {
			t.Path = DefaultPath
		}
		if t.Interval <= 0 {
			t.Interval = DefaultInterval
		}
		if t.Timeout <= 0 {
			t.Timeout = DefaultTimeout
		}
		if t.HealthyThreshold <= 0 {
			t.HealthyThreshold = DefaultHealthyThreshold
		}
		if t.UnhealthyThreshold <= 0 {
			t.UnhealthyThreshold = DefaultUnhealthyThreshold
		}
		for _, s := range up.GetServers() {
			if s.GetDown() || s.GetAddress() == "" {
				continue
			}
			t.Key = Key{UpstreamID: up.GetId(), Address: s.GetAddress()}
			out = append(out, t)
		}
	}
	return out
}

// Configure replaces the targets with those of upstreams. Targets that stay
// keep their state; a target whose settings changed restarts its probe
// loop.
func (c *Checker) Configure(upstreams []*agentv1.Upstream) {
	targets := Targets(upstreams)
	c.mu.Lock()
	defer c.mu.Unlock()
	want := make(map[Key]Target, len(targets))
	for _, t := range targets {
		want[t.Key] = t
	}
	for k, e := range c.entries {
		if _, ok := want[k]; !ok {
			if e.stop != nil {
				e.stop()
			}
			delete(c.entries, k)
		}
	}
	for k, t := range want {
		e, ok := c.entries[k]
		if ok && e.target == t {
			continue
		}
		if !ok {
			e = &entry{state: State{Key: k, Healthy: true}}
			c.entries[k] = e
		} else if e.stop != nil {
			e.stop()
			e.stop = nil
		}
		e.target = t
		c.startLocked(e)
	}
}

// startLocked starts e's probe loop when Run is running.
func (c *Checker) startLocked(e *entry) {
	if c.runCtx == nil {
		return
	}
	ctx, cancel := context.WithCancel(c.runCtx)
	e.stop = cancel
	t := e.target
	c.loops.Go(func() { c.loop(ctx, t) })
}

// Run probes the targets until ctx ends.
func (c *Checker) Run(ctx context.Context) {
	c.mu.Lock()
	if c.runCtx != nil {
		c.mu.Unlock()
		return
	}
	c.runCtx = ctx
	for _, e := range c.entries {
		c.startLocked(e)
	}
	c.mu.Unlock()
	<-ctx.Done()
	c.mu.Lock()
	c.runCtx = nil
	for _, e := range c.entries {
		e.stop = nil
	}
	c.mu.Unlock()
	c.loops.Wait()
}

// loop probes t now and every t.Interval until ctx ends.
func (c *Checker) loop(ctx context.Context, t Target) {
	tick := time.NewTicker(t.Interval)
	defer tick.Stop()
	for {
		c.probe(ctx, t)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe probes t once and records the result.
func (c *Checker) probe(ctx context.Context, t Target) {
	pctx, cancel := context.WithTimeout(ctx, t.Timeout)
	err := c.opts.Probe(pctx, t)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if c.record(t, err) && c.opts.OnChange != nil {
		c.opts.OnChange()
	}
}

// CheckNow probes every target once, concurrently, and returns when all
// results are recorded (OnChange is called as in Run).
func (c *Checker) CheckNow(ctx context.Context) {
	c.mu.Lock()
	targets := make([]Target, 0, len(c.entries))
	for _, e := range c.entries {
		targets = append(targets, e.target)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Go(func() { c.probe(ctx, t) })
	}
	wg.Wait()
}

// record counts a probe result of t (step 3) and reports whether the
// server's health changed. Results of a target removed or reconfigured
// meanwhile are dropped.
func (c *Checker) record(t Target, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[t.Key]
	if !ok || e.target != t {
		return false
	}
	now := c.opts.Now()
	e.state.CheckedAt = now
	if err != nil {
		e.successes = 0
		e.failures++
		e.state.LastError = clipError(err.Error())
		if e.state.Healthy && e.failures >= t.UnhealthyThreshold {
			e.state.Healthy, e.state.ChangedAt = false, now
			c.log.Warn("upstream server failed its health checks", "upstream_id", t.UpstreamID, "address", t.Address,
				"failures", e.failures, "error", e.state.LastError)
			return true
		}
		return false
	}
	e.failures = 0
	e.successes++
	e.state.LastError = ""
	if !e.state.Healthy && e.successes >= t.HealthyThreshold {
		e.state.Healthy, e.state.ChangedAt = true, now
		c.log.Info("upstream server passes its health checks again", "upstream_id", t.UpstreamID, "address", t.Address,
			"passes", e.successes)
		return true
	}
	return false
}

// SetMarked records which servers the live configuration renders down
// because of their probes (reported as State.MarkedDown).
func (c *Checker) SetMarked(keys []Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		e.state.MarkedDown = slices.Contains(keys, k)
	}
}

// States returns the state of every target, sorted by upstream id and
// address.
func (c *Checker) States() []State {
	c.mu.Lock()
	out := make([]State, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e.state)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b State) int {
		if n := strings.Compare(a.UpstreamID, b.UpstreamID); n != 0 {
			return n
		}
		return strings.Compare(a.Address, b.Address)
	})
	return out
}

// Report returns the states as the HealthReport's upstream_health.
func (c *Checker) Report() []*agentv1.UpstreamServerHealth {
	states := c.States()
	out := make([]*agentv1.UpstreamServerHealth, 0, len(states))
	for _, s := range states {
		out = append(out, &agentv1.UpstreamServerHealth{
			UpstreamId: s.UpstreamID, Address: s.Address, Healthy: s.Healthy, MarkedDown: s.MarkedDown,
			LastError: s.LastError, ChangedAt: unix(s.ChangedAt), CheckedAt: unix(s.CheckedAt),
		})
	}
	return out
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// Overrides returns the servers of u to render down (step 4), in the order
// of u's upstreams and servers.
func (c *Checker) Overrides(u *agentv1.ConfigUpdate) []Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Key
	for _, up := range u.GetUpstreams() {
		if !up.GetHealthCheck().GetEnabled() {
			continue
		}
		var down []Key
		keeper, primaries, primariesDown := -1, 0, 0
		var keeperChanged time.Time
		for _, s := range up.GetServers() {
			if s.GetDown() {
				continue
			}
			k := Key{UpstreamID: up.GetId(), Address: s.GetAddress()}
			e, ok := c.entries[k]
			if !s.GetBackup() {
				primaries++
			}
			if !ok || e.state.Healthy {
				continue
			}
			if !s.GetBackup() {
				primariesDown++
				if keeper < 0 || e.state.ChangedAt.After(keeperChanged) {
					keeper, keeperChanged = len(down), e.state.ChangedAt
				}
			}
			down = append(down, k)
		}
		if primaries > 0 && primariesDown == primaries {
			down = slices.Delete(down, keeper, keeper+1)
		}
		out = append(out, down...)
	}
	return out
}

// healthMarker separates the overrides' hash from the master's checksum in
// MarkedChecksum.
const healthMarker = ".health-down."

// MarkedChecksum is the checksum of a configuration whose checksum was sum
// with the servers keys rendered down: a hash of both, then the marker,
// then sum. It starts with the hash so that the nginx manager's version
// directory (named after the first characters) differs from sum's.
func MarkedChecksum(sum string, keys []Key) string {
	h := sha256.New()
	io.WriteString(h, sum)
	for _, k := range keys {
		fmt.Fprintf(h, "\x00%s\x00%s", k.UpstreamID, k.Address)
	}
	return hex.EncodeToString(h.Sum(nil))[:16] + healthMarker + sum
}

// MasterChecksum returns the master's checksum of a configuration checksum
// as installed: sum itself, or the part MarkedChecksum kept.
func MasterChecksum(sum string) string {
	if _, after, ok := strings.Cut(sum, healthMarker); ok {
		return after
	}
	return sum
}

// Overlay returns u with the servers keys rendered down and its checksum
// replaced by MarkedChecksum(sum, keys), sum being u's checksum as the
// nginx manager computes it. Without keys it returns u itself.
func Overlay(u *agentv1.ConfigUpdate, sum string, keys []Key) *agentv1.ConfigUpdate {
	if len(keys) == 0 {
		return u
	}
	out := proto.CloneOf(u)
	for _, up := range out.GetUpstreams() {
		for _, s := range up.GetServers() {
			if slices.Contains(keys, Key{UpstreamID: up.GetId(), Address: s.GetAddress()}) {
				s.Down = true
			}
		}
	}
	out.Checksum = MarkedChecksum(sum, keys)
	return out
}

// HTTPProbe is the default ProbeFunc (step 2).
func HTTPProbe(ctx context.Context, t Target) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.Address+t.Path, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", t.Path, err)
	}
	req.Host = t.Address
	req.Header.Set("User-Agent", "nxmesh-agent-health-check")
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			if ue.Timeout() || errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("GET %s: no answer within %s", t.Path, t.Timeout)
			}
			err = ue.Err
		}
		return fmt.Errorf("GET %s: %w", t.Path, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s: %d", t.Path, resp.StatusCode)
	}
	return nil
}

func clipError(s string) string {
	if len(s) <= maxErrorLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxErrorLen], "")
}
