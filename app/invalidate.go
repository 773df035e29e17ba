package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxmesh/nxmesh/app/backoff"
)

// InvalidationChannel is the PostgreSQL notification channel on which the
// database announces changes to cached rows. Triggers (migration
// 00120_app_cache_invalidation.sql) send one tag per changed row of users,
// auth_sessions, api_keys, memberships, organizations and workspaces, inside
// the writing transaction, so the notification goes out when (and only when)
// the change commits:
//
//	user:<id>  session:<id>  apikey:<id>  member:<org>:<user>  org:<id>
//	ws:<id> and wsorg:<org> (a workspace of the organization changed)
//
// "*" (a TRUNCATE of one of those tables) drops everything. "sync:<nonce>"
// is Sync's barrier and drops nothing.
const InvalidationChannel = "nxmesh_invalidate"

// Invalidation tags of the rows the triggers watch.
const (
	TagUser      = "user:"
	TagSession   = "session:"
	TagAPIKey    = "apikey:"
	TagMember    = "member:"
	TagOrg       = "org:"
	TagWorkspace = "ws:"
	// TagOrgWorkspaces is sent with TagWorkspace: the organization's list of
	// workspaces changed.
	TagOrgWorkspaces = "wsorg:"
)

// How the invalidation listener behaves.
const (
	// DefaultCacheTTL is the backstop lifetime of a cache entry, should a
	// notification be lost in a way the listener cannot see.
	DefaultCacheTTL = 30 * time.Second
	// syncWait is how long Sync waits for its own notification before it
	// gives up and empties every cache.
	syncWait = time.Second
	// invalidationPing is how often the listener checks its connection with
	// a notification of its own; when one does not come back within
	// invalidationPingWait the caches are emptied and bypassed until the
	// connection is replaced.
	invalidationPing     = time.Second
	invalidationPingWait = 3 * time.Second
	maxInvalidateBackoff = 5 * time.Second
)

// invalidatable is a cache the Invalidator empties.
type invalidatable interface {
	dropTags(tags []string)
	dropAll()
}

// Invalidator keeps this replica's caches (see Cache) consistent with the
// database across replicas: one dedicated connection LISTENs on
// InvalidationChannel and drops the entries tagged with each notification's
// tag. Caches serve entries only while that connection is up: on its loss
// every cache is emptied and bypassed (every lookup goes to the database)
// until a new connection LISTENs again, so a revocation is never missed
// while nobody listens. Entries also expire after their TTL.
//
// The zero value and a nil *Invalidator are never ready: their caches
// always load from the database.
type Invalidator struct {
	pool   *pgxpool.Pool
	logger *slog.Logger

	// mu orders invalidations against stores: drops and state changes take it
	// for writing, a store checks gen and ready under it for reading.
	mu     sync.RWMutex
	ready  bool
	gen    uint64
	caches []invalidatable

	pid      atomic.Uint32
	lastPing atomic.Int64 // unix nanoseconds of the last own ping received
	nonce    string

	waitMu  sync.Mutex
	waiters map[string]chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

// NewInvalidator returns an Invalidator over pool; Start begins listening.
func NewInvalidator(pool *pgxpool.Pool, logger *slog.Logger) *Invalidator {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Invalidator{pool: pool, logger: logger, nonce: hex.EncodeToString(b), waiters: map[string]chan struct{}{}}
}

// Start runs the LISTEN loop until Stop. Calling it again does nothing.
func (v *Invalidator) Start() {
	if v == nil || v.pool == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel, v.done = cancel, make(chan struct{})
	go v.run(ctx)
}

// Stop ends the LISTEN loop and leaves the caches bypassed.
func (v *Invalidator) Stop() {
	if v == nil {
		return
	}
	v.mu.Lock()
	cancel, done := v.cancel, v.done
	v.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Ready reports whether the caches serve entries: the listener is connected.
func (v *Invalidator) Ready() bool {
	if v == nil {
		return false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.ready
}

// ListenerPID is the PostgreSQL backend pid of the listening connection, 0
// when there is none (for tests that cut it with pg_terminate_backend).
func (v *Invalidator) ListenerPID() uint32 {
	if v == nil {
		return 0
	}
	return v.pid.Load()
}

// Sync waits until the listener has handled every notification committed
// before the call, so that this replica's caches reflect a change the caller
// has just committed (another replica learns of it within milliseconds).
// The services that revoke credentials or change memberships call it after
// their transaction. When the listener does not answer within a second the
// caches are emptied and bypassed instead, which is as safe.
func (v *Invalidator) Sync(ctx context.Context) {
	if !v.Ready() {
		return
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	tag := "sync:" + hex.EncodeToString(b)
	ch := make(chan struct{})
	v.waitMu.Lock()
	v.waiters[tag] = ch
	v.waitMu.Unlock()
	defer func() {
		v.waitMu.Lock()
		delete(v.waiters, tag)
		v.waitMu.Unlock()
	}()
	if _, err := v.pool.Exec(ctx, "SELECT pg_notify($1, $2)", InvalidationChannel, tag); err != nil {
		v.logger.WarnContext(ctx, "cache sync: notify", "error", err)
		v.setReady(false)
		return
	}
	t := time.NewTimer(syncWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		v.logger.WarnContext(ctx, "cache sync: no answer from the listener; caches emptied")
		v.setReady(false)
	case <-ctx.Done():
		v.dropAll()
	}
}

// register adds c to the caches emptied by notifications.
func (v *Invalidator) register(c invalidatable) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.caches = append(v.caches, c)
}

// generation returns the invalidation counter and whether entries may be
// stored at all.
func (v *Invalidator) generation() (uint64, bool) {
	if v == nil {
		return 0, false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.gen, v.ready
}

// storeIf runs store when no invalidation happened since generation gen and
// the listener is still up.
func (v *Invalidator) storeIf(gen uint64, store func()) {
	if v == nil {
		return
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.ready && v.gen == gen {
		store()
	}
}

// Invalidate drops the entries tagged with any of tags on this replica only
// (the triggers tell the other replicas).
func (v *Invalidator) Invalidate(tags ...string) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	for _, c := range v.caches {
		c.dropTags(tags)
	}
}

func (v *Invalidator) dropAll() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	for _, c := range v.caches {
		c.dropAll()
	}
}

// setReady changes whether the caches serve entries; either way they are
// emptied, so nothing from before a gap is served after it.
func (v *Invalidator) setReady(ready bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	v.ready = ready
	for _, c := range v.caches {
		c.dropAll()
	}
}

func (v *Invalidator) run(ctx context.Context) {
	defer close(v.done)
	defer v.setReady(false)
	backoff.Reconnect(ctx, 100*time.Millisecond, maxInvalidateBackoff, func(ctx context.Context) (bool, error) {
		connected, err := v.listen(ctx)
		v.setReady(false)
		v.pid.Store(0)
		return connected, err
	}, func(err error, retryIn time.Duration) {
		v.logger.Warn("cache invalidation: listener lost; caches bypassed until it reconnects", "error", err, "retry_in", retryIn)
	})
}

// listen holds one dedicated connection LISTENing until it fails, its ping
// stops coming back, or ctx ends.
func (v *Invalidator) listen(ctx context.Context) (connected bool, err error) {
	pc, err := v.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("acquire invalidation connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+InvalidationChannel); err != nil {
		return false, fmt.Errorf("listen %s: %w", InvalidationChannel, err)
	}
	v.pid.Store(conn.PgConn().PID())
	v.lastPing.Store(time.Now().UnixNano())
	v.setReady(true)

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pingTag := "ping:" + v.nonce
	pingErr := make(chan error, 1)
	go func() {
		t := time.NewTicker(invalidationPing)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			if time.Since(time.Unix(0, v.lastPing.Load())) > invalidationPingWait {
				pingErr <- errors.New("own notifications stopped arriving")
				cancel()
				return
			}
			pctx, pcancel := context.WithTimeout(lctx, invalidationPingWait)
			_, err := v.pool.Exec(pctx, "SELECT pg_notify($1, $2)", InvalidationChannel, pingTag)
			pcancel()
			if err != nil && lctx.Err() == nil {
				v.logger.Warn("cache invalidation: ping", "error", err)
			}
		}
	}()
	for {
		n, err := conn.WaitForNotification(lctx)
		if err != nil {
			select {
			case perr := <-pingErr:
				return true, perr
			default:
			}
			return true, fmt.Errorf("wait for invalidations: %w", err)
		}
		v.handle(n.Payload, pingTag)
	}
}

// handle applies one notification.
func (v *Invalidator) handle(payload, pingTag string) {
	switch {
	case payload == pingTag:
		v.lastPing.Store(time.Now().UnixNano())
	case strings.HasPrefix(payload, "ping:"):
	case strings.HasPrefix(payload, "sync:"):
		v.waitMu.Lock()
		ch, ok := v.waiters[payload]
		delete(v.waiters, payload)
		v.waitMu.Unlock()
		if ok {
			close(ch)
		}
	case payload == "*":
		v.dropAll()
	default:
		v.Invalidate(payload)
	}
}
