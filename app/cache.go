package app

import (
	"context"
	"strings"
	"sync"
	"time"
)

// maxCacheEntries bounds one cache; when it is full, expired entries are
// dropped and, failing that, new ones are not stored.
const maxCacheEntries = 100_000

// Cache is an in-process read-through cache whose entries the Invalidator
// drops when the rows they were read from change on any replica. Each entry
// carries the invalidation tags of those rows (TagUser+id, ...). Entries live
// at most the cache's TTL; callers that cache something with its own expiry
// (a session's expires_at) check it themselves against their clock.
//
// While the Invalidator is not listening, Load always calls the loader and
// stores nothing. A nil *Cache does the same.
type Cache[V any] struct {
	inv *Invalidator
	ttl time.Duration

	mu      sync.Mutex
	entries map[string]*cacheEntry[V]
	byTag   map[string]map[string]struct{}
}

type cacheEntry[V any] struct {
	value   V
	tags    []string
	expires time.Time
}

// NewCache returns a cache invalidated by inv, whose entries live ttl
// (DefaultCacheTTL when ttl is zero). A nil inv gives a cache that never
// serves an entry.
func NewCache[V any](inv *Invalidator, ttl time.Duration) *Cache[V] {
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	c := &Cache[V]{inv: inv, ttl: ttl, entries: map[string]*cacheEntry[V]{}, byTag: map[string]map[string]struct{}{}}
	inv.register(c)
	return c
}

// Load returns key's entry, or calls load and stores its value tagged with
// tags — unless load fails, the listener is down, or an invalidation arrived
// while load ran (the value may predate it). load's errors are returned and
// never cached.
func (c *Cache[V]) Load(ctx context.Context, key string, load func(ctx context.Context) (V, []string, error)) (V, error) {
	if c == nil {
		v, _, err := load(ctx)
		return v, err
	}
	gen, ready := c.inv.generation()
	if ready {
		if v, ok := c.get(key); ok {
			return v, nil
		}
	}
	v, tags, err := load(ctx)
	if err != nil || !ready {
		return v, err
	}
	c.inv.storeIf(gen, func() { c.put(key, v, tags) })
	return v, nil
}

// Replace stores value for key when key is cached already (keeping its tags
// and expiry), for a change the caller made itself that the triggers do not
// announce (last_used_at).
func (c *Cache[V]) Replace(key string, value V) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		e.value = value
	}
}

// Len is the number of entries held (expired ones included).
func (c *Cache[V]) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *Cache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	if time.Now().After(e.expires) {
		c.removeLocked(key, e)
		var zero V
		return zero, false
	}
	return e.value, true
}

func (c *Cache[V]) put(key string, v V, tags []string) {
	// Fiber's strings alias buffers it reuses: the key outlives the request.
	key = strings.Clone(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if old, ok := c.entries[key]; ok {
		c.removeLocked(key, old)
	}
	if len(c.entries) >= maxCacheEntries {
		for k, e := range c.entries {
			if now.After(e.expires) {
				c.removeLocked(k, e)
			}
		}
		if len(c.entries) >= maxCacheEntries {
			return
		}
	}
	e := &cacheEntry[V]{value: v, tags: tags, expires: now.Add(c.ttl)}
	c.entries[key] = e
	for _, t := range tags {
		set := c.byTag[t]
		if set == nil {
			set = map[string]struct{}{}
			c.byTag[t] = set
		}
		set[key] = struct{}{}
	}
}

func (c *Cache[V]) removeLocked(key string, e *cacheEntry[V]) {
	delete(c.entries, key)
	for _, t := range e.tags {
		if set := c.byTag[t]; set != nil {
			delete(set, key)
			if len(set) == 0 {
				delete(c.byTag, t)
			}
		}
	}
}

func (c *Cache[V]) dropTags(tags []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range tags {
		for key := range c.byTag[t] {
			if e, ok := c.entries[key]; ok {
				c.removeLocked(key, e)
			}
		}
		delete(c.byTag, t)
	}
}

func (c *Cache[V]) dropAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	clear(c.byTag)
}
