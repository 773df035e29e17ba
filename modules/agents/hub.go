package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	"github.com/nxmesh/nxmesh/modules/vhosts"
	agentv1 "github.com/nxmesh/nxmesh/proto/nxmesh/agent/v1"
)

// Timings of the hub.
const (
	// ackTimeout is how long a push may go without a final ConfigStatus before
	// it is sent again; later retries double it up to retryMax.
	ackTimeout = 60 * time.Second
	retryMax   = 10 * time.Minute
	// reconcileInterval is how often the hub checks its streams: retries due,
	// silent agents.
	reconcileInterval = 10 * time.Second
	// resyncInterval is how often the hub recomputes every connected agent's
	// desired configuration, the safety net for a lost notification.
	resyncInterval = 5 * time.Minute
	// sendBuffer is how many messages may wait for a slow agent before its
	// stream is dropped (it reconnects and gets the current state).
	sendBuffer = 64
	// sentHistory is how many recent pushes a stream remembers to match the
	// statuses that answer them.
	sentHistory = 8
	// listenBackoffMax caps the wait before re-establishing LISTEN.
	listenBackoffMax = 30 * time.Second
)

// reasonShutdown ends streams when the hub stops.
const reasonShutdown = "shutdown"

// Hub holds the agent streams open on this replica (one hub per master
// process) and keeps each agent's configuration current:
//
//  1. Run LISTENs on vhosts.NotifyChannel ({"workspace_id","version"}, sent by
//     every configuration change's transaction) and NotifyChannel (AgentNotice:
//     deletions, relabels, commands, command results, connections), on a
//     connection taken out of the shared pool. Every replica gets every
//     notification and acts only on the streams it holds.
//  2. A configuration notification wakes each stream of that workspace: its
//     worker computes the agent's desired ConfigUpdate (Service.DesiredConfig)
//     and sends it when its checksum differs from the last one pushed,
//     recording desired_version/desired_checksum (apply_status pending) in
//     the rollout batch, ahead of the answer.
//  3. ConfigStatus answers are matched to the push by config_id; a push
//     without a final answer within ackTimeout, or answered FAILED or
//     ROLLED_BACK, is sent again with exponential backoff (the reconcile
//     ticker, every reconcileInterval).
//  4. The ticker also closes streams silent for three heartbeat intervals, and
//     every resyncInterval recomputes every stream's configuration; after
//     LISTEN is re-established (notifications may have been lost) all
//     streams are recomputed at once.
//
// Each stream has a goroutine besides its gRPC handler that receives
// (grpc.go; health reports and configuration statuses go to the hub's
// batchers, batcher.go), and two that run only while they have something to
// do (runner.go): the sender (the only caller of Send after the registration
// answer) and the worker (pushes configurations, delivers commands). A slow
// database or agent never blocks the listener or other streams, and an idle
// stream costs no more goroutines than that.
type Hub struct {
	svc     *Service
	pool    *pgxpool.Pool
	logger  *slog.Logger
	replica string

	mu      sync.Mutex
	conns   map[uuid.UUID]*conn
	waiters map[uuid.UUID]chan struct{}
	// precomputing holds the workspaces whose streams are being woken for
	// a change (configChanged): true when another change came meanwhile,
	// so that it runs again.
	precomputing map[uuid.UUID]bool
	stopped      bool
	// acme are the ACME challenges this replica waits for (acme.go).
	acme acmeWaiters
	// health stores the streams' health reports in batches, rollout the
	// configuration pushes and statuses (batcher.go).
	health  *batcher[streamHealth]
	rollout *batcher[rolloutItem]
	// prepared are configuration updates encoded once for many streams
	// (prepared.go).
	prepared preparedMessages

	ready     chan struct{}
	readyOnce sync.Once

	// observe, when set (by tests, before the hub is used), is told when the
	// hub finished handling something, its database work committed:
	// "message" (an agent's message recorded), "push" (a configuration sent
	// and recorded), "undelivered" (a configuration that could not be sent,
	// recorded as failed), "closed" (a stream ended and its disconnection
	// recorded), "precompute" (under the workspace's id: its streams'
	// configurations computed together and offered).
	observe func(kind string, agentID uuid.UUID)
}

func (h *Hub) observed(kind string, agentID uuid.UUID) {
	if h.observe != nil {
		h.observe(kind, agentID)
	}
}

func newHub(svc *Service, pool *pgxpool.Pool, logger *slog.Logger, replica string) *Hub {
	h := &Hub{
		svc: svc, pool: pool, logger: logger, replica: replica,
		conns: map[uuid.UUID]*conn{}, waiters: map[uuid.UUID]chan struct{}{}, precomputing: map[uuid.UUID]bool{},
		ready: make(chan struct{}),
	}
	h.health = newBatcher("health reports", healthCoalesce, logger, h.storeHealth)
	h.rollout = newBatcher("configuration pushes and statuses", 0, logger, h.storeRollout)
	h.rollout.gap = rolloutGap
	h.rollout.answers = &pushAnswers{}
	// A push and its answer are two items about one agent.
	h.rollout.max = 2 * batchMax
	return h
}

// streamHealth is a health report received on c's stream.
type streamHealth struct {
	conn *conn
	rep  *agentv1.HealthReport
}

// rolloutItem is a configuration push made on conn's stream (push), a
// configuration status received on it (status), or a version that leaves
// its configuration unchanged (unchanged, the version).
type rolloutItem struct {
	conn      *conn
	push      *pushItem
	status    *statusReport
	unchanged int64
}

// pushAnswers follows the pushes of a rollout batch and their answers: a
// push is answered by a final status after it (success, failure or
// rollback of that version, on that stream).
type pushAnswers struct {
	open     map[*conn]int64 // the version pushed and not answered yet
	pushes   bool
	answered int // pushes answered since the batch began or the last rebase
}

func (p *pushAnswers) add(it rolloutItem) {
	switch {
	case it.push != nil:
		if p.open == nil {
			p.open = map[*conn]int64{}
		}
		p.open[it.conn] = it.push.Version
		p.pushes = true
	case it.status != nil:
		v, ok := p.open[it.conn]
		st := it.status.Status
		switch applyStatusOf(st.GetStatus()) {
		case ApplySuccess, ApplyFailed, ApplyRolledBack:
			if ok && it.status.Current && st.GetVersion() == v {
				delete(p.open, it.conn)
				p.answered++
			}
		}
	}
}

func (p *pushAnswers) state() (waiting, complete bool) {
	return len(p.open) > 0, p.pushes && len(p.open) == 0
}

func (p *pushAnswers) met() int { return p.answered }

// settled: none of the agent's pushes in the batch waits for its answer,
// so the agent's items can be stored without the others'.
func (p *pushAnswers) settled(it rolloutItem) bool {
	_, open := p.open[it.conn]
	return !open
}

func (p *pushAnswers) rebase() { p.answered = 0 }

func (p *pushAnswers) reset() {
	clear(p.open)
	p.pushes = false
	p.answered = 0
}

// storeRollout records a batch of pushes and configuration statuses with
// the order of each agent's items kept: a group is pushes, then statuses,
// in one transaction (Service.recordRollout), and a push of an agent whose
// status is in the group starts the next group. A push is queued before it
// is sent, so the status answering it is stored with it or after it.
func (h *Hub) storeRollout(ctx context.Context, batch []rolloutItem) {
	for len(batch) > 0 {
		var pushes, statuses []rolloutItem
		var unchanged []unchangedItem
		answered := map[uuid.UUID]bool{}
		n := 0
	scan:
		for ; n < len(batch); n++ {
			it := batch[n]
			switch {
			case it.push != nil:
				if answered[it.conn.agentID] {
					break scan
				}
				pushes = append(pushes, it)
				continue
			case it.status != nil:
				statuses = append(statuses, it)
			default:
				unchanged = append(unchanged, unchangedItem{AgentID: it.conn.agentID, Version: it.unchanged})
			}
			answered[it.conn.agentID] = true
		}
		batch = batch[n:]
		h.storeGroup(ctx, pushes, statuses, unchanged)
	}
}

// groupSplitMin is how many agents a rollout group needs to be recorded by
// groupSplit transactions side by side, each for a share of the agents:
// PostgreSQL runs them on as many cores, and a thousand agents' answers are
// recorded in about half the time. Each agent's items stay in one
// transaction, in order, and the next group waits for all of them.
const (
	groupSplitMin = 200
	groupSplit    = 2
)

// storeGroup records pushes, then statuses, then unchanged versions (see
// storeGroupPart), in one transaction, or in groupSplit of them for a
// large group.
func (h *Hub) storeGroup(ctx context.Context, pushes, statuses []rolloutItem, unchanged []unchangedItem) {
	agents := map[uuid.UUID]bool{}
	for _, it := range pushes {
		agents[it.conn.agentID] = true
	}
	for _, it := range statuses {
		agents[it.conn.agentID] = true
	}
	for _, it := range unchanged {
		agents[it.AgentID] = true
	}
	if len(agents) < groupSplitMin {
		h.storeGroupPart(ctx, pushes, statuses, unchanged)
		return
	}
	ids := sortedIDs(slices.Collect(maps.Keys(agents)))
	part := make(map[uuid.UUID]int, len(ids))
	for i, id := range ids {
		part[id] = i * groupSplit / len(ids)
	}
	type share struct {
		pushes, statuses []rolloutItem
		unchanged        []unchangedItem
	}
	shares := make([]share, groupSplit)
	for _, it := range pushes {
		sh := &shares[part[it.conn.agentID]]
		sh.pushes = append(sh.pushes, it)
	}
	for _, it := range statuses {
		sh := &shares[part[it.conn.agentID]]
		sh.statuses = append(sh.statuses, it)
	}
	for _, it := range unchanged {
		sh := &shares[part[it.AgentID]]
		sh.unchanged = append(sh.unchanged, it)
	}
	var wg sync.WaitGroup
	for _, sh := range shares {
		if len(sh.pushes)+len(sh.statuses)+len(sh.unchanged) > 0 {
			wg.Go(func() { h.storeGroupPart(ctx, sh.pushes, sh.statuses, sh.unchanged) })
		}
	}
	wg.Wait()
}

// storeGroupPart records pushes, then statuses, then unchanged versions, in
// one transaction. A push or status whose stream is no longer the agent's
// ends that stream.
func (h *Hub) storeGroupPart(ctx context.Context, pushes, statuses []rolloutItem, unchanged []unchangedItem) {
	ps := make([]pushItem, len(pushes))
	for i, it := range pushes {
		ps[i] = *it.push
	}
	ss := make([]statusItem, len(statuses))
	for i, it := range statuses {
		ss[i] = statusItem{agentID: it.conn.agentID, streamID: it.conn.streamID, r: *it.status}
	}
	pushErrs, statusErrs, err := h.svc.recordRollout(ctx, ps, ss, unchanged)
	if err != nil {
		if ctx.Err() == nil {
			h.logger.ErrorContext(ctx, "agents hub: record configuration pushes and statuses", "pushes", len(ps), "statuses", len(ss), "error", err)
		}
		return
	}
	for i, it := range pushes {
		switch {
		case errors.Is(pushErrs[i], errGone):
			it.conn.close(ReasonReplaced)
		case pushErrs[i] != nil:
			h.logger.ErrorContext(ctx, "agents hub: record configuration push", "agent_id", it.conn.agentID, "error", pushErrs[i])
		default:
			h.observed("push", it.conn.agentID)
		}
	}
	if len(statuses) > 0 {
		h.settled(ctx, "configuration statuses", statusErrs, nil, func(i int) *conn { return statuses[i].conn })
	}
}

// storeHealth records a batch of health reports.
func (h *Hub) storeHealth(ctx context.Context, batch []streamHealth) {
	items := make([]healthItem, len(batch))
	for i, b := range batch {
		sid := b.conn.streamID
		items[i] = healthItem{agentID: b.conn.agentID, streamID: &sid, rep: b.rep}
	}
	errs, err := h.svc.recordHealthBatch(ctx, items)
	h.settled(ctx, "health reports", errs, err, func(i int) *conn { return batch[i].conn })
}

// settled ends the streams of the items a batch found gone and reports the
// others observed.
func (h *Hub) settled(ctx context.Context, what string, errs []error, err error, connOf func(int) *conn) {
	if err != nil {
		if ctx.Err() == nil {
			h.logger.ErrorContext(ctx, "agents hub: record "+what, "error", err)
		}
		return
	}
	for i, e := range errs {
		c := connOf(i)
		if errors.Is(e, errGone) {
			c.close(ReasonReplaced)
			continue
		}
		h.observed("message", c.agentID)
	}
}

// Replica names this hub in agents.connected_replica.
func (h *Hub) Replica() string { return h.replica }

// Ready is closed once the hub first listens for notifications.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Count is the number of agent streams this replica holds.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Connected reports whether the agent has a stream on this replica.
func (h *Hub) Connected(agentID uuid.UUID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.conns[agentID]
	return ok
}

// Run listens for notifications and reconciles the streams until ctx ends,
// then closes every stream of this replica (agents reconnect to another).
func (h *Hub) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		h.tickLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		h.health.run(ctx)
	}()
	go func() {
		defer wg.Done()
		h.rollout.run(ctx)
	}()
	backoff := time.Second
	for ctx.Err() == nil {
		established, err := h.listen(ctx)
		if ctx.Err() != nil {
			break
		}
		if established {
			backoff = time.Second
		}
		h.logger.ErrorContext(ctx, "agents hub: listen for notifications", "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(backoff*2, listenBackoffMax)
	}
	h.stop()
	wg.Wait()
	return nil
}

// listen holds one LISTEN connection until it fails or ctx ends.
func (h *Hub) listen(ctx context.Context) (established bool, err error) {
	pc, err := h.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire connection: %w", err)
	}
	// The connection leaves the pool: it stays in LISTEN state and is closed
	// here, never reused by others.
	c := pc.Hijack()
	defer c.Close(context.Background())
	for _, ch := range []string{vhosts.NotifyChannel, NotifyChannel} {
		if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return false, fmt.Errorf("listen %s: %w", ch, err)
		}
	}
	first := false
	h.readyOnce.Do(func() { first = true; close(h.ready) })
	if !first {
		// Notifications sent while the connection was down are lost.
		h.resync(false)
	}
	for {
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			return true, fmt.Errorf("wait for notification: %w", err)
		}
		h.dispatch(ctx, n.Channel, n.Payload)
	}
}

func (h *Hub) dispatch(ctx context.Context, channel, payload string) {
	switch channel {
	case vhosts.NotifyChannel:
		var n vhosts.Notification
		if err := json.Unmarshal([]byte(payload), &n); err != nil {
			h.logger.WarnContext(ctx, "agents hub: bad config notification", "payload", payload, "error", err)
			return
		}
		h.configChanged(ctx, n.WorkspaceID)
	case NotifyChannel:
		var n AgentNotice
		if err := json.Unmarshal([]byte(payload), &n); err != nil {
			h.logger.WarnContext(ctx, "agents hub: bad agent notification", "payload", payload, "error", err)
			return
		}
		switch n.Op {
		case OpDeleted:
			h.drop(n.AgentID, ReasonDeleted)
		case OpRetarget:
			h.retarget(n.AgentID)
		case OpCommand:
			h.deliverCommands(n.AgentID)
		case OpCommandResult:
			if n.CommandID != nil {
				h.commandFinished(*n.CommandID)
			}
		case OpACMEChallenge, OpACMEStatus:
			h.acmeNotice(n)
		case OpConnected:
			h.mu.Lock()
			c := h.conns[n.AgentID]
			h.mu.Unlock()
			if c != nil && (n.StreamID == nil || *n.StreamID != c.streamID) {
				c.close(ReasonReplaced)
			}
		}
	}
}

// configChanged wakes the streams of a workspace: a few are woken at once,
// many get their configurations computed together (precompute), off the
// listener's goroutine. While that runs, further changes of the workspace
// make it run once more when it ends (with the newest version then): a
// burst of writes costs a few computations for its streams, not one each,
// and offers of one workspace come in order.
func (h *Hub) configChanged(ctx context.Context, workspaceID uuid.UUID) {
	h.mu.Lock()
	if _, running := h.precomputing[workspaceID]; running {
		h.precomputing[workspaceID] = true
		h.mu.Unlock()
		return
	}
	h.precomputing[workspaceID] = false
	h.mu.Unlock()
	go func() {
		for {
			if conns := h.connsOf(workspaceID); len(conns) >= precomputeMin {
				h.precompute(ctx, workspaceID, conns)
			} else {
				for _, c := range conns {
					c.want(wantConfig)
				}
			}
			h.mu.Lock()
			again := h.precomputing[workspaceID] && ctx.Err() == nil
			if !again {
				delete(h.precomputing, workspaceID)
			} else {
				h.precomputing[workspaceID] = false
			}
			h.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// connsOf returns the streams of workspace ws on this replica.
func (h *Hub) connsOf(ws uuid.UUID) []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	var conns []*conn
	for _, c := range h.conns {
		if c.workspaceID == ws {
			conns = append(conns, c)
		}
	}
	return conns
}

// precomputeMin is how many streams of a workspace make configChanged
// compute their configurations together (Service.DesiredConfigs).
const precomputeMin = 8

// precompute computes the configurations of conns (streams of workspace
// ws) together, offers each to its stream and wakes its worker. A stream
// whose agent was retargeted meanwhile refuses the offer and computes its
// own.
func (h *Hub) precompute(ctx context.Context, ws uuid.UUID, conns []*conn) {
	gens := make([]uint64, len(conns))
	ids := make([]uuid.UUID, len(conns))
	for i, c := range conns {
		gens[i], ids[i] = c.gen.Load(), c.agentID
	}
	ctx, cancel := context.WithTimeout(ctx, batchTimeout)
	defer cancel()
	us, err := h.svc.DesiredConfigs(ctx, ws, ids)
	if err != nil && ctx.Err() == nil {
		h.logger.ErrorContext(ctx, "agents hub: compute desired configurations", "workspace_id", ws, "agents", len(ids), "error", err)
	}
	for i, c := range conns {
		if u := us[c.agentID]; u != nil {
			c.offer(u, gens[i])
		}
		c.want(wantConfig)
	}
	h.observed("precompute", ws)
}

// resync wakes every stream's configuration worker (force: send even when
// the checksum is unchanged).
func (h *Hub) resync(force bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		if force {
			c.force.Store(true)
		}
		c.gen.Add(1)
		c.want(wantConfig)
	}
}

// retarget makes the agent's stream on this replica, if any, recompute its
// configuration.
func (h *Hub) retarget(agentID uuid.UUID) {
	if c := h.conn(agentID); c != nil {
		c.gen.Add(1) // an offered configuration may predate the change
		c.want(wantConfig)
	}
}

// deliverCommands makes the agent's stream on this replica, if any, send its
// pending commands.
func (h *Hub) deliverCommands(agentID uuid.UUID) {
	if c := h.conn(agentID); c != nil {
		c.want(wantCommands)
	}
}

// drop closes the agent's stream on this replica, if any.
func (h *Hub) drop(agentID uuid.UUID, reason string) {
	if c := h.conn(agentID); c != nil {
		c.close(reason)
	}
}

func (h *Hub) conn(agentID uuid.UUID) *conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns[agentID]
}

// add registers a stream, replacing (and closing) an older stream of the same
// agent. It is false once the hub stopped.
func (h *Hub) add(c *conn) bool {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return false
	}
	old := h.conns[c.agentID]
	h.conns[c.agentID] = c
	h.mu.Unlock()
	if old != nil {
		old.close(ReasonReplaced)
	}
	return true
}

// remove unregisters a stream unless a newer one replaced it.
func (h *Hub) remove(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns[c.agentID] == c {
		delete(h.conns, c.agentID)
	}
}

// stop closes every stream and refuses new ones.
func (h *Hub) stop() {
	h.mu.Lock()
	h.stopped = true
	conns := make([]*conn, 0, len(h.conns))
	for _, c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.close(reasonShutdown)
	}
}

// watchCommand returns a channel signalled whenever the command may have
// finished (the caller re-reads it). Release it with unwatchCommand.
func (h *Hub) watchCommand(id uuid.UUID) <-chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.waiters[id] = ch
	h.mu.Unlock()
	return ch
}

func (h *Hub) unwatchCommand(id uuid.UUID) {
	h.mu.Lock()
	delete(h.waiters, id)
	h.mu.Unlock()
}

func (h *Hub) commandFinished(id uuid.UUID) {
	h.mu.Lock()
	ch := h.waiters[id]
	h.mu.Unlock()
	if ch != nil {
		signal(ch)
	}
}

func (h *Hub) tickLoop(ctx context.Context) {
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	lastResync := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.reconcile()
			if time.Since(lastResync) >= resyncInterval {
				lastResync = time.Now()
				h.resync(false)
			}
		}
	}
}

// reconcile closes streams silent for three heartbeat intervals and wakes the
// others' retry check.
func (h *Hub) reconcile() {
	now := h.svc.now()
	silent := 3 * h.svc.heartbeat
	h.mu.Lock()
	conns := make([]*conn, 0, len(h.conns))
	for _, c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		if now.Sub(time.Unix(0, c.lastSeen.Load())) > silent {
			c.close(ReasonTimeout)
			continue
		}
		if c.retryDue(now) {
			c.want(wantRetry)
		}
	}
}

// signal does a non-blocking send on a wake-up channel of capacity one, so
// wake-ups coalesce.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// backoff is the wait before sending a push again after attempts tries.
func backoff(attempts int) time.Duration {
	d := ackTimeout
	for i := 1; i < attempts && d < retryMax; i++ {
		d *= 2
	}
	return min(d, retryMax)
}

// ---- One stream ----

// sentConfig is a configuration pushed on a stream.
type sentConfig struct {
	checksum string
	sentAt   time.Time
}

// pushState is the last configuration pushed on a stream.
type pushState struct {
	configID string
	version  int64
	checksum string
	sentAt   time.Time
	attempts int
	// settled: the agent applied it (SUCCESS).
	settled bool
	// retryAt is when it is sent again unless settled.
	retryAt time.Time
}

// conn is one agent's stream on this replica.
type conn struct {
	hub         *Hub
	agentID     uuid.UUID
	workspaceID uuid.UUID
	orgID       uuid.UUID
	streamID    uuid.UUID
	stream      agentv1.AgentService_StreamServer
	// prepared: the stream takes configuration updates prepared once for
	// every such stream (prepared.go).
	prepared bool

	out chan *agentv1.MasterMessage
	// sender sends what is queued in out; worker does what wants asks
	// for (wantConfig, …) in ctx. Both run only while there is something
	// to do (runner).
	sender *runner
	worker *runner
	wants  atomic.Uint32
	ctx    context.Context
	// offered is a configuration computed for this stream by precompute,
	// valid while gen (bumped by retargets and resyncs) is what it was
	// computed at.
	offered    *agentv1.ConfigUpdate
	offeredGen uint64
	gen        atomic.Uint64
	// force makes the next configuration push send even an unchanged
	// checksum (first push of a stream).
	force    atomic.Bool
	lastSeen atomic.Int64 // Unix nanoseconds

	// recvLimit is the largest message the agent accepts
	// (agentReceiveLimit).
	recvLimit int

	closeOnce sync.Once
	done      chan struct{}
	reason    string // written before done is closed

	mu   sync.Mutex
	push pushState
	sent map[string]sentConfig
}

func (h *Hub) newConn(stream agentv1.AgentService_StreamServer, c connected, streamID uuid.UUID) *conn {
	cn := &conn{
		hub: h, agentID: c.Agent.ID, workspaceID: c.Agent.WorkspaceID, orgID: c.OrgID, streamID: streamID, stream: stream,
		out:       make(chan *agentv1.MasterMessage, sendBuffer),
		done:      make(chan struct{}),
		sent:      map[string]sentConfig{},
		recvLimit: agentReceiveLimit(stream.Context()),
		prepared:  sharesPrepared(stream),
	}
	cn.sender = &runner{pass: cn.sendQueued}
	cn.worker = &runner{pass: cn.work}
	cn.seen()
	return cn
}

// What a stream's worker is asked to do (conn.want).
const (
	wantConfig uint32 = 1 << iota
	wantCommands
	wantRetry
)

// offer hands the stream a configuration computed at generation gen; a
// newer version replaces an older one.
func (c *conn) offer(u *agentv1.ConfigUpdate, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() == gen && (c.offered == nil || u.Version >= c.offered.Version) {
		c.offered, c.offeredGen = u, gen
	}
}

// takeOffered returns the configuration offered to the stream, if it is
// still valid, and forgets it.
func (c *conn) takeOffered() *agentv1.ConfigUpdate {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.offered
	c.offered = nil
	if u == nil || c.offeredGen != c.gen.Load() {
		return nil
	}
	return u
}

// want asks the stream's worker for w.
func (c *conn) want(w uint32) {
	c.wants.Or(w)
	c.worker.kick()
}

func (c *conn) seen() { c.lastSeen.Store(c.hub.svc.now().UnixNano()) }

// close ends the stream with reason (the first reason wins).
func (c *conn) close(reason string) {
	c.closeOnce.Do(func() {
		c.reason = reason
		close(c.done)
	})
}

// send queues a message for the sender; a full queue drops the stream.
func (c *conn) send(m *agentv1.MasterMessage) bool {
	if m.Timestamp == 0 {
		m.Timestamp = c.hub.svc.now().Unix()
	}
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.out <- m:
		c.sender.kick()
		return true
	default:
		c.hub.logger.Warn("agents hub: agent does not read its stream; dropping it", "agent_id", c.agentID)
		c.close(ReasonClosed)
		return false
	}
}

// sendQueued sends what is queued, from the stream's sender (the only
// sender on the stream once it is established).
func (c *conn) sendQueued() {
	for {
		select {
		case <-c.done:
			return
		case m := <-c.out:
			if err := c.sendMessage(m); err != nil {
				if u := m.GetConfigUpdate(); u != nil {
					c.sendFailed(u, proto.Size(m), err)
				}
				c.close(ReasonClosed)
				return
			}
		default:
			return
		}
	}
}

// work does what the stream's worker was asked for: push the
// configuration, deliver commands, resend a push that is due.
func (c *conn) work() {
	w := c.wants.Swap(0)
	if w&wantConfig != 0 {
		c.pushConfig(c.ctx, c.force.Swap(false))
	}
	if w&wantCommands != 0 {
		c.sendCommands(c.ctx)
	}
	if w&wantRetry != 0 {
		c.retry(c.ctx)
	}
}

// pushConfig computes the agent's desired configuration and sends it when its
// checksum differs from the last push (or force).
func (c *conn) pushConfig(ctx context.Context, force bool) {
	// Built only to report a failure: a rollout pushes to every agent.
	log := func() *slog.Logger { return c.hub.logger.With("agent_id", c.agentID) }
	u := c.takeOffered()
	var err error
	if u == nil {
		u, err = c.hub.svc.DesiredConfig(ctx, c.agentID)
	}
	if errors.Is(err, ErrAgentNotFound) {
		c.close(ReasonDeleted)
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			log().ErrorContext(ctx, "agents hub: compute desired configuration", "error", err)
		}
		// Try again at the next reconcile.
		c.mu.Lock()
		c.push.settled, c.push.retryAt = false, c.hub.svc.now()
		c.mu.Unlock()
		return
	}
	c.mu.Lock()
	// Configurations computed together for a workspace's streams
	// (precompute) may be offered out of order: one computed for an older
	// version, finishing late, must not take the agent back from the
	// version it was sent since.
	stale := u.Version < c.push.version
	same := c.push.checksum == u.Checksum
	c.mu.Unlock()
	if stale {
		return
	}
	if same && !force {
		// The version leaves this agent's configuration as it is: its
		// rollout here is the last push's, recorded after that push and
		// the answers queued before it.
		c.hub.rollout.add(rolloutItem{conn: c, unchanged: u.Version})
		return
	}
	now := c.hub.svc.now()
	msg := &agentv1.MasterMessage{Timestamp: now.Unix(), Payload: &agentv1.MasterMessage_ConfigUpdate{ConfigUpdate: u}}
	size := proto.Size(msg)
	if why := undeliverable(size, c.recvLimit, c.hub.svc.maxMessageBytes); why != "" {
		// Nothing changes on this stream until the configuration does:
		// the push is settled as it is, and recorded as failed.
		c.mu.Lock()
		c.push = pushState{configID: u.ConfigId, version: u.Version, checksum: u.Checksum, sentAt: now, attempts: 1, settled: true}
		c.mu.Unlock()
		log().ErrorContext(ctx, "agents hub: configuration update not sent", "version", u.Version, "bytes", size,
			"agent_limit", c.recvLimit, "master_limit", c.hub.svc.maxMessageBytes, "reason", why)
		c.undelivered(ctx, u, why)
		return
	}
	// The push is recorded in memory before it is sent, so the agent's
	// answer always finds it.
	c.mu.Lock()
	attempts := 1
	if same {
		attempts = c.push.attempts + 1
	}
	c.push = pushState{
		configID: u.ConfigId, version: u.Version, checksum: u.Checksum, sentAt: now, attempts: attempts,
		retryAt: now.Add(backoff(attempts)),
	}
	if _, ok := c.sent[u.ConfigId]; !ok && len(c.sent) >= sentHistory {
		oldest := ""
		for id, s := range c.sent {
			if oldest == "" || s.sentAt.Before(c.sent[oldest].sentAt) {
				oldest = id
			}
		}
		delete(c.sent, oldest)
	}
	c.sent[u.ConfigId] = sentConfig{checksum: u.Checksum, sentAt: now}
	c.mu.Unlock()
	// Queued for recording before it is sent: the agent's answer is
	// recorded after it (storeRollout). Sending does not wait for the
	// commit; should this replica die in between, the agent's next
	// connection reports what it runs.
	c.hub.rollout.add(rolloutItem{conn: c, push: &pushItem{AgentID: c.agentID, StreamID: c.streamID, Version: u.Version, Checksum: u.Checksum}})
	c.send(msg)
}

// undelivered records that u could not be delivered on this stream, for the
// reason why.
func (c *conn) undelivered(ctx context.Context, u *agentv1.ConfigUpdate, why string) {
	err := c.hub.svc.recordUndelivered(ctx, c.agentID, c.streamID, u.Version, u.Checksum, u.ConfigId, why)
	if errors.Is(err, errGone) {
		c.close(ReasonReplaced)
		return
	}
	if err != nil {
		c.hub.logger.ErrorContext(ctx, "agents hub: record undelivered configuration", "agent_id", c.agentID, "error", err)
		return
	}
	c.hub.observed("undelivered", c.agentID)
}

// sendFailed records that sending the configuration update u (size bytes)
// failed with err, unless the stream was already closing or u is no longer
// the current push. The stream ends after a failed send (gRPC ends the call);
// the agent's next stream gets the configuration again.
func (c *conn) sendFailed(u *agentv1.ConfigUpdate, size int, err error) {
	select {
	case <-c.done:
		return
	default:
	}
	c.mu.Lock()
	current := c.push.configID == u.ConfigId
	c.mu.Unlock()
	if !current {
		return
	}
	c.hub.logger.Error("agents hub: send configuration update", "agent_id", c.agentID, "version", u.Version, "bytes", size, "error", err)
	ctx, cancel := context.WithTimeout(context.Background(), disconnectTimeout)
	defer cancel()
	c.undelivered(ctx, u, fmt.Sprintf("sending the configuration update (%s) failed: %v", formatBytes(size), err))
}

// retryDue reports whether the last push is to be sent again at now.
func (c *conn) retryDue(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.push.settled && !c.push.retryAt.IsZero() && !now.Before(c.push.retryAt)
}

// retry sends the last push again when it is due (no final answer, or a
// failure, and its backoff elapsed).
func (c *conn) retry(ctx context.Context) {
	now := c.hub.svc.now()
	c.mu.Lock()
	p := c.push
	c.mu.Unlock()
	if p.settled || p.retryAt.IsZero() || now.Before(p.retryAt) {
		return
	}
	c.pushConfig(ctx, true)
}

// onStatus queues a ConfigStatus from the agent for recording.
func (c *conn) onStatus(st *agentv1.ConfigStatus) {
	now := c.hub.svc.now()
	c.mu.Lock()
	sc := c.sent[st.GetConfigId()]
	current := st.GetConfigId() != "" && st.GetConfigId() == c.push.configID
	if current {
		switch st.GetStatus() {
		case agentv1.ConfigApplyStatus_VALIDATING, agentv1.ConfigApplyStatus_APPLYING:
			c.push.retryAt = now.Add(ackTimeout)
		case agentv1.ConfigApplyStatus_SUCCESS:
			c.push.settled, c.push.retryAt = true, time.Time{}
		case agentv1.ConfigApplyStatus_FAILED, agentv1.ConfigApplyStatus_ROLLED_BACK:
			c.push.retryAt = now.Add(backoff(c.push.attempts))
		}
	}
	c.mu.Unlock()
	c.hub.rollout.add(rolloutItem{conn: c, status: &statusReport{
		Status: st, Current: current, Checksum: sc.checksum, SentAt: sc.sentAt,
	}})
}

// sendCommands sends the agent's pending commands.
func (c *conn) sendCommands(ctx context.Context) {
	rows, err := c.hub.svc.claimCommands(ctx, c.agentID, c.streamID)
	if err != nil {
		if ctx.Err() == nil {
			c.hub.logger.ErrorContext(ctx, "agents hub: claim commands", "agent_id", c.agentID, "error", err)
		}
		return
	}
	for _, r := range rows {
		if !c.send(&agentv1.MasterMessage{Payload: &agentv1.MasterMessage_Command{Command: commandMessage(r)}}) {
			return
		}
	}
}

// commandMessage is the wire form of a command.
func commandMessage(r commandRow) *agentv1.Command {
	m := &agentv1.Command{CommandId: r.ID.String()}
	p := r.Params
	switch r.Kind {
	case CommandReload:
		m.Command = &agentv1.Command_Reload{Reload: &agentv1.ReloadCommand{Graceful: p.Graceful == nil || *p.Graceful}}
	case CommandRestart:
		m.Command = &agentv1.Command_Restart{Restart: &agentv1.RestartCommand{Force: p.Force != nil && *p.Force}}
	case CommandStop:
		stop := &agentv1.StopCommand{Graceful: p.Graceful == nil || *p.Graceful}
		if p.TimeoutSeconds != nil {
			stop.TimeoutSeconds = uint32(max(*p.TimeoutSeconds, 0))
		}
		m.Command = &agentv1.Command_Stop{Stop: stop}
	case CommandGetStatus:
		m.Command = &agentv1.Command_GetStatus{GetStatus: &agentv1.GetStatusCommand{}}
	case CommandValidateConfig:
		m.Command = &agentv1.Command_ValidateConfig{ValidateConfig: &agentv1.ValidateConfigCommand{}}
	}
	return m
}
