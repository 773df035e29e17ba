package logs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nxmesh/nxmesh/app/backoff"
)

// The live tail:
//
//  1. After a batch is stored its lines go to this replica's subscribers at
//     once (the WebSocket /v1/ws/logs/:agent_id and the admin's SSE tail),
//     without blocking: a subscriber whose buffer (SubscriberBuffer lines)
//     is full misses lines (counted in nxmesh_logs_live_dropped_lines_total).
//  2. The same lines are sent to the other replicas with pg_notify on the
//     "nxmesh_logs" channel, in payloads under PostgreSQL's 8000-byte limit,
//     by one goroutine with a bounded queue so storing never waits for it;
//     at most RemoteLinesPerBatch lines of a batch travel this way (a live
//     tail is read by people; the stored logs have them all). Each replica
//     LISTENs (reconnecting with backoff) and hands the lines of other
//     replicas to its own subscribers.
//  3. Lines are only built and sent for a workspace somebody tails: a
//     replica with subscribers announces their workspaces on the same
//     channel when a subscription starts and every InterestRefresh after
//     it; the others keep each announcement for InterestTTL. Without a
//     tail anywhere, storing a batch costs nothing here. A tail sees the
//     lines stored from the moment its announcement reaches the storing
//     replica (milliseconds after it starts).

// Limits of the live tail.
const (
	SubscriberBuffer    = 1024
	RemoteLinesPerBatch = 200
	// LiveChannel is the NOTIFY channel between replicas.
	LiveChannel      = "nxmesh_logs"
	maxNotifyPayload = 7900
	remoteQueue      = 64
	maxLiveBackoff   = 30 * time.Second
	// InterestRefresh is how often a replica with subscribers announces
	// their workspaces; InterestTTL how long an announcement holds.
	InterestRefresh = 5 * time.Second
	InterestTTL     = 3 * InterestRefresh
)

// Line is one log line for the live tail: an access-log entry (Access set,
// level "INFO", message its combined-format summary) or an error-log line.
type Line struct {
	WorkspaceID uuid.UUID         `json:"w"`
	OrgID       uuid.UUID         `json:"o"`
	AgentID     uuid.UUID         `json:"a"`
	Level       string            `json:"l"`
	Message     string            `json:"m"`
	Timestamp   Millis            `json:"t"`
	Access      *Entry            `json:"e,omitempty"`
	Fields      map[string]string `json:"f,omitempty"`
}

func (e *Entry) line(orgID uuid.UUID) Line {
	cp := *e
	return Line{WorkspaceID: e.workspaceID, OrgID: orgID, AgentID: e.AgentID, Level: "INFO",
		Message: e.Summary(), Timestamp: e.Timestamp, Access: &cp}
}

// Sources of live lines (data.source).
const (
	SourceAccess = "access"
	SourceError  = "error"
)

// Data is the line as the WebSocket's and the SSE tail's "data": level
// (upper case: INFO for access lines, nginx's severity for error lines),
// message, timestamp, source ("access" or "error"), agent_id and, for access
// lines, every access-log field, for error lines their fields.
func (l Line) Data() map[string]any {
	d := map[string]any{}
	if l.Access != nil {
		b, _ := json.Marshal(l.Access)
		_ = json.Unmarshal(b, &d)
		d["source"] = SourceAccess
	} else {
		d["source"] = SourceError
		if len(l.Fields) > 0 {
			d["fields"] = l.Fields
		}
	}
	d["agent_id"] = l.AgentID
	d["level"], d["message"], d["timestamp"] = strings.ToUpper(l.Level), l.Message, l.Timestamp.String()
	return d
}

// liveMessage is a line as the WebSocket and SSE messages carry it.
func liveMessage(l Line) []byte {
	b, _ := json.Marshal(map[string]any{"type": "log", "data": l.Data()})
	return b
}

// LiveFilter selects the lines a subscriber receives.
type LiveFilter struct {
	WorkspaceID uuid.UUID
	AgentID     uuid.UUID
	// AccessOnly skips error-log lines, ErrorsOnly access lines; Filter
	// applies to access lines.
	AccessOnly bool
	ErrorsOnly bool
	Filter     Filter
}

func (f LiveFilter) matches(l *Line) bool {
	if f.WorkspaceID != uuid.Nil && l.WorkspaceID != f.WorkspaceID {
		return false
	}
	if f.AgentID != uuid.Nil && l.AgentID != f.AgentID {
		return false
	}
	if l.Access == nil {
		return !f.AccessOnly
	}
	return !f.ErrorsOnly && f.Filter.Matches(l.Access)
}

// Subscription receives live lines.
type Subscription struct {
	l      *live
	filter LiveFilter
	C      chan Line
	done   chan struct{}
	once   sync.Once
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.l.mu.Lock()
		if _, ok := s.l.subs[s]; ok {
			delete(s.l.subs, s)
			if s.l.local[s.filter.WorkspaceID]--; s.l.local[s.filter.WorkspaceID] <= 0 {
				delete(s.l.local, s.filter.WorkspaceID)
			}
		}
		s.l.mu.Unlock()
		close(s.done)
	})
}

// Done is closed when the subscription or the tail ends.
func (s *Subscription) Done() <-chan struct{} { return s.done }

type live struct {
	pool    *pgxpool.Pool
	logger  *slog.Logger
	replica string
	dropped prometheus.Counter
	outbox  chan []Line
	// listening is closed once this replica LISTENs for the others' lines.
	listening  chan struct{}
	listenOnce sync.Once

	// announce asks run to announce this replica's interest now.
	announce chan struct{}

	mu   sync.Mutex
	subs map[*Subscription]struct{}
	// local counts this replica's subscriptions by workspace (uuid.Nil:
	// every workspace); remote holds the other replicas' announcements
	// until they expire.
	local   map[uuid.UUID]int
	remote  map[uuid.UUID]time.Time
	stopped bool
}

func newLive(pool *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer) *live {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	l := &live{pool: pool, logger: logger, replica: hex.EncodeToString(b), subs: map[*Subscription]struct{}{},
		outbox: make(chan []Line, remoteQueue), listening: make(chan struct{}), announce: make(chan struct{}, 1),
		local: map[uuid.UUID]int{}, remote: map[uuid.UUID]time.Time{},
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nxmesh_logs_live_dropped_lines_total", Help: "Live log lines not sent to a subscriber that fell behind, or not sent to other replicas.",
		})}
	if reg != nil {
		reg.MustRegister(l.dropped)
	}
	return l
}

// Subscribe returns a subscription to the lines f selects.
func (l *live) Subscribe(f LiveFilter) *Subscription {
	s := &Subscription{l: l, filter: f, C: make(chan Line, SubscriberBuffer), done: make(chan struct{})}
	l.mu.Lock()
	stopped := l.stopped
	if !stopped {
		l.subs[s] = struct{}{}
		l.local[f.WorkspaceID]++
	}
	l.mu.Unlock()
	if stopped {
		s.Close()
		return s
	}
	select {
	case l.announce <- struct{}{}:
	default:
	}
	return s
}

// wanted reports whether anybody, on this replica or another, tails
// workspace ws.
func (l *live) wanted(ws uuid.UUID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.local[ws] > 0 || l.local[uuid.Nil] > 0 {
		return true
	}
	until, ok := l.remote[ws]
	if !ok {
		until = l.remote[uuid.Nil]
	}
	return time.Now().Before(until)
}

// interest is the workspaces this replica's subscribers tail.
func (l *live) interest() []uuid.UUID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]uuid.UUID, 0, len(l.local))
	for ws := range l.local {
		out = append(out, ws)
	}
	return out
}

// heard records another replica's announcement.
func (l *live) heard(workspaces []uuid.UUID) {
	now := time.Now()
	until := now.Add(InterestTTL)
	l.mu.Lock()
	defer l.mu.Unlock()
	for ws, t := range l.remote {
		if now.After(t) {
			delete(l.remote, ws)
		}
	}
	for _, ws := range workspaces {
		l.remote[ws] = until
	}
}

// deliver hands lines to this replica's subscribers without blocking.
func (l *live) deliver(lines []Line) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.subs {
		for i := range lines {
			if !s.filter.matches(&lines[i]) {
				continue
			}
			select {
			case s.C <- lines[i]:
			default:
				l.dropped.Inc()
			}
		}
	}
}

// publish delivers a stored batch's lines here and queues them for the
// other replicas.
func (l *live) publish(lines []Line) {
	if len(lines) == 0 {
		return
	}
	l.deliver(lines)
	if len(lines) > RemoteLinesPerBatch {
		l.dropped.Add(float64(len(lines) - RemoteLinesPerBatch))
		lines = lines[len(lines)-RemoteLinesPerBatch:]
	}
	select {
	case l.outbox <- lines:
	default:
		l.dropped.Add(float64(len(lines)))
	}
}

// livePayload is one notification: lines, or an announcement of the
// workspaces the sending replica's subscribers tail. Replica is encoded
// first, so a replica recognises its own payloads without decoding them.
type livePayload struct {
	Replica  string      `json:"r"`
	Lines    []Line      `json:"l,omitempty"`
	Interest []uuid.UUID `json:"i,omitempty"`
}

// run sends queued lines to the other replicas and LISTENs for theirs until
// ctx ends.
func (l *live) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); l.sendLoop(ctx) }()
	go func() { defer wg.Done(); l.announceLoop(ctx) }()
	go func() { defer wg.Done(); l.listenLoop(ctx) }()
	wg.Wait()
	l.mu.Lock()
	l.stopped = true
	subs := make([]*Subscription, 0, len(l.subs))
	for s := range l.subs {
		subs = append(subs, s)
	}
	l.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
}

func (l *live) sendLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case lines := <-l.outbox:
			for _, p := range chunkLines(l.replica, lines) {
				if _, err := l.pool.Exec(ctx, "SELECT pg_notify($1, $2)", LiveChannel, string(p)); err != nil && ctx.Err() == nil {
					l.logger.Warn("logs: notify live lines", "error", err)
					break
				}
			}
		}
	}
}

// announceLoop announces this replica's interest when a subscription
// starts and every InterestRefresh while it has subscribers.
func (l *live) announceLoop(ctx context.Context) {
	t := time.NewTicker(InterestRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.announce:
		}
		ws := l.interest()
		if len(ws) == 0 {
			continue
		}
		b, _ := json.Marshal(livePayload{Replica: l.replica, Interest: ws})
		if _, err := l.pool.Exec(ctx, "SELECT pg_notify($1, $2)", LiveChannel, string(b)); err != nil && ctx.Err() == nil {
			l.logger.Warn("logs: announce live tails", "error", err)
		}
	}
}

// chunkLines encodes lines into payloads that fit a notification; a line
// too large on its own is sent without its access fields' long values.
func chunkLines(replica string, lines []Line) [][]byte {
	var out [][]byte
	var cur []Line
	flush := func() {
		if len(cur) == 0 {
			return
		}
		b, _ := json.Marshal(livePayload{Replica: replica, Lines: cur})
		out = append(out, b)
		cur = nil
	}
	size := 40
	for _, ln := range lines {
		b, _ := json.Marshal(ln)
		if len(b) > maxNotifyPayload-60 {
			ln = shrink(ln)
			if b, _ = json.Marshal(ln); len(b) > maxNotifyPayload-60 {
				continue
			}
		}
		if size+len(b)+1 > maxNotifyPayload {
			flush()
			size = 40
		}
		cur = append(cur, ln)
		size += len(b) + 1
	}
	flush()
	return out
}

func shrink(ln Line) Line {
	cut := func(s string) string { return clean(s, 512) }
	ln.Message = cut(ln.Message)
	ln.Fields = nil
	if ln.Access != nil {
		e := *ln.Access
		e.URI, e.UserAgent, e.Referer, e.UpstreamAddr = cut(e.URI), cut(e.UserAgent), cut(e.Referer), cut(e.UpstreamAddr)
		ln.Access = &e
	}
	return ln
}

func (l *live) listenLoop(ctx context.Context) {
	backoff.Reconnect(ctx, time.Second, maxLiveBackoff, func(ctx context.Context) (bool, error) {
		return l.listen(ctx), nil
	}, nil)
}

func (l *live) listen(ctx context.Context) bool {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return false
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+LiveChannel); err != nil {
		return false
	}
	l.listenOnce.Do(func() { close(l.listening) })
	defer func() {
		// The connection goes back to the pool: stop listening first.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "UNLISTEN *"); err != nil {
			conn.Conn().Close(uctx)
		}
	}()
	own := `{"r":"` + l.replica + `"`
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() == nil {
				l.logger.Warn("logs: listen for live lines", "error", err)
			}
			return true
		}
		if strings.HasPrefix(n.Payload, own) {
			continue
		}
		var p livePayload
		if json.Unmarshal([]byte(n.Payload), &p) != nil || p.Replica == l.replica {
			continue
		}
		if len(p.Interest) > 0 {
			l.heard(p.Interest)
		}
		for i := range p.Lines {
			if e := p.Lines[i].Access; e != nil {
				e.workspaceID = p.Lines[i].WorkspaceID
			}
		}
		l.deliver(p.Lines)
	}
}
