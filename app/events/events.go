// Package events is the live-event hub of one master replica: modules
// publish events inside the transaction of a change, PostgreSQL's
// LISTEN/NOTIFY carries them to every replica, and each replica's hub fans
// them out to its WebSocket and Server-Sent Events subscribers and to
// in-process subscriptions.
//
// The hub knows nothing of credentials, roles or routes: package app mounts
// the two routes, authenticates their callers, parses their query filters,
// and hands the hub a Viewer for each caller, which decides what that caller
// may see. Package app does not import a module and this package does not
// import app.
//
// How an event travels:
//
//  1. A module calls Hub.Publish (through app.Deps.Events) inside the
//     transaction that records the change. Publish encodes the event as JSON
//     (shorter than PostgreSQL's 8000-byte NOTIFY limit: the largest data
//     values are dropped and data.truncated is set when it would not fit) and
//     runs SELECT pg_notify('nxmesh_events', payload) in that transaction, so
//     PostgreSQL delivers it only if the transaction commits, and to every
//     replica. A nil transaction notifies at once.
//  2. Each replica's hub holds one connection, taken out of the pool, that
//     LISTENs on nxmesh_events. When the connection fails it reconnects with
//     backoff (1 s doubling to 30 s); events committed while it is away do not
//     reach this replica's subscribers.
//  3. For each notification the hub hands the event to every subscriber whose
//     filter matches (glob patterns over the type with path.Match, and an
//     optional workspace) and, for a caller confined to one organization and
//     workspace (an API key), whose scope matches, without ever blocking: a
//     subscriber whose buffer (SubscriberBuffer events) is full is dropped and
//     its connection closed.
//  4. Each subscriber's own goroutine asks its Viewer whether its caller may
//     see the event and writes it out. Package app's Viewer checks the
//     caller's role in the event's organization and workspace (from its
//     membership, its API key's scope, or superadmin; when the event names a
//     Casbin Object, that role must be allowed to read it) and caches roles
//     for 30 seconds per connection.
//  5. Every 5 seconds each WebSocket and SSE subscriber asks its Viewer to
//     authenticate its caller's credential again (app: Principal.RecheckFunc)
//     and closes as soon as it no longer is valid: the API key was revoked,
//     rotated or expired, the session was logged out or expired, the user was
//     disabled (superadmins too), the access token expired.
//  6. When the hub stops (the context given to Start is cancelled on SIGTERM,
//     or Stop) every subscriber gets buffered events and a shutdown message,
//     then is closed.
//
// # Subscribers
//
// WebSocket GET /v1/events?token=<access JWT or API key> (browsers cannot set
// headers on a WebSocket, so the auth module accepts ?token= on the events
// paths only). Every message is an event (docs/API.md), with its routing fields:
//
//	{"type":"agent.connected","timestamp":"…","data":{…},"workspace_id":"…","org_id":"…"}
//
// A connection starts subscribed to every event (or to ?events=a.*,b.* and
// ?workspace_id=) and is told so by a control message of type "subscribed".
// The client changes its subscription with a subscribe message (docs/API.md):
//
//	{"action":"subscribe","events":["agent.*","config.*"],"filter":{"workspace_id":"…"}}
//	{"action":"unsubscribe","events":["config.*"]}
//
// The first subscribe replaces the default "every event"; later ones add
// patterns. An empty events list in subscribe means every event. unsubscribe
// removes the listed patterns (no list: all of them, so nothing is received
// until the next subscribe). A filter object sets the workspace filter ("" or
// absent workspace_id clears it); no filter leaves it unchanged. Each accepted
// message is answered with "subscribed" carrying the resulting
// {"events":[…],"filter":{"workspace_id":"…"}}, a bad one with an "error"
// message ({"message":"…"}); the connection stays open. On server shutdown the
// client gets {"type":"shutdown"} and a close frame 1001; a client too slow to
// keep up is closed with 1013; a client whose credential no longer is valid
// gets {"type":"unauthorized"} and a close frame 1008.
//
// Server-Sent Events GET /v1/events/stream?events=agent.*,config.*&workspace_id=…
// (the HTMX pages' stream; authenticated by bearer token, X-API-Key, ?token= or
// the admin session cookie; the request must accept text/event-stream). In
// the admin's style it sends:
//
//	event: initial   once on connect: data {"type":"initial","data":{"events":[…],"filter":{…}}}
//	event: create    an event whose type ends in .created/.create/.added/.registered
//	event: delete    an event whose type ends in .deleted/.delete/.removed
//	event: log       an event whose type starts with log./logs. or ends in .log/.logs
//	event: update    every other event (connected, disconnected, applied, alert, updated…)
//	event: <type>    every event again under its own type (event: agent.connected)
//	event: shutdown  when the server stops, then the stream ends
//	event: unauthorized  when the credential no longer is valid, then the stream ends
//
// so a page listens either to the category (hx-trigger="sse:update")
// or to exact types (sse:agent.connected), not both. The data of create,
// update, delete, log and <type> is the event JSON shown above. A comment line
// is sent every 20 seconds to keep proxies from closing an idle stream.
package events

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	fiberws "github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"

	"github.com/nxmesh/nxmesh/app/jsonenc"

	"github.com/nxmesh/nxmesh/app/backoff"
)

// Channel is the PostgreSQL NOTIFY channel of live events.
const Channel = "nxmesh_events"

// SubscriberBuffer is how many events may wait for one subscriber; a
// subscriber that falls further behind is dropped (WebSocket close 1013) so
// that it cannot hold up the others. It is sized for a rollout: one change
// to a fleet of a few thousand agents yields one config.applied each.
const SubscriberBuffer = 4096

// MaxPatterns is how many type patterns one subscription may hold.
const MaxPatterns = 32

const (
	// maxEventPayload is the largest NOTIFY payload PostgreSQL accepts
	// (it must be shorter than 8000 bytes).
	maxEventPayload = 7999
	sseKeepAlive    = 20 * time.Second
	wsPingInterval  = 30 * time.Second
	wsPongWait      = 75 * time.Second
	eventWriteWait  = 10 * time.Second
	// credentialRecheck is how often a stream authenticates its caller again.
	credentialRecheck = 5 * time.Second
	maxListenBackoff  = 30 * time.Second

	msgCredentialInvalid = "credential revoked or expired; authenticate again"
)

// Errors of the events hub. They are not HTTP error categories: package app
// answers a stream request refused with ErrStopped with 503.
var (
	// ErrStopped is returned by subscriptions of a stopped hub.
	ErrStopped = errors.New("events hub stopped")
	// ErrSubscriberDropped is returned by a subscription that fell too far
	// behind.
	ErrSubscriberDropped = errors.New("events subscriber too slow; dropped")
)

var eventTypePattern = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)*$`)

// Event is something that happened, for the live event streams. Data is
// the event's data (docs/API.md); OrgID (and WorkspaceID for workspace objects) decide
// who may see it: an event without an organization reaches superadmins only.
type Event struct {
	Type        string
	OrgID       uuid.UUID
	WorkspaceID uuid.UUID
	Data        map[string]any
	Timestamp   time.Time
	// Object, when set, is the Casbin object (e.g. "agents.agent") a
	// subscriber's role must be allowed to read; empty: any role in the scope.
	Object string
}

// notification is the NOTIFY payload.
type notification struct {
	Type        string         `json:"type"`
	Timestamp   time.Time      `json:"timestamp"`
	Data        map[string]any `json:"data"`
	WorkspaceID uuid.UUID      `json:"workspace_id"`
	OrgID       uuid.UUID      `json:"org_id"`
	Object      string         `json:"object,omitempty"`
}

// receivedNotification is a notification as the listener reads it: the
// data is passed on as it came.
type receivedNotification struct {
	Type        string          `json:"type"`
	Timestamp   time.Time       `json:"timestamp"`
	Data        json.RawMessage `json:"data"`
	WorkspaceID uuid.UUID       `json:"workspace_id"`
	OrgID       uuid.UUID       `json:"org_id"`
	Object      string          `json:"object,omitempty"`
}

// clientEvent is what subscribers receive: the API's {type, timestamp, data}
// plus the routing fields.
type clientEvent struct {
	Type        string         `json:"type"`
	Timestamp   timestamp      `json:"timestamp"`
	Data        map[string]any `json:"data"`
	WorkspaceID *uuid.UUID     `json:"workspace_id,omitempty"`
	OrgID       *uuid.UUID     `json:"org_id,omitempty"`
}

// timestamp writes RFC 3339 UTC (null when zero), as the API's times are.
type timestamp struct{ time.Time }

// MarshalJSON writes RFC 3339 UTC.
func (t timestamp) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + t.UTC().Format(time.RFC3339) + `"`), nil
}

// delivery is one received event, encoded once for every subscriber. ev
// has no Data; data is its encoding (see event).
type delivery struct {
	ev       Event
	data     json.RawMessage
	json     []byte
	category string
}

// Filter selects events by type patterns and workspace: a stream's
// subscription. It is immutable; a subscription change stores a new one.
type Filter struct {
	events      []string
	workspaceID uuid.UUID
	// explicit is false while the filter is the connection's default, which
	// the first subscribe message replaces.
	explicit bool
}

// DefaultFilter is a stream's subscription when its request names no
// patterns: every event in workspaceID (uuid.Nil: every workspace). The
// stream's first subscribe message replaces it.
func DefaultFilter(workspaceID uuid.UUID) *Filter {
	return &Filter{events: []string{"*"}, workspaceID: workspaceID}
}

// NewFilter is a stream's subscription to the events whose type matches one
// of patterns (glob patterns, each checked with CheckPattern) in workspaceID
// (uuid.Nil: every workspace). Later subscribe messages add patterns to it.
func NewFilter(patterns []string, workspaceID uuid.UUID) *Filter {
	return &Filter{events: slices.Clone(patterns), workspaceID: workspaceID, explicit: true}
}

// CheckPattern returns an error when p is not a valid glob pattern of event
// types (path.Match syntax, such as agent.*).
func CheckPattern(p string) error {
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("bad event pattern %q: %w", p, err)
	}
	return nil
}

func (f *Filter) matches(ev *Event) bool {
	if f.workspaceID != uuid.Nil && ev.WorkspaceID != f.workspaceID {
		return false
	}
	for _, p := range f.events {
		if ok, _ := path.Match(p, ev.Type); ok {
			return true
		}
	}
	return false
}

// describe is the data of "subscribed" and "initial" messages.
func (f *Filter) describe() map[string]any {
	ws := ""
	if f.workspaceID != uuid.Nil {
		ws = f.workspaceID.String()
	}
	events := f.events
	if events == nil {
		events = []string{}
	}
	return map[string]any{"events": events, "filter": map[string]any{"workspace_id": ws}}
}

type dropReason int

const (
	dropNone dropReason = iota
	dropLeft
	dropSlow
	dropShutdown
)

type subscriber struct {
	filter atomic.Pointer[Filter]
	// confined, when set, is the only organization (and workspace, unless
	// uuid.Nil) whose events the subscriber gets (Viewer.Confined).
	confined *scope
	ch       chan *delivery
	done     chan struct{}
	// reason is written under the hub's lock before done is closed.
	reason  dropReason
	tracked bool
}

// scope is an organization and, unless uuid.Nil, one of its workspaces.
type scope struct {
	orgID       uuid.UUID
	workspaceID uuid.UUID
}

// wants is the hub's cheap pre-filter: the subscription's filter and the
// scope an API key confines its caller to. The Viewer is asked by the
// subscriber.
func (s *subscriber) wants(ev *Event) bool {
	if k := s.confined; k != nil {
		if ev.OrgID != k.orgID || (k.workspaceID != uuid.Nil && ev.WorkspaceID != k.workspaceID) {
			return false
		}
	}
	return s.filter.Load().matches(ev)
}

type eventsMetrics struct {
	subscribers prometheus.Gauge
	received    prometheus.Counter
	dropped     prometheus.Counter
}

// Hub is the live-event hub of one replica (see the package comment).
// Publish works from the start; the LISTEN loop starts with Start (package
// app calls it from App.Mount, which also mounts the /v1/events routes).
type Hub struct {
	pool    *pgxpool.Pool
	logger  *slog.Logger
	metrics eventsMetrics

	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	stopped bool
	ctx     context.Context
	cancel  context.CancelFunc

	conns     sync.WaitGroup // WebSocket and SSE writers
	loopDone  chan struct{}
	listening chan struct{}
	listenOne sync.Once
}

// New builds the hub over pool. reg may be nil.
func New(pool *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer) *Hub {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Hub{
		pool:      pool,
		logger:    logger,
		subs:      map[*subscriber]struct{}{},
		listening: make(chan struct{}),
		metrics: eventsMetrics{
			subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "nxmesh_events_subscribers", Help: "Live event subscribers connected to this replica.",
			}),
			received: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "nxmesh_events_received_total", Help: "Events received from PostgreSQL by this replica.",
			}),
			dropped: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "nxmesh_events_dropped_subscribers_total", Help: "Subscribers dropped for falling behind.",
			}),
		},
	}
	if reg != nil {
		reg.MustRegister(e.metrics.subscribers, e.metrics.received, e.metrics.dropped)
	}
	return e
}

// Publish sends ev to every replica's subscribers when tx commits (at once
// when tx is nil). Call it inside the transaction that records the change.
func (e *Hub) Publish(ctx context.Context, tx *gorm.DB, ev Event) error {
	payload, err := encodeNotification(ev)
	if err != nil {
		return err
	}
	if tx == nil {
		_, err = e.pool.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, string(payload))
	} else {
		err = tx.WithContext(ctx).Exec("SELECT pg_notify(?, ?)", Channel, string(payload)).Error
	}
	if err != nil {
		return fmt.Errorf("publish event %s: %w", ev.Type, err)
	}
	return nil
}

// PublishAll is Publish for several events with one statement. Events are
// packed into as few notifications as fit (a JSON array of events each,
// within PostgreSQL's payload limit): a rollout's thousand config.applied
// are a few dozen notifications for PostgreSQL and every listener, not a
// thousand. Subscribers get them one by one, in order.
func (e *Hub) PublishAll(ctx context.Context, tx *gorm.DB, evs []Event) error {
	if len(evs) == 0 {
		return nil
	}
	packs, err := packNotifications(evs)
	if err != nil {
		return err
	}
	// The payloads are JSON texts, which never hold a raw control
	// character: joined by the record separator, they are one parameter
	// that PostgreSQL splits without parsing.
	data := strings.Join(packs, packSeparator)
	const q = "SELECT count(pg_notify($1, p)) FROM unnest(string_to_array($2, chr(30))) AS p"
	if tx == nil {
		_, err = e.pool.Exec(ctx, q, Channel, data)
	} else {
		err = tx.WithContext(ctx).Exec("SELECT count(pg_notify(?, p)) FROM unnest(string_to_array(?, chr(30))) AS p", Channel, data).Error
	}
	if err != nil {
		return fmt.Errorf("publish %d events: %w", len(evs), err)
	}
	return nil
}

// packSeparator joins the payloads of PublishAll's statement: the record
// separator, chr(30), which JSON text holds only escaped.
const packSeparator = "\x1e"

// packNotifications encodes evs as notification payloads: JSON arrays of
// encoded events, in order, each within maxEventPayload.
func packNotifications(evs []Event) ([]string, error) {
	var packs []string
	var cur []byte
	for _, ev := range evs {
		p, err := encodeNotification(ev)
		if err != nil {
			return nil, err
		}
		if len(p)+2 > maxEventPayload {
			// Too large to be wrapped: a notification of its own, as
			// Publish sends it.
			if len(cur) > 0 {
				packs = append(packs, string(append(cur, ']')))
				cur = cur[:0]
			}
			packs = append(packs, string(p))
			continue
		}
		// "[" + events joined by "," + "]"
		if len(cur) > 0 && len(cur)+1+len(p)+1 > maxEventPayload {
			packs = append(packs, string(append(cur, ']')))
			cur = cur[:0]
		}
		if len(cur) == 0 {
			cur = append(cur, '[')
		} else {
			cur = append(cur, ',')
		}
		cur = append(cur, p...)
	}
	if len(cur) > 0 {
		packs = append(packs, string(append(cur, ']')))
	}
	return packs, nil
}

// encodeNotification validates ev and encodes it within maxEventPayload,
// dropping the largest data values (and setting data.truncated) if needed.
func encodeNotification(ev Event) ([]byte, error) {
	if len(ev.Type) > 100 || !eventTypePattern.MatchString(ev.Type) {
		return nil, fmt.Errorf("publish event: invalid type %q", ev.Type)
	}
	if len(ev.Object) > 100 {
		return nil, fmt.Errorf("publish event %s: object name too long", ev.Type)
	}
	if ev.Timestamp.IsZero() {
		ev.Timestamp = time.Now()
	}
	n := notification{Type: ev.Type, Timestamp: ev.Timestamp.UTC(), Data: ev.Data,
		WorkspaceID: ev.WorkspaceID, OrgID: ev.OrgID, Object: ev.Object}
	if n.Data == nil {
		n.Data = map[string]any{}
	}
	if b, ok := appendNotification(make([]byte, 0, 512), &n); ok && len(b) <= maxEventPayload {
		return b, nil
	}
	b, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.Type, err)
	}
	if len(b) <= maxEventPayload {
		return b, nil
	}
	sizes := map[string]int{}
	for k, v := range n.Data {
		vb, _ := json.Marshal(v)
		sizes[k] = len(k) + len(vb)
	}
	keys := slices.Collect(maps.Keys(sizes))
	sort.Slice(keys, func(i, j int) bool {
		if sizes[keys[i]] != sizes[keys[j]] {
			return sizes[keys[i]] > sizes[keys[j]]
		}
		return keys[i] < keys[j]
	})
	n.Data = maps.Clone(n.Data)
	for _, k := range keys {
		delete(n.Data, k)
		n.Data["truncated"] = true
		if b, err = json.Marshal(n); err == nil && len(b) <= maxEventPayload {
			return b, nil
		}
	}
	return nil, fmt.Errorf("encode event %s: does not fit a notification", ev.Type)
}

// appendNotification appends n as encoding/json writes it, by hand: most
// events' data are flat maps of strings, numbers and booleans. ok is false
// when the data hold something else (or the timestamp is outside the years
// JSON timestamps allow); encoding/json encodes those.
func appendNotification(b []byte, n *notification) (_ []byte, ok bool) {
	if y := n.Timestamp.Year(); y < 0 || y > 9999 {
		return b, false
	}
	start := len(b)
	b = append(b, `{"type":`...)
	b = jsonenc.AppendString(b, n.Type)
	b = append(b, `,"timestamp":"`...)
	b = n.Timestamp.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","data":`...)
	if b, ok = jsonenc.AppendObject(b, n.Data); !ok {
		return b[:start], false
	}
	b = append(b, `,"workspace_id":"`...)
	b = append(b, n.WorkspaceID.String()...)
	b = append(b, `","org_id":"`...)
	b = append(b, n.OrgID.String()...)
	b = append(b, '"')
	if n.Object != "" {
		b = append(b, `,"object":`...)
		b = jsonenc.AppendString(b, n.Object)
	}
	return append(b, '}'), true
}

func decodeNotification(payload string) (*delivery, error) {
	var n receivedNotification
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return nil, fmt.Errorf("decode event notification: %w", err)
	}
	return deliveryOf(&n)
}

// deliveryOf is the delivery of a decoded notification: what streams
// receive is written around the data as it came (valid JSON, as decoding
// checked), in clientEvent's form.
func deliveryOf(n *receivedNotification) (*delivery, error) {
	data := n.Data
	if len(data) == 0 || string(data) == "null" {
		data = json.RawMessage(`{}`)
	} else if data[0] != '{' {
		return nil, fmt.Errorf("decode event notification: data is not an object")
	}
	ev := Event{Type: n.Type, OrgID: n.OrgID, WorkspaceID: n.WorkspaceID, Timestamp: n.Timestamp, Object: n.Object}
	typ, err := json.Marshal(ev.Type)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.Type, err)
	}
	ts, _ := timestamp{ev.Timestamp}.MarshalJSON()
	b := make([]byte, 0, len(data)+len(typ)+len(ts)+120)
	b = append(append(b, `{"type":`...), typ...)
	b = append(append(b, `,"timestamp":`...), ts...)
	b = append(append(b, `,"data":`...), data...)
	if ev.WorkspaceID != uuid.Nil {
		b = append(append(append(b, `,"workspace_id":"`...), ev.WorkspaceID.String()...), '"')
	}
	if ev.OrgID != uuid.Nil {
		b = append(append(append(b, `,"org_id":"`...), ev.OrgID.String()...), '"')
	}
	b = append(b, '}')
	return &delivery{ev: ev, data: data, json: b, category: sseCategory(ev.Type)}, nil
}

// event is d's Event with its own copy of the data: decoded for each
// in-process subscriber that takes it, as the streams send d.json and
// never need it.
func (d *delivery) event() Event {
	ev := d.ev
	dec := json.NewDecoder(bytes.NewReader(d.data))
	dec.UseNumber()
	if err := dec.Decode(&ev.Data); err != nil || ev.Data == nil {
		ev.Data = map[string]any{} // d.data is an object: decoded when received
	}
	return ev
}

// sseCategory maps an event type to the admin's SSE event names.
func sseCategory(typ string) string {
	first, _, _ := strings.Cut(typ, ".")
	last := typ[strings.LastIndexByte(typ, '.')+1:]
	switch {
	case first == "log" || first == "logs" || last == "log" || last == "logs":
		return "log"
	case last == "created" || last == "create" || last == "added" || last == "registered":
		return "create"
	case last == "deleted" || last == "delete" || last == "removed":
		return "delete"
	}
	return "update"
}

// controlMessage encodes a message of the hub itself (subscribed, error,
// initial, shutdown) in the events' shape.
func controlMessage(typ string, data map[string]any) []byte {
	if data == nil {
		data = map[string]any{}
	}
	b, _ := json.Marshal(clientEvent{Type: typ, Timestamp: timestamp{time.Now()}, Data: data})
	return b
}

// Listening is closed once the hub has LISTENed for the first time.
func (e *Hub) Listening() <-chan struct{} { return e.listening }

// Start runs the LISTEN loop until ctx is done or Stop. Calling it again, or
// after Stop, does nothing.
func (e *Hub) Start(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancel != nil || e.stopped {
		return
	}
	e.ctx, e.cancel = context.WithCancel(ctx)
	e.loopDone = make(chan struct{})
	go e.run(e.ctx)
}

// Stop ends the LISTEN loop, sends every subscriber buffered events and a
// shutdown message, and waits (at most a few seconds) for them to be written.
func (e *Hub) Stop() {
	e.mu.Lock()
	cancel, done := e.cancel, e.loopDone
	e.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	e.closeSubscribers()
	waited := make(chan struct{})
	go func() { e.conns.Wait(); close(waited) }()
	t := time.NewTimer(eventWriteWait)
	defer t.Stop()
	select {
	case <-waited:
	case <-t.C:
		e.logger.Warn("events: subscribers still writing at shutdown")
	}
}

func (e *Hub) run(ctx context.Context) {
	defer close(e.loopDone)
	defer e.closeSubscribers()
	backoff.Reconnect(ctx, time.Second, maxListenBackoff, e.listen, func(err error, retryIn time.Duration) {
		e.logger.Warn("events: listener failed; reconnecting", "error", err, "retry_in", retryIn)
	})
}

// listen holds one dedicated connection LISTENing until it fails or ctx ends.
func (e *Hub) listen(ctx context.Context) (connected bool, err error) {
	pc, err := e.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire events connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, fmt.Errorf("listen %s: %w", Channel, err)
	}
	e.listenOne.Do(func() { close(e.listening) })
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, fmt.Errorf("wait for events: %w", err)
		}
		ds, err := decodeNotifications(n.Payload)
		if err != nil {
			e.logger.Warn("events: bad notification", "error", err)
		}
		for _, d := range ds {
			e.dispatch(d)
		}
	}
}

// decodeNotifications decodes a notification's payload: one event
// (Publish), or a JSON array of events (PublishAll). A bad event in an
// array is skipped, and reported in err.
func decodeNotifications(payload string) ([]*delivery, error) {
	if !strings.HasPrefix(payload, "[") {
		d, err := decodeNotification(payload)
		if err != nil {
			return nil, err
		}
		return []*delivery{d}, nil
	}
	// Most arrays decode in one pass; one with a bad event is taken apart
	// event by event, so that the others still go out.
	ns, ok := parsePacked(payload)
	if !ok {
		ns = nil
	}
	if ok || json.Unmarshal([]byte(payload), &ns) == nil {
		out := make([]*delivery, 0, len(ns))
		var errs []error
		for i := range ns {
			d, err := deliveryOf(&ns[i])
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, d)
		}
		return out, errors.Join(errs...)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(payload), &raws); err != nil {
		return nil, fmt.Errorf("decode event notifications: %w", err)
	}
	out := make([]*delivery, 0, len(raws))
	var errs []error
	for _, r := range raws {
		d, err := decodeNotification(string(r))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, d)
	}
	return out, errors.Join(errs...)
}

// parsePacked reads a valid JSON array of notifications in the form
// encoding/json and appendNotification write (fields in notification's
// order, strings without escapes, the data an object), without decoding
// the data: a rollout's thousand events arrive so. ok is false for anything
// else, which encoding/json then decodes.
func parsePacked(payload string) (_ []receivedNotification, ok bool) {
	if !json.Valid([]byte(payload)) {
		return nil, false
	}
	r := packReader{s: payload}
	if !r.lit("[") {
		return nil, false
	}
	var out []receivedNotification
	for {
		var n receivedNotification
		var ts, ws, org string
		var err error
		if !r.lit(`{"type":`) || !r.str(&n.Type) || !r.lit(`,"timestamp":`) || !r.str(&ts) || !r.lit(`,"data":`) {
			return nil, false
		}
		start := r.i
		if !r.skipObject() {
			return nil, false
		}
		n.Data = json.RawMessage(payload[start:r.i])
		if !r.lit(`,"workspace_id":`) || !r.str(&ws) || !r.lit(`,"org_id":`) || !r.str(&org) {
			return nil, false
		}
		if r.lit(`,"object":`) && !r.str(&n.Object) {
			return nil, false
		}
		if !r.lit("}") {
			return nil, false
		}
		if n.Timestamp, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			return nil, false
		}
		if n.WorkspaceID, err = uuid.Parse(ws); err != nil {
			return nil, false
		}
		if n.OrgID, err = uuid.Parse(org); err != nil {
			return nil, false
		}
		out = append(out, n)
		if r.lit(",") {
			continue
		}
		return out, r.lit("]") && r.i == len(r.s)
	}
}

// packReader walks a payload json.Valid accepted.
type packReader struct {
	s string
	i int
}

// lit consumes p if the payload continues with it.
func (r *packReader) lit(p string) bool {
	if strings.HasPrefix(r.s[r.i:], p) {
		r.i += len(p)
		return true
	}
	return false
}

// str reads a string without escapes into dst.
func (r *packReader) str(dst *string) bool {
	if r.i >= len(r.s) || r.s[r.i] != '"' {
		return false
	}
	end := strings.IndexAny(r.s[r.i+1:], `"\`)
	if end < 0 || r.s[r.i+1+end] != '"' {
		return false
	}
	*dst = r.s[r.i+1 : r.i+1+end]
	r.i += end + 2
	return true
}

// skipObject moves past a JSON object (valid, as the payload is).
func (r *packReader) skipObject() bool {
	if r.i >= len(r.s) || r.s[r.i] != '{' {
		return false
	}
	depth := 0
	for ; r.i < len(r.s); r.i++ {
		switch r.s[r.i] {
		case '"':
			for r.i++; r.i < len(r.s) && r.s[r.i] != '"'; r.i++ {
				if r.s[r.i] == '\\' {
					r.i++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				r.i++
				return true
			}
		}
	}
	return false
}

// dispatch hands d to every interested subscriber without blocking.
func (e *Hub) dispatch(d *delivery) {
	e.metrics.received.Inc()
	e.mu.Lock()
	defer e.mu.Unlock()
	for s := range e.subs {
		if !s.wants(&d.ev) {
			continue
		}
		select {
		case s.ch <- d:
		default:
			e.dropLocked(s, dropSlow)
			e.metrics.dropped.Inc()
		}
	}
}

func (e *Hub) subscribe(f *Filter, confined *scope, tracked bool) (*subscriber, error) {
	s := &subscriber{confined: confined, ch: make(chan *delivery, SubscriberBuffer), done: make(chan struct{}), tracked: tracked}
	s.filter.Store(f)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return nil, ErrStopped
	}
	e.subs[s] = struct{}{}
	if tracked {
		e.conns.Add(1)
	}
	e.metrics.subscribers.Inc()
	return s, nil
}

// release removes s (if still registered) and ends its tracking.
func (e *Hub) release(s *subscriber) {
	e.mu.Lock()
	if _, ok := e.subs[s]; ok {
		e.dropLocked(s, dropLeft)
	}
	e.mu.Unlock()
	if s.tracked {
		e.conns.Done()
	}
}

func (e *Hub) dropLocked(s *subscriber, why dropReason) {
	delete(e.subs, s)
	s.reason = why
	close(s.done)
	e.metrics.subscribers.Dec()
}

func (e *Hub) closeSubscribers() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopped = true
	for s := range e.subs {
		e.dropLocked(s, dropShutdown)
	}
}

// Subscription receives events in process (e.g. for per-agent sockets). It
// does not check who may see them: the caller does.
type Subscription struct {
	e *Hub
	s *subscriber
}

// Subscribe returns a subscription to the events whose type matches one of
// patterns (path.Match globs; none: every event) in workspaceID (uuid.Nil:
// every workspace). Data numbers arrive as json.Number.
func (e *Hub) Subscribe(patterns []string, workspaceID uuid.UUID) (*Subscription, error) {
	if len(patterns) == 0 {
		patterns = []string{"*"}
	}
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("subscribe to events: bad pattern %q: %w", p, err)
		}
	}
	s, err := e.subscribe(NewFilter(patterns, workspaceID), nil, false)
	if err != nil {
		return nil, err
	}
	return &Subscription{e: e, s: s}, nil
}

// Next returns the next event; ErrSubscriberDropped when the subscription fell
// behind, ErrStopped when the hub stopped or the subscription was closed.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	select {
	case <-s.s.done:
		if s.s.reason == dropSlow {
			return Event{}, ErrSubscriberDropped
		}
		select {
		case d := <-s.s.ch:
			return d.event(), nil
		default:
			return Event{}, ErrStopped
		}
	default:
	}
	select {
	case d := <-s.s.ch:
		return d.event(), nil
	case <-s.s.done:
		return s.Next(ctx)
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Done is closed when the subscription ends (dropped, stopped or closed).
func (s *Subscription) Done() <-chan struct{} { return s.s.done }

// Close ends the subscription.
func (s *Subscription) Close() { s.e.release(s.s) }

// Viewer decides which events one authenticated caller of a stream may see.
// Package app implements it over the caller's credential and roles. The hub
// calls a stream's Viewer from that stream's goroutine only; ctx ends when
// the hub stops.
type Viewer interface {
	// Confined returns the organization and workspace (uuid.Nil: every
	// workspace of the organization) the caller is confined to, as an API
	// key is; ok is false for a caller who is not. The hub drops other
	// events without asking MayRead. It is asked once, when the stream
	// starts.
	Confined() (orgID, workspaceID uuid.UUID, ok bool)
	// MayRead reports whether the caller may see ev.
	MayRead(ctx context.Context, ev *Event) bool
	// StillValid authenticates the caller's credential again and reports
	// whether it still is valid; false ends the stream with an
	// "unauthorized" message. A stream asks every few seconds.
	StillValid(ctx context.Context) bool
}

// confinement is the scope v confines its caller to, or nil.
func confinement(v Viewer) *scope {
	if org, ws, ok := v.Confined(); ok {
		return &scope{orgID: org, workspaceID: ws}
	}
	return nil
}

func (e *Hub) hubContext() context.Context {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil {
		return context.Background()
	}
	return e.ctx
}

// applyClientMessage changes s's subscription as a subscribe message
// asks and returns the reply.
func applyClientMessage(s *subscriber, msg []byte) []byte {
	var req struct {
		Action string   `json:"action"`
		Events []string `json:"events"`
		Filter *struct {
			WorkspaceID string `json:"workspace_id"`
		} `json:"filter"`
	}
	fail := func(m string) []byte { return controlMessage("error", map[string]any{"message": m}) }
	if err := json.Unmarshal(msg, &req); err != nil {
		return fail("message must be a JSON object with action, events and filter")
	}
	for _, p := range req.Events {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			return fail(fmt.Sprintf("invalid event pattern %q", p))
		}
	}
	cur := s.filter.Load()
	next := &Filter{events: slices.Clone(cur.events), workspaceID: cur.workspaceID, explicit: true}
	switch req.Action {
	case "subscribe":
		switch {
		case len(req.Events) == 0:
			next.events = []string{"*"}
		case !cur.explicit:
			next.events = slices.Clone(req.Events)
		default:
			for _, p := range req.Events {
				if !slices.Contains(next.events, p) {
					next.events = append(next.events, p)
				}
			}
		}
	case "unsubscribe":
		if len(req.Events) == 0 {
			next.events = []string{}
		} else {
			next.events = slices.DeleteFunc(next.events, func(p string) bool { return slices.Contains(req.Events, p) })
		}
	default:
		return fail(`action must be "subscribe" or "unsubscribe"`)
	}
	if len(next.events) > MaxPatterns {
		return fail(fmt.Sprintf("at most %d event patterns", MaxPatterns))
	}
	if req.Filter != nil {
		next.workspaceID = uuid.Nil
		if req.Filter.WorkspaceID != "" {
			id, err := uuid.Parse(req.Filter.WorkspaceID)
			if err != nil {
				return fail("filter.workspace_id must be a UUID")
			}
			next.workspaceID = id
		}
	}
	s.filter.Store(next)
	return controlMessage("subscribed", next.describe())
}

// WebSocket returns the handler of GET /v1/events for requests already
// authenticated and checked to be WebSocket upgrades: it upgrades the
// connection and serves it. caller returns the connection's subscription and
// its caller's Viewer, typically from the request's locals (the upgraded
// connection keeps them); a nil filter or Viewer closes the connection with
// 1008.
func (e *Hub) WebSocket(caller func(c *fiberws.Conn) (*Filter, Viewer)) fiber.Handler {
	return fiberws.New(func(c *fiberws.Conn) {
		f, v := caller(c)
		e.serveWebSocket(c, f, v)
	}, fiberws.Config{HandshakeTimeout: eventWriteWait})
}

// serveWebSocket serves one /v1/events connection.
func (e *Hub) serveWebSocket(c *fiberws.Conn, f *Filter, v Viewer) {
	ws := c.Conn
	defer ws.Close()
	write := func(kind int, b []byte) error {
		_ = ws.SetWriteDeadline(time.Now().Add(eventWriteWait))
		return ws.WriteMessage(kind, b)
	}
	closeWith := func(code int, text string) {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(eventWriteWait))
	}
	if v == nil || f == nil {
		closeWith(websocket.ClosePolicyViolation, "not authenticated")
		return
	}
	s, err := e.subscribe(f, confinement(v), true)
	if err != nil {
		_ = write(websocket.TextMessage, controlMessage("shutdown", nil))
		closeWith(websocket.CloseGoingAway, "server shutting down")
		return
	}
	defer e.release(s)

	replies := make(chan []byte, 8)
	readerDone := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(readerDone)
		_ = ws.SetReadDeadline(time.Now().Add(wsPongWait))
		ws.SetPongHandler(func(string) error { return ws.SetReadDeadline(time.Now().Add(wsPongWait)) })
		ws.SetReadLimit(4096)
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			_ = ws.SetReadDeadline(time.Now().Add(wsPongWait))
			select {
			case replies <- applyClientMessage(s, msg):
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		_ = ws.Close()
		<-readerDone
	}()

	if write(websocket.TextMessage, controlMessage("subscribed", f.describe())) != nil {
		return
	}
	ctx := e.hubContext()
	ping := time.NewTicker(wsPingInterval)
	defer ping.Stop()
	recheck := time.NewTicker(credentialRecheck)
	defer recheck.Stop()
	for {
		select {
		case d := <-s.ch:
			if v.MayRead(ctx, &d.ev) && write(websocket.TextMessage, d.json) != nil {
				return
			}
		case r := <-replies:
			if write(websocket.TextMessage, r) != nil {
				return
			}
		case <-ping.C:
			if ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(eventWriteWait)) != nil {
				return
			}
		case <-recheck.C:
			if !v.StillValid(ctx) {
				_ = write(websocket.TextMessage, controlMessage("unauthorized", map[string]any{"message": msgCredentialInvalid}))
				closeWith(websocket.ClosePolicyViolation, msgCredentialInvalid)
				return
			}
		case <-readerDone:
			return
		case <-s.done:
			switch s.reason {
			case dropSlow:
				closeWith(websocket.CloseTryAgainLater, "too slow; reconnect")
			case dropShutdown:
				for _, d := range drain(s) {
					if v.MayRead(ctx, &d.ev) && write(websocket.TextMessage, d.json) != nil {
						return
					}
				}
				_ = write(websocket.TextMessage, controlMessage("shutdown", nil))
				closeWith(websocket.CloseGoingAway, "server shutting down")
			}
			return
		}
	}
}

// drain returns the events left in s's buffer.
func drain(s *subscriber) []*delivery {
	var out []*delivery
	for {
		select {
		case d := <-s.ch:
			out = append(out, d)
		default:
			return out
		}
	}
}

// ServeStream serves GET /v1/events/stream for a request already
// authenticated, checked to accept text/event-stream and whose query was
// parsed into f: it streams the events v lets its caller see until the
// caller leaves, falls behind or no longer is valid, or the hub stops. It
// returns ErrStopped when the hub has stopped.
func (e *Hub) ServeStream(c *fiber.Ctx, f *Filter, v Viewer) error {
	s, err := e.subscribe(f, confinement(v), true)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set(fiber.HeaderConnection, "keep-alive")
	c.Set("X-Accel-Buffering", "no")
	conn := c.Context().Conn()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) { e.stream(w, conn, s, v, f) })
	return nil
}

func sseFrame(buf *bytes.Buffer, event string, data []byte) {
	buf.WriteString("event: ")
	buf.WriteString(event)
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
}

// stream writes one SSE subscriber's events until it leaves, falls behind or
// the hub stops.
func (e *Hub) stream(w *bufio.Writer, conn net.Conn, s *subscriber, v Viewer, f *Filter) {
	defer e.release(s)
	ctx := e.hubContext()
	var buf bytes.Buffer
	flush := func() bool {
		if conn != nil {
			_ = conn.SetWriteDeadline(time.Now().Add(2 * sseKeepAlive))
		}
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		return err == nil && w.Flush() == nil
	}
	event := func(d *delivery) {
		if v.MayRead(ctx, &d.ev) {
			sseFrame(&buf, d.category, d.json)
			sseFrame(&buf, d.ev.Type, d.json)
		}
	}
	buf.WriteString("retry: 3000\n")
	sseFrame(&buf, "initial", controlMessage("initial", f.describe()))
	if !flush() {
		return
	}
	tick := time.NewTicker(sseKeepAlive)
	defer tick.Stop()
	recheck := time.NewTicker(credentialRecheck)
	defer recheck.Stop()
	for {
		select {
		case d := <-s.ch:
			event(d)
			if buf.Len() > 0 && !flush() {
				return
			}
		case <-tick.C:
			buf.WriteString(": keepalive\n\n")
			if !flush() {
				return
			}
		case <-recheck.C:
			if !v.StillValid(ctx) {
				sseFrame(&buf, "unauthorized", controlMessage("unauthorized", map[string]any{"message": msgCredentialInvalid}))
				flush()
				return
			}
		case <-s.done:
			if s.reason == dropShutdown {
				for _, d := range drain(s) {
					event(d)
				}
				sseFrame(&buf, "shutdown", controlMessage("shutdown", nil))
				flush()
			}
			return
		}
	}
}
